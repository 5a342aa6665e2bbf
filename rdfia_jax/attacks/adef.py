"""ADef: adversarial deformations (Alaifari, Alberti & Gauksson 2018, arXiv:1804.07729).

The attack looks for a small vector field ``tau`` such that the deformed image
``x_tau = x o (id + tau)`` is misclassified. At step n, with ``x_n`` the ORIGINAL image resampled
bilinearly at ``id + tau_n``, and for each candidate label k, the binary score
``f_k = F_k - F_current`` is linearized in the deformation:

    f_k(x_n o (id + t)) ~ f_k(x_n) + <alpha_k, t>,   alpha_k(p) = sum_c dF/dx_c(p) * grad x_{n,c}(p)

(``grad x_n`` by finite differences). The smallest field in the smoothed norm that zeroes the
linearization is ``t_k = -f_k / ||S alpha_k||^2 * S S alpha_k`` with ``S`` a Gaussian filter; the
candidate with the smallest resulting ``||tau_n + t_k||_T`` (largest pixel displacement) is kept.
The loop stops per image as soon as the label changes (or equals the target). Images left on the
decision boundary, or not fooled, are finally tried with ``tau`` scaled by the overshoot factor.

Batched and jitted: a ``lax.while_loop`` with per-image "done" masks; ``max_iter``, ``overshoot``
and ``max_norm`` are traced values (no recompilation when they change).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rdfia_jax.attacks.base import (ApplyFn, AttackResult, PixelBox, change_norms, check_images, check_labels,
                                    check_positive_int, check_targets, logits_of)
from rdfia_jax.attacks.resample import deform, gaussian_smooth, max_displacement, spatial_gradient
from rdfia_jax.errors import RdfiaError
from rdfia_jax import xla

# Logit margin under which an image counts as sitting on the decision boundary (then overshoot).
_BOUNDARY_TOL = 1e-3


@xla.jit(static_argnames=("apply", "num_candidates", "targeted", "sigma"))
def _adef_core(apply, params, x, labels, targets, unit, max_iter, overshoot, max_norm, *,
               num_candidates, targeted, sigma):
    n, h, w, _ = x.shape

    def logits_fn(z):
        return logits_of(apply(params, z))

    logits0 = logits_fn(x)
    num_classes = logits0.shape[-1]
    if targeted:
        candidates = targets[:, None]  # (N, 1)
    else:
        # The best-scoring labels other than the true one, in descending order.
        masked = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_), -jnp.inf, logits0)
        candidates = jax.lax.top_k(masked, num_candidates)[1].astype(jnp.int32)  # (N, K)

    def fooled(pred):
        return (pred == targets) if targeted else (pred != labels)

    def body(state):
        it, tau, done, iters = state
        x_n = deform(x, tau)
        logits, vjp = jax.vjp(logits_fn, x_n)
        pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        now = fooled(pred) & ~done
        iters = jnp.where(now, it, iters)
        done = done | now
        # A linearized step lands ON the boundary up to rounding: rather than creeping towards it with
        # ever smaller steps, stop there and let the final overshoot push it across.
        f_best = jnp.max(jnp.take_along_axis(logits, candidates, axis=1), axis=1) - jnp.max(logits, axis=1)
        at_boundary = ~done & (f_best > -_BOUNDARY_TOL) & (it > 0)
        iters = jnp.where(at_boundary, it, iters)
        done = done | at_boundary
        active = ~done & (it < max_iter)

        # d(F_k - F_pred)/dx for every candidate k: one batched backward pass per candidate.
        cot = (jax.nn.one_hot(candidates.T, num_classes, dtype=logits.dtype)
               - jax.nn.one_hot(pred, num_classes, dtype=logits.dtype)[None])  # (K, N, L)
        grads = jax.vmap(lambda c: vjp(c)[0])(cot)  # (K, N, H, W, C)
        f = (jnp.take_along_axis(logits, candidates, axis=1)
             - jnp.take_along_axis(logits, pred[:, None], axis=1)).T  # (K, N), <= 0 while not fooled
        d_dx, d_dy = spatial_gradient(x_n)
        alpha = jnp.stack([jnp.sum(grads * d_dx[None], axis=-1), jnp.sum(grads * d_dy[None], axis=-1)],
                          axis=-1)  # (K, N, H, W, 2)
        k = alpha.shape[0]
        smooth = gaussian_smooth(alpha.reshape(k * n, h, w, 2), sigma)
        norm2 = jnp.sum(smooth * smooth, axis=(1, 2, 3)).reshape(k, n)
        smooth2 = gaussian_smooth(smooth, sigma).reshape(k, n, h, w, 2)
        ok = norm2 > 0
        scale = jnp.where(ok, -f / jnp.where(ok, norm2, 1.0), 0.0)
        tau_k = tau[None] + scale[..., None, None, None] * smooth2
        tnorm_k = max_displacement(tau_k.reshape(k * n, h, w, 2)).reshape(k, n)
        tnorm_k = jnp.where(ok & jnp.isfinite(tnorm_k), tnorm_k, jnp.inf)
        best = jnp.argmin(tnorm_k, axis=0)  # (N,)
        tau_best = jnp.take_along_axis(tau_k, best[None, :, None, None, None], axis=0)[0]
        tnorm_best = jnp.take_along_axis(tnorm_k, best[None, :], axis=0)[0]
        # No usable step (zero gradient) or beyond the norm budget: give up on that image.
        stuck = active & ~(tnorm_best <= max_norm)
        iters = jnp.where(stuck, it, iters)
        done = done | stuck
        move = active & ~stuck
        tau = jnp.where(move[:, None, None, None], tau_best, tau)
        return it + 1, tau, done, iters

    def cond(state):
        it, _, done, _ = state
        return (it <= max_iter) & ~jnp.all(done)

    tau0 = jnp.zeros((n, h, w, 2), x.dtype)
    state = (jnp.int32(0), tau0, jnp.zeros((n,), jnp.bool_), jnp.zeros((n,), jnp.int32))
    it, tau, done, iters = jax.lax.while_loop(cond, body, state)
    iters = jnp.where(done, iters, max_iter)

    x_adv = deform(x, tau)
    logits = logits_fn(x_adv)
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    success = fooled(pred)
    # Only just fooled: the label to leave (or the target) is within the tolerance of the top score.
    ref = targets if targeted else labels
    on_boundary = (jnp.max(logits, axis=1) - jnp.take_along_axis(logits, ref[:, None], axis=1)[:, 0]) < _BOUNDARY_TOL

    # Overshoot: scale the field (within max_norm) for images not fooled or only just fooled.
    tnorm = max_displacement(tau)
    factor = jnp.clip(max_norm / jnp.where(tnorm > 0, tnorm, 1.0), 1.0, overshoot)
    tau_os = tau * factor[:, None, None, None]
    x_os = deform(x, tau_os)
    logits_os = logits_fn(x_os)
    pred_os = jnp.argmax(logits_os, axis=-1).astype(jnp.int32)
    use_os = fooled(pred_os) & (~success | on_boundary)
    tau = jnp.where(use_os[:, None, None, None], tau_os, tau)
    x_adv = jnp.where(use_os[:, None, None, None], x_os, x_adv)
    pred = jnp.where(use_os, pred_os, pred)
    success = success | use_os
    linf, l2 = change_norms(x_adv, x, unit)
    return AttackResult(x_adv, success, iters, linf, l2, pred, max_displacement(tau), tau)


def adef(apply: ApplyFn, params: Any, x: Any, labels: Any = None, *, max_iter: int = 50,
         sigma: float = 1.0, overshoot: float = 1.2, max_norm: float = float("inf"), candidates: int = 9,
         targeted: bool = False, target: Any = None, box: PixelBox | None = None) -> AttackResult:
    """Find adversarial deformations of a batch of images.

    Args:
      apply: pure ``apply(params, x) -> logits | (logits, acts)`` (a static jit argument).
      params: the model's parameters (any pytree).
      x: (N, H, W, C) float model inputs (H, W >= 3).
      labels: (N,) labels to move away from; default: the model's predictions on ``x``.
      max_iter: maximum number of linearized steps per image.
      sigma: standard deviation (pixels) of the Gaussian that smooths the field; 0 = none.
      overshoot: factor (>= 1, typically 1.1-1.2) applied at the end to fields that leave the image
        on the decision boundary or not fooled.
      max_norm: give up on an image whose field would displace a pixel further than this.
      candidates: untargeted only: how many of the best other labels to aim at each step.
      targeted: stop only when the prediction equals ``target``.
      target: class (int) or (N,) classes; must differ from ``labels``.
      box: valid range / pixel unit (only used for input checks and L2/L-inf reporting; a bilinear
        resampling of a valid image always stays valid).
    Returns:
      An :class:`AttackResult`; ``displacement`` is the largest pixel displacement of ``field``.
    """
    x = jnp.asarray(x)
    box = box or PixelBox.unit_interval(x.shape[-1] if x.ndim == 4 else 1)
    x = check_images(x, box)
    if x.shape[1] < 3 or x.shape[2] < 3:
        raise RdfiaError(f"ADef needs images of at least 3x3 pixels, got {x.shape[1]}x{x.shape[2]}")
    max_iter = check_positive_int(max_iter, "max_iter")
    if not np.isfinite(sigma) or sigma < 0:
        raise RdfiaError(f"sigma must be >= 0 (pixels), got {sigma!r}")
    if not np.isfinite(overshoot) or overshoot < 1:
        raise RdfiaError(f"overshoot must be >= 1 (typically 1.1-1.2), got {overshoot!r}")
    if not max_norm > 0:
        raise RdfiaError(f"max_norm must be > 0 pixels, got {max_norm!r}")
    if labels is None:
        labels = np.asarray(jnp.argmax(logits_of(apply(params, x)), axis=-1))
    labels = check_labels(labels, x.shape[0])
    if targeted:
        targets = check_targets(target, labels)
        num_candidates = 1
    else:
        if target is not None:
            raise RdfiaError("a target class was given without --targeted; add --targeted or drop --target")
        targets = labels
        num_classes = int(logits_of(jax.eval_shape(apply, params, x)).shape[-1])
        num_candidates = max(1, min(check_positive_int(candidates, "candidates"), num_classes - 1))
    unit = box.arrays()[2]
    return _adef_core(apply, params, x, labels, targets, unit, jnp.int32(max_iter), jnp.float32(overshoot),
                      jnp.float32(max_norm), num_candidates=num_candidates, targeted=bool(targeted),
                      sigma=float(sigma))
