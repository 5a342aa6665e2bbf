"""A small, general training loop: jitted pure step, exact resume, NaN/inf stop, hooks.

How to use it::

    from rdfia_jax.train import loop, checkpoint

    def step(state, batch, step_index):          # pure; jitted once by the loop
        ...                                      # randomness: jax.random.fold_in(state["key"], step_index)
        return new_state, {"loss": loss}         # metrics: dict of scalars

    def get_batch(epoch, index_in_epoch):        # deterministic in (epoch, index): resume is exact
        order = rdfia_jax.data.epoch_order(n, seed, epoch)   # (cache it per epoch)
        idx = order[index_in_epoch * bs:(index_in_epoch + 1) * bs]
        return {"x": images[idx], "y": labels[idx]}

    store = checkpoint.CheckpointStore(out / "checkpoints", fingerprint={...}, keep=3)
    result = loop.run(step, init_state, get_batch, steps_per_epoch=469, epochs=5,
                      store=store, save_every=500, resume=True,
                      hooks=[loop.Hook(every=200, fn=lambda step, state, history: ...)])
    result.state, result.history["loss"]          # final state, per-step metric arrays

Contract:

* ``step(state, batch, step_index)`` is a pure function; the loop jits it once (``step_index`` is a
  traced int32 scalar, so a per-step schedule never retraces). It returns ``(state, metrics)``.
* ``get_batch(epoch, index_in_epoch)`` returns the batch pytree. It must depend only on its
  arguments (e.g. :func:`rdfia_jax.data.epoch_order`), which is what makes a resumed run reproduce
  the uninterrupted one bit for bit. A DANN step simply returns 64 source + 64 target images.
* Global step ``s`` (0-based) is ``epoch * steps_per_epoch + index_in_epoch``. Checkpoint number ``n``
  means "``n`` steps done"; the loop saves every ``save_every`` steps and at the end, with the
  metric history in the checkpoint's metadata, and a resume continues at step ``n`` (printing
  "resuming from step n of M"). A resume asking for fewer steps than ``n`` is refused before any
  work; settings the store lets change (``may_change``) are printed and recorded under ``"changes"``
  in every later checkpoint and in :attr:`LoopResult.changes`.
* After every step the metrics are checked; a NaN/inf metric (or a non-finite floating leaf of the
  state at save time) stops the run with :class:`TrainingDiverged` (an ``RdfiaError``) that
  carries the :class:`LoopResult` so far (``result.state`` is the last finite state); nothing
  non-finite is ever saved, so the last checkpoint stays good. Sweeps catch it and go on; pass
  ``on_divergence="return"`` to get the result with ``diverged=True`` instead.
* Hooks ``Hook(every, fn)`` run ``fn(steps_done, state, history)`` after every ``every`` steps and
  once at the end (sample grids, evaluations). An exception in a hook propagates (a run killed
  there resumes from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rdfia_jax import parallel
from rdfia_jax.errors import RdfiaError
from rdfia_jax import xla
from rdfia_jax.progress import Progress
from rdfia_jax.train.optim import apply_optimizer  # re-exported: steps call loop.apply_optimizer

__all__ = ["Hook", "LoopResult", "TrainingDiverged", "run", "check_resume_length", "array_batches", "all_finite",
           "apply_optimizer"]


@dataclasses.dataclass(frozen=True)
class Hook:
    """Call ``fn(steps_done, state, history)`` every ``every`` steps (and at the end if ``at_end``)."""

    every: int
    fn: Callable[[int, Any, dict], None]
    at_end: bool = True


@dataclasses.dataclass
class LoopResult:
    """What :func:`run` returns.

    Attributes:
      state: the final state (on divergence: the last state whose metrics were finite).
      history: metric name -> float64 array, one value per completed step (from step 0, including
        the steps done before a resume).
      steps_done: number of completed steps.
      total_steps: steps the run was asked to do.
      resumed_from: the checkpoint step resumed from, or None.
      diverged: True when the run stopped on a NaN/inf.
      message: the divergence message ('' otherwise).
      seconds: wall time of this call's steps (compilation, periodic hooks and saves included,
        final hooks excluded).
      steps_run: steps executed in this call (for steps/s).
      first_step_seconds: wall time of this call's first step (includes jit compilation), so that
        ``(seconds - first_step_seconds) / (steps_run - 1)`` is the steady-state time per step
        (hooks and checkpoint saves included).
      changes: settings changed on resume (the store's ``may_change`` keys), over the whole run:
        ``[{"step": resumed_at, "key": dotted key, "old": ..., "new": ...}, ...]``.
    """

    state: Any
    history: dict[str, np.ndarray]
    steps_done: int
    total_steps: int
    resumed_from: int | None = None
    diverged: bool = False
    message: str = ""
    seconds: float = 0.0
    steps_run: int = 0
    first_step_seconds: float = 0.0
    changes: list = dataclasses.field(default_factory=list)


class TrainingDiverged(RdfiaError):
    """A metric or the state became NaN/inf; ``.result`` holds the run so far."""

    def __init__(self, message: str, result: LoopResult):
        super().__init__(message)
        self.result = result


def _headline(values: dict, n: int = 4) -> list[tuple[str, float]]:
    """Up to ``n`` metrics to show, losses and accuracies first (schedules such as lr come last)."""
    items = list(values.items())
    return sorted(items, key=lambda kv: not ("loss" in kv[0] or "acc" in kv[0]))[:n]


def all_finite(tree: Any) -> bool:
    """True when every floating-point leaf of ``tree`` is free of NaN and inf."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    if not leaves:
        return True
    return bool(jax.device_get(_all_finite_jit(leaves)))


@xla.jit
def _all_finite_jit(leaves):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def array_batches(arrays: Any, batch_size: int, seed: int, *, stream: int = 0) -> tuple[Callable[[int, int], Any], int]:
    """A ``get_batch(epoch, index)`` over in-memory arrays, shuffled by ``rdfia_jax.data.epoch_order``.

    Incomplete last batches are dropped: the jitted step needs a fixed batch shape.

    Args:
      arrays: a pytree of numpy arrays sharing their first dimension.
      batch_size: examples per batch.
      seed: data-order seed.
      stream: independent shuffling stream of ``epoch_order`` (e.g. DANN source 0, target 1).
    Returns:
      ``(get_batch, steps_per_epoch)``.
    """
    from rdfia_jax.data import epoch_order

    leaves = jax.tree_util.tree_leaves(arrays)
    n = len(leaves[0])
    if any(len(x) != n for x in leaves):
        raise RdfiaError(f"arrays for batching have different lengths: {[len(x) for x in leaves]}")
    steps_per_epoch = n // batch_size
    if steps_per_epoch < 1:
        raise RdfiaError(f"{n} examples are fewer than one batch of {batch_size}")
    cache: dict[int, np.ndarray] = {}

    def get_batch(epoch: int, index: int) -> Any:
        if epoch not in cache:
            cache.clear()
            cache[epoch] = np.asarray(epoch_order(n, seed, epoch, stream=stream))
        idx = cache[epoch][index * batch_size:(index + 1) * batch_size]
        return jax.tree_util.tree_map(lambda a: a[idx], arrays)

    return get_batch, steps_per_epoch


def _last_good(store: Any) -> str:
    """Where the run can be taken up again: the last checkpoint, or that there is none."""
    latest = store.latest_step() if store is not None else None
    if latest is None:
        return "no checkpoint was written"
    return f"last good checkpoint: step {latest} in {store.directory}"


def _history_arrays(history: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}


def check_resume_length(where: Any, step: int, *, steps_per_epoch: int, epochs: int) -> None:
    """Refuse to resume a run already past the requested length (before anything is written).

    Raises:
      RdfiaError: ``step`` (the checkpoint at ``where``) is beyond ``epochs * steps_per_epoch``; names the
        ``--epochs`` that would do.
    """
    total = steps_per_epoch * epochs
    if step > total:
        raise RdfiaError(
            f"checkpoint {where} is at step {step} (epoch {step / steps_per_epoch:g}); this run asks for "
            f"{epochs} epoch{'s' * (epochs != 1)} = {total} steps: pass --epochs {-(-step // steps_per_epoch)} or more"
        )


def run(
    step: Callable[[Any, Any, jax.Array], tuple[Any, dict]],
    init_state: Any,
    get_batch: Callable[[int, int], Any],
    *,
    steps_per_epoch: int,
    epochs: int,
    store: Any | None = None,
    save_every: int = 500,
    resume: bool = False,
    hooks: Sequence[Hook] = (),
    metadata: dict | None = None,
    on_divergence: str = "raise",
    progress: bool = True,
    desc: str = "train",
    jit: bool = True,
    data_parallel: bool | int = True,
) -> LoopResult:
    """Run ``step`` over ``epochs`` epochs of ``steps_per_epoch`` batches.

    Args:
      step: pure ``(state, batch, step_index) -> (state, metrics)``; jitted here once.
      init_state: the initial state pytree (also the structure a checkpoint is restored into).
      get_batch: ``(epoch, index_in_epoch) -> batch``, deterministic in its arguments.
      steps_per_epoch: batches per epoch.
      epochs: number of epochs.
      store: a :class:`~rdfia_jax.train.checkpoint.CheckpointStore`, or None for no checkpoints.
      save_every: save a checkpoint every this many steps (and always at the end).
      resume: continue from the store's latest checkpoint when there is one (printing "resuming
        from step N of M" and any setting the store's ``may_change`` let differ). When False and
        the store already holds checkpoints, RdfiaError (so a run never silently mixes with an old
        one). A checkpoint beyond ``epochs * steps_per_epoch`` is refused before any work; one at
        exactly that step returns the finished state without training (final hooks still run).
      hooks: :class:`Hook` callbacks.
      metadata: extra JSON data saved with every checkpoint (under ``"run"``).
      on_divergence: "raise" (:class:`TrainingDiverged`) or "return" (result with diverged=True).
      progress: report progress (a bar on a terminal, plain lines in a log).
      desc: progress-bar label.
      jit: jit ``step`` (turn off only for debugging).
      data_parallel: with several local devices, replicate the state and split every batch over
        them (``NamedSharding``; XLA inserts the gradient all-reduce). True = all local devices,
        an int = that many, False = one device. A no-op on a single device.
    Returns:
      A :class:`LoopResult`.
    """
    if on_divergence not in ("raise", "return"):
        raise ValueError(f"on_divergence must be 'raise' or 'return', not {on_divergence!r}")
    if steps_per_epoch < 1 or epochs < 1:
        raise RdfiaError(f"nothing to train: steps_per_epoch={steps_per_epoch}, epochs={epochs}")
    if save_every < 1:
        raise RdfiaError(f"save_every={save_every}: must be >= 1")
    total = steps_per_epoch * epochs
    state = init_state
    history: dict[str, list[float]] = {}
    changes: list[dict] = []
    start = 0
    resumed_from = None
    if store is not None:
        latest = store.latest_step()
        if latest is not None:
            if not resume:
                raise RdfiaError(
                    f"{store.directory} already holds checkpoints (latest step {latest}); pass "
                    "--resume to continue that run, or choose a new output folder"
                )
            saved = store.read_metadata(latest)["user"]  # cheap checks before the arrays are read
            if saved.get("steps_per_epoch") != steps_per_epoch:
                raise RdfiaError(
                    f"checkpoint {store.directory / str(latest)} used {saved.get('steps_per_epoch')} "
                    f"steps per epoch, this run {steps_per_epoch} (different data or batch size)"
                )
            check_resume_length(store.directory / str(latest), latest, steps_per_epoch=steps_per_epoch,
                                epochs=epochs)
            state, meta = store.restore(init_state, latest)
            history = {k: list(v) for k, v in meta.get("history", {}).items()}
            changes = list(meta.get("changes", []))
            new = meta.get("fingerprint_changes") or {}
            changes += [{"step": latest, "key": k, "old": old, "new": nw} for k, (old, nw) in new.items()]
            start = resumed_from = latest
            note = f"resuming from step {latest} of {total}"
            if new:
                note += "; changed: " + ", ".join(f"{k} {old} -> {nw}" for k, (old, nw) in new.items())
            if latest == total:
                note += " (already finished: nothing to train)"
            print(note, file=sys.stderr, flush=True)
    step_fn = xla.jit(step) if jit else step
    n_devices = jax.local_device_count() if data_parallel is True else int(data_parallel or 1)
    mesh = parallel.data_mesh(n_devices) if n_devices > 1 else None
    if mesh is not None:
        state = parallel.replicate(state, mesh)

    def checkpoint_now(steps_done: int, st: Any) -> None:
        if store is None:
            return
        store.save(
            steps_done,
            st,
            {
                "steps_done": steps_done,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total,
                "history": history,
                "changes": changes,
                "run": metadata or {},
            },
        )

    bar = Progress(total, desc or "train", unit="steps", initial=start, enabled=progress)
    t0 = time.perf_counter()
    diverged_msg = ""
    steps_done = start
    first_step_seconds = 0.0
    train_seconds = 0.0
    try:
        for s in range(start, total):
            epoch, index = divmod(s, steps_per_epoch)
            batch = get_batch(epoch, index)
            if mesh is not None:
                batch = parallel.shard_batch(batch, mesh)
            # A NumPy scalar: jit takes it on its C++ fast path; building a jax.Array from a Python
            # int costs about 0.7 ms of host time per step (profiled).
            new_state, metrics = step_fn(state, batch, np.int32(s))
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                diverged_msg = (
                    f"training diverged at step {s} (epoch {epoch}, batch {index}): "
                    + ", ".join(f"{k}={values[k]}" for k in bad) + "; " + _last_good(store)
                )
                break
            for k, v in values.items():
                history.setdefault(k, [float("nan")] * s).append(v)
            state = new_state
            steps_done = s + 1
            if s == start:
                first_step_seconds = time.perf_counter() - t0
            bar.set_postfix(dict(_headline(values)))
            bar.update(1)
            if store is not None and (steps_done % save_every == 0 or steps_done == total):
                if not all_finite(state):
                    diverged_msg = (
                        f"training diverged before step {steps_done} (epoch {s // steps_per_epoch}, batch "
                        f"{s % steps_per_epoch}): the state holds NaN/inf; " + _last_good(store)
                    )
                    break
                checkpoint_now(steps_done, state)
            for hook in hooks:
                if steps_done % hook.every == 0 and steps_done != total:
                    hook.fn(steps_done, state, _history_arrays(history))
        train_seconds = time.perf_counter() - t0  # final hooks (figures, evaluation) excluded
        if not diverged_msg:
            for hook in hooks:
                if hook.at_end or steps_done % hook.every == 0:
                    hook.fn(steps_done, state, _history_arrays(history))
    finally:
        bar.close()
    result = LoopResult(
        state=state,
        history=_history_arrays(history),
        steps_done=steps_done,
        total_steps=total,
        resumed_from=resumed_from,
        diverged=bool(diverged_msg),
        message=diverged_msg,
        seconds=train_seconds,
        steps_run=steps_done - start,
        first_step_seconds=first_step_seconds,
        changes=changes,
    )
    if diverged_msg and on_divergence == "raise":
        raise TrainingDiverged(diverged_msg, result)
    return result
