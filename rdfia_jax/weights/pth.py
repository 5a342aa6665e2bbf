"""Read PyTorch ``.pth`` tensor checkpoints without torch, safely.

A ``.pth`` file is a pickle, and unpickling with the standard library runs whatever code the file
names. This reader uses a restricted unpickler that resolves only the handful of globals a tensor
checkpoint needs (tensor rebuild functions, storage types, ``collections.OrderedDict``) to *local
stand-ins*; any other global makes it raise :class:`RdfiaError` before anything is called. Nothing is
ever imported from the file's module names.

Two on-disk layouts exist:

* **legacy** (``torch.save`` before PyTorch 1.6, e.g. ``vgg16-397923af.pth``, or
  ``_use_new_zipfile_serialization=False``): a sequence of pickles -- magic number, protocol version,
  system info, the object (storages replaced by persistent ids), the sorted list of storage keys --
  then for each key the raw storage: an 8-byte little-endian element count and the elements.
* **zip** (PyTorch >= 1.6): an uncompressed zip ``<archive>/data.pkl`` + ``<archive>/data/<key>``
  (+ ``version``, ``byteorder`` ...), data aligned to 64 bytes.

Tensors are rebuilt as NumPy arrays honouring storage offsets and strides; tensors that share a
storage read the same bytes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from rdfia_jax.errors import RdfiaError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> (numpy dtype of one element, element size in bytes).
# bfloat16 has no NumPy dtype: it is read as uint16 and widened to float32 (exact).
_STORAGE_DTYPES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("float32", 4),
    "DoubleStorage": ("float64", 8),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
    "UntypedStorage": ("uint8", 1),
}


class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class named in the pickle (never callable)."""

    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name: str):
        self.name = name
        self.dtype, self.itemsize = _STORAGE_DTYPES[name]

    def __repr__(self) -> str:
        return f"torch.{self.name}"


@dataclass
class _Storage:
    """A storage: ``numel`` elements of ``dtype``; ``data`` is filled once the bytes are read."""

    key: str
    stype: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass
class _StorageView:
    """A view ``[offset, offset + numel)`` (in elements) of a root storage (legacy format only)."""

    root: _Storage
    offset: int
    numel: int


@dataclass
class _LazyTensor:
    """A tensor rebuilt from a storage; materialized after every storage has been read."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise _Corrupt(f"tensor {what} is {value!r}, expected a tuple of ints")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride):
    """Stand-in for ``torch._utils._rebuild_tensor`` (files written by PyTorch < 0.4)."""
    if not isinstance(storage, (_Storage, _StorageView)):
        raise _Corrupt(f"tensor storage is {type(storage).__name__}, expected a persistent storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise _Corrupt(f"tensor storage offset is {storage_offset!r}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise _Corrupt(f"tensor size {size} / stride {stride} are inconsistent")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; autograd flags and hooks are dropped."""
    del requires_grad, backward_hooks, metadata  # irrelevant for weights
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stand-in for ``torch._utils._rebuild_parameter`` (a saved ``nn.Parameter``)."""
    del requires_grad, backward_hooks
    if not isinstance(data, _LazyTensor):
        raise _Corrupt("a Parameter does not wrap a tensor")
    return data


class _StateDict(collections.OrderedDict):
    """Stand-in for ``collections.OrderedDict``: the only attribute a pickle may set on it (via
    BUILD) is the ``_metadata`` that ``Module.state_dict()`` attaches."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]  # (dict state, no slot state)
        if not isinstance(state, dict) or set(state) - {"_metadata"}:
            keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise _Refused(f"collections.OrderedDict attributes {keys}")
        self.__dict__.update(state)


class _Corrupt(Exception):
    """Internal: the pickle is well-formed but does not describe a tensor checkpoint."""


class _Refused(Exception):
    """Internal: the pickle names a global outside the allow-list (it is never resolved)."""


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
for _name in _STORAGE_DTYPES:
    _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name)
_ALLOWED_GLOBALS[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable globals are the stand-ins above."""

    def __init__(self, file: BinaryIO, persistent_load=None):
        super().__init__(file, encoding="utf-8")  # the encoding torch uses for Python 2 strings
        self._persistent = persistent_load

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        if self._persistent is None:
            raise _Corrupt("unexpected persistent id outside the checkpoint object")
        return self._persistent(pid)


def _decode(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _check_storage_id(pid: Any, n_fields: tuple[int, ...]) -> tuple:
    if not isinstance(pid, tuple) or len(pid) not in n_fields or _decode(pid[0]) != "storage":
        raise _Corrupt(f"unsupported persistent id {pid!r:.80}")
    stype = pid[1]
    if not isinstance(stype, _StorageType):
        raise _Corrupt(f"persistent id names storage type {stype!r:.80}")
    key = _decode(pid[2])
    numel = pid[4]
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise _Corrupt(f"bad storage key/size in persistent id {pid!r:.80}")
    return pid


def _materialize(obj: Any, path: Path) -> Any:
    """Replace every :class:`_LazyTensor` inside ``obj`` by a contiguous NumPy array."""
    if isinstance(obj, _LazyTensor):
        return _tensor_to_array(obj, path)
    if isinstance(obj, Mapping):
        out = collections.OrderedDict((k, _materialize(v, path)) for k, v in obj.items())
        return out
    if isinstance(obj, list):
        return [_materialize(v, path) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, path) for v in obj)
    return obj


def _tensor_to_array(t: _LazyTensor, path: Path) -> np.ndarray:
    if isinstance(t.storage, _StorageView):
        root, base = t.storage.root, t.storage.offset
        limit = t.storage.numel
    else:
        root, base = t.storage, 0
        limit = t.storage.numel
    if root.data is None:
        raise RdfiaError(f"{path}: storage {root.key!r} is referenced but its data is missing "
                         "(truncated or corrupt file)")
    n = int(np.prod(t.size, dtype=np.int64))
    if n:
        last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride))
        if last >= limit or base + limit > root.numel:
            raise RdfiaError(f"{path}: a tensor of size {t.size}, stride {t.stride}, offset "
                             f"{t.offset} reaches outside its storage of {limit} elements "
                             "(corrupt file)")
    data = root.data
    itemsize = data.dtype.itemsize
    start = base + t.offset
    if n == 0:
        arr = np.zeros(t.size, dtype=data.dtype)
    elif t.stride == _contiguous_strides(t.size):
        # the common case (every tensor of a state dict): a reshaped slice, no copy, so a file
        # needs its size in memory once, not twice. Views of one storage may alias; nothing writes.
        arr = data[start:start + n].reshape(t.size)
    else:
        arr = np.lib.stride_tricks.as_strided(
            data[start:], shape=t.size, strides=tuple(s * itemsize for s in t.stride),
            writeable=False)
        arr = np.array(arr, copy=True, order="C")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if root.stype.dtype == "bfloat16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


def _np_dtype(stype: _StorageType, little_endian: bool) -> np.dtype:
    name = "uint16" if stype.dtype == "bfloat16" else stype.dtype
    dt = np.dtype(name)
    return dt.newbyteorder("<" if little_endian else ">") if dt.itemsize > 1 else dt


def is_zip_checkpoint(path: str | os.PathLike) -> bool:
    """True if ``path`` starts like a zip archive (the PyTorch >= 1.6 layout)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def read_pth(path: str | os.PathLike) -> dict:
    """Read a PyTorch checkpoint (legacy or zip layout) without torch and without running code.

    Args:
      path: a ``.pth`` / ``.pt`` file written by ``torch.save``.
    Returns:
      The saved object with every tensor replaced by a C-contiguous NumPy array (for a
      ``state_dict``: an ``OrderedDict`` name -> array; bfloat16 tensors come back as float32).
    Raises:
      RdfiaError: the file is missing, truncated, corrupt, not a tensor checkpoint, or its pickle
        names anything outside the allow-list (the message names the refused global; it is never
        imported or called).
    """
    path = Path(path)
    if not path.is_file():
        raise RdfiaError(f"{path}: no such file")
    try:
        if is_zip_checkpoint(path):
            return _read_zip(path)
        return _read_legacy(path)
    except _Refused as err:
        raise RdfiaError(
            f"{path}: refused to load: its pickle references '{err}', which a weights file never "
            "needs (only tensors, storages and OrderedDict are allowed). The file may be malicious; "
            "nothing from it was executed.") from None
    except _Corrupt as err:
        raise RdfiaError(f"{path}: not a valid PyTorch tensor checkpoint ({err})") from None
    except RdfiaError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error, struct.error,
            ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError,
            UnicodeDecodeError, OverflowError, RecursionError) as err:
        raise RdfiaError(f"{path}: truncated or corrupt PyTorch checkpoint "
                         f"({type(err).__name__}: {err})") from None


def _read_legacy(path: Path) -> Any:
    storages: dict[str, _Storage] = {}
    views: dict[str, _StorageView] = {}

    def persistent_load(pid):
        pid = _check_storage_id(pid, (6,))
        _, stype, key, _location, numel, view = pid
        key = _decode(key)
        root = storages.get(key)
        if root is None:
            root = storages[key] = _Storage(key, stype, numel)
        elif root.stype.dtype != stype.dtype or root.numel != numel:
            raise _Corrupt(f"storage {key!r} is declared twice with different types or sizes")
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3):
            raise _Corrupt(f"bad storage view {view!r:.80}")
        view_key, offset, view_size = _decode(view[0]), view[1], view[2]
        if (not isinstance(offset, int) or not isinstance(view_size, int) or offset < 0
                or view_size < 0 or offset + view_size > numel):
            raise _Corrupt(f"storage view {view!r:.80} lies outside its storage of {numel} elements")
        return views.setdefault(view_key, _StorageView(root, offset, view_size))

    with open(path, "rb") as f:
        head = f.read(262)
        if len(head) > 261 and head[257:262] == b"ustar":
            raise RdfiaError(f"{path}: this is the pre-2017 tar-based PyTorch format, which is not "
                             "supported; re-save it with a recent torch (torch.save(obj, path))")
        f.seek(0)
        magic = _RestrictedUnpickler(f).load()
        if magic != LEGACY_MAGIC_NUMBER:
            raise _Corrupt("wrong magic number: neither a zip nor a legacy torch.save file")
        protocol = _RestrictedUnpickler(f).load()
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise _Corrupt(f"unsupported legacy protocol version {protocol!r}")
        sys_info = _RestrictedUnpickler(f).load()
        if not isinstance(sys_info, dict):
            raise _Corrupt("system-info record is not a dict")
        result = _RestrictedUnpickler(f, persistent_load).load()
        keys = _RestrictedUnpickler(f).load()
        if not isinstance(keys, list):
            raise _Corrupt("storage key list is not a list")
        file_size = os.fstat(f.fileno()).st_size
        for key in keys:
            key = _decode(key)
            if key not in storages:
                raise _Corrupt(f"storage key {key!r} was never referenced")
            storage = storages[key]
            header = f.read(8)
            if len(header) != 8:
                raise RdfiaError(f"{path}: truncated file: storage {key!r} is missing")
            (count,) = struct.unpack("<q", header)
            # Modern torch writes legacy storages little-endian; the size record holds the element
            # count (== numel for storages written once).
            if count != storage.numel:
                raise _Corrupt(f"storage {key!r} holds {count} elements, pickle says {storage.numel}")
            nbytes = count * storage.stype.itemsize
            if f.tell() + nbytes > file_size:
                raise RdfiaError(f"{path}: truncated file: storage {key!r} needs {nbytes} bytes, "
                                 f"only {file_size - f.tell()} remain")
            buf = np.empty(count, dtype=_np_dtype(storage.stype, True))
            if f.readinto(memoryview(buf).cast("B")) != nbytes:
                raise RdfiaError(f"{path}: truncated file while reading storage {key!r}")
            storage.data = buf
        missing = sorted(k for k, s in storages.items() if s.data is None)
        if missing:
            raise _Corrupt(f"storages {missing[:5]} are referenced but not listed")
    return _materialize(result, path)


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        pkl = [n for n in pkl if n.count("/") <= 1]
        if len(pkl) != 1:
            raise _Corrupt(f"expected one <archive>/data.pkl entry, found {pkl or 'none'}")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise _Corrupt(f"byteorder record is {byteorder!r}")
        storages: dict[str, _Storage] = {}

        def persistent_load(pid):
            pid = _check_storage_id(pid, (5,))
            _, stype, key, _location, numel = pid
            key = _decode(key)
            if key in storages:
                st = storages[key]
                if st.stype.dtype != stype.dtype or st.numel != numel:
                    raise _Corrupt(f"storage {key!r} declared with two types or sizes")
                return st
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise RdfiaError(f"{path}: storage entry {entry!r} is missing (truncated or "
                                 "corrupt file)")
            info = zf.getinfo(entry)
            nbytes = numel * stype.itemsize
            if info.file_size != nbytes:
                raise _Corrupt(f"storage {entry!r} holds {info.file_size} bytes, the pickle "
                               f"expects {nbytes}")
            raw = zf.read(entry)  # checks the CRC
            data = np.frombuffer(raw, dtype=_np_dtype(stype, byteorder == "little"))
            st = storages[key] = _Storage(key, stype, numel, data)
            return st

        with zf.open(pkl[0]) as f:
            result = _RestrictedUnpickler(io.BytesIO(f.read()), persistent_load).load()
    return _materialize(result, path)
