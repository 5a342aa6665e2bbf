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

Every array's BLAKE2b digest goes into the JSON item at save and is checked on restore, so a damaged
step folder (flipped bits, a truncated file, unreadable metadata) is reported as such, with the
previous intact step to go back to, instead of resuming from wrong weights.

A fingerprint mismatch names only the dotted keys that differ (``gan.lr_d 0.0002 -> 2e-05``); keys
listed in ``may_change`` may differ, and :meth:`CheckpointStore.restore` then reports them.

Orbax writes each step to a temporary directory and renames it when complete, so a process killed
while saving leaves the previous checkpoints intact.

Example::

    store = CheckpointStore(out / "checkpoints", fingerprint={"model": "dcgan", "nz": 100}, keep=3)
    store.save(step, state, {"epoch": 2})
    if store.latest_step() is not None:
        state, meta = store.restore(target=state)
"""

from __future__ import annotations

import hashlib
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
FORMAT_VERSION = 2  # 2: array checksums in the metadata (version-1 checkpoints restore unchecked)
_ABSENT = "(absent)"


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


def _digest(arr: np.ndarray) -> str:
    """BLAKE2b-128 of an array's dtype, shape and bytes (C order)."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _flat_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every entry that differs (recursing into dicts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            out += _flat_diff(old.get(key, _ABSENT), new.get(key, _ABSENT), where)
        return out
    return [] if old == new else [(prefix or "(fingerprint)", old, new)]


def _show(value: Any) -> str:
    return value if value == _ABSENT else json.dumps(value, default=str)


def _allowed(key: str, may_change: tuple[str, ...]) -> bool:
    return any(key == m or key.startswith(m + ".") for m in may_change)


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
      may_change: dotted paths into ``fingerprint`` (e.g. ``"gan.lr_d"``) allowed to differ from the
        checkpoint's on restore (e.g. a lower learning rate after a divergence); the differences
        are returned in the metadata under ``"fingerprint_changes"`` ``{key: [old, new]}``.
    """

    def __init__(self, directory: str | os.PathLike, *, fingerprint: Any, keep: int = 3,
                 fingerprint_defaults: dict | None = None, may_change: tuple[str, ...] | list[str] = ()):
        import orbax.checkpoint as ocp  # heavy import, only when checkpoints are used

        if keep < 1:
            raise RdfiaError(f"checkpoint keep={keep}: must keep at least 1 checkpoint")
        # orbax logs every save at INFO level through absl; keep the console readable.
        logging.getLogger("absl").setLevel(logging.WARNING)
        self.directory = Path(directory).expanduser().resolve()
        self.fingerprint = _canonical(fingerprint)
        self._fingerprint_defaults = _canonical(fingerprint_defaults or {})
        self.may_change = tuple(may_change)
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
            "checksums": [_digest(a) for a in arrays.values()],
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
        """The JSON metadata of checkpoint ``step`` (default: latest), without loading arrays.

        Raises:
          RdfiaError: no such checkpoint, or its metadata file is missing, empty or not JSON.
        """
        step = self._resolve_step(step)
        meta, problem = self._load_meta(step)
        if problem is not None:
            raise RdfiaError(f"{problem}: checkpoint {self.directory / str(step)} is damaged; "
                             + self._way_back(step))
        return meta

    def _load_meta(self, step: int) -> tuple[dict | None, str | None]:
        """``(metadata, None)``, or ``(None, problem)`` naming the metadata file and what is wrong."""
        meta_file = self.directory / str(step) / _META / "metadata"
        try:
            text = meta_file.read_text()
        except FileNotFoundError:
            return None, f"checkpoint metadata {meta_file} is missing"
        except (OSError, UnicodeDecodeError) as err:
            return None, f"checkpoint metadata {meta_file} cannot be read ({err})"
        if not text.strip():
            return None, f"checkpoint metadata {meta_file} is empty"
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as err:
            return None, f"checkpoint metadata {meta_file} is not valid JSON ({err})"
        missing = {"fingerprint", "signature", "user"} - set(meta if isinstance(meta, dict) else ())
        if missing:
            return None, f"checkpoint metadata {meta_file} lacks {', '.join(sorted(missing))}"
        return meta, None

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Load checkpoint ``step`` (default: latest) into the structure of ``target``.

        Args:
          target: a pytree with the same structure, shapes and dtypes as the saved state (e.g. a
            freshly initialized state); only its structure and leaf types are used.
          step: which checkpoint; default the latest.
        Returns:
          ``(state, metadata)``: the restored pytree (jax arrays, typed keys re-wrapped) and the
          ``metadata`` dict given to :meth:`save`; with ``may_change`` it also holds
          ``"fingerprint_changes"``: ``{dotted key: [old, new]}`` (empty when nothing changed).
        Raises:
          RdfiaError: no checkpoint, one written for another architecture/configuration, or a
            damaged one (checksum mismatch, unreadable arrays or metadata).
        """
        step = self._resolve_step(step)
        meta = self.read_metadata(step)
        where = f"checkpoint {self.directory / str(step)}"
        saved_fp = _with_defaults(meta.get("fingerprint"), self._fingerprint_defaults)
        diffs = _flat_diff(saved_fp, self.fingerprint)
        refused = [d for d in diffs if not _allowed(d[0], self.may_change)]
        if refused:
            listed = ", ".join(f"{k} {_show(old)} -> {_show(new)}" for k, old, new in refused)
            raise RdfiaError(
                f"{where} was written for another configuration ({listed}); use a new output folder "
                "or delete the old checkpoints"
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
        restored, problem = self._read_arrays(step, leaves, meta)
        if problem is not None:
            raise RdfiaError(f"{where} is damaged ({problem}); " + self._way_back(step, target))
        new_leaves = []
        for i, like in enumerate(leaves):
            value = restored[f"leaf_{i:06d}"]
            if _is_key(like):
                new_leaves.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(like)))
            else:
                new_leaves.append(jax.numpy.asarray(value))
        user = meta["user"]
        if self.may_change:
            user = dict(user, fingerprint_changes={k: [old, new] for k, old, new in diffs})
        return jax.tree_util.tree_unflatten(treedef, new_leaves), user

    def verify(self, step: int, target: Any) -> str | None:
        """None when checkpoint ``step`` reads back intact into ``target``'s structure, else the problem."""
        meta, problem = self._load_meta(step)
        if problem is not None:
            return problem
        if meta.get("signature") != _canonical(tree_signature(target)):
            return "its arrays do not match the target's structure"
        return self._read_arrays(step, jax.tree_util.tree_leaves(target), meta)[1]

    def _read_arrays(self, step: int, leaves: list, meta: dict) -> tuple[dict | None, str | None]:
        """``(arrays, None)``, or ``(None, problem)`` when the arrays cannot be read or fail their checksums."""
        abstract = {}
        for i, x in enumerate(leaves):
            like = np.asarray(jax.random.key_data(x)) if _is_key(x) else np.asarray(x)
            abstract[f"leaf_{i:06d}"] = jax.ShapeDtypeStruct(np.shape(like), like.dtype)
        ocp = self._ocp
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_ARRAYS: ocp.args.StandardRestore(abstract)})
            )[_ARRAYS]
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many types on damaged files
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return None, f"its arrays cannot be read: {first[:300]}"
        checksums = meta.get("checksums")
        if checksums is None:  # written before checksums existed (format 1)
            return restored, None
        if len(checksums) != len(leaves):
            return None, f"{len(checksums)} checksums for {len(leaves)} arrays"
        signature = meta.get("signature") or []
        bad = [signature[i][0] if i < len(signature) else f"leaf {i}" for i in range(len(leaves))
               if _digest(np.asarray(restored[f"leaf_{i:06d}"])) != checksums[i]]
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            return None, f"checksum mismatch in array {', '.join(bad[:3])}{more}"
        return restored, None

    def _way_back(self, step: int, target: Any = None) -> str:
        """How to go back: delete the damaged step folder and resume from the newest intact older one
        (arrays verified when ``target`` is given, else metadata only)."""
        folder = self.directory / str(step)
        older = [s for s in self.all_steps() if s < step][::-1]
        for s in older:
            ok = self._load_meta(s)[1] is None if target is None else self.verify(s, target) is None
            if ok:
                return f"delete {folder} to resume from step {s} (the newest intact checkpoint before it)"
        if older:
            return (f"the older checkpoints (steps {', '.join(map(str, older[::-1]))}) are damaged too; "
                    f"delete {self.directory} to start over")
        return f"no earlier checkpoint exists: delete {folder} to start over"

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
