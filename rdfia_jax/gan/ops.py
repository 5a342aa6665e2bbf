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
  kernels, zeros where a phase has no tap) followed by depth-to-space gives the output; or four
  2x2 convolutions, one per phase (exact FLOPs). Its gradients are taken from the *adjoint* strided
  convolution (:func:`_adjoint`): the input gradient is that convolution of the output gradient,
  the kernel gradient that convolution's kernel gradient -- both ordinary strided forms that
  XLA:CPU runs fast, unlike the transposed convolution's own kernel gradient.
* :func:`conv_4x4_s2` -- space-to-depth: pad by 1, fold 2x2 pixel blocks into channels, then one
  stride-1 2x2 convolution with ``4 * in`` input channels.
* 1x1 -> 4x4 transposed convolutions (the generators' first layers) are a matrix product.
* The one-channel ends (the generators' last layer, the discriminators' image convolution) are
  matrix products with the 16 taps of each pixel and hand-written gradients
  (:func:`_one_output_channel`, :func:`_one_input_channel`): convolution kernels vectorize badly
  over a single channel (DCGAN step about 9 % faster on 2 CPU cores, ``benchmarks/RESULTS.md``).

Reference implementations on ``jax.lax`` (:func:`conv_transpose_reference`,
:func:`conv_reference`) are kept for the tests that prove the rewrites equal (outputs and
gradients) and for benchmarking. The formulation is an explicit ``impl`` argument (the models hold
it as a static field, so it is part of their graph definition and of the jit cache key).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rdfia_jax.models.layers import depth_to_space, space_to_depth

_DN = ("NHWC", "HWIO", "NHWC")

#: Formulations of :func:`conv_transpose_4x4_s2`: "auto" (default: "matmul1" for one output
#: channel, "adjoint" for >= 16, else "phase"), "phase" (one 3x3 conv), "phase4" (four 2x2 convs,
#: exact FLOPs), "adjoint" (phase4's forward; both gradients from the adjoint strided convolution),
#: "matmul1" (one output channel only: a matrix product + overlap-add, hand-written gradients),
#: "gemm" (one matrix product + overlap-add for any width; slow on XLA:CPU) or "lax".
CONV_T_IMPLS = ("auto", "phase", "phase4", "adjoint", "matmul1", "gemm", "lax")
#: Formulations of :func:`conv_4x4_s2`: "auto" (default: "matmul1" for one input channel, else
#: "lax"), "lax" (strided ``conv_general_dilated``: measured faster here than "s2d" and than an
#: im2col matrix product for wide inputs), "matmul1" (one input channel only: taps gathering + a
#: matrix product, hand-written gradients) or "s2d" (space-to-depth + one stride-1 2x2 conv).
CONV_IMPLS = ("auto", "lax", "matmul1", "s2d")


def check_impl(impl: str, choices: tuple[str, ...], what: str) -> str:
    """``impl`` if it is one of ``choices``, else ValueError naming them."""
    if impl not in choices:
        raise ValueError(f"{what} formulation {impl!r}: choose one of {', '.join(choices)}")
    return impl


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


@jax.custom_vjp
def _phase4(x: jax.Array, w: jax.Array) -> jax.Array:
    """Four stride-1 2x2 convolutions (exact FLOPs), one per output phase, then depth-to-space.

    Forward and input gradient are those of the four convolutions. The kernel gradient is taken
    from the single 3x3 ``phase`` form instead (``phase_kernel``'s adjoint gathers the 16 taps back):
    2.25x its FLOPs, but XLA:CPU transposes a convolution's input before every kernel gradient, and
    four phases meant four transposed copies of the padded input (about 17 of 190 ms of the DCGAN
    step in a profile). Measured: DCGAN step 187 -> 176 ms, cDCGAN 1.58 -> 1.49 s.
    """
    return _phase4_convs(x, w)


def _phase4_fwd(x, w):
    return _phase4_convs(x, w), (x, w)


def _phase4_bwd(residuals, g):
    x, w = residuals
    (g_x,) = jax.vjp(lambda a: _phase4_convs(a, w), x)[1](g)
    # space_to_depth(g) is the 3x3 form's output gradient: channel (2a+b)*out+o = phase (a, b).
    (g_w,) = jax.vjp(lambda k: _conv_s1(x, phase_kernel(k), 1), w)[1](space_to_depth(g))
    return g_x, g_w


_phase4.defvjp(_phase4_fwd, _phase4_bwd)


def _phase4_convs(x: jax.Array, w: jax.Array) -> jax.Array:
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


@jax.custom_vjp
def _adjoint(x: jax.Array, w: jax.Array) -> jax.Array:
    """Phase-decomposed forward; both gradients through the adjoint strided convolution.

    A 4x4 s2 p1 transposed convolution is the input-adjoint of ``conv_reference(., v, 2, 1)`` with
    ``v = w`` with its in/out axes swapped, so its input gradient is that strided convolution of
    ``g`` (no input dilation) and its kernel gradient is that convolution's kernel gradient with
    ``x`` as the output gradient. XLA:CPU runs both forms several times faster than the gradients
    of the phase forms (128 -> 64 channels, 4 -> 8 px, batch 128: input gradient 5.6 -> 3.5 ms,
    kernel gradient 7.7 -> 4.0 ms; ``lax.conv_transpose``'s own kernel gradient: 135 ms).
    """
    return _phase4_convs(x, w)


def _adjoint_fwd(x, w):
    return _phase4_convs(x, w), (x, w)


def _adjoint_bwd(residuals, g):
    x, w = residuals
    v = w.transpose(0, 1, 3, 2)  # (k, k, out, in): the adjoint convolution's kernel
    g_x, pullback = jax.vjp(lambda k: conv_reference(g, k, 2, 1), v)
    (g_v,) = pullback(x.astype(g_x.dtype))
    return g_x.astype(x.dtype), g_v.transpose(0, 1, 3, 2).astype(w.dtype)


_adjoint.defvjp(_adjoint_fwd, _adjoint_bwd)


def _gemm(x: jax.Array, w: jax.Array) -> jax.Array:
    """One (N*H*W, in) x (in, 16*out) product, then each output phase sums its 4 shifted taps."""
    return _overlap_add(jnp.einsum("nhwc,ijco->nhwijo", x, w))


def _overlap_add(taps: jax.Array) -> jax.Array:
    """(N, H, W, 4, 4, C) per-pixel 4x4 contributions -> (N, 2H, 2W, C): the s2 p1 scatter-add.

    Output phase (a, b) sums its four shifted taps (the ``_TAPS`` table); depth-to-space then
    interleaves the phases.
    """
    n, h, w_ = taps.shape[:3]
    taps = jnp.pad(taps, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    phases = []
    for a in range(2):
        for b in range(2):
            acc = None
            for dy, ky in enumerate(_TAPS[a]):
                for dx, kx in enumerate(_TAPS[b]):
                    if ky is None or kx is None:
                        continue
                    # output (m, l) of this phase takes input pixel (m + dy - 1, l + dx - 1)
                    term = taps[:, dy:dy + h, dx:dx + w_, ky, kx]
                    acc = term if acc is None else acc + term
            phases.append(acc)
    return depth_to_space(jnp.concatenate(phases, axis=-1), taps.shape[-1])


def _gather_taps(g: jax.Array) -> jax.Array:
    """The adjoint of :func:`_overlap_add`: (N, 2H, 2W, 1) -> (N, H, W, 4, 4), tap (ky, kx) of input
    pixel (i, j) = g[2i - 1 + ky, 2j - 1 + kx] (zero outside), as 16 strided slices."""
    n, h2, w2, _ = g.shape
    g = jnp.pad(g[..., 0], ((0, 0), (1, 1), (1, 1)))
    cols = [g[:, ky:ky + h2:2, kx:kx + w2:2] for ky in range(4) for kx in range(4)]
    return jnp.stack(cols, axis=-1).reshape(n, h2 // 2, w2 // 2, 4, 4)


@jax.custom_vjp
def _one_output_channel(x: jax.Array, w: jax.Array) -> jax.Array:
    """The 4x4 s2 p1 transposed convolution to ONE channel as a matrix product + overlap-add.

    ``(N*H*W, in) @ (in, 16)`` gives every input pixel's 4x4 contribution, :func:`_overlap_add`
    places them. The backward pass gathers the output gradient's 16 taps per input pixel once and
    both gradients are matrix products with it. Why: with a single output channel the convolution
    forms have a 4-wide (``phase``) or 1-wide (``lax``) output dimension, which vectorizes badly,
    and XLA:CPU recomputes the previous layer's BatchNorm inside the transpose that feeds their
    kernel gradient (13.5 of about 190 ms of the DCGAN step in a profile; this form: about 3).
    """
    n, h, w_, cin = x.shape
    taps = x.reshape(-1, cin) @ w[..., 0].reshape(16, cin).T  # column 4 ky + kx
    return _overlap_add(taps.reshape(n, h, w_, 4, 4, 1))


def _one_output_channel_fwd(x, w):
    return _one_output_channel(x, w), (x, w)


def _one_output_channel_bwd(residuals, g):
    x, w = residuals
    cin = x.shape[-1]
    g_taps = _gather_taps(g).reshape(-1, 16)
    g_x = (g_taps @ w[..., 0].reshape(16, cin)).reshape(x.shape)
    g_w = (x.reshape(-1, cin).T @ g_taps).T.reshape(4, 4, cin, 1)
    return g_x.astype(x.dtype), g_w.astype(w.dtype)


_one_output_channel.defvjp(_one_output_channel_fwd, _one_output_channel_bwd)


def conv_transpose_4x4_s2(x: jax.Array, w: jax.Array, impl: str = "auto") -> jax.Array:
    """ConvTranspose 4x4, stride 2, padding 1 (doubles H and W); ``impl`` one of :data:`CONV_T_IMPLS`."""
    check_impl(impl, CONV_T_IMPLS, "transposed convolution")
    if impl == "lax":
        return conv_transpose_reference(x, w, 2, 1)
    if impl == "matmul1" or (impl == "auto" and w.shape[-1] == 1):
        if w.shape[-1] != 1:
            raise ValueError(f"transposed convolution 'matmul1' needs one output channel, got {w.shape}")
        return _one_output_channel(x, w)
    if impl == "adjoint" or (impl == "auto" and w.shape[-1] >= 16):
        return _adjoint(x, w)
    if impl == "phase4":
        return _phase4(x, w)
    if impl == "gemm":
        return _gemm(x, w)
    return depth_to_space(_conv_s1(x, phase_kernel(w), 1), w.shape[-1])


def s2d_kernel(w: jax.Array) -> jax.Array:
    """The (2, 2, 4*in, out) kernel of a 4x4 s2 conv applied after space-to-depth."""
    k, _, cin, cout = w.shape
    # w[2u + a, 2v + b, c] -> kernel[u, v, (2a + b) * cin + c]
    w = w.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    return w.reshape(2, 2, 4 * cin, cout)


@jax.custom_vjp
def _one_input_channel(x: jax.Array, w: jax.Array) -> jax.Array:
    """Conv 4x4, stride 2, padding 1 of a ONE-channel image as taps gathering + a matrix product.

    The adjoint structure of :func:`_one_output_channel`: :func:`_gather_taps` collects each output
    pixel's 4x4 input window (16 strided slices of a one-channel image), ``(N*H*W, 16) @ (16, out)``
    convolves; the kernel gradient is ``taps^T @ g`` and the image gradient an :func:`_overlap_add`
    of ``g @ w^T``. The convolution forms contract over one input channel, which vectorizes badly.
    """
    return _one_input_channel_fwd(x, w)[0]


def _one_input_channel_fwd(x, w):
    n, h2, w2, _ = x.shape
    taps = _gather_taps(x).reshape(-1, 16)
    y = (taps @ w.reshape(16, -1)).reshape(n, h2 // 2, w2 // 2, -1)
    return y, (taps, w, jnp.zeros((0,), x.dtype))  # the empty array only carries x's dtype


def _one_input_channel_bwd(residuals, g):
    taps, w, x_dtype_probe = residuals
    n, h, w_, cout = g.shape
    g_flat = g.reshape(-1, cout)
    g_w = (taps.T @ g_flat).reshape(w.shape)
    g_x = _overlap_add((g_flat @ w.reshape(16, cout).T).reshape(n, h, w_, 4, 4, 1))
    return g_x.astype(x_dtype_probe.dtype), g_w.astype(w.dtype)


_one_input_channel.defvjp(_one_input_channel_fwd, _one_input_channel_bwd)


def conv_4x4_s2(x: jax.Array, w: jax.Array, impl: str = "auto") -> jax.Array:
    """Conv 4x4, stride 2, padding 1 (halves H and W); ``impl`` one of :data:`CONV_IMPLS`."""
    check_impl(impl, CONV_IMPLS, "strided convolution")
    if impl == "lax":
        return conv_reference(x, w, 2, 1)
    even = x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0  # the taps gather halves exactly
    if impl == "matmul1" or (impl == "auto" and x.shape[-1] == 1 and even):
        if x.shape[-1] != 1 or not even:
            raise ValueError(f"strided convolution 'matmul1' needs one input channel and even sizes, got {x.shape}")
        return _one_input_channel(x, w)
    if impl == "auto":
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
