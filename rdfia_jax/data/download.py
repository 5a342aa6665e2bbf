"""Opt-in download of the MNIST / Fashion-MNIST IDX files (checksum-verified, atomic, fails fast offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rdfia_jax import paths
from rdfia_jax.data import idx
from rdfia_jax.data.datasets.mnist import FASHION_SHA256, MNIST_SHA256
from rdfia_jax.errors import RdfiaError

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def download_idx(name: str, data_dir=None, *, mirrors: Sequence[str] | None = None, files: Sequence[str] | None = None,
                 timeout: float = 5.0) -> Path:
    """Download the IDX files of ``"mnist"`` or ``"fashion_mnist"`` into ``data_dir/<name>/``.

    Each file is fetched from the first mirror that answers, its decompressed content checked
    against the official checksum, and only then moved into place (atomically). Files already
    present and valid are kept. Without network the first failed connection raises at once.

    Args:
      name: "mnist" or "fashion_mnist".
      data_dir: destination root (default ``$RDFIA_JAX_DATA``).
      mirrors: base URLs to try in order (default: the official ones).
      files: basenames to fetch (default: all four).
      timeout: seconds per connection attempt.
    Returns:
      The folder holding the files.
    """
    import urllib.error
    import urllib.request

    from rdfia_jax.fileio import atomic_write_bytes

    if name not in ("mnist", "fashion_mnist"):
        raise RdfiaError(f"only mnist and fashion_mnist can be downloaded, not {name!r}")
    sha = MNIST_SHA256 if name == "mnist" else FASHION_SHA256
    mirrors = tuple(mirrors or (MNIST_MIRRORS if name == "mnist" else FASHION_MIRRORS))
    dest = (Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()) / name
    for base in files or sha:
        target = dest / f"{base}.gz"
        if target.is_file():
            try:
                if idx.sha256(idx.read_bytes(target)) == sha[base]:
                    continue
            except RdfiaError:
                pass  # damaged: download again
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{base}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    raw = response.read()
            except (urllib.error.URLError, OSError, ValueError) as err:
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
                continue
            try:
                content = idx.read_bytes_from(raw, url)
            except RdfiaError as err:
                errors.append(str(err))
                continue
            if idx.sha256(content) != sha[base]:
                errors.append(f"{url}: checksum mismatch (not the official {base})")
                continue
            atomic_write_bytes(target, raw)
            break
        else:
            raise RdfiaError(
                f"could not download {base}.gz ({'; '.join(errors)}). Without network, copy the four "
                f"files into {dest}/ yourself and run again without --download"
            )
    return dest
