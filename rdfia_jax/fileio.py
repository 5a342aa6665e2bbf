"""Atomic file and directory writes (nothing half-written is ever left at the final path), and the
one check that an output folder can be created and written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from rdfia_jax.errors import RdfiaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file (``0o666`` less the umask)."""
    return 0o666 & ~_umask()


def give_default_mode(path: str | os.PathLike) -> None:
    """Reset ``path`` to :func:`default_file_mode`: for writers (e.g. safetensors) that create 0600
    files, which others sharing the folder could not read."""
    os.chmod(path, default_file_mode())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; move it into place only if the block succeeds.

    The temporary lives in the same directory (same filesystem), so the final ``os.replace`` is
    atomic. On any exception the temporary is removed and ``final`` is left untouched.

    Args:
      final: the path to create or replace.
      is_dir: create a temporary *directory* instead of a file path.
    Yields:
      The temporary path to write to.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        give_default_mode(tmp)  # mkstemp creates 0600
    try:
        yield tmp
        if is_dir and final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically (fsync'd before the rename)."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _probe_write(folder: Path) -> None:
    """Create and delete a file in ``folder`` (OSError when that is impossible): permission bits do
    not tell the truth for root or on read-only mounts."""
    fd, name = tempfile.mkstemp(prefix=".rdfia-write-check.", dir=folder)
    os.close(fd)
    os.unlink(name)


def check_writable_dir(path: str | os.PathLike, what: str = "--out", *, fix: str | None = None) -> Path:
    """Refuse, before any work, a folder that cannot be created or written: the one such check.

    Nothing is left behind: ``path`` must not be an existing file, and the nearest existing folder
    (``path`` itself or its nearest existing ancestor) must accept a file, written and deleted there.

    Args:
      path: the folder.
      what: how messages name it ("WHAT PATH: reason"), e.g. "--out" or "--cache-dir".
      fix: what the user should do (default "choose another WHAT").
    Returns:
      ``path`` as an expanded :class:`Path`.
    Raises:
      RdfiaError: naming ``what``, the path, the reason and the fix.
    """
    out = Path(path).expanduser()
    fix = fix or f"choose another {what}"
    if out.exists() and not out.is_dir():
        raise RdfiaError(f"{what} {out}: is an existing file, not a folder; {fix}")
    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise RdfiaError(f"{what} {out}: cannot be created, {existing} is a file; {fix}")
    try:
        _probe_write(existing)
    except OSError as err:
        where = "" if existing == out else f" (cannot write in its nearest existing folder {existing})"
        raise RdfiaError(f"{what} {out}: not writable{where}: {err.strerror or err}; {fix}") from None
    return out
