"""The DANN practical's networks in Flax NNX (NHWC).

Feature extractor: conv 3->32 5x5 pad 2, ReLU, max-pool 2; conv 32->48 5x5 pad 2, ReLU, max-pool 2
-> 7x7x48 = 2352 features (flattened in H, W, C order). Label classifier: 2352->100, ReLU, 100->100,
ReLU, 100->10. Domain classifier: gradient reversal, 2352->100, ReLU, 100->1 logit.

Parameters are initialised like PyTorch's ``nn.Conv2d``/``nn.Linear`` defaults (uniform in
+-1/sqrt(fan_in) for weights and biases), so training behaves like the practical's code.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rdfia_jax.dann.grl import grad_reverse
from rdfia_jax.models import channel_ops

FEATURE_DIM = 7 * 7 * 48  # 2352
NUM_CLASSES = 10

# Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) == variance_scaling(1/3, fan_in, uniform).
_torch_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _conv(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Conv:
    # channel_ops.Conv: nnx.Conv with a bias gradient that is fast on CPU (same variables)
    return channel_ops.Conv(cin, cout, (5, 5), padding=((2, 2), (2, 2)), kernel_init=_torch_kernel_init,
                    bias_init=_torch_bias_init(cin * 25), rngs=rngs)


def _linear(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(cin, cout, kernel_init=_torch_kernel_init, bias_init=_torch_bias_init(cin),
                      rngs=rngs)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, NHWC, even H and W.

    Written as reshape + max because XLA:CPU differentiates a reduction much faster than the
    select-and-scatter of ``lax.reduce_window`` (about 2x on the whole DANN step here).
    """
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class FeatureExtractor(nnx.Module):
    """Two conv/ReLU/max-pool blocks; (N, 28, 28, C) -> (N, 2352)."""

    def __init__(self, in_channels: int = 3, *, rngs: nnx.Rngs):
        self.conv1 = _conv(in_channels, 32, rngs)
        self.conv2 = _conv(32, 48, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = max_pool_2x2(jax.nn.relu(self.conv1(x)))
        x = max_pool_2x2(jax.nn.relu(self.conv2(x)))
        return x.reshape(x.shape[0], -1)


class LabelClassifier(nnx.Module):
    """2352 -> 100 -> 100 -> 10 logits."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = _linear(FEATURE_DIM, 100, rngs)
        self.fc2 = _linear(100, 100, rngs)
        self.fc3 = _linear(100, NUM_CLASSES, rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.fc1(features))
        h = jax.nn.relu(self.fc2(h))
        return self.fc3(h)


class DomainClassifier(nnx.Module):
    """GRL -> 2352 -> 100 -> 1 logit (source = 1, target = 0)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = _linear(FEATURE_DIM, 100, rngs)
        self.fc2 = _linear(100, 1, rngs)

    def __call__(self, features: jax.Array, grl_lambda: jax.Array | float) -> jax.Array:
        h = grad_reverse(features, grl_lambda)
        h = jax.nn.relu(self.fc1(h))
        return self.fc2(h)[:, 0]


class DANN(nnx.Module):
    """Feature extractor shared by a label classifier and a domain classifier behind a GRL.

    Attributes:
      features: :class:`FeatureExtractor`.
      classifier: :class:`LabelClassifier`.
      domain: :class:`DomainClassifier`.
    """

    def __init__(self, in_channels: int = 3, *, rngs: nnx.Rngs):
        self.features = FeatureExtractor(in_channels, rngs=rngs)
        self.classifier = LabelClassifier(rngs=rngs)
        self.domain = DomainClassifier(rngs=rngs)

    def __call__(self, x: jax.Array, grl_lambda: jax.Array | float = 1.0):
        """Returns ``(class_logits (N, 10), domain_logits (N,), features (N, 2352))``."""
        feats = self.features(x)
        return self.classifier(feats), self.domain(feats, grl_lambda), feats
