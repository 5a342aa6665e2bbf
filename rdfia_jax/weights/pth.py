"""Read (and, for tests, write) PyTorch ``.pth`` tensor checkpoints without torch, safely.

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
        # the common case (every tensor of a state dict): a reshaped slice, no copy -- halves
        # peak memory on a 528 MB file. Views of one storage may alias; nothing here writes.
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


# --------------------------------------------------------------------------------------------
# Writer (used by tests to produce files in torch's exact on-disk layouts, without torch).
# --------------------------------------------------------------------------------------------

_NP_TO_STORAGE = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                  "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
                  "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


class PickleWriter:
    """Emits protocol-2 pickle opcodes by hand, so test files can name torch globals exactly as
    ``torch.save`` does without importing torch (or, for hostile files, any global at all)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def glob(self, module: str, name: str) -> "PickleWriter":
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def obj(self, value: Any) -> "PickleWriter":
        """Emit a plain value: None, bool, int, str, bytes, tuple, list, dict."""
        o = self.out
        if value is None:
            o += b"N"
        elif value is True:
            o += b"\x88"
        elif value is False:
            o += b"\x89"
        elif isinstance(value, int):
            if 0 <= value < 256:
                o += b"K" + bytes([value])
            elif 0 <= value < 65536:
                o += b"M" + struct.pack("<H", value)
            elif -(2**31) <= value < 2**31:
                o += b"J" + struct.pack("<i", value)
            else:
                enc = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
                o += b"\x8a" + bytes([len(enc)]) + enc
        elif isinstance(value, str):
            enc = value.encode("utf-8")
            o += b"X" + struct.pack("<I", len(enc)) + enc
        elif isinstance(value, tuple):
            if len(value) == 0:
                o += b")"
            else:
                o += b"("
                for v in value:
                    self.obj(v)
                o += b"t"
        elif isinstance(value, list):
            o += b"]"
            if value:
                o += b"("
                for v in value:
                    self.obj(v)
                o += b"e"
        elif isinstance(value, dict):
            o += b"}"
            if value:
                o += b"("
                for k, v in value.items():
                    self.obj(k)
                    self.obj(v)
                o += b"u"
        else:
            raise TypeError(f"PickleWriter cannot emit {type(value).__name__}")
        return self

    def raw(self, opcodes: bytes) -> "PickleWriter":
        self.out += opcodes
        return self

    def finish(self) -> bytes:
        return bytes(self.out + b".")


def _ordered_dict_pickle(w: PickleWriter, items, emit_value, metadata: dict | None) -> None:
    """OrderedDict(items) with optional ``_metadata`` attribute, as ``torch.save`` emits it."""
    w.glob("collections", "OrderedDict").raw(b")R")  # OrderedDict()
    if items:
        w.raw(b"(")
        for k, v in items:
            w.obj(k)
            emit_value(v)
        w.raw(b"u")  # SETITEMS
    if metadata is not None:
        w.raw(b"}(").obj("_metadata")
        w.glob("collections", "OrderedDict").raw(b")R")
        if metadata:
            w.raw(b"(")
            for k, v in metadata.items():
                w.obj(k).obj(v)
            w.raw(b"u")
        w.raw(b"ub")  # SETITEMS into the state dict, then BUILD


@dataclass
class TensorSpec:
    """A tensor to write: a view (offset/size/stride in elements) of a named flat storage."""

    storage: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


def _plan(state_dict: Mapping[str, Any], storages: Mapping[str, np.ndarray] | None):
    """Normalize writer inputs to (flat storages, {name: TensorSpec})."""
    if storages is None:
        storages, specs = {}, {}
        for i, (name, arr) in enumerate(state_dict.items()):
            arr = np.ascontiguousarray(arr)
            storages[str(i)] = arr.reshape(-1)
            specs[name] = TensorSpec(str(i), 0, tuple(arr.shape), _contiguous_strides(arr.shape))
        return storages, specs
    return {k: np.ascontiguousarray(v).reshape(-1) for k, v in storages.items()}, dict(state_dict)


def state_dict_pickle(specs: Mapping[str, TensorSpec], storages: Mapping[str, np.ndarray], *,
                      legacy: bool, key_map: Mapping[str, str] | None = None,
                      metadata: dict | None = None, old_rebuild: bool = False) -> bytes:
    """The pickle of a state dict whose tensors reference storages by persistent id."""
    w = PickleWriter()
    key_map = key_map or {k: k for k in storages}

    def emit_tensor(spec: TensorSpec):
        arr = storages[spec.storage]
        stype = _NP_TO_STORAGE[arr.dtype.name]
        if old_rebuild:
            w.glob("torch._utils", "_rebuild_tensor")
        else:
            w.glob("torch._utils", "_rebuild_tensor_v2")
        w.raw(b"(")  # MARK for the argument tuple
        w.raw(b"(").obj("storage").glob("torch", stype).obj(key_map[spec.storage]).obj("cpu")
        w.obj(int(arr.size))
        if legacy:
            w.obj(None)
        w.raw(b"tQ")  # TUPLE, BINPERSID
        w.obj(spec.offset).obj(tuple(spec.size)).obj(tuple(spec.stride))
        if not old_rebuild:
            w.obj(False).glob("collections", "OrderedDict").raw(b")R")
        w.raw(b"tR")  # TUPLE, REDUCE

    _ordered_dict_pickle(w, list(specs.items()), emit_tensor, metadata)
    return w.finish()


def save_pth(path: str | os.PathLike, state_dict: Mapping[str, Any], *, legacy: bool = False,
             storages: Mapping[str, np.ndarray] | None = None, metadata: dict | None = None,
             data_pickle: bytes | None = None, old_rebuild: bool = False) -> None:
    """Write a state dict in ``torch.save``'s legacy or zip layout (for tests; no torch needed).

    Args:
      path: output file; the zip archive's folder is named after its stem, as torch does.
      state_dict: name -> array (each gets its own storage), or name -> :class:`TensorSpec` when
        ``storages`` is given (to write views, offsets, strides and shared storages).
      legacy: write the pre-1.6 layout instead of the zip layout.
      storages: storage key -> flat array, for :class:`TensorSpec` entries.
      metadata: the state dict's ``_metadata`` (torch writes ``{"": {"version": 1}, ...}``).
      data_pickle: write these bytes as the object pickle instead (hostile-file tests).
      old_rebuild: use ``torch._utils._rebuild_tensor`` (PyTorch < 0.4 files) instead of ``_v2``.
    """
    path = Path(path)
    flat, specs = _plan(state_dict, storages)
    if metadata is None:
        metadata = {"": {"version": 1}}
    if legacy:
        # torch uses str(storage._cdata) (a pointer value) as the key; mimic with big integers.
        key_map = {k: str(94000000000000 + 64 * i) for i, k in enumerate(flat)}
        pkl = data_pickle or state_dict_pickle(specs, flat, legacy=True, key_map=key_map,
                                               metadata=metadata, old_rebuild=old_rebuild)
        out = bytearray()
        out += PickleWriter().obj(LEGACY_MAGIC_NUMBER).finish()
        out += PickleWriter().obj(LEGACY_PROTOCOL_VERSION).finish()
        out += PickleWriter().obj({"protocol_version": LEGACY_PROTOCOL_VERSION,
                                   "little_endian": True,
                                   "type_sizes": {"short": 2, "int": 4, "long": 4}}).finish()
        out += pkl
        inverse = {v: k for k, v in key_map.items()}
        sorted_keys = sorted(inverse)
        out += PickleWriter().obj(sorted_keys).finish()
        for key in sorted_keys:
            arr = flat[inverse[key]]
            out += struct.pack("<q", arr.size)
            out += arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        path.write_bytes(bytes(out))
        return
    pkl = data_pickle or state_dict_pickle(specs, flat, legacy=False, metadata=metadata,
                                           old_rebuild=old_rebuild)
    records = [("data.pkl", pkl), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little")]
    records += [(f"data/{k}", v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes())
                for k, v in flat.items()]
    records += [("version", b"3\n"), (".data/serialization_id", b"0" * 40)]
    _write_torch_zip(path, path.stem, records)


def _write_torch_zip(path: Path, archive: str, records: list[tuple[str, bytes]]) -> None:
    """An uncompressed zip laid out like PyTorch's writer (miniz): data aligned to 64 bytes with an
    ``FB`` padding extra field, sizes in a data descriptor (general-purpose flag 0x0808)."""
    out = bytearray()
    central = bytearray()
    for name, data in records:
        fname = f"{archive}/{name}".encode()
        offset = len(out)
        pad = (-(offset + 30 + len(fname) + 4)) % 64
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data) & 0xFFFFFFFF
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 0, 0x0808, 0, 0, 0x21, 0, 0, 0,
                           len(fname), len(extra)) + fname + extra
        out += data
        out += struct.pack("<IIII", 0x08074B50, crc, len(data), len(data))
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 0, 0x0808, 0, 0, 0x21, crc,
                               len(data), len(data), len(fname), 0, 0, 0, 0, 0, offset) + fname
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central),
                       cd_offset, 0)
    path.write_bytes(bytes(out))
