"""Running attacks over many images: fixed-size batches, summaries, robust-accuracy curves.

Batches go through :func:`rdfia_jax.data.batching.map_batches` (the last one zero-padded, so each
attack compiles once); results come back as numpy.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rdfia_jax.attacks.adef import adef
from rdfia_jax.attacks.base import ApplyFn, AttackResult, logits_of
from rdfia_jax.attacks.fgsm_pgd import fgsm, pgd
from rdfia_jax.errors import RdfiaError
from rdfia_jax.data.batching import map_batches
from rdfia_jax.progress import Progress
from rdfia_jax import xla

METHODS = ("fgsm", "pgd", "adef")
_ATTACKS: dict[str, Callable[..., AttackResult]] = {"fgsm": fgsm, "pgd": pgd, "adef": adef}


def attack_fn(method: str) -> Callable[..., AttackResult]:
    """The attack function of a method name."""
    if method not in _ATTACKS:
        raise RdfiaError(f"unknown attack {method!r}; choose one of: {', '.join(METHODS)}")
    return _ATTACKS[method]


def predict(apply: ApplyFn, params: Any, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted classes (N,) of model inputs, in fixed-size jitted batches (:func:`map_batches`)."""
    x = np.asarray(x, np.float32)
    if x.shape[0] == 0:
        return np.zeros((0,), np.int32)
    fn = _jitted_predict(apply)
    return map_batches(lambda xb: fn(params, xb), x, min(batch_size, x.shape[0]))


_PREDICT_CACHE: dict[Any, Callable] = {}


def _jitted_predict(apply):
    if apply not in _PREDICT_CACHE:
        _PREDICT_CACHE[apply] = xla.jit(lambda p, x: jnp.argmax(logits_of(apply(p, x)), axis=-1).astype(jnp.int32))
    return _PREDICT_CACHE[apply]


def correctly_classified(apply: ApplyFn, params: Any, x: np.ndarray, labels: np.ndarray, n: int,
                         batch_size: int = 500) -> np.ndarray:
    """Indices of the first ``n`` images the model classifies correctly (all of them if fewer)."""
    pred = predict(apply, params, x, batch_size)
    return np.nonzero(pred == np.asarray(labels))[0][:n]


def run_attack(method: str, apply: ApplyFn, params: Any, x: np.ndarray, labels: np.ndarray, *,
               batch_size: int = 250, progress: bool = False, **kwargs) -> tuple[dict[str, np.ndarray], float]:
    """Run an attack over a whole set in fixed-size batches.

    Args:
      method: "fgsm", "pgd" or "adef".
      apply, params: the model (see :func:`rdfia_jax.attacks.pgd`).
      x: (N, H, W, C) model inputs; labels: (N,) true classes.
      batch_size: images per jitted call (the last batch is padded, so one compilation).
      progress: report progress (a bar on a terminal, plain lines in a log).
      **kwargs: the attack's options (``eps``, ``norm``, ``steps``, ``target``...). A per-image
        ``target`` array is split with the images.
    Returns:
      ``(result, seconds)``: ``result`` maps :class:`AttackResult` field names to numpy arrays (the
      ``field`` entry only for ADef); ``seconds`` is the wall time including compilation.
    """
    fn = attack_fn(method)
    x = np.asarray(x, np.float32)
    labels = np.asarray(labels)
    target = kwargs.pop("target", None)
    key = kwargs.pop("key", None)
    per_image_target = target is not None and np.ndim(target) == 1
    if x.shape[0] == 0:
        raise RdfiaError("no images to attack")
    arrays = (x, labels) + ((np.asarray(target),) if per_image_target else ())
    batch_index = iter(range(x.shape[0]))  # map_batches calls in order: the b-th call is batch b

    def one_batch(xb, yb, tb=target):
        b = next(batch_index)
        extra = {} if key is None else {"key": jax.random.fold_in(key, b)}  # independent random starts
        res = fn(apply, params, xb, yb, target=tb, **extra, **kwargs)
        return {name: value for name, value in res._asdict().items() if value is not None}

    start = time.perf_counter()
    with Progress(x.shape[0], f"{method} attack", unit="img", enabled=progress) as bar:
        result = map_batches(one_batch, arrays, min(batch_size, x.shape[0]), progress=bar)
    return result, time.perf_counter() - start


def summarize(result: dict[str, np.ndarray], seconds: float, name: str = "") -> dict[str, Any]:
    """One table row: success rate, median norms over the successful images, iterations, time."""
    ok = result["success"].astype(bool)
    n = int(ok.shape[0])

    def med(key):
        return float(np.median(result[key][ok])) if ok.any() else float("nan")

    row = {"attack": name, "images": n, "success_rate": float(ok.mean()) if n else float("nan"),
           "median_linf": med("linf"), "median_l2": med("l2"),
           "median_iterations": med("iterations"), "mean_iterations": float(np.mean(result["iterations"])),
           "seconds": round(seconds, 2), "ms_per_image": round(1000.0 * seconds / max(n, 1), 2)}
    if "field" in result:
        row["median_displacement"] = med("displacement")
    return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarize` rows."""
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def robust_accuracy_curve(method: str, apply: ApplyFn, params: Any, x: np.ndarray, labels: np.ndarray,
                          eps_values: Sequence[float], *, batch_size: int = 250, **kwargs
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the model under an attack as the budget grows.

    For FGSM/PGD, the attack runs at each ``eps`` (pixel units, with ``kwargs["norm"]``); images the
    model already gets wrong count as errors at every budget. For ADef, the attack runs once without
    a budget and ``eps`` bounds the largest pixel displacement: an image counts as robust at ``eps``
    unless a deformation of displacement <= eps fooled it.

    Returns:
      ``(eps, accuracy)`` as float arrays; ``eps = 0`` (clean accuracy) is prepended.
    """
    eps_values = np.asarray(sorted(float(e) for e in eps_values if e > 0), np.float64)
    labels = np.asarray(labels)
    clean = predict(apply, params, x) == labels
    accs = []
    if method == "adef":
        res, _ = run_attack("adef", apply, params, x, labels, batch_size=batch_size, **kwargs)
        fooled_at = np.where(res["success"] & clean, res["displacement"], np.inf)
        accs = [float(np.mean(clean & (fooled_at > e))) for e in eps_values]
    else:
        for e in eps_values:
            res, _ = run_attack(method, apply, params, x, labels, batch_size=batch_size, eps=e, **kwargs)
            accs.append(float(np.mean(clean & ~res["success"])))
    return np.concatenate([[0.0], eps_values]), np.asarray([float(clean.mean())] + accs)
