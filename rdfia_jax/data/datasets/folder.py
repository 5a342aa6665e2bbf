"""A user's image file or folder of images, decoded by the one decoder (:mod:`rdfia_jax.data.decode`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdfia_jax.data.decode import IMAGE_EXTENSIONS, decode, list_images
from rdfia_jax.errors import RdfiaError


def load_image_folder(path, *, rgb: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """Load a user's image file, or every image file of a folder (sorted by name, not recursive).

    Args:
      path: an image file or a folder.
      rgb: convert grayscale to 3 channels (what ImageNet models take).
    Returns:
      ``(images, names)``: uint8 HxWx3 (or HxWx1 when ``rgb=False`` and gray) arrays and file names.
    """
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = list_images(path)
        if not files:
            raise RdfiaError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    else:
        raise RdfiaError(f"{path}: no such image file or folder")
    images = []
    for f in files:
        images.append(decode(f, keep_gray=not rgb))
    return images, [f.name for f in files]
