"""``rdfia-jax transfer``: the transfer-learning section (report 1.2) in one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rdfia_jax.commands.common import finite_float, int_at_least, positive_float, positive_int, \
    random_weights_note, seed_int
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import check_writable_dir

SMOKE_PER_CLASS = 2


def register(subparsers) -> None:
    from rdfia_jax.transfer.pipeline import ROWS

    p = subparsers.add_parser(
        "transfer",
        help="transfer learning on 15 Scene: VGG16/AlexNet features + SVM, C sweep, PCA, new FC head",
        description="Reproduce the report's section 1.2 table: deep features of VGG16 and AlexNet "
                    "(cached on disk), L2-normalized, classified with LinearSVC; a C sweep chosen by "
                    "cross-validation on train; PCA; a new fully-connected head. Writes results.md, "
                    "results.csv, results.json, details.json and figures to --out.")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="the 15SceneData folder (train/<class>/*.jpg, test/<class>/*.jpg), a folder "
                        "containing it, or 15SceneData.zip (default: $RDFIA_JAX_DATA)")
    p.add_argument("--out", metavar="DIR", default="outputs/transfer",
                   help="output folder for the table and figures (default outputs/transfer)")
    p.add_argument("--weights", metavar="[MODEL=]FILE|SOURCE", action="append", default=[],
                   help="weights to load: 'vgg16=FILE', 'alexnet=FILE', or a source name (torchvision, "
                        "timm, keras) for every model; repeatable (default: the converted files in the "
                        "weights folder, $RDFIA_JAX_WEIGHTS)")
    p.add_argument("--random-weights", action="store_true",
                   help="use random weights (the pipeline runs, but the accuracies mean nothing; the table says so)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of random weights, SVMs and head training (default 0)")
    p.add_argument("--rows", nargs="+", metavar="ROW", default=list(ROWS), choices=ROWS,
                   help=f"rows of the table to compute (default all): {', '.join(ROWS)}")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per feature-extraction step, split over all local devices (default 32; the practical used 8)")
    p.add_argument("--image-size", type=int_at_least(32), default=224,
                   help="network input side, at least 32 (default 224)")
    p.add_argument("--per-class", type=positive_int, default=None, metavar="N",
                   help="use only the first N images of each class in each split (quick runs; default all)")
    p.add_argument("--smoke", action="store_true",
                   help=f"a quick end-to-end check: {SMOKE_PER_CLASS} images per class per split, 2 head epochs")
    p.add_argument("--C", dest="Cs", type=positive_float, nargs="+", default=[1.0, 5.0, 10.0, 20.0],
                   help="SVM C values of the sweep (default 1 5 10 20)")
    p.add_argument("--cv-folds", type=int_at_least(2), default=5, help="cross-validation folds for choosing C (default 5)")
    p.add_argument("--pca-variance", type=finite_float(positive=True, at_most=1.0), default=0.90, help="share of variance PCA keeps (default 0.90)")
    p.add_argument("--head-epochs", type=positive_int, default=5, help="epochs of the new FC head (default 5)")
    p.add_argument("--head-lr", type=positive_float, default=1e-3, help="learning rate of the FC head (default 1e-3)")
    p.add_argument("--head-optimizer", choices=("adam", "sgd"), default="adam",
                   help="optimizer of the FC head (default adam; sgd uses momentum 0.9)")
    p.add_argument("--finetune", type=int, choices=(0, 1, 2), default=0,
                   help="also fine-tune the last K pretrained layers with the head: 0 none, 1 fc7, 2 fc6+fc7 "
                        "(default 0)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="feature cache folder (default $RDFIA_JAX_CACHE or ~/.cache/rdfia-jax/cache)")
    p.set_defaults(func=run)


def parse_weights(specs: list[str]) -> dict:
    """``['vgg16=a.safetensors', 'timm']`` -> ``{'vgg16': 'a.safetensors', 'alexnet': 'timm'}``."""
    from rdfia_jax.models import canonical_name

    out: dict = {}
    for spec in specs:
        if "=" in spec:
            model, value = spec.split("=", 1)
            out[canonical_name(model)] = value
        elif spec in ("torchvision", "timm", "keras"):
            out.setdefault("vgg16", spec)
            out.setdefault("alexnet", spec)
        else:
            raise RdfiaError(f"--weights {spec!r}: write MODEL=FILE (e.g. vgg16=weights/vgg16.safetensors) "
                             "or a source name (torchvision, timm, keras)")
    return out


def run(args: argparse.Namespace) -> int:
    from rdfia_jax.transfer.pipeline import Settings, run_section

    if args.random_weights and args.weights:
        raise RdfiaError("--weights and --random-weights exclude each other")
    per_class = SMOKE_PER_CLASS if args.smoke and args.per_class is None else args.per_class
    weights = parse_weights(args.weights)
    check_writable_dir(args.out)
    if args.cache_dir and not args.no_cache:
        check_writable_dir(args.cache_dir, "--cache-dir")
    if args.random_weights:
        print(random_weights_note(["vgg16", "alexnet"]), file=sys.stderr)
    settings = Settings(
        data=args.data, out=args.out, rows=args.rows, weights=weights,
        random_weights=args.random_weights, seed=args.seed, batch_size=args.batch_size,
        image_size=args.image_size, per_class=per_class, Cs=tuple(args.Cs),
        cv_folds=min(args.cv_folds, per_class) if per_class else args.cv_folds,
        pca_variance=args.pca_variance, head_epochs=2 if args.smoke else args.head_epochs,
        head_lr=args.head_lr, head_optimizer=args.head_optimizer, finetune=args.finetune,
        cache=not args.no_cache, cache_root=Path(args.cache_dir) if args.cache_dir else None)
    result = run_section(settings)
    print(result["header"])
    print()
    from rdfia_jax.transfer.report import table_markdown

    print(table_markdown(result["rows"]))
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
