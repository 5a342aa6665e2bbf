"""optax under strict dtype promotion: the one place that works around it.

optax's Adam bias correction computes ``decay ** count`` (float ** int32) and its schedules mix
Python floats with int32 step counts, which the strict dtype promotion used by the test-suite
rejects. These two helpers run optax under standard promotion, so code using them works under both
settings; the arithmetic (and every number) is unchanged.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["init_optimizer", "apply_optimizer"]


def init_optimizer(tx: Any, params: Any) -> Any:
    """``tx.init(params)`` (the optimizer state)."""
    with jax.numpy_dtype_promotion("standard"):
        return tx.init(params)


def apply_optimizer(tx: Any, grads: Any, opt_state: Any, params: Any) -> tuple[Any, Any]:
    """One optax update: ``(new_params, new_opt_state)``."""
    import optax

    with jax.numpy_dtype_promotion("standard"):
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
    return new_params, new_opt_state
