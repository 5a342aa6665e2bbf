"""Deterministic shuffling and batching of in-memory arrays.

The order of an epoch is a pure function of ``(seed, epoch, stream)``, so a run resumed at epoch e,
batch b sees exactly the batches it would have seen, and two streams (DANN's source and target)
with the same seed are shuffled independently.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np


def epoch_order(n: int, seed: int, epoch: int, *, stream: int = 0) -> np.ndarray:
    """The permutation of ``range(n)`` used for one epoch.

    Args:
      n: number of examples.
      seed: the run's data seed.
      epoch: epoch index (0-based).
      stream: independent stream id (e.g. 0 = source, 1 = target in DANN).
    Returns:
      int64 array of shape (n,), a permutation; equal arguments give equal permutations.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(stream)]))
    return rng.permutation(n).astype(np.int64)


def num_batches(n: int, batch_size: int, *, drop_last: bool = True) -> int:
    """Number of batches :func:`iterate_batches` yields for ``n`` examples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def _leading_dim(arrays) -> int:
    leaves = list(arrays.values()) if isinstance(arrays, Mapping) else list(arrays)
    if not leaves:
        raise ValueError("iterate_batches needs at least one array")
    n = leaves[0].shape[0]
    for a in leaves:
        if a.shape[0] != n:
            raise ValueError(f"arrays disagree on the number of examples: {[x.shape[0] for x in leaves]}")
    return n


def iterate_batches(arrays: Sequence[np.ndarray] | Mapping[str, np.ndarray], batch_size: int, *,
                    seed: int | None, epoch: int = 0, drop_last: bool = True, pad_last: bool = False,
                    stream: int = 0, start_batch: int = 0) -> Iterator[Any]:
    """Yield batches of ``arrays`` in the order of :func:`epoch_order`.

    Args:
      arrays: a tuple/list or dict of arrays sharing their first dimension.
      batch_size: examples per batch.
      seed: data seed; ``None`` keeps the stored order (evaluation).
      epoch: epoch index (changes the permutation).
      drop_last: drop a final batch smaller than ``batch_size`` (the training default).
      pad_last: with ``drop_last=False``, pad the last batch to ``batch_size`` (repeating its first
        example) and add a boolean ``mask`` (True = real example) to *every* batch: appended to a
        tuple, or under key ``"mask"`` in a dict, so that jitted steps see one shape.
      stream: independent shuffling stream (see :func:`epoch_order`).
      start_batch: skip this many batches (resume in the middle of an epoch).
    Yields:
      Batches with the structure of ``arrays`` (tuple for a sequence), each a numpy array.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = _leading_dim(arrays)
    order = np.arange(n, dtype=np.int64) if seed is None else epoch_order(n, seed, epoch, stream=stream)
    total = num_batches(n, batch_size, drop_last=drop_last)
    for b in range(start_batch, total):
        idx = order[b * batch_size: (b + 1) * batch_size]
        mask = None
        if pad_last and not drop_last:
            real = idx.shape[0]
            mask = np.zeros(batch_size, bool)
            mask[:real] = True
            if real < batch_size:
                idx = np.concatenate([idx, np.full(batch_size - real, idx[0], np.int64)])
        if isinstance(arrays, Mapping):
            batch = {k: v[idx] for k, v in arrays.items()}
            if mask is not None:
                batch["mask"] = mask
        else:
            batch = tuple(a[idx] for a in arrays)
            if mask is not None:
                batch = batch + (mask,)
        yield batch


def map_batches(fn: Callable[..., Any], arrays: Any, batch_size: int, *, sharding: Any = None,
                progress: Any = None) -> Any:
    """Apply a jitted ``fn`` to a whole dataset in fixed-size batches; the one batched-inference loop.

    Every call of ``fn`` sees the same shapes (the last batch is zero-padded), so it compiles once.
    The next batch is dispatched before the previous result is fetched, so host and device overlap.

    Args:
      fn: ``fn(*batch) -> pytree of arrays`` whose leaves have the batch as leading axis.
      arrays: one array or a tuple of arrays sharing their first dimension (e.g. images, labels).
      batch_size: examples per call; with ``sharding`` it should divide evenly over its devices
        (see :func:`rdfia_jax.parallel.shard_batch`).
      sharding: optional ``jax.sharding.Sharding`` each batch is placed with (data parallelism).
      progress: optional object with ``update(n)`` (e.g. :class:`rdfia_jax.progress.Progress`).
    Returns:
      The outputs' pytree with leaves concatenated over the dataset as NumPy arrays (padding dropped).
    Raises:
      ValueError: ``batch_size`` is not positive, or the arrays disagree on their first dimension.
    """
    import jax

    single = not isinstance(arrays, (tuple, list))
    arrays = (arrays,) if single else tuple(arrays)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = _leading_dim(arrays)
    outs: list[Any] = []
    pending = None

    def fetch(item):
        result, real = item
        outs.append(jax.tree.map(lambda a: np.asarray(a)[:real], jax.device_get(result)))
        if progress is not None:
            progress.update(real)

    for start in range(0, n, batch_size):
        batch = [np.asarray(a[start:start + batch_size]) for a in arrays]
        real = batch[0].shape[0]
        if real < batch_size:
            batch = [np.concatenate([b, np.zeros((batch_size - real,) + b.shape[1:], b.dtype)]) for b in batch]
        if sharding is not None:
            batch = [jax.device_put(b, sharding) for b in batch]
        result = fn(*batch)
        if pending is not None:
            fetch(pending)
        pending = (result, real)
    if pending is not None:
        fetch(pending)
    if not outs:
        raise ValueError("map_batches needs at least one example")
    return jax.tree.map(lambda *leaves: np.concatenate(leaves), *outs)
