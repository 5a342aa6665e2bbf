"""Reading MNIST-format IDX files (optionally gzip-compressed), with validation.

The IDX format (LeCun et al.): a 4-byte magic number ``0x0000TTDD`` (TT = element type, 0x08 =
unsigned byte; DD = number of dimensions), then DD big-endian uint32 sizes, then the raw elements.
Public copies of MNIST are often re-gzipped, so checksums are taken on the *decompressed* bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError

_UBYTE = 0x08


def read_bytes(path: str | Path) -> bytes:
    """Return the decompressed content of ``path`` (``.gz`` is decompressed, anything else read raw).

    Args:
      path: an IDX file, gzip-compressed when its name ends in ``.gz``.
    Returns:
      The decompressed bytes.
    Raises:
      RdfiaError: the file is unreadable or its gzip stream is corrupt or truncated.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise RdfiaError(f"cannot read {path}: {err.strerror or err}") from err
    if path.suffix != ".gz" and raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise RdfiaError(
            f"{path} is not a valid gzip file ({err}); the download is probably truncated or "
            "corrupt: delete it and download it again"
        ) from err


def read_bytes_from(raw: bytes, source: str) -> bytes:
    """Decompress ``raw`` if it is gzip data (as :func:`read_bytes` does for a file)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise RdfiaError(f"{source}: corrupt gzip data ({err})") from err


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array of the header's shape.

    Args:
      data: the decompressed IDX content.
      source: a name for error messages (usually the file path).
    Returns:
      A read-only-safe copy as ``np.uint8`` with the dimensions from the header.
    Raises:
      RdfiaError: bad magic number, unsupported element type, or a size that disagrees with the header.
    """
    if len(data) < 4:
        raise RdfiaError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or ndim == 0 or ndim > 4:
        raise RdfiaError(
            f"{source}: not an IDX file (magic number 0x{data[:4].hex()}; expected 0x00000801 for "
            "labels or 0x00000803 for images)"
        )
    if dtype_code != _UBYTE:
        raise RdfiaError(f"{source}: IDX element type 0x{dtype_code:02x} is not unsigned byte (0x08)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise RdfiaError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise RdfiaError(
            f"{source}: IDX header says shape {shape} ({expected} bytes) but the content has "
            f"{len(data)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Used by tests and tools that need real-format files; the inverse of :func:`parse_idx`.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
