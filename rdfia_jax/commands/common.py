"""Options and helpers shared by several subcommands: model and image options, the one image-input
loader, the one random-weights banner, and argument checks that run before any work starts."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rdfia_jax.errors import RdfiaError

MAX_SEED = 2**32 - 1  # numpy's and JAX's seeds alike accept 0 .. 2**32 - 1


# ----------------------------------------------------------------------------- argparse types
# argparse turns an ArgumentTypeError into "rdfia-jax CMD: error: argument --x: MESSAGE" and exit 2.


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its "invalid ... value" fallback
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
seed_int = int_at_least(0, MAX_SEED)


def finite_float(*, positive: bool = False, non_negative: bool = False,
                 at_most: float | None = None) -> Callable[[str], float]:
    """An argparse ``type=``: a finite float, optionally > 0, >= 0 and/or <= ``at_most``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        if non_negative and value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"must be at most {at_most:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_float = finite_float(positive=True)
non_negative_float = finite_float(non_negative=True)


# ----------------------------------------------------------------------------- models


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
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random weights (default 0)")


def load_network(args: argparse.Namespace):
    from rdfia_jax.weights import load_network

    return load_network(args.model, args.weights, random_weights=args.random_weights, seed=args.seed)


def random_weights_note(models: Sequence[str]) -> str:
    """The random-weights warning for ``models`` (ImageNet names say how to get real weights)."""
    from rdfia_jax.models import MODEL_NAMES

    imagenet = [m for m in dict.fromkeys(models) if m in MODEL_NAMES]
    if imagenet:
        how = ("Get real weights with " + " and ".join(f"`rdfia-jax weights fetch {m}`" for m in imagenet)
               + f" (or `rdfia-jax weights convert {imagenet[0]} FILE`).")
    else:
        how = "Drop --random-weights to use the trained network (trained and cached on first use)."
    return f"NOTE: RANDOM WEIGHTS - predictions and maps are meaningless. {how}"


def random_weights_banner(network) -> str | None:
    """The one warning every command prints (to stderr) when it runs random weights; None otherwise."""
    return random_weights_note([network.name]) if network.is_random else None


def print_random_weights_banner(network) -> None:
    import sys

    banner = random_weights_banner(network)
    if banner:
        print(banner, file=sys.stderr)


# ----------------------------------------------------------------------------- image inputs


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="image files, folders of images, or imagenet_val_25.npz")
    p.add_argument("--resize", choices=("resize", "crop"), default="resize",
                   help="'resize' = resize to 224x224 (the practical's default); "
                        "'crop' = resize short side to 256 then center-crop 224 (torchvision evaluation)")
    p.add_argument("--indices", default=None,
                   help="for an .npz input: comma-separated image indices to use (default all)")


@dataclasses.dataclass
class Inputs:
    """A batch of input images with what is known about them.

    Attributes:
      images: uint8 (N, H, W, C): RGB, or one grayscale channel for the digit models.
      labels: int64 (N,), the class of each image where its .npz says it, else -1.
      sources: where each image came from (file path, ``name.npz[i]``).
    """

    images: np.ndarray
    labels: np.ndarray
    sources: list[str]

    @property
    def images01(self) -> np.ndarray:
        """float32 in [0, 1] (torchvision's ToTensor scaling)."""
        from rdfia_jax.data.transforms import to_unit

        return to_unit(self.images)


def check_image_paths(items: Sequence[str]) -> None:
    """Refuse missing input paths before any model is loaded (nothing is decoded here)."""
    missing = [item for item in items if not Path(item).expanduser().exists()]
    if missing:
        raise RdfiaError(f"input not found: {', '.join(missing)}")


def read_inputs(items: Sequence[str], *, size: int = 224, gray: bool = False, resize: str = "resize",
                indices: str | None = None, default_indices: Sequence[int] | None = None,
                class_names: Sequence[str] | None = None) -> Inputs:
    """Images from files, folders and .npz archives as one uint8 batch: the one input loader.

    Args:
      items: image files, folders of images, or .npz files holding ``X`` (uint8 images) and
        optionally ``y`` (labels).
      size: side of the square images files are resized to (.npz images of another size too, RGB).
      gray: the digit models' input: (size, size, 1) grayscale; files are converted by luminance,
        .npz images must be (N, 28, 28[, 1]).
      resize: "resize" or "crop" (see :func:`rdfia_jax.data.transforms.resize_image`).
      indices: ``--indices`` into every .npz (comma-separated).
      default_indices: which .npz images to use without ``indices`` (default all).
      class_names: when given, a labelled .npz image's source says ``(true: NAME)``.
    Raises:
      RdfiaError: a missing or unreadable input, bad indices, or no image at all.
    """
    from rdfia_jax.data.decode import array_to_image, expand_inputs
    from rdfia_jax.data.transforms import load_images, resize_image

    check_image_paths(items)
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[str] = []
    files = []
    for item in items:
        if str(item).lower().endswith(".npz"):
            x, y = _read_npz(str(item), gray)
            for i in parse_indices(indices, len(x), str(item), default_indices):
                img = x[i]
                if not gray and img.shape[:2] != (size, size):
                    img = resize_image(array_to_image(img), resize, size)
                arrays.append(img)
                labels.append(int(y[i]))
                true = f" (true: {class_names[int(y[i])]})" if class_names is not None and y[i] >= 0 else ""
                sources.append(f"{Path(item).name}[{i}]{true}")
        else:
            files.append(item)
    if files:
        found = expand_inputs(files)
        batch = load_images(found, resize, size)
        if gray:  # grayscale digits: luminance of the RGB decode
            batch = np.rint(batch.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
            batch = np.clip(batch, 0, 255).astype(np.uint8)[..., None]
        arrays.extend(batch)
        labels.extend([-1] * len(batch))
        sources.extend(str(p) for p in found)
    if not arrays:
        raise RdfiaError("no images given")
    return Inputs(np.stack(arrays), np.asarray(labels, np.int64), sources)


def _read_npz(path: str, gray: bool) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (uint8) and ``y`` (int64; -1 when absent) of an .npz, read without unpickling anything."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise RdfiaError(f"{path}: expected an array 'X' of uint8 images, found {', '.join(npz.files)}")
            x = npz["X"]
            y = npz["y"] if "y" in npz.files else np.full((len(x),), -1, np.int64)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise RdfiaError(f"{path}: not a readable .npz of arrays X (and y) ({err})") from None
    if x.dtype != np.uint8:
        raise RdfiaError(f"{path}: 'X' must be uint8 images, got {x.dtype}")
    if gray:
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != (28, 28, 1):
            raise RdfiaError(f"{path}: mnist-small needs 28x28 grayscale images (N, 28, 28[, 1]); got {x.shape}")
    elif x.ndim != 4 or x.shape[-1] != 3:
        raise RdfiaError(f"{path}: ImageNet models need RGB images (N, H, W, 3); got {x.shape}")
    if y.shape != x.shape[:1] or not np.issubdtype(y.dtype, np.integer):
        raise RdfiaError(f"{path}: 'y' must be integers of shape ({len(x)},), got {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    classes = 10 if gray else 1000  # digits, or ImageNet
    if y.size and (y.max() >= classes or y.min() < -1):
        raise RdfiaError(f"{path}: labels 'y' must be classes 0..{classes - 1}")
    return x, y


def load_inputs(args: argparse.Namespace, size: int = 224) -> tuple[np.ndarray, list[str]]:
    """``args.images`` (with ``--resize`` / ``--indices``) as one uint8 (N, size, size, 3) RGB batch and
    a label per image; labelled .npz images say their ImageNet class (see :func:`read_inputs`)."""
    from rdfia_jax.imagenet import class_names

    inputs = read_inputs(args.images, size=size, resize=getattr(args, "resize", "resize"),
                         indices=getattr(args, "indices", None), class_names=class_names())
    return inputs.images, inputs.sources


def parse_indices(spec: str | None, n: int, source: str, default: Sequence[int] | None = None) -> list[int]:
    """``--indices "1,5,7"`` -> validated indices into ``n`` images (``default``: all, or those given)."""
    if spec is None:
        return [i for i in (range(n) if default is None else default) if i < n]
    try:
        idx = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise RdfiaError(f"--indices must be comma-separated integers, got {spec!r}") from None
    if not idx:
        raise RdfiaError(f"--indices is empty ({spec!r}); give comma-separated integers")
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise RdfiaError(f"--indices {bad[0]} out of range for {source} ({n} images)")
    return idx


def check_indices_syntax(spec: str | None) -> None:
    """Refuse a malformed ``--indices`` before any work (ranges are checked once the inputs are read)."""
    if spec is not None:
        parse_indices(spec, 1 << 62, "the inputs")
