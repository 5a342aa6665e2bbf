"""The 28x28 digit datasets: MNIST, Fashion-MNIST, MNIST-M, and the embedded sklearn digits.

Raw files are looked up offline, in a directory the user names (``data_dir``), then in
``$RDFIA_JAX_DATA`` (:func:`rdfia_jax.paths.data_dir`); nothing is downloaded here. A missing or
damaged file raises :class:`RdfiaError` at once, naming the file, where to put it and where to get it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax import paths
from rdfia_jax.data import idx
from rdfia_jax.data.base import ArrayDataset
from rdfia_jax.errors import RdfiaError

SPLITS = ("train", "test")

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
BSDS_URL = ("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html "
            "(BSR_bsds500.tgz; the 200 images of BSR/BSDS500/data/images/train)")
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

_CACHE: dict[tuple, ArrayDataset] = {}


def _cached(key, build):
    if key not in _CACHE:
        ds = build()
        ds.images.flags.writeable = False  # shared between callers: nobody may modify it in place
        ds.labels.flags.writeable = False
        _CACHE[key] = ds
    return _CACHE[key]


def _stat_key(files) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise RdfiaError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _read_verified(path: Path, base: str, sha: dict[str, str] | None, gz_md5: dict[str, str] | None, what: str) -> np.ndarray:
    data = idx.read_bytes(path)
    if sha is not None:
        ok = idx.sha256(data) == sha[base]
        if not ok and gz_md5 is not None and path.suffix == ".gz":
            ok = hashlib.md5(path.read_bytes()).hexdigest() == gz_md5[base]
        if not ok:
            raise RdfiaError(
                f"{path}: checksum mismatch: the decompressed content (sha256 {idx.sha256(data)[:16]}...) "
                f"is not the official {what} file {base} (sha256 {sha[base][:16]}...); the file is "
                "corrupt or from another dataset: download it again"
            )
    return idx.parse_idx(data, source=str(path))


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

    images = _read_verified(images_path, base(images_path), sha, gz_md5, what)
    labels = _read_verified(labels_path, base(labels_path), sha, gz_md5, what)
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


def _load_idx_dataset(name: str, split: str, data_dir, *, subdirs, extra_dirs, sha, gz_md5, url, what,
                      description, is_real_mnist) -> ArrayDataset:
    _check_split(split)
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

    return _cached(key, build)


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


# ----------------------------------------------------------------------------- download (opt-in)

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


# ----------------------------------------------------------------------------- embedded digits


def _digits_split_mask(n: int) -> np.ndarray:
    """Fixed train/test split of the sklearn digits: every 5th image (index % 5 == 4) is test."""
    return (np.arange(n) % 5) == 4


def digits_to_28(images8: np.ndarray) -> np.ndarray:
    """Upsample sklearn's 8x8 digits (values 0..16) to MNIST's layout: a 20x20 digit (PIL bilinear)
    centred in a 28x28 uint8 frame, like MNIST's 20x20 box in 28x28."""
    from PIL import Image

    out = np.zeros((images8.shape[0], 28, 28), np.uint8)
    for i, img in enumerate(images8.astype(np.float32) * (255.0 / 16.0)):
        big = np.asarray(Image.fromarray(img, mode="F").resize((20, 20), Image.BILINEAR))
        out[i, 4:24, 4:24] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return out


def load_digits(split: str) -> ArrayDataset:
    """The embedded default: scikit-learn's 1,797 handwritten digits, upsampled to 28x28.

    Needs no download (the data ships inside scikit-learn). Train = 1,438 images, test = 359
    (fixed split: every 5th image is test). It is NOT MNIST and says so in ``description``.
    """
    _check_split(split)

    def build():
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        test = _digits_split_mask(len(bunch.target))
        keep = test if split == "test" else ~test
        images = digits_to_28(bunch.images[keep])[..., None]
        return ArrayDataset(images, bunch.target[keep].astype(np.int64), "digits", split,
                            "scikit-learn handwritten digits (8x8 upsampled to 28x28) -- NOT MNIST", False)

    return _cached(("digits", split), build)


# ----------------------------------------------------------------------------- MNIST-M


def compose_m(digits: np.ndarray, backgrounds: Sequence[np.ndarray], rng: np.random.Generator, *,
              threshold: int = 0) -> np.ndarray:
    """Blend digits with random background crops, as the practical builds MNIST-M.

    For each digit i: three uniforms ``u = rng.random((N, 3))[i]`` pick a background
    b = floor(u0 * len(backgrounds)) and a crop corner (r, c) uniform in [0, H_b - 28) x [0, W_b - 28)
    (upper bound excluded, as ``np.random.randint`` in the practical); the digit is binarized (x > 0 -> 255), made RGB, and the output is
    ``|crop - digit|`` computed in int16 (uint8 subtraction would wrap around), stored as uint8.

    Args:
      digits: uint8 (N, 28, 28) or (N, 28, 28, 1).
      backgrounds: RGB uint8 images (H, W, 3), each larger than 28x28.
      rng: the random generator (consumed in a fixed order, so equal seeds give equal bytes).
      threshold: a pixel is digit when ``x > threshold`` (0 for MNIST as in the practical; the
        blurry upsampled sklearn digits use 127, else every digit becomes a blob).
    Returns:
      uint8 (N, 28, 28, 3).
    """
    digits = digits.reshape(digits.shape[0], 28, 28)
    n, size = digits.shape[0], 28
    heights = np.array([b.shape[0] for b in backgrounds])
    widths = np.array([b.shape[1] for b in backgrounds])
    # Three uniforms per image, drawn row by row, so image i's draws do not depend on N (the first k
    # images of a split are the same whatever N); floor(u * k) is uniform on [0, k) like randint(0, k).
    u = rng.random((n, 3))
    which = np.minimum(np.floor(u[:, 0] * len(backgrounds)).astype(np.int64), len(backgrounds) - 1)
    rows = np.floor(u[:, 1] * (heights[which] - size)).astype(np.int64)
    cols = np.floor(u[:, 2] * (widths[which] - size)).astype(np.int64)
    crops = np.empty((n, size, size, 3), np.uint8)
    for i, (k, r, c) in enumerate(zip(which.tolist(), rows.tolist(), cols.tolist())):
        crops[i] = backgrounds[k][r: r + size, c: c + size]
    # |crop - d| with d in {0, 255} is crop where d = 0 and 255 - crop = crop ^ 255 where d = 255:
    # exactly the signed-type result, computed in uint8 without temporaries (tests check the identity).
    flip = np.where(digits > threshold, np.uint8(255), np.uint8(0))
    np.bitwise_xor(crops, flip[..., None], out=crops)
    return crops


def _split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split)]))


def _bsds_dirs(data_dir, bsds_dir) -> list[Path]:
    if bsds_dir is not None:
        return [Path(bsds_dir).expanduser()]
    root = Path(data_dir).expanduser() if data_dir is not None else paths.data_dir()
    return [root / "bsds500" / "train", root / "BSR" / "BSDS500" / "data" / "images" / "train",
            root / "bsds500"]


def load_bsds_backgrounds(data_dir=None, bsds_dir=None) -> tuple[list[np.ndarray], Path]:
    """The BSDS500 train JPEGs (sorted by file name), decoded as RGB uint8.

    Raises:
      RdfiaError: no folder with JPEGs found, or a JPEG cannot be decoded.
    """
    from PIL import Image

    dirs = _bsds_dirs(data_dir, bsds_dir)
    for d in dirs:
        files = sorted(d.glob("*.jpg")) if d.is_dir() else []
        if files:
            break
    else:
        raise RdfiaError(
            f"BSDS500 train images not found (looked for *.jpg in {', '.join(map(str, dirs))}); MNIST-M is "
            f"built from them. Put the 200 train JPEGs in DIR/bsds500/train/ and pass --data-dir DIR "
            f"(or --bsds-dir FOLDER); they come from {BSDS_URL}"
        )
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:
            raise RdfiaError(f"{f}: cannot decode this JPEG ({err}); remove or replace it") from err
        if arr.shape[0] <= 28 or arr.shape[1] <= 28:
            raise RdfiaError(f"{f}: image {arr.shape[1]}x{arr.shape[0]} is too small for 28x28 crops")
        images.append(arr)
    return images, d


def load_mnistm(split: str, data_dir=None, *, seed: int = 0, bsds_dir=None) -> ArrayDataset:
    """MNIST-M built from MNIST and the BSDS500 train images (see :func:`compose_m`).

    Image i comes from MNIST image i of the same split; train and test draw from independent
    streams of ``seed``; the same seed, files and Pillow JPEG decoder give byte-identical images.
    """
    _check_split(split)
    mnist = load_mnist(split, data_dir)
    backgrounds, bdir = load_bsds_backgrounds(data_dir, bsds_dir)
    key = ("mnistm", split, seed, id(mnist), str(bdir), len(backgrounds))

    def build():
        images = compose_m(mnist.images, backgrounds, _split_rng(seed, split))
        return ArrayDataset(images, np.array(mnist.labels), "mnistm", split,
                            f"MNIST-M {split} (MNIST + BSDS500 crops, seed {seed})", True)

    return _cached(key, build)


def sample_photos() -> list[np.ndarray]:
    """The two colour photos bundled with scikit-learn (china.jpg, flower.jpg), RGB uint8."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]


def load_digits_m(split: str, *, seed: int = 0) -> ArrayDataset:
    """The embedded "M" variant: sklearn digits blended with crops of sklearn's two sample photos,
    by the same recipe as MNIST-M. Needs no download; NOT MNIST-M."""
    _check_split(split)

    def build():
        digits = load_digits(split)
        images = compose_m(digits.images, sample_photos(), _split_rng(seed, split), threshold=127)
        return ArrayDataset(images, np.array(digits.labels), "digits_m", split,
                            f"scikit-learn digits on crops of scikit-learn's sample photos (seed {seed}) -- NOT MNIST-M",
                            False)

    return _cached(("digits_m", split, seed), build)
