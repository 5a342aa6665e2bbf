"""A small CNN for 28x28 digits, with the same ``(logits, acts)`` contract as the ImageNet models.

Used as the project's reference classifier on MNIST (:mod:`rdfia_jax.classifier`): it scores GAN
samples, serves as the target of the attacks, and lets the visualization methods be checked on a
network trained on real data when no ImageNet weights are available.

Architecture (about 0.42 M parameters)::

    conv1 3x3 1->32 (same) -> relu1 -> pool1 (2x2) -> conv2 3x3 32->64 (same) -> relu2 -> pool2 (2x2)
    -> flatten (H, W, C order) -> fc1 3136->128 -> relu3 (the "features") -> fc2 128->10 (logits)
"""

from __future__ import annotations

from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from rdfia_jax.errors import RdfiaError

SMALL_NAME = "mnist-small"


def _max_pool2(x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SmallCNN(nnx.Module):
    """LeNet-style CNN for (N, 28, 28, C) inputs in [0, 1].

    Args:
      rngs: parameter RNG.
      num_classes: number of outputs.
      in_channels: 1 for grayscale digits, 3 for MNIST-M.
      width: channel multiplier (1.0 = 32/64 conv channels, 128 hidden units).
    """

    name = SMALL_NAME
    image_size = 28

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 10, in_channels: int = 1, width: float = 1.0):
        c1, c2, h = (max(1, int(round(c * width))) for c in (32, 64, 128))
        self.in_channels = in_channels
        self.conv1 = nnx.Conv(in_channels, c1, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="SAME", rngs=rngs)
        self.fc1 = nnx.Linear(7 * 7 * c2, h, rngs=rngs)
        self.fc2 = nnx.Linear(h, num_classes, rngs=rngs)
        self.activation_names = ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1", "relu3", "fc2")

    def __call__(self, x: jnp.ndarray, capture: str | Iterable[str] = (), dropout_key: jax.Array | None = None,
                 perturb: Mapping[str, jnp.ndarray] | None = None):
        """Forward pass.

        Args:
          x: float (N, 28, 28, in_channels), pixels in [0, 1].
          capture: names of intermediate activations to return (or "all").
          dropout_key: unused (the network has no dropout); accepted for the common contract.
          perturb: {name: array} added to those activations (zeros change nothing); differentiating
            with respect to it gives the gradient at an intermediate layer (Grad-CAM).
        Returns:
          ``(logits (N, num_classes), {name: activation})``.
        """
        del dropout_key
        if x.ndim != 4 or tuple(x.shape[1:]) != (28, 28, self.in_channels):
            raise RdfiaError(f"{self.name} expects images shaped (N, 28, 28, {self.in_channels}); got shape {tuple(x.shape)}")
        if isinstance(capture, str):
            capture = self.activation_names if capture == "all" else (capture,)
        capture = tuple(capture)
        perturb = dict(perturb or {})
        unknown = [c for c in (*capture, *perturb) if c not in self.activation_names]
        if unknown:
            raise RdfiaError(f"unknown layer {unknown[0]!r} for model {self.name!r}; "
                             f"available layers: {', '.join(self.activation_names)}")
        acts: dict[str, jnp.ndarray] = {}

        def tap(name, value):
            if name in perturb:
                value = value + perturb[name]
            if name in capture:
                acts[name] = value
            return value

        x = tap("conv1", self.conv1(x))
        x = tap("relu1", jax.nn.relu(x))
        x = tap("pool1", _max_pool2(x))
        x = tap("conv2", self.conv2(x))
        x = tap("relu2", jax.nn.relu(x))
        x = tap("pool2", _max_pool2(x))
        x = x.reshape(x.shape[0], -1)
        x = tap("fc1", self.fc1(x))
        x = tap("relu3", jax.nn.relu(x))
        logits = tap("fc2", self.fc2(x))
        return logits, acts
