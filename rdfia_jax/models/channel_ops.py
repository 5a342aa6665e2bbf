"""Per-channel sums as matrix products: bias and BatchNorm layers whose gradients are fast on CPU.

XLA:CPU lowers a large reduction over the batch and spatial axes (a conv bias gradient, BatchNorm's
statistics and their gradients) to chains of ``reduce-window`` that run far below memory speed and
take a large share of the DCGAN and DANN steps; ``ones @ x.reshape(-1, C)`` is several times faster
(measurements: ``benchmarks/RESULTS.md``, change 2). Autodiff creates most of these reductions (the
transpose of a broadcast is a reduction), so the layers below define their own VJPs with every
per-channel sum written as a matrix-vector product.

The results equal the plain formulations up to float rounding (tests compare values and gradients,
and run ``check_grads`` in float64). On accelerators a matrix-vector product with ones is as cheap
as a reduction, so there is one code path for every backend; ``Precision.HIGHEST`` keeps TPUs from
rounding the summands to bfloat16.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


def channel_sum(x: jax.Array) -> jax.Array:
    """Sum over every axis but the last, as ``ones @ x.reshape(-1, C)``.

    Args:
      x: array (..., C).
    Returns:
      (C,) array of the same dtype.
    """
    c = x.shape[-1]
    ones = jnp.ones((x.size // c,), x.dtype)
    return jnp.dot(ones, x.reshape(-1, c), precision=lax.Precision.HIGHEST)


def _per_channel(v: jax.Array, ndim: int) -> jax.Array:
    """(C,) -> (1, ..., 1, C): explicit rank, so strict rank promotion accepts the broadcast."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


@jax.custom_vjp
def add_channel_bias(x: jax.Array, bias: jax.Array) -> jax.Array:
    """``x + bias`` for x (..., C) and bias (C,); the bias gradient is a :func:`channel_sum`."""
    return x + _per_channel(bias, x.ndim)


def _add_channel_bias_fwd(x, bias):
    return add_channel_bias(x, bias), jnp.zeros((0,), bias.dtype)


def _add_channel_bias_bwd(bias_dtype_probe, g):
    return g, channel_sum(g).astype(bias_dtype_probe.dtype)


add_channel_bias.defvjp(_add_channel_bias_fwd, _add_channel_bias_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """Training-mode batch normalization over every axis but the last.

    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` with the batch mean and the biased batch
    variance (as ``nnx.BatchNorm(use_fast_variance=False)`` and ``torch.nn.BatchNorm2d`` in training).

    Args:
      x: (..., C) activations.
      scale, bias: (C,) affine parameters.
      epsilon: added to the variance.
    Returns:
      ``(y, mean, var)``; mean and var (C,) are differentiable too (zero cotangents when they only
      feed running statistics).
    References:
      Ioffe & Szegedy, "Batch Normalization", ICML 2015 (the backward formula of section 3).
    """
    y, mean, var, _ = _bn_forward(x, scale, bias, epsilon)
    return y, mean, var


def _bn_forward(x, scale, bias, epsilon):
    m = x.size // x.shape[-1]
    bc = partial(_per_channel, ndim=x.ndim)
    mean = channel_sum(x) / m
    centered = x - bc(mean)
    var = channel_sum(centered * centered) / m
    inv_std = bc(lax.rsqrt(var + epsilon))
    x_hat = centered * inv_std
    return x_hat * bc(scale) + bc(bias), mean, var, (x_hat, inv_std, bc(scale))


def _bn_fwd(x, scale, bias, epsilon):
    y, mean, var, residuals = _bn_forward(x, scale, bias, epsilon)
    return (y, mean, var), residuals


def _bn_bwd(epsilon, residuals, cotangents):
    x_hat, inv_std, scale = residuals
    g_y, g_mean, g_var = cotangents
    m = x_hat.size // x_hat.shape[-1]
    g_bias = channel_sum(g_y)
    g_scale = channel_sum(g_y * x_hat)
    # d/dx of (x_hat * scale): the classic three-term formula; then the direct paths of mean and var.
    bc = partial(_per_channel, ndim=x_hat.ndim)
    g_x = (scale * inv_std / m) * (m * g_y - bc(g_bias) - x_hat * bc(g_scale))
    g_x = g_x + bc(g_mean / m) + bc(g_var * (2.0 / m)) * (x_hat / inv_std)
    return g_x, g_scale, g_bias


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` (same variables, same running-statistics update) whose training mode runs
    :func:`batch_norm_train`. Configurations it does not cover (masks, cross-device statistics,
    non-last feature axes, fast variance, no scale/bias) fall back to ``nnx.BatchNorm`` itself."""

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        use_ra = self.use_running_average if use_running_average is None else use_running_average
        if (use_ra or mask is not None or self.axis_name is not None or self.axis not in (-1, x.ndim - 1)
                or self.use_fast_variance or self.scale is None or self.bias is None):
            return super().__call__(x, use_running_average, mask=mask)
        dtype = self.dtype or jnp.result_type(x, self.scale[...])
        y, mean, var = batch_norm_train(x.astype(dtype), self.scale[...].astype(dtype),
                                        self.bias[...].astype(dtype), self.epsilon)
        stat_dtype = self.mean[...].dtype
        self.mean[...] = lax.stop_gradient(
            self.momentum * self.mean[...] + (1 - self.momentum) * mean.astype(stat_dtype))
        self.var[...] = lax.stop_gradient(
            self.momentum * self.var[...] + (1 - self.momentum) * var.astype(stat_dtype))
        return y


class Conv(nnx.Conv):
    """``nnx.Conv`` (same variables) for NHWC input, undilated, ungrouped, whose bias gradient is a
    :func:`channel_sum`; other configurations fall back to ``nnx.Conv`` itself."""

    def __call__(self, x):
        padding = ((self.padding,) * 2,) * 2 if isinstance(self.padding, int) else self.padding
        simple = (self.use_bias and self.mask is None and self.feature_group_count == 1
                  and self.input_dilation == 1 and self.kernel_dilation == 1 and x.ndim == 4
                  and not isinstance(padding, str) and all(len(p) == 2 for p in padding))
        if not simple:
            return super().__call__(x)
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        kernel = self.kernel[...].astype(x.dtype)
        y = lax.conv_general_dilated(x, kernel, strides, tuple(map(tuple, padding)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
        return add_channel_bias(y, self.bias[...].astype(x.dtype))
