"""The practical's fooling images: normalized gradient ascent on the target class score.

Repeat ``x <- x + lr * g / (||g||_2 + eps)`` (g = d s_target / dx, norm over the whole image) until
the model predicts the target, at most ``max_iters`` steps. The batch runs in one compiled
``lax.while_loop``; each image stops (is masked out) as soon as it is classified as its target, and
the loop ends when every image is done or the cap is reached. ``eps`` keeps a zero gradient (a
SqueezeNet score behind a dead ReLU) from producing NaN: the image then simply does not move.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rdfia_jax.models import Network, forward
from rdfia_jax.vis import core
from rdfia_jax import xla


@dataclasses.dataclass
class FoolResult:
    """Outcome of :func:`fool` for a batch.

    Attributes:
      images: fooled images, model space (N, H, W, C).
      iterations: gradient steps taken per image (N,) int.
      success: whether the final image is classified as its target (N,) bool.
      predictions: final predicted classes (N,).
      original_predictions: predicted classes of the inputs (N,).
      l2: L2 norm of the perturbation in pixel units ([0, 1] RGB), per image (N,).
      linf: max abs perturbation in pixel units ([0, 1]), per image (N,).
      targets: the target classes (N,).
    """

    images: np.ndarray
    iterations: np.ndarray
    success: np.ndarray
    predictions: np.ndarray
    original_predictions: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    targets: np.ndarray


def fooling_step(graphdef, state, x: jnp.ndarray, targets: jnp.ndarray, done: jnp.ndarray, lr, eps):
    """One step of the practical's loop for a batch; pure and traceable.

    The prediction at ``x`` is checked first (as the practical does before each step): images that
    are now classified as their target join ``done``; the others move by ``lr * g / (||g|| + eps)``.
    A zero gradient gives a zero step, never NaN.

    Returns:
      ``(new_x, new_done)``.
    """
    def objective(xx):
        logits, _ = forward(graphdef, state, xx)
        return jnp.sum(core.class_scores(logits, targets)), logits

    g, logits = jax.grad(objective, has_aux=True)(x)
    done = done | (jnp.argmax(logits, axis=-1) == targets)
    step = lr * g / (core.per_image_norm(g) + eps)
    return jnp.where(done[:, None, None, None], x, x + step), done


@xla.jit(static_argnums=(0, 7))
@core.traced("fool")
def _fool(graphdef, state, x0, targets, max_iters, lr, eps, clamp, lo, hi):

    def cond(carry):
        i, _, done, _ = carry
        return (i < max_iters) & ~jnp.all(done)

    def body(carry):
        i, x, done, iters = carry
        x_new, done = fooling_step(graphdef, state, x, targets, done, lr, eps)
        if clamp:
            x_new = jnp.clip(x_new, lo, hi)
        return i + 1, x_new, done, iters + (~done).astype(jnp.int32)

    n = x0.shape[0]
    init = (jnp.zeros((), jnp.int32), x0, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32))
    _, x, _, iters = jax.lax.while_loop(cond, body, init)
    final_pred = jnp.argmax(forward(graphdef, state, x)[0], axis=-1)
    first_pred = jnp.argmax(forward(graphdef, state, x0)[0], axis=-1)
    return x, iters, final_pred == targets, final_pred, first_pred


def fool(network: Network, x: Any, targets: Any, *, lr: float = 1.0, max_iters: int = 100, eps: float = 1e-12,
         clamp: bool = False) -> FoolResult:
    """Make each image be classified as its target class (the practical's method).

    Args:
      network: the model.
      x: model-space images (N, H, W, C).
      targets: target class per image (N,) or one int.
      lr: step length (in model-space L2 units per step).
      max_iters: iteration cap.
      eps: added to the gradient norm (no NaN on a zero gradient).
      clamp: also clamp to the valid pixel range after each step (the practical does not).
    Returns:
      A :class:`FoolResult`.
    """
    x = core.check_images(network, x)
    t = core.check_targets(network, targets, x.shape[0], x.shape[1:])
    lo, hi = (jnp.asarray(b, jnp.float32).reshape(1, 1, 1, -1) for b in network.preprocessing.bounds())
    out = _fool(network.graphdef, network.state, x, t, jnp.asarray(max_iters, jnp.int32),
                jnp.asarray(lr, jnp.float32), jnp.asarray(eps, jnp.float32), bool(clamp), lo, hi)
    images, iters, success, pred, first = (core.to_numpy(o) for o in out)
    pre = network.preprocessing
    diff = core.to_numpy(pre.denormalize(images)) - core.to_numpy(pre.denormalize(x))
    flat = diff.reshape(len(diff), -1)
    return FoolResult(images, iters, success, pred, first, np.linalg.norm(flat, axis=1),
                      np.abs(flat).max(axis=1), core.to_numpy(t))


__all__ = ["FoolResult", "fool", "fooling_step"]
