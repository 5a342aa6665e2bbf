"""Gradient reversal layer (Ganin & Lempitsky, 2015) as a ``jax.custom_vjp`` function.

Forward: identity. Backward: the incoming cotangent is multiplied by ``-lam``.

``lam`` is an ordinary (traced) argument whose cotangent is zero, *not* a ``nondiff_argnums``
argument: a per-step schedule ``lam(p)`` is then just another array input of the jitted training
step and never triggers a retrace.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _reverse(x: jax.Array, lam: jax.Array) -> jax.Array:
    return x


def _reverse_fwd(x: jax.Array, lam: jax.Array):
    # Only lam is needed by the backward pass (the layer is linear in x).
    return x, lam


def _reverse_bwd(lam: jax.Array, g: jax.Array):
    # lam is treated as a hyper-parameter: its cotangent is zero (same shape and dtype).
    return (-lam * g, jnp.zeros_like(lam))


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def grad_reverse(x: jax.Array, lam: jax.Array | float) -> jax.Array:
    """Identity in the forward pass; multiplies the gradient by ``-lam`` in the backward pass.

    Args:
      x: any floating array (e.g. the 2352-d features fed to the domain classifier).
      lam: scalar reversal strength (Python float or traced 0-d array). ``lam > 0`` reverses the
        gradient (DANN), ``lam < 0`` keeps its sign scaled by ``|lam|``, ``lam = 0`` blocks it.
    Returns:
      ``x`` unchanged.
    """
    x = jnp.asarray(x)
    lam = jnp.asarray(lam, dtype=x.dtype)  # one dtype: strict promotion, and float64 in gradient checks
    if lam.ndim != 0:
        raise ValueError(f"grad_reverse: lam must be a scalar, got shape {lam.shape}")
    return _reverse(x, lam)
