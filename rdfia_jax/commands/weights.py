"""``weights convert|fetch|list`` and ``eval``: get the published ImageNet weights and check them."""

from __future__ import annotations

import argparse

from rdfia_jax.commands.common import add_model_options


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser(
        "weights", help="convert, download or list pretrained ImageNet weights",
        description="Pretrained weights for vgg16, alexnet and squeezenet1_1. Published files "
                    "(torchvision .pth, timm safetensors, Keras .h5) are read without torch and "
                    "converted once to safetensors in the weights folder ($RDFIA_JAX_WEIGHTS).")
    wsub = w.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    p = wsub.add_parser("convert", help="convert a published weight file you already have",
                        description="Convert a torchvision .pth (legacy or zip), a timm "
                                    "model.safetensors, a Keras .h5, or a Keras 3 .weights.h5 "
                                    "or .keras file; the format is detected "
                                    "from the content. Pickles are read with a restricted "
                                    "unpickler: nothing in the file is executed.")
    p.add_argument("model", metavar="MODEL", help="vgg16, alexnet or squeezenet1_1")
    p.add_argument("file", metavar="FILE", help="the published weight file")
    p.add_argument("--out", default=None,
                   help="output file (default: <weights folder>/MODEL.safetensors, or "
                        "MODEL-timm / MODEL-keras.safetensors for those sources)")
    p.add_argument("--source", choices=("torchvision", "timm", "keras"), default=None,
                   help="naming convention of FILE (default: detected from its tensor names)")
    p.set_defaults(func=_convert)

    p = wsub.add_parser("fetch", help="download, verify and convert a published weight file",
                        description="Download the official file with a progress bar, check it "
                                    "(torchvision: the sha256 prefix in its name; Keras: its md5), "
                                    "then convert it. A file already in <weights folder>/downloads "
                                    "is used instead of downloading.")
    p.add_argument("model", metavar="MODEL", help="vgg16, alexnet or squeezenet1_1")
    p.add_argument("--source", choices=("torchvision", "timm", "keras"), default="torchvision",
                   help="which publisher's file (default torchvision; timm and keras exist for "
                        "vgg16 only)")
    p.add_argument("--timeout", type=float, default=8.0,
                   help="seconds to wait for the server before giving up (default 8)")
    p.set_defaults(func=_fetch)

    p = wsub.add_parser("list", help="published files and which converted weights exist",
                        description="List the published weight files (URL, checksum, "
                                    "preprocessing) and the converted files in the weights folder.")
    p.set_defaults(func=_list)

    p = sub.add_parser("eval", help="top-1/top-5 accuracy on an ImageNet validation folder",
                       description="Evaluate a model on your ImageNet validation images to confirm "
                                   "converted weights (torchvision VGG16: 71.592 / 90.382).")
    add_model_options(p)
    p.add_argument("--imagenet-val", required=True, metavar="DIR",
                   help="folder of class subfolders named by WordNet id (n01440764/...), or a flat "
                        "folder of images with --labels")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="for a flat folder: lines '<file> <label>' or one '<label>' per image in "
                        "sorted order; label = WordNet id or class index 0..999")
    p.add_argument("--resize", choices=("crop", "resize"), default="crop",
                   help="'crop' = resize 256 + center crop 224 (torchvision's protocol, default); "
                        "'resize' = resize to 224x224")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.set_defaults(func=_eval)


def _convert(args):
    from rdfia_jax.models import canonical_name
    from rdfia_jax.weights import convert_file, read_info

    out = convert_file(canonical_name(args.model), args.file, args.out, source=args.source)
    info = read_info(out)
    print(f"wrote {out}: {info.model} from {info.describe()}")


def _fetch(args):
    from rdfia_jax.models import canonical_name
    from rdfia_jax.weights import read_info
    from rdfia_jax.weights.fetch import fetch

    out = fetch(canonical_name(args.model), args.source, connect_timeout=args.timeout)
    print(f"wrote {out}: {read_info(out).describe()}")


def _list(args):
    from rdfia_jax import paths
    from rdfia_jax.errors import RdfiaError
    from rdfia_jax.weights import PUBLISHED, converted_path, read_info
    from rdfia_jax.weights.fetch import downloads_dir

    print(f"weights folder: {paths.weights_dir()}  (set RDFIA_JAX_WEIGHTS to change)")
    print(f"{'model':<14}{'source':<12}{'published file':<46}{'check':<18}{'prep':<12}converted")
    known = set()
    for e in PUBLISHED:
        conv = converted_path(e.model, e.source)
        known.add(conv.name)
        status = "-"
        if conv.is_file():
            try:
                status = f"yes ({conv.name})"
                read_info(conv)
            except RdfiaError:
                status = f"DAMAGED ({conv.name})"
        check = f"sha256 {e.sha256_prefix}*" if e.sha256_prefix else (f"md5 {e.md5[:8]}..." if e.md5 else "none")
        downloaded = " [downloaded]" if (downloads_dir() / e.local_name).is_file() else ""
        print(f"{e.model:<14}{e.source:<12}{e.filename + downloaded:<46}{check:<18}"
              f"{e.preprocessing.name:<12}{status}")
        print(f"{'':<26}{e.url}")
    others = sorted(p.name for p in paths.weights_dir().glob("*.safetensors") if p.name not in known)
    if others:
        print("other files in the weights folder: " + ", ".join(others))


def _eval(args):
    from rdfia_jax.commands.common import load_network, random_weights_banner
    from rdfia_jax.weights.evaluate import evaluate, list_labeled_images
    from rdfia_jax.weights.published import PUBLISHED

    network = load_network(args)
    paths, labels = list_labeled_images(args.imagenet_val, args.labels)
    result = evaluate(network, paths, labels, batch_size=args.batch_size, mode=args.resize,
                      limit=args.limit)
    banner = random_weights_banner(network)
    if banner:
        print(banner)
    print(f"{network.name} ({network.weights_desc})")
    print(f"images: {result.n}  top-1: {result.top1:.3f} %  top-5: {result.top5:.3f} %  "
          f"(resize mode {args.resize})")
    for e in PUBLISHED:
        if e.model == network.name and e.source in network.weights_desc.split(" ", 1)[0]:
            print(f"published ({e.source}, full 50,000-image set, crop protocol): "
                  f"top-1 {e.top1} %  top-5 {e.top5} %")
