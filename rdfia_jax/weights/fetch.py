"""Download a published weight file (progress bar, checksum, atomic), then convert it.

Offline behaviour matters more than speed here: the first connection attempt is bounded by a short
timeout (DNS included, via a worker thread), there is no retry loop, and the error names the file,
its URL and where to put a copy downloaded by other means.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from rdfia_jax import paths
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_path
from rdfia_jax.progress import Progress
from rdfia_jax.weights.published import PublishedFile, published

CONNECT_TIMEOUT_S = 8.0
READ_TIMEOUT_S = 60.0


def downloads_dir() -> Path:
    """Where raw published files are kept (``<weights dir>/downloads``)."""
    return paths.weights_dir() / "downloads"


def _hashes(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def verify(path: Path, entry: PublishedFile, sha256: str, md5: str) -> None:
    """Check a file against the digests the publisher gives (torchvision: sha256 prefix in the
    file name; Keras: full md5). RdfiaError on mismatch."""
    if entry.sha256_prefix and not sha256.startswith(entry.sha256_prefix):
        raise RdfiaError(f"{path}: checksum mismatch: sha256 starts with {sha256[:8]}, but "
                         f"{entry.filename} must start with {entry.sha256_prefix} (corrupt or "
                         f"different file); delete it and fetch again from {entry.url}")
    if entry.md5 and md5 != entry.md5:
        raise RdfiaError(f"{path}: checksum mismatch: md5 {md5}, published {entry.md5} for "
                         f"{entry.filename}; delete it and fetch again from {entry.url}")


def _offline_message(entry: PublishedFile, target: Path, reason: str) -> str:
    return (f"could not download {entry.filename} from {entry.url} ({reason}). If this machine is "
            f"offline, download that URL elsewhere and put the file at {target}, then run this "
            f"command again (it will verify and convert it), or run `rdfia-jax weights convert "
            f"{entry.model} PATH/TO/{entry.filename}`")


def _open(url: str, connect_timeout: float):
    """urlopen bounded by ``connect_timeout`` even when name resolution hangs."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(urllib.request.urlopen, url, timeout=connect_timeout)
    try:
        return future.result(timeout=connect_timeout + 1.0)
    except concurrent.futures.TimeoutError:
        raise socket.timeout(f"no answer within {connect_timeout:.0f} s") from None
    finally:
        pool.shutdown(wait=False)


def download(entry: PublishedFile, target: Path, *, url: str | None = None,
             connect_timeout: float = CONNECT_TIMEOUT_S) -> tuple[str, str]:
    """Stream ``entry`` to ``target`` atomically, verifying it before it lands.

    Args:
      entry: the published file.
      target: final path; nothing is left there (or beside it) if anything fails.
      url: override the URL (tests use a local server).
      connect_timeout: seconds allowed for connecting and for each read stall.
    Returns:
      (sha256, md5) hex digests of the file.
    Raises:
      RdfiaError: offline/unreachable (naming file, URL and where to put it), HTTP error,
        truncated transfer, checksum mismatch.
    """
    url = url or entry.url
    try:
        response = _open(url, connect_timeout)
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise RdfiaError(_offline_message(entry, target, str(reason))) from None
    sha, md5 = hashlib.sha256(), hashlib.md5()
    try:
        with response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with open(tmp, "wb") as f, Progress(total, entry.filename, unit="B",
                                                unit_scale=True) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    sha.update(block)
                    md5.update(block)
                    received += len(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
            if total is not None and received != total:
                raise RdfiaError(f"download of {entry.filename} from {url} stopped after "
                                 f"{received} of {total} bytes; run the command again")
            verify(target, entry, sha.hexdigest(), md5.hexdigest())  # before the rename
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as err:
        raise RdfiaError(_offline_message(entry, target, f"transfer failed: {err}")) from None
    return sha.hexdigest(), md5.hexdigest()


def fetch(model: str, source: str = "torchvision", *, url: str | None = None,
          entry: PublishedFile | None = None, connect_timeout: float = CONNECT_TIMEOUT_S,
          out: str | os.PathLike | None = None) -> Path:
    """Download (unless already in the downloads folder), verify and convert a published file.

    Args:
      model: model name.
      source: "torchvision", "timm" or "keras".
      url: override the download URL (mirrors, tests).
      entry: override the published-file record (tests).
      connect_timeout: seconds before giving up on an unreachable server.
      out: converted output path (default in ``paths.weights_dir()``).
    Returns:
      The converted weights file.
    """
    from rdfia_jax.weights import convert_file

    entry = entry or published(model, source)
    target = downloads_dir() / entry.local_name
    if target.is_file():
        print(f"using {target} (already downloaded); verifying")
        sha256, md5 = _hashes(target)
        verify(target, entry, sha256, md5)
    else:
        print(f"downloading {entry.url} (about {entry.approx_size_mb:.0f} MB) to {target}")
        sha256, md5 = download(entry, target, url=url, connect_timeout=connect_timeout)
    return convert_file(entry.model, target, out, source=entry.source, sha256=sha256)
