"""Pieces every visualization method shares: input and class checks, class scores, the trace counter,
and gradients at an intermediate layer.

All methods take a :class:`rdfia_jax.models.Network` (an ImageNet model, or the small MNIST
classifier via ``Classifier.network()``) and images already in the model's input space
(``network.preprocessing.normalize(images01)``); their hot loops are pure functions of
``(state, images, targets)`` over :func:`rdfia_jax.models.forward`, jitted once per shape with the
``graphdef`` static.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdfia_jax.errors import RdfiaError
from rdfia_jax.models import MODEL_NAMES, Network, forward
from rdfia_jax.xla import TraceCounter

# Counts the traces of the section's jitted functions: tests assert "traced once per shape".
TRACES = TraceCounter()


def traced(name: str) -> Callable[[Callable], Callable]:
    """Decorator (under ``xla.jit``) counting the function's traces in :data:`TRACES` as ``name``."""
    return lambda fn: TRACES.wrap(fn, name)


def weights_tag(network: Network) -> str:
    """The weights description figures and tables carry; says RANDOM when the weights are."""
    return "RANDOM WEIGHTS (meaningless)" if network.is_random else network.weights_desc


def class_scores(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """``logits[n, targets[n]]`` for each image n (the unnormalized class score s_t)."""
    return jnp.take_along_axis(logits, targets[:, None].astype(jnp.int32), axis=1)[:, 0]


def per_image_norm(g: jnp.ndarray) -> jnp.ndarray:
    """L2 norm of each image of a batch, shape (N, 1, 1, 1) for broadcasting."""
    return jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)), keepdims=True))


def is_imagenet(network: Network) -> bool:
    return network.name in MODEL_NAMES


def expected_channels(network: Network) -> int:
    """Number of input channels of the network (3 for ImageNet models)."""
    if is_imagenet(network):
        return 3
    return int(getattr(network.module(), "in_channels", 3))


def num_classes(network: Network, image_shape: Sequence[int]) -> int:
    """Size of the network's output, found by shape evaluation (no computation)."""
    spec = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    out = jax.eval_shape(lambda s, x: forward(network.graphdef, s, x)[0], network.state, spec)
    return int(out.shape[-1])


def default_image_size(network: Network) -> int:
    return 224 if is_imagenet(network) else int(getattr(network.module(), "image_size", 28))


def check_images(network: Network, x: Any, what: str = "images") -> jnp.ndarray:
    """Validate a model-space batch (N, H, W, C) float: rank, channels and minimum size.

    Raises:
      RdfiaError: naming the expected shape.
    """
    x = jnp.asarray(x)
    channels = expected_channels(network)
    if x.ndim != 4 or x.shape[-1] != channels:
        raise RdfiaError(f"{what}: {network.name} expects a batch shaped (N, H, W, {channels}) "
                         f"({'RGB' if channels == 3 else 'grayscale'}); got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise RdfiaError(f"{what}: expected normalized float images (use network.preprocessing.normalize on "
                         f"[0, 1] RGB), got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise RdfiaError(f"{what}: empty batch")
    if not is_imagenet(network):
        size = default_image_size(network)
        if tuple(x.shape[1:3]) != (size, size):
            raise RdfiaError(f"{what}: {network.name} expects {size}x{size} images; got {x.shape[1]}x{x.shape[2]}")
    elif min(x.shape[1:3]) < 32:
        raise RdfiaError(f"{what}: {network.name} needs images of at least 32x32 pixels; got {x.shape[1]}x{x.shape[2]}")
    return x.astype(jnp.float32) if x.dtype != jnp.float32 else x


def class_names(network: Network) -> tuple[str, ...]:
    """Human-readable class names of the network's outputs."""
    if is_imagenet(network):
        from rdfia_jax.imagenet import class_names as imagenet_names

        return imagenet_names()
    return tuple(str(i) for i in range(10))


def resolve_class(network: Network, spec: str | int) -> int:
    """A class given by index or name, for this network.

    ImageNet models accept an index ("366"), a name ("gorilla") or a WordNet id; the digit classifier
    accepts 0-9 (or "zero".."nine").

    Raises:
      RdfiaError: unknown name or index out of range.
    """
    if is_imagenet(network):
        from rdfia_jax.imagenet import class_id

        return class_id(spec)
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    text = str(spec).strip().lower()
    if text in words:
        return words.index(text)
    if text.lstrip("-").isdigit():
        idx = int(text)
        if 0 <= idx < 10:
            return idx
        raise RdfiaError(f"class index {idx} out of range 0..9 for {network.name}")
    raise RdfiaError(f"unknown class {spec!r} for {network.name}: give a digit 0-9")


def check_targets(network: Network, targets: Any, n: int, image_shape: Sequence[int]) -> jnp.ndarray:
    """Targets as int32 (N,), one per image (a scalar is repeated); indices checked against the output size."""
    t = np.asarray(targets)
    if not np.issubdtype(t.dtype, np.integer):
        raise RdfiaError(f"targets must be class indices (integers), got dtype {t.dtype}; "
                         "resolve names with rdfia_jax.vis.core.resolve_class")
    if t.ndim == 0:
        t = np.full((n,), int(t))
    if t.shape != (n,):
        raise RdfiaError(f"expected one target per image ({n}), got shape {t.shape}")
    k = num_classes(network, image_shape)
    bad = t[(t < 0) | (t >= k)]
    if bad.size:
        raise RdfiaError(f"class index {int(bad[0])} out of range 0..{k - 1} for {network.name}")
    return jnp.asarray(t, jnp.int32)


def check_layer(network: Network, layer: str) -> str:
    """Raise a clear error when the network has no activation called ``layer``."""
    names = network.activation_names
    if layer not in names:
        raise RdfiaError(f"model {network.name!r} has no layer {layer!r}; available layers: {', '.join(names)}")
    return layer


def _accepts_perturb(module) -> bool:
    try:
        return "perturb" in inspect.signature(module.__call__).parameters
    except (TypeError, ValueError):
        return False


class _AddDelta:
    """Stands in for a submodule inside one traced call: its output plus ``delta``."""

    def __init__(self, inner, delta):
        self.inner, self.delta = inner, delta

    def __call__(self, *args, **kwargs):
        return self.inner(*args, **kwargs) + self.delta


def perturbable_layers(network: Network) -> tuple[str, ...]:
    """Layers at which :func:`forward_perturbed` can inject a perturbation."""
    module = network.module()
    if _accepts_perturb(module):
        return tuple(network.activation_names)
    return tuple(n for n in network.activation_names if callable(getattr(module, n, None)))


def forward_perturbed(graphdef, state, x: jnp.ndarray, layer: str, delta: jnp.ndarray):
    """Forward pass with ``delta`` added to the activation ``layer``; returns ``(logits, acts[layer])``.

    Differentiating with respect to ``delta`` at zero gives d(output)/d(activation). Uses the model's
    ``perturb`` argument when it has one; otherwise the submodule called ``layer`` is replaced,
    for this call only, by one that adds ``delta`` to its output.
    """
    module = nnx.merge(graphdef, state)
    if _accepts_perturb(module):
        logits, acts = module(x, capture=(layer,), perturb={layer: delta})
        return logits, acts[layer]
    inner = getattr(module, layer, None)
    if not callable(inner):
        raise RdfiaError(f"cannot take gradients at layer {layer!r} of this model (not a submodule and the model "
                         "has no 'perturb' hook); use a convolution/fire layer")
    object.__setattr__(module, layer, _AddDelta(inner, delta))
    logits, acts = module(x, capture=(layer,))
    return logits, acts[layer]


def to_numpy(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))
