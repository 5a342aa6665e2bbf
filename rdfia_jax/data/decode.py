"""The one image decoder: file or bytes -> 8-bit RGB (or grayscale) pixels, with the cases a plain
``convert("RGB")`` gets wrong handled explicitly.

* EXIF orientation is applied (a phone photo comes out upright), unless ``exif=False``: datasets
  are read as torchvision's ``ImageFolder`` reads them (no EXIF), so their numbers match the
  practical's (one 15 Scene training image, kitchen/image_0172.jpg, carries an EXIF rotation).
* 16-bit integer images (``I;16*``, and ``I`` holding values above 255) are scaled from their full
  range (65535 -> 255), not clipped; float images (``F``) in [0, 1] are scaled by 255, others are
  taken as 0-255 values (clipped).
* Alpha is dropped (``RGBA``, ``LA``, palette transparency), as torchvision's ``pil_loader`` does;
  ``P``, ``CMYK``, ``YCbCr``, ... are converted by Pillow.
* Size guard: an image whose header declares more than ``max_pixels`` pixels raises
  :class:`RdfiaError` (naming the file, its size and the limit) before any pixel is decoded; Pillow's
  ``DecompressionBombError`` never escapes.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax.errors import RdfiaError

# The one list of image file extensions (folders of images, 15 Scene, evaluation sets).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Pillow's own warning threshold (~9459 x 9459 pixels; ~256 MiB as RGB): larger images are refused.
MAX_PIXELS = 89_478_485
# Modes decoded as one channel when the caller keeps grayscale.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def is_image_file(path: Path) -> bool:
    """A file whose extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone, bypassing Pillow's bomb check (which raises before
    reporting the size); None when no Pillow plugin recognizes the header."""
    from PIL import Image

    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            if accept is not None and not accept(data[:16]):
                continue
            return tuple(factory(io.BytesIO(data), None).size)  # type: ignore[return-value]
        except Exception:  # not this format
            continue
    return None


def _too_large(name: str, size: tuple[int, int] | None, max_pixels: int, pixels: str = "") -> RdfiaError:
    dims = f"{size[0]}x{size[1]} ({size[0] * size[1]:,} pixels)" if size else pixels or "too many pixels"
    return RdfiaError(f"{name}: image is {dims}, above the limit of {max_pixels:,} pixels; refused before "
                      "decoding (downscale it first)")


def _open_checked(data: bytes, name: str, max_pixels: int):
    """``Image.open`` (header only) with the size guard; the caller loads the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # our guard replaces Pillow's DecompressionBombWarning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise _too_large(name, _header_size(data), max_pixels, str(err).split(",")[0]) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise RdfiaError(f"{name}: cannot decode this image ({err}); remove or replace the file") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise _too_large(name, (w, h), max_pixels)
    return img


def _to_8bit(img, exif: bool = True):
    """8-bit Pillow image (EXIF-upright when ``exif``): ``L`` for gray sources (16-bit / float scaled), else RGB."""
    from PIL import Image, ImageOps

    if exif:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(arr / peak * 255.0), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("1", "L", "LA"):
        return img.convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _read(source: str | os.PathLike | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<bytes>"
    path = Path(source)
    if not path.is_file():
        raise RdfiaError(f"image not found: {path}")
    try:
        return path.read_bytes(), name or str(path)
    except OSError as err:
        raise RdfiaError(f"cannot read image {path}: {err.strerror or err}") from None


def _decode_8bit(source: str | os.PathLike | bytes, name: str | None, exif: bool, max_pixels: int):
    """Read and decode ``source`` to an 8-bit "L" or "RGB" Pillow image (see :func:`_to_8bit`);
    RdfiaError naming ``name`` (default the path) when it cannot be read or decoded."""
    data, name = _read(source, name)
    with _open_checked(data, name, max_pixels) as img:
        try:
            img.load()
            return _to_8bit(img, exif)
        except (OSError, ValueError, SyntaxError) as err:
            raise RdfiaError(f"{name}: cannot decode this image ({err}); remove or replace the file") from None


def open_image(source: str | os.PathLike | bytes, *, name: str | None = None, exif: bool = True,
               max_pixels: int = MAX_PIXELS):
    """Decode a file (or its bytes) to an 8-bit RGB Pillow image (EXIF-upright, 16-bit/float scaled).

    Raises:
      RdfiaError: missing, unreadable or undecodable file, or more than ``max_pixels`` pixels
        (the message names ``name``, default the path).
    """
    out = _decode_8bit(source, name, exif, max_pixels)
    return out.convert("RGB") if out.mode != "RGB" else out


def decode(source: str | os.PathLike | bytes, *, name: str | None = None, keep_gray: bool = False,
           exif: bool = True, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file (or its bytes) to a uint8 array: HxWx3 RGB, or HxWx1 for a grayscale source
    when ``keep_gray`` (15 Scene stores its gray photos that way); ``exif=False`` for datasets."""
    out = _decode_8bit(source, name, exif, max_pixels)
    if out.mode == "L":
        arr = np.asarray(out)[..., None]
        return np.ascontiguousarray(arr if keep_gray else np.repeat(arr, 3, axis=-1), dtype=np.uint8)
    return np.ascontiguousarray(np.asarray(out.convert("RGB")), dtype=np.uint8)


def to_rgb(img):
    """Any Pillow image -> 8-bit RGB with the rules above (EXIF, 16-bit and float scaling, alpha dropped)."""
    out = _to_8bit(img)
    return out.convert("RGB") if out.mode != "RGB" else out


def array_to_image(arr: np.ndarray):
    """uint8 HxW, HxWx1 or HxWx3 array -> RGB Pillow image (grayscale replicated to 3 channels)."""
    from PIL import Image

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


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RdfiaError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Command-line image arguments: files, or folders (their images)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        out.extend(list_images(p) if p.is_dir() else [p])
    if not out:
        raise RdfiaError(f"no images found in {', '.join(map(str, inputs))}")
    return out
