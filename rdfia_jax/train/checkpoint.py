"""Orbax checkpoints of a whole training state: atomic, last N kept, architecture-checked.

A training state is any pytree (NNX ``State`` objects, optax states, dicts, NamedTuples, typed PRNG
keys, ...). It is stored *flattened*: leaf ``i`` becomes array ``leaf_00000i`` of an orbax
``StandardSave`` item, and the leaves' key paths, shapes and dtypes go into a JSON item beside it.
Flattening makes the format independent of how a pytree node type serializes itself, and the list
of (path, shape, dtype) doubles as an automatic architecture fingerprint: restoring a checkpoint
whose leaves differ from the target's raises :class:`~rdfia_jax.errors.RdfiaError` instead of
loading parameters into the wrong network.

Typed PRNG keys (``jax.random.key``) are stored as their ``jax.random.key_data`` and re-wrapped on
restore with the target leaf's implementation.

Orbax writes each step to a temporary directory and renames it when complete, so a process killed
while saving leaves the previous checkpoints intact.

Example::

    store = CheckpointStore(out / "checkpoints", fingerprint={"model": "dcgan", "nz": 100}, keep=3)
    store.save(step, state, {"epoch": 2})
    if store.latest_step() is not None:
        state, meta = store.restore(target=state)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rdfia_jax.errors import RdfiaError

__all__ = ["CheckpointStore", "tree_signature"]

_ARRAYS = "arrays"
_META = "meta"
FORMAT_VERSION = 1


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _leaf_signature(leaf: Any) -> list:
    if _is_key(leaf):
        impl = str(jax.random.key_impl(leaf))
        return ["prng_key", impl, list(np.shape(leaf))]
    arr = np.asarray(leaf) if not hasattr(leaf, "dtype") else leaf
    return [str(np.dtype(arr.dtype)), list(np.shape(arr))]


def tree_signature(tree: Any) -> list[list]:
    """``[keypath, dtype, shape]`` of every leaf of ``tree`` (what a checkpoint is checked against).

    Args:
      tree: any pytree of arrays, scalars or typed PRNG keys.
    Returns:
      A JSON-serializable list, one entry per leaf in flattening order.
    """
    leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [[jax.tree_util.keystr(path)] + _leaf_signature(leaf) for path, leaf in leaves_with_path]


def _canonical(obj: Any) -> Any:
    """JSON round-trip so that tuples/lists and int/float keys compare as they will after a reload."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _with_defaults(saved: Any, defaults: Any) -> Any:
    """``saved`` with every key of ``defaults`` that it lacks filled in (recursively in dicts)."""
    if not isinstance(saved, dict) or not isinstance(defaults, dict):
        return saved
    out = dict(saved)
    for key, value in defaults.items():
        out[key] = _with_defaults(out[key], value) if key in out else value
    return out


class CheckpointStore:
    """A directory of numbered checkpoints of one training run.

    Args:
      directory: where checkpoints live (created if needed); one subdirectory per saved step.
      fingerprint: a JSON-serializable description of the architecture/configuration that a
        checkpoint must match to be restored (e.g. ``{"model": "dcgan", "nz": 100, "ngf": 32}``).
      keep: how many most recent checkpoints to keep (older ones are deleted after a save).
      fingerprint_defaults: values of fingerprint entries added after checkpoints were first
        written, shaped like ``fingerprint`` (nested dicts): a saved fingerprint that lacks such an
        entry matches as if it held this value, so runs started by an earlier version still resume
        (an option introduced later with its "off" value is the same configuration).
    """

    def __init__(self, directory: str | os.PathLike, *, fingerprint: Any, keep: int = 3,
                 fingerprint_defaults: dict | None = None):
        import orbax.checkpoint as ocp  # heavy import, only when checkpoints are used

        if keep < 1:
            raise RdfiaError(f"checkpoint keep={keep}: must keep at least 1 checkpoint")
        # orbax logs every save at INFO level through absl; keep the console readable.
        logging.getLogger("absl").setLevel(logging.WARNING)
        self.directory = Path(directory).expanduser().resolve()
        self.fingerprint = _canonical(fingerprint)
        self._fingerprint_defaults = _canonical(fingerprint_defaults or {})
        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except (OSError, ValueError) as err:
            raise RdfiaError(f"checkpoint directory {self.directory}: cannot be used ({err})") from err

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        """Steps of the checkpoints on disk, ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The most recent saved step, or None when the directory holds no checkpoint."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------ save / restore
    def save(self, step: int, state: Any, metadata: dict | None = None) -> None:
        """Save ``state`` as checkpoint ``step`` (synchronously; atomic; prunes old ones).

        Args:
          step: the step number (monotonically increasing across saves).
          state: the pytree to save.
          metadata: extra JSON-serializable data (e.g. metric history, epoch) returned by
            :meth:`restore`.
        """
        leaves = jax.tree_util.tree_leaves(state)
        arrays = {
            f"leaf_{i:06d}": np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
            for i, leaf in enumerate(leaves)
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "fingerprint": self.fingerprint,
            "signature": tree_signature(state),
            "user": metadata or {},
        }
        ocp = self._ocp
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                **{_ARRAYS: ocp.args.StandardSave(arrays), _META: ocp.args.JsonSave(meta)}
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def read_metadata(self, step: int | None = None) -> dict:
        """The JSON metadata of checkpoint ``step`` (default: latest), without loading arrays."""
        step = self._resolve_step(step)
        ocp = self._ocp
        restored = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))
        return restored[_META]

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Load checkpoint ``step`` (default: latest) into the structure of ``target``.

        Args:
          target: a pytree with the same structure, shapes and dtypes as the saved state (e.g. a
            freshly initialized state); only its structure and leaf types are used.
          step: which checkpoint; default the latest.
        Returns:
          ``(state, metadata)``: the restored pytree (jax arrays, typed keys re-wrapped) and the
          ``metadata`` dict given to :meth:`save`.
        Raises:
          RdfiaError: no checkpoint, or one written for another architecture/configuration.
        """
        step = self._resolve_step(step)
        meta = self.read_metadata(step)
        where = f"checkpoint {self.directory / str(step)}"
        if _with_defaults(meta.get("fingerprint"), self._fingerprint_defaults) != self.fingerprint:
            raise RdfiaError(
                f"{where} was written for another configuration ({meta.get('fingerprint')}), not "
                f"{self.fingerprint}; use a new output folder or delete the old checkpoints"
            )
        expected = _canonical(tree_signature(target))
        if meta.get("signature") != expected:
            saved = meta.get("signature") or []
            diff = next(
                (f"saved {a} vs expected {b}" for a, b in zip(saved, expected) if a != b),
                f"{len(saved)} saved leaves vs {len(expected)} expected",
            )
            raise RdfiaError(
                f"{where} holds a different architecture ({diff}); use a new output folder or "
                "delete the old checkpoints"
            )
        leaves, treedef = jax.tree_util.tree_flatten(target)
        abstract = {
            f"leaf_{i:06d}": jax.ShapeDtypeStruct(np.shape(k), np.asarray(k).dtype)
            for i, k in enumerate(np.asarray(jax.random.key_data(x)) if _is_key(x) else np.asarray(x) for x in leaves)
        }
        ocp = self._ocp
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_ARRAYS: ocp.args.StandardRestore(abstract)})
            )[_ARRAYS]
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise RdfiaError(f"{where} cannot be read ({err}); delete it and resume from an older one") from err
        new_leaves = []
        for i, like in enumerate(leaves):
            value = restored[f"leaf_{i:06d}"]
            if _is_key(like):
                new_leaves.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(like)))
            else:
                new_leaves.append(jax.numpy.asarray(value))
        return jax.tree_util.tree_unflatten(treedef, new_leaves), meta["user"]

    def close(self) -> None:
        """Release orbax resources (pending saves are finished first)."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise RdfiaError(f"no checkpoint in {self.directory}; nothing to resume")
            return steps[-1]
        if step not in steps:
            raise RdfiaError(f"no checkpoint for step {step} in {self.directory} (have {steps})")
        return step
