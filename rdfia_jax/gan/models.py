"""DCGAN and conditional DCGAN generators/discriminators of the practical (NHWC, 32x32, [-1, 1]).

Architectures (LAB.md section 4); kernels ``(4, 4, in, out)`` drawn from N(0, 0.02), BatchNorm scale
N(1, 0.02) and bias 0, no convolution biases except the conditional discriminator's last conv.

* :class:`Generator` (nz, ngf=32): z -> 4x4x(4ngf) -> 8x8x(2ngf) -> 16x16xngf -> 32x32x1 tanh
  (369,600 parameters with the defaults).
* :class:`Discriminator` (ndf=32): 32x32x1 -> 16x16xndf -> 8x8x(2ndf) -> 4x4x(4ndf), each BN +
  LeakyReLU 0.2 -> one logit (166,848 parameters). D's probability is ``sigmoid(logit)``; the
  losses use the logits (same gradients as the practical's Sigmoid + BCELoss, no log(0)).
* :class:`CondGenerator` (3,075,840) and :class:`CondDiscriminator` (2,642,433) take a one-hot
  label ``y`` (N, 10) as a second input.

Every ``__call__`` takes ``train``: True = BatchNorm on batch statistics (and running statistics
updated, as PyTorch's ``train()``), False = running statistics (``eval()``). ``smooth=True``
replaces ReLU/LeakyReLU by smooth look-alikes, for finite-difference gradient checks only.

The strided layers go through :mod:`rdfia_jax.gan.ops` (stride-1 reformulations, fast on CPU). Which
formulation is a static field of each network (``conv_t_impl`` for the generators, ``conv_impl`` for
the discriminators, default "auto"): part of the graph definition, so the jit cache sees it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from rdfia_jax.errors import RdfiaError
from rdfia_jax.gan import ops
from rdfia_jax.models import channel_ops

NUM_CLASSES = 10
INIT_STD = 0.02
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch
BN_EPS = 1e-5


def _kernel(rngs: nnx.Rngs, cin: int, cout: int) -> nnx.Param:
    return nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (4, 4, cin, cout), jnp.float32))


def _bn_scale_init(key, shape, dtype=jnp.float32):
    return (1.0 + INIT_STD * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def _bn(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # channel_ops.BatchNorm: nnx.BatchNorm whose training-mode gradients are fast on CPU
    return channel_ops.BatchNorm(
        features, momentum=BN_MOMENTUM, epsilon=BN_EPS, scale_init=_bn_scale_init,
        use_fast_variance=False, rngs=rngs,
    )


def _relu(x, smooth):
    # softplus(4x)/4: a smooth ReLU for finite-difference checks
    return jax.nn.softplus(4.0 * x) / 4.0 if smooth else jax.nn.relu(x)


def _lrelu(x, smooth):
    if smooth:
        return 0.2 * x + 0.8 * jax.nn.softplus(4.0 * x) / 4.0
    return jax.nn.leaky_relu(x, 0.2)


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            raise RdfiaError(f"{name}={value!r}: must be a positive integer")


class Generator(nnx.Module):
    """DCGAN generator: z (N, nz) -> images (N, 32, 32, 1) in [-1, 1].

    Args:
      nz: latent size.
      ngf: generator width.
      rngs: parameter initialization RNG.
      smooth: smooth activations (gradient checks only).
      conv_t_impl: transposed-convolution formulation, one of :data:`rdfia_jax.gan.ops.CONV_T_IMPLS`.
    """

    def __init__(self, nz: int = 100, ngf: int = 32, *, rngs: nnx.Rngs, smooth: bool = False,
                 conv_t_impl: str = "auto"):
        _check_positive(nz=nz, ngf=ngf)
        self.nz, self.ngf, self.smooth = nz, ngf, smooth
        self.conv_t_impl = ops.check_impl(conv_t_impl, ops.CONV_T_IMPLS, "transposed convolution")
        self.w1 = _kernel(rngs, nz, ngf * 4)
        self.bn1 = _bn(ngf * 4, rngs)
        self.w2 = _kernel(rngs, ngf * 4, ngf * 2)
        self.bn2 = _bn(ngf * 2, rngs)
        self.w3 = _kernel(rngs, ngf * 2, ngf)
        self.bn3 = _bn(ngf, rngs)
        self.w4 = _kernel(rngs, ngf, 1)

    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        ura = not train
        up = functools.partial(ops.conv_transpose_4x4_s2, impl=self.conv_t_impl)
        h = _relu(self.bn1(ops.project_1x1(z, self.w1[...]), use_running_average=ura), self.smooth)
        h = _relu(self.bn2(up(h, self.w2[...]), use_running_average=ura), self.smooth)
        h = _relu(self.bn3(up(h, self.w3[...]), use_running_average=ura), self.smooth)
        return jnp.tanh(up(h, self.w4[...]))


class Discriminator(nnx.Module):
    """DCGAN discriminator: images (N, 32, 32, 1) -> logits (N,).

    Args:
      ndf: discriminator width.
      rngs: parameter initialization RNG.
      smooth: smooth activations (gradient checks only).
      conv_impl: strided-convolution formulation, one of :data:`rdfia_jax.gan.ops.CONV_IMPLS`.
    """

    def __init__(self, ndf: int = 32, *, rngs: nnx.Rngs, smooth: bool = False, conv_impl: str = "auto"):
        _check_positive(ndf=ndf)
        self.ndf, self.smooth = ndf, smooth
        self.conv_impl = ops.check_impl(conv_impl, ops.CONV_IMPLS, "strided convolution")
        self.w1 = _kernel(rngs, 1, ndf)
        self.bn1 = _bn(ndf, rngs)
        self.w2 = _kernel(rngs, ndf, ndf * 2)
        self.bn2 = _bn(ndf * 2, rngs)
        self.w3 = _kernel(rngs, ndf * 2, ndf * 4)
        self.bn3 = _bn(ndf * 4, rngs)
        self.w4 = _kernel(rngs, ndf * 4, 1)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        ura = not train
        down = functools.partial(ops.conv_4x4_s2, impl=self.conv_impl)
        h = _lrelu(self.bn1(down(x, self.w1[...]), use_running_average=ura), self.smooth)
        h = _lrelu(self.bn2(down(h, self.w2[...]), use_running_average=ura), self.smooth)
        h = _lrelu(self.bn3(down(h, self.w3[...]), use_running_average=ura), self.smooth)
        return ops.conv_valid_4x4(h, self.w4[...])[:, 0]


class CondGenerator(nnx.Module):
    """Conditional DCGAN generator: (z (N, nz), y one-hot (N, 10)) -> images (N, 32, 32, 1).

    Args:
      nz: latent size.
      rngs: parameter initialization RNG.
      smooth: smooth activations (gradient checks only).
      conv_t_impl: transposed-convolution formulation, one of :data:`rdfia_jax.gan.ops.CONV_T_IMPLS`.
    """

    def __init__(self, nz: int = 100, *, rngs: nnx.Rngs, smooth: bool = False, conv_t_impl: str = "auto"):
        _check_positive(nz=nz)
        self.nz, self.smooth = nz, smooth
        self.conv_t_impl = ops.check_impl(conv_t_impl, ops.CONV_T_IMPLS, "transposed convolution")
        self.wz = _kernel(rngs, nz, 256)
        self.bnz = _bn(256, rngs)
        self.wy = _kernel(rngs, NUM_CLASSES, 256)
        self.bny = _bn(256, rngs)
        self.w2 = _kernel(rngs, 512, 256)
        self.bn2 = _bn(256, rngs)
        self.w3 = _kernel(rngs, 256, 128)
        self.bn3 = _bn(128, rngs)
        self.w4 = _kernel(rngs, 128, 1)

    def __call__(self, z: jax.Array, y: jax.Array, *, train: bool) -> jax.Array:
        ura = not train
        hz = _relu(self.bnz(ops.project_1x1(z, self.wz[...]), use_running_average=ura), self.smooth)
        hy = _relu(self.bny(ops.project_1x1(y, self.wy[...]), use_running_average=ura), self.smooth)
        h = jnp.concatenate([hz, hy], axis=-1)
        up = functools.partial(ops.conv_transpose_4x4_s2, impl=self.conv_t_impl)
        h = _relu(self.bn2(up(h, self.w2[...]), use_running_average=ura), self.smooth)
        h = _relu(self.bn3(up(h, self.w3[...]), use_running_average=ura), self.smooth)
        return jnp.tanh(up(h, self.w4[...]))


class CondDiscriminator(nnx.Module):
    """Conditional DCGAN discriminator: (images (N, 32, 32, 1), y one-hot (N, 10)) -> logits (N,).

    The label branch convolves y expanded to a constant 10x32x32 image, as the practical does. That
    convolution is linear in y, so it is computed exactly as ``y @ conv(one-hot image of each
    class)``: the ten 16x16x64 responses are convolved once per step instead of 128 images.

    Args:
      rngs: parameter initialization RNG.
      smooth: smooth activations (gradient checks only).
      conv_impl: strided-convolution formulation, one of :data:`rdfia_jax.gan.ops.CONV_IMPLS`.
    """

    def __init__(self, *, rngs: nnx.Rngs, smooth: bool = False, conv_impl: str = "auto"):
        self.smooth = smooth
        self.conv_impl = ops.check_impl(conv_impl, ops.CONV_IMPLS, "strided convolution")
        self.wx = _kernel(rngs, 1, 64)
        self.wy = _kernel(rngs, NUM_CLASSES, 64)
        self.w2 = _kernel(rngs, 128, 256)
        self.bn2 = _bn(256, rngs)
        self.w3 = _kernel(rngs, 256, 512)
        self.bn3 = _bn(512, rngs)
        self.w4 = _kernel(rngs, 512, 1)
        self.b4 = nnx.Param(jnp.zeros((1,), jnp.float32))
        # PyTorch's default Conv2d bias init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the practical
        # re-initializes only weights, so draw the bias the same way.
        bound = 1.0 / (512 * 16) ** 0.5
        self.b4 = nnx.Param(jax.random.uniform(rngs.params(), (1,), jnp.float32, -bound, bound))

    def __call__(self, x: jax.Array, y: jax.Array, *, train: bool) -> jax.Array:
        ura = not train
        down = functools.partial(ops.conv_4x4_s2, impl=self.conv_impl)
        hx = _lrelu(down(x, self.wx[...]), self.smooth)
        eye = jnp.broadcast_to(jnp.eye(NUM_CLASSES, dtype=x.dtype)[:, None, None, :], (NUM_CLASSES,) + x.shape[1:3] + (NUM_CLASSES,))
        per_class = down(eye, self.wy[...].astype(x.dtype))  # (10, 16, 16, 64)
        hy = _lrelu(jnp.einsum("nk,khwc->nhwc", y.astype(x.dtype), per_class), self.smooth)
        h = jnp.concatenate([hx, hy], axis=-1)
        h = _lrelu(self.bn2(down(h, self.w2[...]), use_running_average=ura), self.smooth)
        h = _lrelu(self.bn3(down(h, self.w3[...]), use_running_average=ura), self.smooth)
        return ops.conv_valid_4x4(h, self.w4[...])[:, 0] + self.b4[...][0]


def count_params(module: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` elements) of ``module``."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(nnx.state(module, nnx.Param)))
