"""``summary``, ``predict`` and ``activations`` (report section 1.1)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rdfia_jax.commands import common
from rdfia_jax.commands.common import add_image_options, add_model_options, load_inputs, load_network, \
    positive_int
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import check_writable_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="per-layer output shapes and parameter counts of a model",
                       description="Print each layer's output shape and parameter count, and the total "
                                   "(computed from the model; no weights needed).")
    p.add_argument("model", metavar="MODEL", help="vgg16, alexnet or squeezenet1_1")
    p.add_argument("--input-size", type=positive_int, default=224, help="square input side in pixels (default 224)")
    p.set_defaults(func=_summary)

    p = sub.add_parser("predict", help="top-5 ImageNet classes of images",
                       description="Top-k ImageNet predictions with probabilities (batched, jitted).")
    add_model_options(p)
    add_image_options(p)
    p.add_argument("-k", "--top", type=common.int_at_least(1, 1000), default=5,
                   help="number of classes to show, 1-1000 (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_predict)

    p = sub.add_parser("activations", help="PNG grid of a layer's activation maps for an image",
                       description="Write a PNG grid of the channel maps of one or more layers for each image "
                                   "(report Figures 6-10: first conv layer and a late layer).")
    add_model_options(p)
    add_image_options(p)
    p.add_argument("--layer", action="append", required=True,
                   help="layer name (repeatable), e.g. conv1_1, relu1_1, relu5_3, pool5 for vgg16; "
                        "`rdfia-jax summary MODEL` lists them")
    p.add_argument("--out", default="outputs/activations", help="output folder (default outputs/activations)")
    p.add_argument("--max-maps", type=positive_int, default=64, help="at most this many channels per grid (default 64)")
    p.set_defaults(func=_activations)


def _summary(args):
    from rdfia_jax.inspect import format_summary, summary
    from rdfia_jax.models import canonical_name

    name = canonical_name(args.model)
    rows, total = summary(name, args.input_size)
    print(format_summary(name, rows, total))


def _check_model(args) -> None:
    """The model name (aliases resolved), the weights file and the inputs' paths, before any work."""
    from rdfia_jax.models import canonical_name

    args.model = canonical_name(args.model)
    if args.weights and args.random_weights:
        raise RdfiaError("--weights and --random-weights exclude each other")
    common.check_indices_syntax(args.indices)
    common.check_image_paths(args.images)


def _predict(args):
    from rdfia_jax.inspect import predict

    _check_model(args)
    network = load_network(args)
    images, sources = load_inputs(args)
    preds = predict(network, images, sources, k=args.top, batch_size=args.batch_size)
    common.print_random_weights_banner(network)
    if args.json:
        print(json.dumps({"model": network.name, "weights": network.weights_desc,
                          "predictions": [{"source": p.source, "top": [{"index": i, "name": n, "probability": pr}
                                                                       for i, n, pr in p.top]} for p in preds]},
                         indent=1))
        return
    print(f"{network.name} - weights: {network.weights_desc}")
    for p in preds:
        print(f"\n{p.source}")
        for rank, (i, n, pr) in enumerate(p.top, 1):
            print(f"  {rank}. {n:<40} {100 * pr:7.3f} %  (class {i})")


def _activations(args):
    from rdfia_jax.inspect import activation_grid
    from rdfia_jax.models import activation_names

    _check_model(args)
    names = activation_names(args.model)
    for layer in args.layer:
        if layer not in names:
            raise RdfiaError(f"unknown layer {layer!r} for model {args.model!r}; available layers: {', '.join(names)}")
    check_writable_dir(args.out)
    network = load_network(args)
    images, sources = load_inputs(args)
    common.print_random_weights_banner(network)
    out = Path(args.out)
    for i, (img, src) in enumerate(zip(images, sources)):
        stem = Path(src.split(" ")[0]).stem.replace("[", "_").replace("]", "")
        for layer in args.layer:
            path = activation_grid(network, img, layer, out / f"{network.name}_{stem}_{layer}.png",
                                   max_maps=args.max_maps)
            print(path)
