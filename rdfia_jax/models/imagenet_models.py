"""VGG16, AlexNet and SqueezeNet 1.1 in Flax NNX (NHWC), with torchvision's exact semantics.

One contract for every model: ``module(x, capture=(), dropout_key=None, perturb=None) -> (logits,
acts)`` where ``x`` is a normalized NHWC float batch, ``capture`` names the intermediate activations
to return (``"all"`` for every one), ``acts`` maps those names to arrays, and ``perturb`` maps names
to arrays added to those activations (zeros whose gradient is the gradient w.r.t. the activation).
Feature extraction, saliency, Grad-CAM and feature visualization all read from this one place.

Dropout is off unless a ``dropout_key`` is given (torchvision's eval mode is the default), which keeps
the forward pass a pure function of (parameters, inputs).

References:
  Simonyan & Zisserman 2014 (VGG); Krizhevsky 2014 "One weird trick" (torchvision AlexNet);
  Iandola et al. 2016 (SqueezeNet, v1.1 from the official repository).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rdfia_jax.errors import RdfiaError
from rdfia_jax.models.layers import adaptive_avg_pool, max_pool

# torchvision initializes convs with kaiming_normal(fan_out, relu) and linears with N(0, 0.01);
# only random-weight runs see these.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
_linear_init = nnx.initializers.normal(0.01)


def _conv(cin: int, cout: int, k: int, rngs: nnx.Rngs, *, stride: int = 1, pad: int = 0, dtype=None) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), (stride, stride), padding=((pad, pad), (pad, pad)),
                    kernel_init=_conv_init, dtype=dtype, rngs=rngs)


def _linear(cin: int, cout: int, rngs: nnx.Rngs, dtype=None) -> nnx.Linear:
    return nnx.Linear(cin, cout, kernel_init=_linear_init, dtype=dtype, rngs=rngs)


def _width(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class _Taps:
    """Collects the requested intermediate activations during one forward pass."""

    def __init__(self, model: str, available: Sequence[str], capture: str | Iterable[str],
                 perturb: dict | None = None):
        if isinstance(capture, str):
            capture = tuple(available) if capture == "all" else (capture,)
        perturb = dict(perturb or {})
        unknown = [c for c in (*capture, *perturb) if c not in available]
        if unknown:
            raise RdfiaError(f"unknown layer {unknown[0]!r} for model {model!r}; "
                             f"available layers: {', '.join(available)}")
        self.wanted = frozenset(capture)
        self.perturb = perturb
        self.acts: dict[str, jnp.ndarray] = {}

    def __call__(self, name: str, value: jnp.ndarray) -> jnp.ndarray:
        if name in self.perturb:  # d output / d perturb = gradient w.r.t. this activation (Grad-CAM)
            value = value + self.perturb[name]
        if name in self.wanted:
            self.acts[name] = value
        return value


def _dropout(x: jnp.ndarray, rate: float, key: jax.Array | None, index: int) -> jnp.ndarray:
    if key is None:
        return x
    keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def _check_input(model: str, x: jnp.ndarray, min_size: int) -> None:
    if x.ndim != 4 or x.shape[-1] != 3:
        raise RdfiaError(f"{model} expects a batch of RGB images shaped (N, H, W, 3); got shape {tuple(x.shape)}")
    if min(x.shape[1], x.shape[2]) < min_size:
        raise RdfiaError(f"{model} needs images of at least {min_size}x{min_size} pixels; got {x.shape[1]}x{x.shape[2]}")


class VGG16(nnx.Module):
    """torchvision ``vgg16`` (configuration D), any input size >= 32 px."""

    BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    name = "vgg16"

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 1000, width: float = 1.0, dtype=None):
        conv_names: list[str] = []
        cin = 3
        for b, block in enumerate(self.BLOCKS, start=1):
            for i, cout in enumerate(block, start=1):
                cout = _width(cout, width)
                setattr(self, f"conv{b}_{i}", _conv(cin, cout, 3, rngs, pad=1, dtype=dtype))
                conv_names.append(f"conv{b}_{i}")
                cin = cout
        self.conv_names = tuple(conv_names)  # a tuple keeps the graphdef hashable (jit static arg)
        hidden = _width(4096, width)
        self.fc6 = _linear(cin * 7 * 7, hidden, rngs, dtype)
        self.fc7 = _linear(hidden, hidden, rngs, dtype)
        self.fc8 = _linear(hidden, num_classes, rngs, dtype)
        names = []
        for b, block in enumerate(self.BLOCKS, start=1):
            for i in range(1, len(block) + 1):
                names += [f"conv{b}_{i}", f"relu{b}_{i}"]
            names.append(f"pool{b}")
        self.activation_names = tuple(names + ["avgpool", "fc6", "relu6", "fc7", "relu7", "fc8"])

    def __call__(self, x, capture=(), dropout_key=None, perturb=None):
        _check_input(self.name, x, 32)
        tap = _Taps(self.name, self.activation_names, capture, perturb)
        for b, block in enumerate(self.BLOCKS, start=1):
            for i in range(1, len(block) + 1):
                x = tap(f"conv{b}_{i}", getattr(self, f"conv{b}_{i}")(x))
                x = tap(f"relu{b}_{i}", jax.nn.relu(x))
            x = tap(f"pool{b}", max_pool(x, 2, 2))
        x = tap("avgpool", adaptive_avg_pool(x, (7, 7)))
        x = x.reshape(x.shape[0], -1)  # H, W, C flatten order (converters reorder torch's C, H, W)
        x = tap("fc6", self.fc6(x))
        x = tap("relu6", jax.nn.relu(x))
        x = _dropout(x, 0.5, dropout_key, 0)
        x = tap("fc7", self.fc7(x))
        x = tap("relu7", jax.nn.relu(x))
        x = _dropout(x, 0.5, dropout_key, 1)
        x = tap("fc8", self.fc8(x))
        return x, tap.acts


class AlexNet(nnx.Module):
    """torchvision ``alexnet`` (the "one weird trick" variant), any input size >= 63 px."""

    name = "alexnet"

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 1000, width: float = 1.0, dtype=None):
        c = [_width(v, width) for v in (64, 192, 384, 256, 256)]
        self.conv1 = _conv(3, c[0], 11, rngs, stride=4, pad=2, dtype=dtype)
        self.conv2 = _conv(c[0], c[1], 5, rngs, pad=2, dtype=dtype)
        self.conv3 = _conv(c[1], c[2], 3, rngs, pad=1, dtype=dtype)
        self.conv4 = _conv(c[2], c[3], 3, rngs, pad=1, dtype=dtype)
        self.conv5 = _conv(c[3], c[4], 3, rngs, pad=1, dtype=dtype)
        hidden = _width(4096, width)
        self.fc6 = _linear(c[4] * 6 * 6, hidden, rngs, dtype)
        self.fc7 = _linear(hidden, hidden, rngs, dtype)
        self.fc8 = _linear(hidden, num_classes, rngs, dtype)
        self.activation_names = ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
                                 "conv4", "relu4", "conv5", "relu5", "pool5", "avgpool",
                                 "fc6", "relu6", "fc7", "relu7", "fc8")

    def __call__(self, x, capture=(), dropout_key=None, perturb=None):
        _check_input(self.name, x, 63)
        tap = _Taps(self.name, self.activation_names, capture, perturb)
        for i in range(1, 6):
            x = tap(f"conv{i}", getattr(self, f"conv{i}")(x))
            x = tap(f"relu{i}", jax.nn.relu(x))
            if i in (1, 2, 5):
                x = tap(f"pool{i}", max_pool(x, 3, 2))
        x = tap("avgpool", adaptive_avg_pool(x, (6, 6)))
        x = x.reshape(x.shape[0], -1)
        x = _dropout(x, 0.5, dropout_key, 0)
        x = tap("fc6", self.fc6(x))
        x = tap("relu6", jax.nn.relu(x))
        x = _dropout(x, 0.5, dropout_key, 1)
        x = tap("fc7", self.fc7(x))
        x = tap("relu7", jax.nn.relu(x))
        x = tap("fc8", self.fc8(x))
        return x, tap.acts


class Fire(nnx.Module):
    """SqueezeNet fire module: 1x1 squeeze, then concatenated 1x1 and 3x3 expands (all ReLU)."""

    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int, *, rngs: nnx.Rngs, dtype=None):
        init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # torch's kaiming_uniform(a=sqrt(5))
        self.squeeze = nnx.Conv(cin, squeeze, (1, 1), padding="VALID", kernel_init=init, dtype=dtype, rngs=rngs)
        self.expand1x1 = nnx.Conv(squeeze, expand1x1, (1, 1), padding="VALID", kernel_init=init, dtype=dtype, rngs=rngs)
        self.expand3x3 = nnx.Conv(squeeze, expand3x3, (3, 3), padding=((1, 1), (1, 1)), kernel_init=init,
                                  dtype=dtype, rngs=rngs)

    def __call__(self, x):
        s = jax.nn.relu(self.squeeze(x))
        return jnp.concatenate([jax.nn.relu(self.expand1x1(s)), jax.nn.relu(self.expand3x3(s))], axis=-1)


class SqueezeNet11(nnx.Module):
    """torchvision ``squeezenet1_1``: ceil-mode max-pools and a 1x1-conv classifier, any size >= 17 px."""

    FIRES = {2: (64, 16, 64), 3: (128, 16, 64), 4: (128, 32, 128), 5: (256, 32, 128),
             6: (256, 48, 192), 7: (384, 48, 192), 8: (384, 64, 256), 9: (512, 64, 256)}
    name = "squeezenet1_1"

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 1000, width: float = 1.0, dtype=None):
        w = lambda c: _width(c, width)  # noqa: E731
        self.conv1 = nnx.Conv(3, w(64), (3, 3), (2, 2), padding="VALID",
                              kernel_init=nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                              dtype=dtype, rngs=rngs)
        for i, (cin, sq, ex) in self.FIRES.items():
            # a fire's input is the previous fire's two concatenated expands (or conv1 for fire2)
            setattr(self, f"fire{i}", Fire(w(cin) if i == 2 else 2 * w(self.FIRES[i - 1][2]), w(sq), w(ex), w(ex),
                                           rngs=rngs, dtype=dtype))
        self.conv10 = nnx.Conv(2 * w(256), num_classes, (1, 1), padding="VALID",
                               kernel_init=nnx.initializers.normal(0.01), dtype=dtype, rngs=rngs)
        self.activation_names = ("conv1", "relu1", "pool1", "fire2", "fire3", "pool3", "fire4", "fire5",
                                 "pool5", "fire6", "fire7", "fire8", "fire9", "conv10", "relu10", "avgpool")

    def __call__(self, x, capture=(), dropout_key=None, perturb=None):
        _check_input(self.name, x, 17)
        tap = _Taps(self.name, self.activation_names, capture, perturb)
        x = tap("conv1", self.conv1(x))
        x = tap("relu1", jax.nn.relu(x))
        x = tap("pool1", max_pool(x, 3, 2, ceil_mode=True))
        for i in range(2, 10):
            x = tap(f"fire{i}", getattr(self, f"fire{i}")(x))
            if i in (3, 5):
                x = tap(f"pool{i}", max_pool(x, 3, 2, ceil_mode=True))
        x = _dropout(x, 0.5, dropout_key, 0)
        x = tap("conv10", self.conv10(x))
        x = tap("relu10", jax.nn.relu(x))
        x = tap("avgpool", adaptive_avg_pool(x, (1, 1)))
        return x.reshape(x.shape[0], -1), tap.acts
