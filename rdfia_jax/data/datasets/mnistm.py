"""MNIST-M: MNIST digits blended with crops of the BSDS500 train photos, seeded (byte-identical per seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax import paths
from rdfia_jax.data.base import SPLITS, ArrayDataset, cached, check_split
from rdfia_jax.data.datasets.mnist import load_mnist
from rdfia_jax.data.decode import decode
from rdfia_jax.errors import RdfiaError

BSDS_URL = ("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html "
            "(BSR_bsds500.tgz; the 200 images of BSR/BSDS500/data/images/train)")


def compose_m(digits: np.ndarray, backgrounds: Sequence[np.ndarray], rng: np.random.Generator, *,
              threshold: int = 0) -> np.ndarray:
    """Blend digits with random background crops, as the practical builds MNIST-M.

    For each digit i: three uniforms ``u = rng.random((N, 3))[i]`` pick a background
    b = floor(u0 * len(backgrounds)) and a crop corner (r, c) uniform in [0, H_b - 28) x [0, W_b - 28)
    (upper bound excluded, as ``np.random.randint`` in the practical); the digit is binarized (x > 0 -> 255), made RGB, and the output is
    ``|crop - digit|`` computed in int16 (uint8 subtraction would wrap around), stored as uint8.

    Args:
      digits: uint8 (N, 28, 28) or (N, 28, 28, 1).
      backgrounds: RGB uint8 images (H, W, 3), each larger than 28x28.
      rng: the random generator (consumed in a fixed order, so equal seeds give equal bytes).
      threshold: a pixel is digit when ``x > threshold`` (0 for MNIST as in the practical; the
        blurry upsampled sklearn digits use 127, else every digit becomes a blob).
    Returns:
      uint8 (N, 28, 28, 3).
    """
    digits = digits.reshape(digits.shape[0], 28, 28)
    n, size = digits.shape[0], 28
    heights = np.array([b.shape[0] for b in backgrounds])
    widths = np.array([b.shape[1] for b in backgrounds])
    # Three uniforms per image, drawn row by row, so image i's draws do not depend on N (the first k
    # images of a split are the same whatever N); floor(u * k) is uniform on [0, k) like randint(0, k).
    u = rng.random((n, 3))
    which = np.minimum(np.floor(u[:, 0] * len(backgrounds)).astype(np.int64), len(backgrounds) - 1)
    rows = np.floor(u[:, 1] * (heights[which] - size)).astype(np.int64)
    cols = np.floor(u[:, 2] * (widths[which] - size)).astype(np.int64)
    crops = np.empty((n, size, size, 3), np.uint8)
    for i, (k, r, c) in enumerate(zip(which.tolist(), rows.tolist(), cols.tolist())):
        crops[i] = backgrounds[k][r: r + size, c: c + size]
    # |crop - d| with d in {0, 255} is crop where d = 0 and 255 - crop = crop ^ 255 where d = 255:
    # exactly the signed-type result, computed in uint8 without temporaries (tests check the identity).
    flip = np.where(digits > threshold, np.uint8(255), np.uint8(0))
    np.bitwise_xor(crops, flip[..., None], out=crops)
    return crops


def split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split)]))


def _bsds_dirs(data_dir, bsds_dir) -> list[Path]:
    if bsds_dir is not None:
        return [Path(bsds_dir).expanduser()]
    root = Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()
    return [root / "bsds500" / "train", root / "BSR" / "BSDS500" / "data" / "images" / "train",
            root / "bsds500"]


def load_bsds_backgrounds(data_dir=None, bsds_dir=None) -> tuple[list[np.ndarray], Path]:
    """The BSDS500 train JPEGs (sorted by file name), decoded as RGB uint8.

    Raises:
      RdfiaError: no folder with JPEGs found, or a JPEG cannot be decoded.
    """
    dirs = _bsds_dirs(data_dir, bsds_dir)
    for d in dirs:
        files = sorted(d.glob("*.jpg")) if d.is_dir() else []
        if files:
            break
    else:
        raise RdfiaError(
            f"BSDS500 train images not found (looked for *.jpg in {', '.join(map(str, dirs))}); MNIST-M is "
            f"built from them. Put the 200 train JPEGs in DIR/bsds500/train/ and pass --data-dir DIR "
            f"(or --bsds-dir FOLDER); they come from {BSDS_URL}"
        )
    images = []
    for f in files:
        arr = decode(f, exif=False)  # as the practical reads them (no EXIF rotation); errors name the file
        if arr.shape[0] <= 28 or arr.shape[1] <= 28:
            raise RdfiaError(f"{f}: image {arr.shape[1]}x{arr.shape[0]} is too small for 28x28 crops")
        images.append(arr)
    return images, d


def load_mnistm(split: str, data_dir=None, *, seed: int = 0, bsds_dir=None) -> ArrayDataset:
    """MNIST-M built from MNIST and the BSDS500 train images (see :func:`compose_m`).

    Image i comes from MNIST image i of the same split; train and test draw from independent
    streams of ``seed``; the same seed, files and Pillow JPEG decoder give byte-identical images.
    """
    check_split(split)
    mnist = load_mnist(split, data_dir)
    backgrounds, bdir = load_bsds_backgrounds(data_dir, bsds_dir)
    key = ("mnistm", split, seed, id(mnist), str(bdir), len(backgrounds))

    def build():
        images = compose_m(mnist.images, backgrounds, split_rng(seed, split))
        return ArrayDataset(images, np.array(mnist.labels), "mnistm", split,
                            f"MNIST-M {split} (MNIST + BSDS500 crops, seed {seed})", True)

    return cached(key, build)
