"""Layers shared by several sections, in NHWC: torchvision's pooling semantics, 2x2 max-pool,
space-to-depth and its inverse."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _adaptive_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Averaging matrix (size_out, size_in) of torch's adaptive pooling windows.

    Window i covers [floor(i * in / out), ceil((i + 1) * in / out)), as in ATen.
    """
    m = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jnp.ndarray, output_size: tuple[int, int]) -> jnp.ndarray:
    """``torch.nn.AdaptiveAvgPool2d`` for NHWC input, at any input size (static shapes).

    Args:
      x: (N, H, W, C).
      output_size: (out_h, out_w).
    Returns:
      (N, out_h, out_w, C).
    """
    _, h, w, _ = x.shape
    oh, ow = output_size
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:  # uniform windows: a plain reshape-mean is cheaper
        n, _, _, c = x.shape
        return x.reshape(n, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))
    # Overlapping/uneven windows: separable averaging matrices (exact, differentiable).
    ph = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
    pw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", ph, x, pw)


def max_pool(x: jnp.ndarray, window: int, stride: int, *, ceil_mode: bool = False) -> jnp.ndarray:
    """``torch.nn.MaxPool2d(window, stride, padding=0, ceil_mode=...)`` for NHWC input.

    With ``ceil_mode`` the output size is ceil((H - k) / s) + 1, dropping a last window that would
    start outside the input, as torch does; the partial window is padded with -inf.

    Computed as the maximum of the window's ``window**2`` strided slices, with a VJP that gives each
    output's gradient to the first maximal input of its window (row-major, torch's choice): XLA:CPU
    runs ``lax.reduce_window`` and its select-and-scatter gradient several times slower
    (``benchmarks/RESULTS.md``).
    """
    _, h, w, _ = x.shape

    def out_size(n: int) -> int:
        if not ceil_mode:
            return (n - window) // stride + 1
        o = math.ceil((n - window) / stride) + 1
        if (o - 1) * stride >= n:
            o -= 1
        return o

    oh, ow = out_size(h), out_size(w)
    pad_h = max(0, (oh - 1) * stride + window - h)
    pad_w = max(0, (ow - 1) * stride + window - w)
    return _max_pool(x, window, stride, (oh, ow, pad_h, pad_w))


def _window_slices(x: jnp.ndarray, window: int, stride: int, geometry: tuple[int, int, int, int]):
    """(i, j, slice) for each window offset: the (N, oh, ow, C) inputs at offset (i, j) of every window."""
    oh, ow, pad_h, pad_w = geometry
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=-jnp.inf)
    n, _, _, c = x.shape
    for i in range(window):
        for j in range(window):
            yield i, j, jax.lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                                      (1, stride, stride, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, stride, geometry):
    out = None
    for _, _, s in _window_slices(x, window, stride, geometry):
        out = s if out is None else jnp.maximum(out, s)
    return out


def _max_pool_fwd(x, window, stride, geometry):
    y = _max_pool(x, window, stride, geometry)
    return y, (x, y)


def _max_pool_bwd(window, stride, geometry, res, g):
    x, y = res
    n, h, w, c = x.shape
    oh, ow, pad_h, pad_w = geometry
    zero = jnp.zeros((), g.dtype)
    taken = dx = None
    for i, j, s in _window_slices(x, window, stride, geometry):
        hit = s == y
        hit = hit if taken is None else hit & ~taken  # the first maximum of each window only
        taken = hit if taken is None else taken | hit
        # this offset's gradients back at their input pixels: interior padding undoes the stride
        part = jax.lax.pad(jnp.where(hit, g, zero), zero,
                           ((0, 0, 0), (i, h + pad_h - i - (oh - 1) * stride - 1, stride - 1),
                            (j, w + pad_w - j - (ow - 1) * stride - 1, stride - 1), (0, 0, 0)))
        dx = part if dx is None else dx + part
    return (dx[:, :h, :w, :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, NHWC, even H and W.

    Written as reshape + max because XLA:CPU differentiates a reduction much faster than the
    select-and-scatter of ``lax.reduce_window`` (``benchmarks/RESULTS.md``).
    """
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def space_to_depth(x: jax.Array) -> jax.Array:
    """(N, 2H, 2W, C) -> (N, H, W, 4C), channel (2a+b)*C+c holds pixel (2h+a, 2w+b)."""
    n, h2, w2, c = x.shape
    x = x.reshape(n, h2 // 2, 2, w2 // 2, 2, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h2 // 2, w2 // 2, 4 * c)


def depth_to_space(y: jax.Array, cout: int) -> jax.Array:
    """(N, H, W, 4*cout) with channel (2a+b)*cout+o -> (N, 2H, 2W, cout) with pixel (2h+a, 2w+b)."""
    n, h, w_, _ = y.shape
    y = y.reshape(n, h, w_, 2, 2, cout)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w_, cout)
