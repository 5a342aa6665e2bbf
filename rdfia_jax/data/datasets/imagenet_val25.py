"""The 25 ImageNet validation images of the visualization practical (an npz, never unpickled)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rdfia_jax import paths
from rdfia_jax.errors import RdfiaError
from rdfia_jax.imagenet import class_names


def load_imagenet_val25(path=None):
    """The 25 ImageNet validation images of the visualization practical.

    The npz is read with ``allow_pickle=False``: only ``X`` and ``y`` are used; the file's pickled
    ``label_map`` is never unpickled (names come from the shipped class index instead).

    Args:
      path: ``imagenet_val_25.npz``, or a folder holding it (default ``$RDFIA_JAX_DATA/imagenet_val_25``).
    Returns:
      ``(images uint8 (25, 224, 224, 3) RGB, labels int64 (25,), names)`` where ``names`` are the
      1,000 ImageNet class names (:func:`rdfia_jax.imagenet.class_names`): image i is ``names[labels[i]]``.
    """
    base = Path(path).expanduser() if path is not None else paths.data_dir() / "imagenet_val_25"
    candidates = [base] if base.suffix == ".npz" else [base / "imagenet_val_25.npz",
                                                       base / "imagenet_val_25" / "imagenet_val_25.npz"]
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        raise RdfiaError(
            f"imagenet_val_25.npz not found (looked at {', '.join(map(str, candidates))}); it is the file "
            "distributed with the practical (keys X uint8 (25,224,224,3), y int64 (25,)). Pass its path, "
            "or use your own images (a folder of .jpg/.png)."
        )
    try:
        with np.load(file, allow_pickle=False) as npz:
            if "X" not in npz.files or "y" not in npz.files:
                raise RdfiaError(f"{file}: expected arrays 'X' and 'y', found {', '.join(npz.files)}")
            images, labels = npz["X"], npz["y"]
    except ValueError as err:  # X or y itself is an object array
        raise RdfiaError(f"{file}: 'X'/'y' are pickled objects, refused for safety ({err})") from err
    except (OSError, zipfile.BadZipFile) as err:
        raise RdfiaError(f"{file}: not a readable .npz file ({err})") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise RdfiaError(f"{file}: 'X' must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise RdfiaError(f"{file}: 'y' must be integers of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= 1000:
        raise RdfiaError(f"{file}: labels must be ImageNet classes 0..999")
    return images, labels, list(class_names())
