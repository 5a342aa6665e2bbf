"""Write PyTorch ``.pth`` files in ``torch.save``'s exact on-disk layouts, without torch (test helper).

The library only *reads* ``.pth`` files (:mod:`rdfia_jax.weights.pth`); this writer produces the
legacy (pre-1.6) and zip layouts, views, shared storages and hand-made (hostile) pickles for its tests.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rdfia_jax.weights.pth import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, _contiguous_strides

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
