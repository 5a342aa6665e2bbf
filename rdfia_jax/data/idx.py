"""Reading MNIST-format IDX files (optionally gzip-compressed), with validation: format, checksums, pairs.

The IDX format (LeCun et al.): a 4-byte magic number ``0x0000TTDD`` (TT = element type, 0x08 =
unsigned byte; DD = number of dimensions), then DD big-endian uint32 sizes, then the raw elements.
Public copies of MNIST are often re-gzipped, so checksums are taken on the *decompressed* bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Mapping

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


def read_verified(path: Path, base: str, sha: Mapping[str, str] | None, gz_md5: Mapping[str, str] | None,
                  what: str) -> np.ndarray:
    """Read, checksum-check (``sha`` of the decompressed content, or ``gz_md5`` of the .gz) and parse one IDX file."""
    data = read_bytes(path)
    if sha is not None:
        ok = sha256(data) == sha[base]
        if not ok and gz_md5 is not None and path.suffix == ".gz":
            ok = hashlib.md5(path.read_bytes()).hexdigest() == gz_md5[base]
        if not ok:
            raise RdfiaError(
                f"{path}: checksum mismatch: the decompressed content (sha256 {sha256(data)[:16]}...) "
                f"is not the official {what} file {base} (sha256 {sha[base][:16]}...); the file is "
                "corrupt or from another dataset: download it again"
            )
    return parse_idx(data, source=str(path))



def load_idx_pair(images_path: Path, labels_path: Path, *, expected_count: int | None = None,
                  image_shape=(28, 28), sha=None, gz_md5=None, what="IDX") -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check one images/labels pair of IDX files.

    Args:
      images_path: an ``idx3-ubyte`` file (``.gz`` or raw).
      labels_path: the matching ``idx1-ubyte`` file.
      expected_count: number of examples required (None: any, as long as both files agree).
      image_shape: required (H, W).
      sha: optional {basename: sha256 of the decompressed content}; a mismatch raises.
      gz_md5: optional {basename: md5 of the .gz file}, accepted as an alternative to ``sha``.
      what: dataset name for messages.
    Returns:
      ``(images uint8 (N, H, W, 1), labels int64 (N,))``.
    """
    def base(p: Path) -> str:
        return p.name[:-3] if p.name.endswith(".gz") else p.name

    images = read_verified(images_path, base(images_path), sha, gz_md5, what)
    labels = read_verified(labels_path, base(labels_path), sha, gz_md5, what)
    if images.ndim != 3 or images.shape[1:] != tuple(image_shape):
        raise RdfiaError(f"{images_path}: expected images of shape (N, {image_shape[0]}, {image_shape[1]}), got {images.shape}")
    if labels.ndim != 1:
        raise RdfiaError(f"{labels_path}: expected a 1-D label file, got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise RdfiaError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    if expected_count is not None and images.shape[0] != expected_count:
        raise RdfiaError(f"{images_path}: expected {expected_count} images, found {images.shape[0]}")
    if labels.size and labels.max() > 9:
        raise RdfiaError(f"{labels_path}: label {int(labels.max())} out of range 0..9")
    return images[..., None], labels.astype(np.int64)

