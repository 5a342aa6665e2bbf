"""Shared pieces of the attacks: the valid input box, the result record, input checks.

Every attack works on a pure model function ``apply(params, x)`` returning logits or
``(logits, acts)``, with ``x`` NHWC in the *model's* input space (already normalized). A
:class:`PixelBox` says, per channel, which model-space values are valid pixels and how large one
pixel unit ([0, 1] RGB scale) is in model space, so budgets (``eps``) and reported norms are in
pixel units whatever the normalization, while clamping happens per channel in model space.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from rdfia_jax.errors import RdfiaError

ApplyFn = Callable[[Any, jnp.ndarray], Any]
NORMS = ("linf", "l2")


def logits_of(output: Any) -> jnp.ndarray:
    """The logits of a model output that is either ``logits`` or ``(logits, acts)``."""
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclasses.dataclass(frozen=True)
class PixelBox:
    """Valid pixel range per channel in model space, and the model-space size of one pixel unit.

    A model input ``x`` is a valid image when ``lo[c] <= x[..., c] <= hi[c]``; a model-space
    difference ``dx`` is ``dx * unit`` in pixel units (``unit = std / scale``).

    Attributes:
      lo: (C,) lower bounds in model space.
      hi: (C,) upper bounds in model space.
      unit: (C,) pixel units per model-space unit.
    """

    lo: np.ndarray
    hi: np.ndarray
    unit: np.ndarray

    @classmethod
    def unit_interval(cls, channels: int = 1) -> "PixelBox":
        """Models that take pixels in [0, 1] directly (the small MNIST classifier)."""
        ones = np.ones(channels, np.float32)
        return cls(0.0 * ones, ones, ones)

    @classmethod
    def from_preprocessing(cls, preprocessing) -> "PixelBox":
        """The box of a :class:`rdfia_jax.preprocess.Preprocessing` (per-channel, model order)."""
        lo, hi = preprocessing.bounds()
        unit = np.asarray(preprocessing.std, np.float32) / np.float32(preprocessing.scale)
        return cls(np.asarray(lo, np.float32), np.asarray(hi, np.float32), unit.astype(np.float32))

    def arrays(self) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        return (jnp.asarray(self.lo, jnp.float32), jnp.asarray(self.hi, jnp.float32),
                jnp.asarray(self.unit, jnp.float32))


class AttackResult(NamedTuple):
    """What every attack returns (a pytree of arrays, one row per image).

    Attributes:
      adversarial: (N, H, W, C) adversarial inputs, in model space.
      success: (N,) bool, the attack reached its goal (label changed, or target reached).
      iterations: (N,) int32, steps taken (until success, or the budget).
      linf: (N,) float32, L-inf norm of the change, in pixel units.
      l2: (N,) float32, L2 norm of the change, in pixel units.
      pred: (N,) int32, the model's prediction on ``adversarial``.
      displacement: (N,) float32, largest pixel displacement of a deformation (ADef), else 0.
      field: (N, H, W, 2) the deformation field (ADef), else None.
    """

    adversarial: jnp.ndarray
    success: jnp.ndarray
    iterations: jnp.ndarray
    linf: jnp.ndarray
    l2: jnp.ndarray
    pred: jnp.ndarray
    displacement: jnp.ndarray
    field: Optional[jnp.ndarray] = None


def change_norms(x_adv: jnp.ndarray, x: jnp.ndarray, unit: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-image (L-inf, L2) of ``x_adv - x`` in pixel units."""
    d = (x_adv - x) * unit.reshape(1, 1, 1, -1)
    return jnp.max(jnp.abs(d), axis=(1, 2, 3)), jnp.sqrt(jnp.sum(d * d, axis=(1, 2, 3)))


def check_images(x: Any, box: PixelBox) -> jnp.ndarray:
    """Validate an NHWC float batch against ``box``; returns it as float32."""
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise RdfiaError(f"attack images must be a batch NHWC (4 dimensions), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise RdfiaError(f"attack images must be float model inputs (normalized), got dtype {x.dtype}; "
                         "convert uint8 pixels with the model's preprocessing first")
    if x.shape[-1] != np.asarray(box.lo).shape[0]:
        raise RdfiaError(f"images have {x.shape[-1]} channels but the pixel box has {np.asarray(box.lo).shape[0]}")
    x = x.astype(jnp.float32)
    lo, hi = np.asarray(box.lo, np.float32), np.asarray(box.hi, np.float32)
    slack = 1e-4 * float(np.max(hi - lo))
    ch_min = np.asarray(jnp.min(x, axis=(0, 1, 2)))
    ch_max = np.asarray(jnp.max(x, axis=(0, 1, 2)))
    if np.any(ch_min < lo - slack) or np.any(ch_max > hi + slack) or not np.all(np.isfinite(ch_min + ch_max)):
        raise RdfiaError("attack images lie outside the valid pixel range of the model; pass model inputs "
                         "normalized with the network's preprocessing (and the matching PixelBox)")
    return x


def check_labels(labels: Any, n: int, what: str = "labels") -> jnp.ndarray:
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = np.full((n,), int(arr))
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise RdfiaError(f"{what} must be {n} integer class indices, got shape {arr.shape} dtype {arr.dtype}")
    return jnp.asarray(arr, jnp.int32)


def check_targets(target: Any, labels: jnp.ndarray, num_classes: int | None = None) -> jnp.ndarray:
    """Targets of a targeted attack: one class per image (or one for all), never the true class."""
    if target is None:
        raise RdfiaError("a targeted attack needs a target class (--target CLASS)")
    targets = check_labels(target, labels.shape[0], "target")
    t = np.asarray(targets)
    if num_classes is not None and (t.min() < 0 or t.max() >= num_classes):
        raise RdfiaError(f"target class out of range 0..{num_classes - 1}: {sorted(set(t.tolist()))}")
    same = np.nonzero(t == np.asarray(labels))[0]
    if same.size:
        raise RdfiaError(f"target equals the true class for image(s) {same[:10].tolist()} "
                         f"(class {int(t[same[0]])}); choose a different --target or drop those images")
    return targets


def check_eps(eps: Any, name: str = "eps") -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise RdfiaError(f"{name} must be a number, got {eps!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise RdfiaError(f"{name} must be a positive finite number (pixel units, images in [0, 1]), got {eps!r}")
    return value


def check_norm(norm: str) -> str:
    key = str(norm).lower().replace("-", "").replace("_", "")
    key = {"inf": "linf", "linfinity": "linf", "2": "l2"}.get(key, key)
    if key not in NORMS:
        raise RdfiaError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return key


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise RdfiaError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
