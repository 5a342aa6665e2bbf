"""Input normalization of the ImageNet models, stored with their weights.

torchvision weights expect RGB in [0, 1] standardized per channel; the original Caffe/Keras VGG16
weights expect BGR pixels in 0-255 minus the channel mean, no std. A :class:`Preprocessing` travels
with every :class:`rdfia_jax.models.Network` so the right one is always applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Maps RGB images in [0, 1] to a model's input space and back.

    Attributes:
      name: "torchvision" or "caffe".
      mean: per-channel mean, in the model's channel order and pixel units.
      std: per-channel standard deviation (ones for Caffe).
      scale: 1.0 when the model takes pixels in [0, 1], 255.0 for 0-255 pixels.
      bgr: whether the model takes channels in BGR order.
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0
    bgr: bool = False

    def normalize(self, images01: Any) -> jnp.ndarray:
        """RGB float images in [0, 1], NHWC -> model input (float32)."""
        x = jnp.asarray(images01, jnp.float32)
        if self.bgr:
            x = x[..., ::-1]
        mean, std = self._channel_stats(x.ndim)
        return (x * jnp.float32(self.scale) - mean) / std

    def denormalize(self, x: Any) -> jnp.ndarray:
        """Model input -> RGB float images in [0, 1] (not clipped)."""
        x = jnp.asarray(x, jnp.float32)
        mean, std = self._channel_stats(x.ndim)
        x = (x * std + mean) / jnp.float32(self.scale)
        return x[..., ::-1] if self.bgr else x

    def _channel_stats(self, ndim: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        # explicit broadcast shape: rank promotion stays strict in tests
        shape = (1,) * (ndim - 1) + (len(self.mean),)
        return (jnp.asarray(self.mean, jnp.float32).reshape(shape),
                jnp.asarray(self.std, jnp.float32).reshape(shape))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (low, high) of valid pixels ([0, 1] RGB) in model space, shape (3,) each."""
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return (0.0 - mean) / std, (np.float32(self.scale) - mean) / std

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(name=str(d["name"]), mean=tuple(float(v) for v in d["mean"]),
                   std=tuple(float(v) for v in d["std"]), scale=float(d["scale"]), bgr=bool(d["bgr"]))


TORCHVISION = Preprocessing("torchvision", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, False)
# Caffe VGG16 (Keras .h5): BGR, 0-255, mean (103.939, 116.779, 123.68) in B, G, R order, no std.
CAFFE = Preprocessing("caffe", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 255.0, True)
