"""The DANN practical's networks in Flax NNX (NHWC).

Feature extractor: conv 3->32 5x5 pad 2, ReLU, max-pool 2; conv 32->48 5x5 pad 2, ReLU, max-pool 2
-> 7x7x48 = 2352 features (flattened in H, W, C order). Label classifier: 2352->100, ReLU, 100->100,
ReLU, 100->10. Domain classifier: gradient reversal, 2352->100, ReLU, 100->1 logit.

Parameters are initialised like PyTorch's ``nn.Conv2d``/``nn.Linear`` defaults (uniform in
+-1/sqrt(fan_in) for weights and biases), so training behaves like the practical's code.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdfia_jax.dann.grl import grad_reverse
from rdfia_jax.models.layers import space_to_depth
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


#: How the first block (5x5 conv, ReLU, 2x2 max-pool) computes: "s2d" (default; see
#: :func:`conv5x5_relu_pool_s2d`) or "lax" (the textbook order). Read at trace time.
BLOCK1_IMPL = "s2d"


@functools.cache
def _pool_phase_index(cin: int, cout: int) -> np.ndarray:
    """Where each entry of the (3, 3, 4*cin, 4*cout) phase kernel comes from in a 5x5 kernel.

    Output pixel ``(2m + a, 2n + b)`` of a 5x5 'same' convolution reads input rows ``2m + a - 2 ..
    2m + a + 2``, i.e. rows ``2(m + dy) + p`` of the 2x2 blocks ``dy`` in {-1, 0, 1} (sub-row p);
    its kernel row is ``kh = 2 dy + p - a + 2`` (zero where outside 0..4); columns likewise. Input
    channel ``(2p + q) * cin + c`` (:func:`space_to_depth`), output channel ``(2a + b) * cout + o``.
    Index ``25 * cin * cout`` is the zero appended to the flattened kernel.
    """
    idx = np.full((3, 3, 4 * cin, 4 * cout), 25 * cin * cout, np.int32)
    c, o = np.arange(cin)[:, None], np.arange(cout)[None, :]
    for dy in range(3):
        for dx in range(3):
            for a in range(2):
                for b in range(2):
                    for p in range(2):
                        for q in range(2):
                            kh, kw = 2 * (dy - 1) + p - a + 2, 2 * (dx - 1) + q - b + 2
                            if 0 <= kh < 5 and 0 <= kw < 5:
                                idx[dy, dx, (2 * p + q) * cin + c, (2 * a + b) * cout + o] = \
                                    ((kh * 5 + kw) * cin + c) * cout + o
    return idx


def conv5x5_relu_pool_s2d(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """``max_pool_2x2(relu(conv5x5_same(x) + bias))`` computed on 2x2 pixel blocks.

    The input is folded to (N, H/2, W/2, 4*in) (:func:`space_to_depth`) and ONE 3x3 convolution
    gives all four pixels of each 2x2 output block as 4*out channels (:func:`_pool_phase_index`),
    so the max-pool is a max over those four channel groups; the bias and the ReLU follow the pool
    (max commutes with adding a per-channel constant, and ReLU is monotone), on a quarter of the
    elements. Same values and gradients as the textbook order (tests). Why: with 3 input channels
    XLA:CPU's 5x5 convolution vectorizes badly; 12 folded channels do better (DANN step 90 -> 79 ms
    on 2 cores in an interleaved A/B, ``benchmarks/RESULTS.md``).

    Args:
      x: (N, H, W, in), H and W even.
      kernel: (5, 5, in, out).
      bias: (out,).
    Returns:
      (N, H/2, W/2, out).
    """
    cin, cout = kernel.shape[2], kernel.shape[3]
    flat = jnp.concatenate([kernel.reshape(-1), jnp.zeros((1,), kernel.dtype)])
    phase_kernel = flat[_pool_phase_index(cin, cout)]
    y = jax.lax.conv_general_dilated(space_to_depth(x), phase_kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    n, h, w, _ = y.shape
    pooled = y.reshape(n, h, w, 4, cout).max(axis=3)
    return jax.nn.relu(channel_ops.add_channel_bias(pooled, bias))


class FeatureExtractor(nnx.Module):
    """Two conv/ReLU/max-pool blocks; (N, 28, 28, C) -> (N, 2352)."""

    def __init__(self, in_channels: int = 3, *, rngs: nnx.Rngs):
        self.conv1 = _conv(in_channels, 32, rngs)
        self.conv2 = _conv(32, 48, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if BLOCK1_IMPL == "s2d" and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
            dtype = x.dtype
            x = conv5x5_relu_pool_s2d(x, self.conv1.kernel[...].astype(dtype), self.conv1.bias[...].astype(dtype))
        else:
            x = max_pool_2x2(jax.nn.relu(self.conv1(x)))
        # conv2 keeps the textbook order: the folded form measured slower with 32 input channels.
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
