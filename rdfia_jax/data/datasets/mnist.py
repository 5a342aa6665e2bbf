"""MNIST and Fashion-MNIST from their official IDX files (user-supplied, checksum-verified).

Raw files are looked up offline, in a directory the user names (``data_dir``), then in
``$RDFIA_JAX_DATA`` (:func:`rdfia_jax.paths.data_dir`); nothing is downloaded here
(:mod:`rdfia_jax.data.download` does that, opt-in). A missing or damaged file raises
:class:`RdfiaError` at once, naming the file, where to put it and where to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rdfia_jax import paths
from rdfia_jax.data.base import ArrayDataset, cached, check_split
from rdfia_jax.data.idx import load_idx_pair
from rdfia_jax.errors import RdfiaError

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_COUNTS = {"train": 60_000, "test": 10_000}

# sha256 of the *decompressed* official files. MNIST: matches the md5s of the decompressed official
# files (train images 6bbc9ace898e44ae57da46a324031adb, train labels a25bea736e30d166cdddb491f175f624,
# test images 2646ac647ad5339dbf082846283269ea, test labels 27ae3e4e09519cfbb04c329615203637).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Fashion-MNIST: decompressed content of the files of Debian's dataset-fashion-mnist
# (upstream git 55506a9, the zalandoresearch repository's data/fashion/*.gz).
FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# md5 of the official Fashion-MNIST .gz files as published (a file matching either check is accepted).
FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of http://yann.lecun.com/exdb/mnist/)"
FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz)"
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# Pixel statistics of MNIST train (all 60000x28x28 pixels, in [0, 1]); the practical standardizes
# both DANN domains with them.
MNIST_TRAIN_MEAN = 0.1306604762738429
MNIST_TRAIN_STD = 0.30810780385646264


# ----------------------------------------------------------------------------- file lookup


def _candidate_dirs(subdirs: Sequence[str], data_dir, extra: Sequence[Path] = ()) -> list[Path]:
    """Directories searched, in order: ``data_dir/<sub>`` and ``data_dir`` itself (when given),
    else ``$RDFIA_JAX_DATA/<sub>``; then ``extra``."""
    roots = [Path(data_dir).expanduser()] if data_dir is not None else [paths.data_dir()]
    dirs: list[Path] = []
    for root in roots:
        dirs += [root / sub for sub in subdirs]
        dirs.append(root)
    return dirs + list(extra)


def _find_idx_dir(basenames: Sequence[str], dirs: Sequence[Path]) -> tuple[Path, dict[str, Path]] | None:
    for d in dirs:
        found = {}
        for base in basenames:
            for name in (base + ".gz", base):
                if (d / name).is_file():
                    found[base] = d / name
                    break
        if len(found) == len(basenames):
            return d, found
    return None


def _missing_error(what: str, files: Sequence[str], dirs: Sequence[Path], url: str, subdir: str) -> RdfiaError:
    where = ", ".join(str(d) for d in dirs)
    return RdfiaError(
        f"{what} files not found: {', '.join(f + '.gz' for f in files)} (looked in {where}). "
        f"Put them in DIR/{subdir}/ and pass --data-dir DIR (or set RDFIA_JAX_DATA=DIR); "
        f"they can be downloaded from {url}. "
        "Without any download, use the embedded dataset 'digits' (not MNIST)."
    )


# ----------------------------------------------------------------------------- IDX datasets


def _stat_key(files) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def _load_idx_dataset(name: str, split: str, data_dir, *, subdirs, extra_dirs, sha, gz_md5, url, what,
                      description, is_real_mnist) -> ArrayDataset:
    check_split(split)
    basenames = _IDX_FILES[split]
    dirs = _candidate_dirs(subdirs, data_dir, extra_dirs)
    found = _find_idx_dir(basenames, dirs)
    if found is None:
        raise _missing_error(what, basenames, dirs, url, subdirs[0])
    _, files = found
    key = (name, split, _stat_key(files.values()))

    def build():
        images, labels = load_idx_pair(files[basenames[0]], files[basenames[1]], expected_count=_COUNTS[split],
                                       sha=sha, gz_md5=gz_md5, what=what)
        return ArrayDataset(images, labels, name, split, description, is_real_mnist)

    return cached(key, build)


def load_mnist(split: str, data_dir=None) -> ArrayDataset:
    """MNIST from the four official IDX files (``.gz`` or decompressed), checksum-verified.

    Searched in ``data_dir/mnist``, ``data_dir/MNIST/raw`` and ``data_dir`` (or ``$RDFIA_JAX_DATA/...``).
    """
    return _load_idx_dataset(
        "mnist", split, data_dir, subdirs=("mnist", "MNIST/raw"), extra_dirs=(), sha=MNIST_SHA256, gz_md5=None,
        url=MNIST_URL, what="MNIST", description=f"MNIST {split} (LeCun et al.), 28x28 grayscale", is_real_mnist=True)


def load_fashion_mnist(split: str, data_dir=None) -> ArrayDataset:
    """Fashion-MNIST from its IDX files; also found where Debian's ``dataset-fashion-mnist`` puts them."""
    return _load_idx_dataset(
        "fashion_mnist", split, data_dir, subdirs=("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        extra_dirs=(FASHION_DEBIAN_DIR,), sha=FASHION_SHA256, gz_md5=FASHION_GZ_MD5, url=FASHION_URL,
        what="Fashion-MNIST", description=f"Fashion-MNIST {split} (Xiao et al.), 28x28 grayscale -- NOT MNIST digits",
        is_real_mnist=False)
