"""Image deformations for ADef: bilinear resampling, spatial gradients and Gaussian smoothing of fields.

Conventions (those of the ADef reference code): a vector field ``tau`` has shape (N, H, W, 2) in
pixels; ``tau[..., 0]`` is the displacement along x (columns, left to right) and ``tau[..., 1]``
along y (rows, top to bottom). The deformed image is ``x_tau(i, j) = x(i + tau_y, j + tau_x)``,
sampled bilinearly; coordinates outside the image are clamped to the border (``grid_sample``'s
``padding_mode="border"`` with ``align_corners=True``). Every function here is pure and jittable.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def deform(images: jnp.ndarray, tau: jnp.ndarray) -> jnp.ndarray:
    """Resample ``images`` at ``id + tau`` with bilinear interpolation (border clamping).

    Differentiable in both arguments (piecewise linear in ``tau``: kinks at integer coordinates).

    Args:
      images: (N, H, W, C) float images.
      tau: (N, H, W, 2) displacement field in pixels, (x, y) order.
    Returns:
      (N, H, W, C) deformed images, same dtype as ``images``.
    """
    n, h, w, c = images.shape
    dtype = images.dtype
    tau = tau.astype(dtype)
    rows = jnp.arange(h, dtype=dtype)[None, :, None] + tau[..., 1]  # (N, H, W)
    cols = jnp.arange(w, dtype=dtype)[None, None, :] + tau[..., 0]
    rows = jnp.clip(rows, 0.0, h - 1.0)
    cols = jnp.clip(cols, 0.0, w - 1.0)
    r0f = jnp.floor(rows)
    c0f = jnp.floor(cols)
    # Weights come from the un-floored coordinates so gradients flow to tau.
    wr = rows - r0f
    wc = cols - c0f
    r0 = r0f.astype(jnp.int32)
    c0 = c0f.astype(jnp.int32)
    r1 = jnp.minimum(r0 + 1, h - 1)
    c1 = jnp.minimum(c0 + 1, w - 1)
    flat = images.reshape(n, h * w, c)

    def gather(r, cc):
        idx = (r * w + cc).reshape(n, h * w, 1)
        return jnp.take_along_axis(flat, idx, axis=1).reshape(n, h, w, c)

    wr = wr[..., None]
    wc = wc[..., None]
    top = gather(r0, c0) * (1.0 - wc) + gather(r0, c1) * wc
    bottom = gather(r1, c0) * (1.0 - wc) + gather(r1, c1) * wc
    return top * (1.0 - wr) + bottom * wr


def spatial_gradient(images: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Finite-difference image derivatives: central inside, one-sided on the border.

    Args:
      images: (N, H, W, C) with H, W >= 2.
    Returns:
      ``(d_dx, d_dy)``, each (N, H, W, C): derivative along columns and along rows.
    """

    def diff(a, axis):
        first = jax.lax.slice_in_dim(a, 1, 2, axis=axis) - jax.lax.slice_in_dim(a, 0, 1, axis=axis)
        last = jax.lax.slice_in_dim(a, -1, None, axis=axis) - jax.lax.slice_in_dim(a, -2, -1, axis=axis)
        mid = 0.5 * (jax.lax.slice_in_dim(a, 2, None, axis=axis) - jax.lax.slice_in_dim(a, 0, -2, axis=axis))
        return jnp.concatenate([first, mid, last], axis=axis)

    return diff(images, 2), diff(images, 1)


def gaussian_kernel1d(sigma: float) -> np.ndarray:
    """Normalized 1-D Gaussian, 4 sigmas each side (the reference ADef filter size)."""
    radius = int(4.0 * sigma + 0.5)
    t = (np.arange(2 * radius + 1, dtype=np.float64) - radius) / sigma
    g = np.exp(-0.5 * t * t)
    return (g / g.sum()).astype(np.float32)


def gaussian_smooth(field: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """Separable Gaussian blur of each channel with zero padding (a self-adjoint operator).

    Args:
      field: (N, H, W, K) array (K = 2 for vector fields).
      sigma: standard deviation in pixels (static); ``sigma <= 0`` returns ``field`` unchanged.
    Returns:
      The smoothed field, same shape and dtype.
    """
    if sigma <= 0 or not math.isfinite(sigma):
        return field
    k = field.shape[-1]
    g = jnp.asarray(gaussian_kernel1d(sigma), field.dtype)
    size = g.shape[0]
    pad = (size - 1) // 2
    dn = ("NHWC", "HWIO", "NHWC")
    # Depthwise (feature_group_count=K) so the x and y components are blurred independently.
    kv = jnp.tile(g.reshape(size, 1, 1, 1), (1, 1, 1, k))
    kh = jnp.tile(g.reshape(1, size, 1, 1), (1, 1, 1, k))
    out = jax.lax.conv_general_dilated(field, kv, (1, 1), ((pad, pad), (0, 0)), dimension_numbers=dn,
                                       feature_group_count=k)
    return jax.lax.conv_general_dilated(out, kh, (1, 1), ((0, 0), (pad, pad)), dimension_numbers=dn,
                                        feature_group_count=k)


def max_displacement(tau: jnp.ndarray) -> jnp.ndarray:
    """The ADef "T-norm": largest pixel displacement ``max_p ||tau(p)||_2`` per image, shape (N,)."""
    return jnp.sqrt(jnp.max(jnp.sum(tau * tau, axis=-1), axis=(1, 2)))
