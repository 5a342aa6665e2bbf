"""``rdfia-jax data prepare NAME`` and ``rdfia-jax data list``."""

from __future__ import annotations

import argparse
from pathlib import Path

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import check_writable_dir

_WHERE = {
    "mnist": "raw: DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (official files, checksum-verified)",
    "fashion_mnist": "raw: DIR/fashion_mnist/*.gz (same names as MNIST) or /usr/share/datasets/fashion-mnist",
    "mnistm": "built from MNIST + DIR/bsds500/train/*.jpg (200 BSDS500 train images), seeded",
    "digits": "scikit-learn handwritten digits, 28x28 -- NOT MNIST; no download, no preparation needed",
    "digits_m": "digits on scikit-learn's sample photos -- NOT MNIST-M; no download, no preparation needed",
    "scene15": "raw: DIR/15SceneData/{train,test}/<class>/*.jpg or DIR/15SceneData.zip",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare and list datasets (MNIST, MNIST-M, 15 Scene, ...)",
                                   description="Prepare datasets once from local raw files (no download) "
                                   "into tensorflow-datasets array_record files, and list them.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    from rdfia_jax.data.store import PREPARABLE

    prep = sub.add_parser("prepare", help="build the prepared copy of a dataset (once; atomic)")
    prep.add_argument("name", choices=PREPARABLE, help="dataset to prepare")
    prep.add_argument("--data-dir", default=None,
                      help="folder holding the raw files (default: $RDFIA_JAX_DATA or ~/.cache/rdfia-jax/data)")
    prep.add_argument("--seed", type=int, default=0, help="composition seed for mnistm / digits_m (default 0)")
    prep.add_argument("--bsds-dir", default=None,
                      help="folder of the BSDS500 train JPEGs for mnistm (default DATA_DIR/bsds500/train)")
    prep.add_argument("--download", action="store_true",
                      help="mnist/fashion_mnist/mnistm: first download missing IDX files from the official "
                      "mirrors into DATA_DIR (checksum-verified); fails at once without network")
    prep.add_argument("--force", action="store_true", help="rebuild even if a complete prepared copy exists")
    prep.add_argument("--format", choices=("array_record", "npz"), default=None,
                      help="storage format (default: array_record via tensorflow-datasets when installed, else npz)")
    prep.set_defaults(func=_prepare)

    lst = sub.add_parser("list", help="list the datasets, where their raw files go, and what is prepared")
    lst.set_defaults(func=_list)


def _check_args(args: argparse.Namespace) -> None:
    """Validate every option and the output folder before any work starts."""
    from rdfia_jax import paths
    from rdfia_jax.data import store

    if args.seed < 0:
        raise RdfiaError(f"--seed must be >= 0, got {args.seed}")
    if args.download and args.name not in ("mnist", "fashion_mnist", "mnistm"):
        raise RdfiaError(f"--download applies to mnist, fashion_mnist and mnistm, not {args.name}")
    folders = [("--bsds-dir", args.bsds_dir)] + ([] if args.name == "scene15" else [("--data-dir", args.data_dir)])
    for option, value in folders:  # (15 Scene's --data-dir may be its zip file)
        if value is not None and Path(value).expanduser().exists() and not Path(value).expanduser().is_dir():
            raise RdfiaError(f"{option} {value} is a file, not a folder")
    fix = "set RDFIA_JAX_DATA to a writable folder"
    check_writable_dir(store.prepared_root(), "prepared-data folder", fix=fix)
    if args.download:
        if args.data_dir:
            check_writable_dir(args.data_dir, "--data-dir")
        else:
            check_writable_dir(paths.data_dir(), "data folder", fix=fix)


def _prepare(args: argparse.Namespace) -> int:
    from rdfia_jax import data
    from rdfia_jax.data import store

    _check_args(args)
    if args.download:
        from rdfia_jax.data.download import download_idx

        where = download_idx("fashion_mnist" if args.name == "fashion_mnist" else "mnist", args.data_dir)
        print(f"raw files in {where}")
    already = store.is_prepared(args.name, args.seed) and not args.force and args.format in (None, _default_fmt())
    vdir = data.prepare(args.name, data_dir=args.data_dir, seed=args.seed, bsds_dir=args.bsds_dir,
                        force=args.force, fmt=args.format)
    print(f"{args.name}: {'already prepared' if already else 'prepared'} in {vdir}")
    return 0


def _default_fmt() -> str:
    from rdfia_jax.data import store

    return "array_record" if store.have_array_record() else "npz"


def _list(args: argparse.Namespace) -> int:
    from rdfia_jax.data import store
    from rdfia_jax import paths

    print(f"data folder: {paths.data_dir()} (set RDFIA_JAX_DATA or pass --data-dir to change)")
    print(f"prepared format: {_default_fmt()}")
    for row in store.list_datasets():
        name = row["name"] + (f" (seed {row['seed']})" if row["seed"] is not None else "")
        if row["prepared"]:
            state = "prepared"
        elif row["name"] in store.EMBEDDED_SETS:
            state = "embedded, always available"
        else:
            state = "not prepared"
        print(f"  {name:<22} {state:<27} {_WHERE[row['name']]}")
        if row["prepared"]:
            print(f"  {'':<22} {'':<27} at {row['path']}")
    print(f"  {'imagenet_val_25':<22} {'(read directly)':<27} "
          "DIR/imagenet_val_25/imagenet_val_25.npz (X, y; never unpickled)")
    return 0
