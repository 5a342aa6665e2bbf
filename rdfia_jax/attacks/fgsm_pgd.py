"""FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), L-inf and L2, targeted or not.

Both run in "pixel coordinates" ``u = x * unit`` (per channel), where the eps-ball is a plain
L-inf/L2 ball in pixel units and the valid range is the per-channel box ``[lo, hi] * unit`` of the
model's normalized space. Projection onto (ball intersect box) is exact for L-inf (intersection of
two boxes) and for L2 too: clamping to a box that contains the centre after projecting onto the ball
never leaves the ball (the clamp is a per-coordinate contraction towards the centre).

One jitted program per (model function, norm, flags, shapes): ``eps``, ``step_size`` and ``steps``
are traced values, so changing them never recompiles. The loop is a ``lax.while_loop`` with a
per-image "done" mask: an image that is fooled is frozen (its iteration count recorded) and the
loop stops when every image is done.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from rdfia_jax.attacks.base import (ApplyFn, AttackResult, PixelBox, change_norms, check_eps, check_images,
                                    check_labels, check_norm, check_positive_int, check_targets, logits_of)
from rdfia_jax.errors import RdfiaError
from rdfia_jax import xla

_TINY = 1e-12


def _per_image_l2(a: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(jnp.sum(a * a, axis=(1, 2, 3), keepdims=True))


def _random_start(key, shape, eps, norm):
    if norm == "linf":
        return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * eps
    # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, shape, jnp.float32)
    direction = direction / (_per_image_l2(direction) + _TINY)
    d = shape[1] * shape[2] * shape[3]
    radius = eps * jax.random.uniform(k_rad, (shape[0], 1, 1, 1), jnp.float32) ** (1.0 / d)
    return direction * radius


@xla.jit(static_argnames=("apply", "norm", "targeted", "random_start", "early_stop"))
def _pgd_core(apply, params, x, labels, targets, key, lo, hi, unit, eps, step_size, steps, *,
              norm, targeted, random_start, early_stop):
    unit4 = unit.reshape(1, 1, 1, -1)
    lo_u, hi_u = lo.reshape(1, 1, 1, -1) * unit4, hi.reshape(1, 1, 1, -1) * unit4
    u0 = x * unit4
    goal = targets if targeted else labels

    def objective(u):
        """Summed per-image objective to ascend (images do not interact, so its gradient is per image)."""
        logits = logits_of(apply(params, u / unit4))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, goal)
        return jnp.sum(-ce if targeted else ce), logits

    def fooled(logits):
        pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return (pred == targets) if targeted else (pred != labels)

    def project(u):
        d = u - u0
        if norm == "linf":
            d = jnp.clip(d, -eps, eps)
        else:
            d = d * jnp.minimum(1.0, eps / (_per_image_l2(d) + _TINY))
        return jnp.clip(u0 + d, lo_u, hi_u)

    u = project(u0 + _random_start(key, u0.shape, eps, norm)) if random_start else u0
    n = x.shape[0]
    done = jnp.zeros((n,), jnp.bool_)
    iters = jnp.zeros((n,), jnp.int32)

    def cond(state):
        i, _, done, _ = state
        return (i < steps) & ~jnp.all(done) if early_stop else i < steps

    def body(state):
        i, u, done, iters = state
        (_, logits), grad = jax.value_and_grad(objective, has_aux=True)(u)
        if early_stop:
            now = fooled(logits) & ~done
            iters = jnp.where(now, i, iters)
            done = done | now
        if norm == "linf":
            direction = jnp.sign(grad)
        else:
            direction = grad / (_per_image_l2(grad) + _TINY)
        u_next = project(u + step_size * direction)
        u = jnp.where(done[:, None, None, None], u, u_next)
        return i + 1, u, done, iters

    i, u, done, iters = jax.lax.while_loop(cond, body, (jnp.int32(0), u, done, iters))
    logits = logits_of(apply(params, u / unit4))
    success = fooled(logits)
    iters = jnp.where(done, iters, i)
    x_adv = u / unit4
    linf, l2 = change_norms(x_adv, x, unit)
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return AttackResult(x_adv, success, iters, linf, l2, pred, jnp.zeros((n,), jnp.float32), None)


def pgd(apply: ApplyFn, params: Any, x: Any, labels: Any, *, eps: float, norm: str = "linf",
        steps: int = 40, step_size: float | None = None, targeted: bool = False, target: Any = None,
        random_start: bool = True, early_stop: bool = True, key: jax.Array | None = None,
        box: PixelBox | None = None) -> AttackResult:
    """Projected gradient descent on the cross-entropy, inside an eps-ball and the valid pixel box.

    Untargeted: ascend the loss of the true label until the prediction changes. Targeted: descend the
    loss of ``target`` until the prediction is ``target``.

    Args:
      apply: pure ``apply(params, x) -> logits | (logits, acts)``; a static jit argument, so pass the
        same function object every call to reuse the compiled program.
      params: the model's parameters (any pytree).
      x: (N, H, W, C) float model inputs.
      labels: (N,) true classes.
      eps: ball radius in pixel units (images in [0, 1]), > 0.
      norm: "linf" or "l2".
      steps: maximum number of gradient steps (>= 1).
      step_size: step length in pixel units (default ``2.5 * eps / steps``, Madry et al.).
      targeted: targeted attack (needs ``target``).
      target: class (int) or (N,) classes to reach; must differ from ``labels``.
      random_start: start from a uniform random point of the ball.
      early_stop: freeze each image as soon as it is fooled (records its iteration count).
      key: PRNG key for the random start (default ``PRNGKey(0)``).
      box: valid range and pixel unit (default: pixels in [0, 1] for every channel).
    Returns:
      An :class:`AttackResult`.
    """
    eps = check_eps(eps)
    norm = check_norm(norm)
    steps = check_positive_int(steps, "steps")
    step_size = 2.5 * eps / steps if step_size is None else check_eps(step_size, "step_size")
    x = jnp.asarray(x)
    box = box or PixelBox.unit_interval(x.shape[-1] if x.ndim == 4 else 1)
    x = check_images(x, box)
    labels = check_labels(labels, x.shape[0])
    targets = check_targets(target, labels) if targeted else labels
    if not targeted and target is not None:
        raise RdfiaError("a target class was given without --targeted; add --targeted or drop --target")
    key = jax.random.PRNGKey(0) if key is None else key
    lo, hi, unit = box.arrays()
    return _pgd_core(apply, params, x, labels, targets, key, lo, hi, unit, jnp.float32(eps),
                     jnp.float32(step_size), jnp.int32(steps), norm=norm, targeted=bool(targeted),
                     random_start=bool(random_start), early_stop=bool(early_stop))


def fgsm(apply: ApplyFn, params: Any, x: Any, labels: Any, *, eps: float, norm: str = "linf",
         targeted: bool = False, target: Any = None, box: PixelBox | None = None) -> AttackResult:
    """Fast gradient (sign) method: one step of length eps along the sign (L-inf) or the normalized
    gradient (L2, "FGM"), then clamp to the valid box. Same arguments as :func:`pgd`."""
    return pgd(apply, params, x, labels, eps=eps, norm=norm, steps=1, step_size=eps, targeted=targeted,
               target=target, random_start=False, early_stop=False, box=box)
