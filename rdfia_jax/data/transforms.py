"""The one resize / crop module (torchvision's transforms on PIL images) and the digit-set normalizations.

* VGG / ImageNet: ``Resize((224, 224))`` (``"resize"``, the practical's default) or ``Resize(256)`` +
  ``CenterCrop(224)`` (``"crop"``, torchvision's evaluation), PIL bilinear on uint8 images, so results
  equal torchvision's PIL path. Mean/std normalization is :class:`rdfia_jax.preprocess.Preprocessing`'s job.
* DANN: pixels in [0, 1], standardized with the MNIST-train mean/std (one scalar), 3 channels.
* GANs: 28x28 resized to 32x32 as torchvision ``Resize(32)`` does on PIL images, then [-1, 1].
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from rdfia_jax.data.datasets.mnist import MNIST_TRAIN_MEAN, MNIST_TRAIN_STD
from rdfia_jax.data.decode import array_to_image, open_image, to_rgb
from rdfia_jax.errors import RdfiaError

RESIZE_MODES = ("resize", "crop")


def resize_image(img, mode: str = "resize", size: int = 224, resize_to: int = 256) -> np.ndarray:
    """torchvision's evaluation transforms on a PIL image, returning uint8 (size, size, 3).

    Args:
      img: a Pillow image (converted to RGB by :func:`rdfia_jax.data.decode.to_rgb` if needed).
      mode: "resize" = ``Resize((size, size))``; "crop" = ``Resize(resize_to)`` (short side) then
        ``CenterCrop(size)``.
      size: output side.
      resize_to: short side before the center crop.
    """
    if mode not in RESIZE_MODES:
        raise RdfiaError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
    if img.mode != "RGB":
        img = to_rgb(img)
    return np.asarray(_resize_crop(img, mode, size, resize_to), dtype=np.uint8)


def _resize_crop(img, mode: str, size: int, resize_to: int):
    """The geometry of :func:`resize_image` on a Pillow image of any mode (bilinear, then the crop)."""
    from PIL import Image

    if mode == "resize":
        return img.resize((size, size), Image.BILINEAR)
    w, h = img.size
    # torchvision Resize(int): short side -> resize_to, long side int(resize_to * long / short)
    if w <= h:
        nw, nh = resize_to, int(resize_to * h / w)
    else:
        nw, nh = int(resize_to * w / h), resize_to
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def resize_array(image: np.ndarray, mode: str = "resize", size: int = 224, resize_to: int | None = None) -> np.ndarray:
    """One uint8 HxW / HxWx1 / HxWx3 array -> uint8 (size, size, 3) (:func:`resize_image`).

    ``resize_to`` defaults to ``round(size * 256 / 224)`` (256 for 224, torchvision's ratio)."""
    resize_to = round(size * 256 / 224) if resize_to is None else resize_to
    arr = np.asarray(image)
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 1)):
        # A gray image resized as one channel, then replicated: equal to resizing its RGB copy
        # (bilinear works per channel), in a third of the time (15 Scene is all gray).
        if mode not in RESIZE_MODES:
            raise RdfiaError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")
        from PIL import Image

        small = np.asarray(_resize_crop(Image.fromarray(arr.reshape(arr.shape[:2]), mode="L"), mode, size, resize_to),
                           dtype=np.uint8)
        return np.repeat(small[..., None], 3, axis=-1)
    return resize_image(array_to_image(arr), mode, size, resize_to=resize_to)


def prepare_images(images: Sequence[np.ndarray], mode: str = "resize", size: int = 224) -> np.ndarray:
    """uint8 images of any sizes (gray or RGB) -> one uint8 (N, size, size, 3) batch (:func:`resize_array`)."""
    if mode not in RESIZE_MODES:
        raise RdfiaError(f"unknown preprocessing {mode!r}; choose one of {RESIZE_MODES}")
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = resize_array(img, mode, size)
    return out


def load_images(paths: Iterable[str | os.PathLike], mode: str = "resize", size: int = 224) -> np.ndarray:
    """Decode (:func:`rdfia_jax.data.decode.open_image`) and resize image files into one uint8 NHWC batch."""
    arrays = [resize_image(open_image(p), mode, size) for p in paths]
    if not arrays:
        raise RdfiaError("no images given")
    return np.stack(arrays)


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (torchvision's ``ToTensor`` scaling), for the ImageNet models."""
    return np.asarray(images, np.float32) / np.float32(255.0)


def gray_to_rgb(images: np.ndarray) -> np.ndarray:
    """Replicate a 1-channel NHWC (or HWC) array to 3 channels; 3-channel input is returned as is."""
    if images.shape[-1] == 3:
        return images
    if images.shape[-1] != 1:
        raise ValueError(f"expected 1 or 3 channels, got shape {images.shape}")
    return np.repeat(images, 3, axis=-1)


def dann_normalize(images: np.ndarray, mean: float = MNIST_TRAIN_MEAN, std: float = MNIST_TRAIN_STD) -> np.ndarray:
    """The DANN input: uint8 NHWC (1 or 3 channels) -> float32 (N, H, W, 3), ``(x/255 - mean) / std``."""
    x = gray_to_rgb(images.astype(np.float32) * np.float32(1.0 / 255.0))
    return (x - np.float32(mean)) / np.float32(std)


def resize_pil(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 NHWC images to ``size`` = (H, W) with PIL bilinear, as torchvision does on PIL images.

    (PIL's bilinear filter anti-aliases when shrinking, like torchvision's ``antialias=True``.)
    """
    from PIL import Image

    n, _, _, c = images.shape
    out = np.empty((n, size[0], size[1], c), np.uint8)
    for i in range(n):
        img = images[i, :, :, 0] if c == 1 else images[i]
        res = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
        out[i] = res.reshape(size[0], size[1], c)
    return out


def gan_resize32(images: np.ndarray) -> np.ndarray:
    """28x28 uint8 NHWC -> 32x32 uint8 NHWC (torchvision ``Resize(32)`` on PIL images). Do it once per dataset."""
    return resize_pil(images, (32, 32))


def gan_normalize(images32: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``)."""
    return (images32.astype(np.float32) * np.float32(1.0 / 255.0) - np.float32(0.5)) / np.float32(0.5)


def imagenet_resize(image: np.ndarray, mode: str = "resize") -> np.ndarray:
    """One uint8 HWC (or HW) image -> uint8 (224, 224, 3) RGB; ``mode`` "resize", or "center_crop" / "crop"."""
    if mode not in ("resize", "center_crop", "crop"):
        raise RdfiaError(f"unknown resize mode {mode!r}; choose 'resize' or 'center_crop'")
    return resize_array(image, "resize" if mode == "resize" else "crop", 224)
