"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax.errors import RdfiaError


def add_model_options(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """MODEL positional (or --model when a default exists), --weights and --random-weights."""
    from rdfia_jax.models import MODEL_NAMES

    if default is None:
        p.add_argument("model", metavar="MODEL", help=f"model: one of {', '.join(MODEL_NAMES)}")
    else:
        p.add_argument("--model", default=default, help=f"model: one of {', '.join(MODEL_NAMES)} (default {default})")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="converted weights file (default: the converted file for MODEL in the weights "
                        "folder, $RDFIA_JAX_WEIGHTS; see `rdfia-jax weights --help`)")
    p.add_argument("--random-weights", action="store_true",
                   help="use randomly initialized weights (outputs are meaningless; for trying the pipeline)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")


def load_network(args: argparse.Namespace):
    from rdfia_jax.weights import load_network

    return load_network(args.model, args.weights, random_weights=args.random_weights, seed=args.seed)


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="image files, folders of images, or imagenet_val_25.npz")
    p.add_argument("--resize", choices=("resize", "crop"), default="resize",
                   help="'resize' = resize to 224x224 (the practical's default); "
                        "'crop' = resize short side to 256 then center-crop 224 (torchvision evaluation)")
    p.add_argument("--indices", default=None,
                   help="for an .npz input: comma-separated image indices to use (default all)")


def load_inputs(args: argparse.Namespace, size: int = 224) -> tuple[np.ndarray, list[str]]:
    """Images from files/folders/npz as one uint8 (N, size, size, 3) batch, with a label per image."""
    from rdfia_jax.data.decode import array_to_image, expand_inputs
    from rdfia_jax.data.transforms import load_images, resize_image

    arrays: list[np.ndarray] = []
    sources: list[str] = []
    files = []
    for item in args.images:
        if item.lower().endswith(".npz"):
            from rdfia_jax.data import load_imagenet_val25

            images, labels, names = load_imagenet_val25(item)
            idx = parse_indices(args.indices, len(images), item)
            for i in idx:
                img = images[i]
                if img.shape[:2] != (size, size):
                    img = resize_image(array_to_image(img), args.resize, size)
                arrays.append(img)
                sources.append(f"{Path(item).name}[{i}] (true: {names[int(labels[i])]})")
        else:
            files.append(item)
    if files:
        paths = expand_inputs(files)
        arrays.extend(load_images(paths, args.resize, size))
        sources.extend(str(p) for p in paths)
    if not arrays:
        raise RdfiaError("no images given")
    return np.stack(arrays), sources


def parse_indices(spec: str | None, n: int, source: str, default: Sequence[int] | None = None) -> list[int]:
    """``--indices "1,5,7"`` -> validated indices into ``n`` images (``default``: all, or those given)."""
    if spec is None:
        return [i for i in (range(n) if default is None else default) if i < n]
    try:
        idx = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise RdfiaError(f"--indices must be comma-separated integers, got {spec!r}") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise RdfiaError(f"--indices {bad[0]} out of range for {source} ({n} images)")
    return idx


def random_weights_banner(network) -> str | None:
    if network.is_random:
        return ("NOTE: RANDOM WEIGHTS - predictions and maps are meaningless. Get real weights with "
                f"`rdfia-jax weights fetch {network.name}` (or `rdfia-jax weights convert {network.name} FILE`).")
    return None
