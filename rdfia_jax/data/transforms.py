"""The practical's input normalizations, applied to uint8 NHWC batches (numpy, float32 out).

* DANN: pixels in [0, 1], standardized with the MNIST-train mean/std (one scalar), 3 channels.
* GANs: 28x28 resized to 32x32 as torchvision ``Resize(32)`` does on PIL images (PIL bilinear,
  rounded to uint8), then scaled to [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``).
* VGG: ``Resize((224, 224))`` or ``Resize(256)`` + ``CenterCrop(224)`` (PIL bilinear, as torchvision
  on PIL images); ImageNet mean/std normalization itself is :mod:`rdfia_jax.preprocess`'s job.
"""

from __future__ import annotations

import numpy as np

from rdfia_jax.data.digits import MNIST_TRAIN_MEAN, MNIST_TRAIN_STD
from rdfia_jax.errors import RdfiaError


def to_float01(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return images.astype(np.float32) * np.float32(1.0 / 255.0)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """Replicate a 1-channel NHWC (or HWC) array to 3 channels; 3-channel input is returned as is."""
    if images.shape[-1] == 3:
        return images
    if images.shape[-1] != 1:
        raise ValueError(f"expected 1 or 3 channels, got shape {images.shape}")
    return np.repeat(images, 3, axis=-1)


def dann_normalize(images: np.ndarray, mean: float = MNIST_TRAIN_MEAN, std: float = MNIST_TRAIN_STD) -> np.ndarray:
    """The DANN input: uint8 NHWC (1 or 3 channels) -> float32 (N, H, W, 3), ``(x/255 - mean) / std``."""
    x = to_rgb(to_float01(images))
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
    return (to_float01(images32) - np.float32(0.5)) / np.float32(0.5)


def imagenet_resize(image: np.ndarray, mode: str = "resize") -> np.ndarray:
    """One uint8 HWC (or HW) image -> uint8 (224, 224, 3) RGB, via :func:`rdfia_jax.images.resize_image`.

    Args:
      image: grayscale images become 3-channel (as PIL ``convert("RGB")``).
      mode: ``"resize"`` = ``Resize((224, 224))`` (the practical's default); ``"center_crop"`` (or
        ``"crop"``) = ``Resize(256)`` (short side) then ``CenterCrop(224)`` (torchvision's evaluation).
    """
    from rdfia_jax.images import array_to_image, resize_image

    if mode not in ("resize", "center_crop", "crop"):
        raise RdfiaError(f"unknown resize mode {mode!r}; choose 'resize' or 'center_crop'")
    return resize_image(array_to_image(image), "resize" if mode == "resize" else "crop", 224)
