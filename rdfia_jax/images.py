"""Image decoding and resizing with Pillow, matching torchvision's transforms.

torchvision's ``pil_loader`` + ``Resize`` + ``CenterCrop`` + ``ToTensor`` are reproduced on uint8 PIL
images (so results equal torchvision's PIL path), with the cases a plain ``convert("RGB")`` gets
wrong handled explicitly: EXIF orientation is applied, and 16-bit images are scaled to 8 bits
rather than clipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rdfia_jax.errors import RdfiaError

RESIZE_MODES = ("resize", "crop")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB, applying EXIF orientation first.

    Grayscale is replicated, alpha dropped (as torchvision's loader does), palette images expanded,
    and 16/32-bit integer images rescaled from their full range (65535 -> 255) instead of clipped.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(np.rint(arr / peak * 255.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr8, mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(arr * 255.0 if arr.max(initial=0) <= 1.0 else arr), 0, 255)
                              .astype(np.uint8), mode="L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file as 8-bit RGB; a clear error names an unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise RdfiaError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise RdfiaError(f"cannot read image {path}: {err}") from None


def resize_image(img: Image.Image, mode: str = "resize", size: int = 224, resize_to: int = 256) -> np.ndarray:
    """torchvision's evaluation transforms on a PIL image, returning uint8 (size, size, 3).

    Args:
      img: an RGB PIL image.
      mode: "resize" = ``Resize((size, size))`` (the practical's default); "crop" =
        ``Resize(resize_to)`` (short side) then ``CenterCrop(size)`` (torchvision's evaluation).
      size: output side.
      resize_to: short side before the center crop.
    Returns:
      uint8 array (size, size, 3).
    """
    if mode not in RESIZE_MODES:
        raise RdfiaError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
    if img.mode != "RGB":
        img = to_rgb(img)
    if mode == "resize":
        out = img.resize((size, size), Image.BILINEAR)
    else:
        w, h = img.size
        # torchvision Resize(int): short side -> resize_to, long side int(resize_to * long / short)
        if w <= h:
            nw, nh = resize_to, int(resize_to * h / w)
        else:
            nw, nh = int(resize_to * w / h), resize_to
        img = img.resize((nw, nh), Image.BILINEAR)
        top = int(round((nh - size) / 2.0))
        left = int(round((nw - size) / 2.0))
        out = img.crop((left, top, left + size, top + size))
    return np.asarray(out, dtype=np.uint8)


def load_images(paths: Iterable[str | os.PathLike], mode: str = "resize", size: int = 224) -> np.ndarray:
    """Load, convert and resize image files into one uint8 NHWC RGB batch."""
    arrays = [resize_image(open_image(p), mode, size) for p in paths]
    if not arrays:
        raise RdfiaError("no images given")
    return np.stack(arrays)


def array_to_image(arr: np.ndarray) -> Image.Image:
    """uint8 HxW, HxWx1 or HxWx3 array -> RGB PIL image (grayscale replicated to 3 channels)."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise RdfiaError(f"expected a uint8 image array, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return Image.fromarray(arr, mode="RGB")
    raise RdfiaError(f"expected an image shaped (H, W), (H, W, 1) or (H, W, 3); got {arr.shape}")


def to_unit(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (torchvision's ToTensor scaling)."""
    return np.asarray(images_uint8, np.float32) / np.float32(255.0)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RdfiaError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Command-line image arguments: files, or folders (their images)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        out.extend(list_images(p) if p.is_dir() else [p])
    if not out:
        raise RdfiaError(f"no images found in {', '.join(inputs)}")
    return out
