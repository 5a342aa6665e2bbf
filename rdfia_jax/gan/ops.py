"""The DCGAN's strided convolutions, reformulated as stride-1 convolutions (fast on XLA:CPU).

Kernel layout everywhere: ``(kh, kw, in, out)``.

* Transposed convolution (PyTorch ``ConvTranspose2d`` semantics, "scatter" form): input pixel
  ``x[i, j]`` adds ``x[i, j] @ w[kh, kw]`` to output pixel ``(s*i - p + kh, s*j - p + kw)``. A torch
  weight ``(in, out, kh, kw)`` maps to ours by ``permute(2, 3, 0, 1)``.
* Convolution (PyTorch ``Conv2d`` semantics, cross-correlation): a torch weight ``(out, in, kh, kw)``
  maps to ours by ``permute(2, 3, 1, 0)``.

Why: XLA's CPU backend lowers the gradient of a stride-2 transposed convolution (and the input
gradient of a stride-2 convolution) to an input-dilated convolution that is several times slower
than PyTorch's. The 4x4 / stride 2 / padding 1 layers of the DCGAN are rewritten exactly:

* :func:`conv_transpose_4x4_s2` -- sub-pixel ("phase") decomposition: output pixel ``2m + a`` (a in
  {0, 1}) only sees input pixels ``m - 1, m, m + 1`` through kernel taps ``(3, 1, -)`` for a = 0 and
  ``(-, 2, 0)`` for a = 1. One stride-1 3x3 convolution with ``4 * out`` channels (the four phases'
  kernels, zeros where a phase has no tap) followed by depth-to-space gives the output.
* :func:`conv_4x4_s2` -- space-to-depth: pad by 1, fold 2x2 pixel blocks into channels, then one
  stride-1 2x2 convolution with ``4 * in`` input channels.
* 1x1 -> 4x4 transposed convolutions (the generators' first layers) are a matrix product.

Reference implementations on ``jax.lax`` (:func:`conv_transpose_reference`,
:func:`conv_reference`) are kept for the tests that prove the rewrites equal (outputs and
gradients) and for benchmarking; ``CONV_T_IMPL`` / ``CONV_IMPL`` select the formulations the models
use (read at trace time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")

#: How :func:`conv_transpose_4x4_s2` computes: "auto" (default: "phase4" for >= 16 output channels,
#: else "phase", the faster of the two on 2 CPU cores), "phase" (one 3x3 conv), "phase4" (four 2x2
#: convs, exact FLOPs), "gemm" (one matrix product + overlap-add; slow on XLA:CPU) or "lax".
CONV_T_IMPL = "auto"
#: How :func:`conv_4x4_s2` computes: "lax" (strided ``conv_general_dilated``, default: measured
#: faster here than "s2d", space-to-depth + 2x2 conv, and than an im2col matrix product).
CONV_IMPL = "lax"


def conv_transpose_reference(x: jax.Array, w: jax.Array, stride: int, padding: int) -> jax.Array:
    """PyTorch ``ConvTranspose2d`` (no bias) with ``jax.lax.conv_transpose``.

    Args:
      x: (N, H, W, in).
      w: (k, k, in, out), scatter layout (see module docstring).
      stride: stride.
      padding: PyTorch padding ``p``; output size ``(H - 1) * stride - 2p + k``.
    Returns:
      (N, H', W', out).
    """
    k = w.shape[0]
    pad = k - 1 - padding
    # The scatter form is a correlation of the stride-dilated input with the spatially flipped kernel.
    return jax.lax.conv_transpose(
        x, w[::-1, ::-1], (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=_DN
    )


def conv_reference(x: jax.Array, w: jax.Array, stride: int, padding: int) -> jax.Array:
    """PyTorch ``Conv2d`` (no bias) with ``jax.lax.conv_general_dilated``; w (k, k, in, out)."""
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), ((padding, padding), (padding, padding)), dimension_numbers=_DN
    )


def _conv_s1(x: jax.Array, w: jax.Array, padding: int) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), ((padding, padding), (padding, padding)), dimension_numbers=_DN
    )


# _TAPS[a] = kernel index used by output phase a (row or column parity) for input offset -1, 0, +1;
# None = no tap. From o = 2i - 1 + k: even o = 2m takes k = 1 at i = m and k = 3 at i = m - 1; odd
# o = 2m + 1 takes k = 2 at i = m and k = 0 at i = m + 1.
_TAPS = ((3, 1, None), (None, 2, 0))


def phase_kernel(w: jax.Array) -> jax.Array:
    """The (3, 3, in, 4*out) stride-1 kernel of the four output phases of a 4x4 s2 p1 ConvTranspose.

    Output channel ``(2a + b) * out + o`` holds phase (row parity a, column parity b).
    """
    k, _, cin, cout = w.shape
    if k != 4:
        raise ValueError(f"phase_kernel needs a 4x4 kernel, got {w.shape}")
    zero = jnp.zeros((cin, cout), w.dtype)
    taps = _TAPS
    phases = []
    for a in range(2):
        for b in range(2):
            rows = []
            for dy in range(3):
                cols = []
                for dx in range(3):
                    ky, kx = taps[a][dy], taps[b][dx]
                    cols.append(zero if ky is None or kx is None else w[ky, kx])
                rows.append(jnp.stack(cols))
            phases.append(jnp.stack(rows))  # (3, 3, in, out)
    return jnp.concatenate(phases, axis=-1)


def depth_to_space(y: jax.Array, cout: int) -> jax.Array:
    """(N, H, W, 4*cout) with channel (2a+b)*cout+o -> (N, 2H, 2W, cout) with pixel (2h+a, 2w+b)."""
    n, h, w_, _ = y.shape
    y = y.reshape(n, h, w_, 2, 2, cout)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w_, cout)


def space_to_depth(x: jax.Array) -> jax.Array:
    """(N, 2H, 2W, C) -> (N, H, W, 4C), channel (2a+b)*C+c holds pixel (2h+a, 2w+b)."""
    n, h2, w2, c = x.shape
    x = x.reshape(n, h2 // 2, 2, w2 // 2, 2, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h2 // 2, w2 // 2, 4 * c)


def _phase4(x: jax.Array, w: jax.Array) -> jax.Array:
    """Four stride-1 2x2 convolutions (exact FLOPs), one per output phase, then depth-to-space."""
    h, w_ = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    outs = []
    for a in range(2):
        for b in range(2):
            ra = [t for t in _TAPS[a] if t is not None]  # the two taps, in offset order
            rb = [t for t in _TAPS[b] if t is not None]
            kern = jnp.stack([jnp.stack([w[i, j] for j in rb]) for i in ra])
            outs.append(_conv_s1(xp[:, a:a + h + 1, b:b + w_ + 1], kern, 0))
    return depth_to_space(jnp.concatenate(outs, axis=-1), w.shape[-1])


def _gemm(x: jax.Array, w: jax.Array) -> jax.Array:
    """One (N*H*W, in) x (in, 16*out) product, then each output phase sums its 4 shifted taps."""
    n, h, w_, _ = x.shape
    cout = w.shape[-1]
    p = jnp.einsum("nhwc,ijco->nhwijo", x, w)
    p = jnp.pad(p, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    phases = []
    for a in range(2):
        for b in range(2):
            acc = None
            for dy, ki in enumerate(_TAPS[a]):
                if ki is None:
                    continue
                for dx, kj in enumerate(_TAPS[b]):
                    if kj is None:
                        continue
                    # output (m, l) of this phase takes input pixel (m + dy - 1, l + dx - 1)
                    term = p[:, dy:dy + h, dx:dx + w_, ki, kj, :]
                    acc = term if acc is None else acc + term
            phases.append(acc)
    return depth_to_space(jnp.concatenate(phases, axis=-1), cout)


def conv_transpose_4x4_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """ConvTranspose 4x4, stride 2, padding 1 (doubles H and W); formulation per ``CONV_T_IMPL``."""
    if CONV_T_IMPL == "lax":
        return conv_transpose_reference(x, w, 2, 1)
    if CONV_T_IMPL == "phase4" or (CONV_T_IMPL == "auto" and w.shape[-1] >= 16):
        return _phase4(x, w)
    if CONV_T_IMPL == "gemm":
        return _gemm(x, w)
    return depth_to_space(_conv_s1(x, phase_kernel(w), 1), w.shape[-1])


def s2d_kernel(w: jax.Array) -> jax.Array:
    """The (2, 2, 4*in, out) kernel of a 4x4 s2 conv applied after space-to-depth."""
    k, _, cin, cout = w.shape
    # w[2u + a, 2v + b, c] -> kernel[u, v, (2a + b) * cin + c]
    w = w.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    return w.reshape(2, 2, 4 * cin, cout)


def conv_4x4_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """Conv 4x4, stride 2, padding 1 (halves H and W) as space-to-depth + one stride-1 2x2 conv."""
    if CONV_IMPL == "lax":
        return conv_reference(x, w, 2, 1)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return _conv_s1(space_to_depth(x), s2d_kernel(w), 0)


def project_1x1(z: jax.Array, w: jax.Array) -> jax.Array:
    """ConvTranspose k x k, stride 1, padding 0 of a 1x1 input: (N, in) or (N,1,1,in) -> (N, k, k, out)."""
    z = z.reshape(z.shape[0], -1)
    return jnp.einsum("nc,hwco->nhwo", z, w)


def conv_valid_4x4(x: jax.Array, w: jax.Array) -> jax.Array:
    """Conv 4x4, stride 1, padding 0 of a 4x4 input (the discriminators' last layer): (N, out)."""
    return jnp.einsum("nhwc,hwco->no", x, w)
