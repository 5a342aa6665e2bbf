"""Image datasets of the VGG and visualization sections: 15 Scene, the 25 ImageNet samples, user photos."""

from __future__ import annotations

import io
import json
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from rdfia_jax import paths
from rdfia_jax.errors import RdfiaError
from rdfia_jax.progress import track

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SCENE15_URL = ("https://figshare.com/articles/dataset/15-Scene_Image_Dataset/7007177 (the practical's split: "
               "the first 100 images of each class in train/, the rest in test/)")
SCENE15_COUNTS = {"train": 1500, "test": 2985}


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Decode image bytes to uint8 HxWx1 (grayscale kept 1-channel) or HxWx3 (RGB).

    Raises:
      RdfiaError: the bytes are not a decodable image (the message names ``source``).
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("L", "1", "I;16", "I", "F"):
                arr = np.asarray(im.convert("L"))[..., None]
            else:
                arr = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise RdfiaError(f"{source}: cannot decode this image ({err}); remove or replace the file") from err
    return np.ascontiguousarray(arr, dtype=np.uint8)


# ----------------------------------------------------------------------------- 15 Scene


def _scene15_missing(tried: list[Path]) -> RdfiaError:
    return RdfiaError(
        "15 Scene not found (looked for 15SceneData/{train,test}/<class>/*.jpg or 15SceneData.zip in "
        f"{', '.join(map(str, tried))}). Put the practical's 15SceneData folder (or zip) in DIR and pass "
        f"--data-dir DIR (or set RDFIA_JAX_DATA=DIR); the images come from {SCENE15_URL}"
    )


def _scene15_source(root) -> Path:
    """The 15SceneData folder or zip designated by ``root`` (or found under ``$RDFIA_JAX_DATA``)."""
    base = Path(root).expanduser() if root is not None else paths.data_dir()
    candidates = [base, base / "15SceneData", base / "15SceneData.zip"]
    for c in candidates:
        if c.is_file() and zipfile.is_zipfile(c):
            return c
        if c.is_dir() and (c / "train").is_dir() and (c / "test").is_dir():
            return c
    if base.is_file():
        raise RdfiaError(f"{base} is not a zip file; expected the 15SceneData folder or 15SceneData.zip")
    raise _scene15_missing(candidates)


def _scene15_entries_dir(src: Path, split: str) -> list[tuple[str, str, Path]]:
    split_dir = src / split
    entries = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((class_dir.name, f.name, f))
    return entries


def _scene15_entries_zip(src: Path, split: str) -> list[tuple[str, str, str]]:
    with zipfile.ZipFile(src) as zf:
        names = zf.namelist()
    entries = []
    for name in names:
        parts = [p for p in name.split("/") if p]
        if name.endswith("/") or len(parts) < 3 or "__MACOSX" in parts:
            continue
        if parts[-3] == split and Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES:
            entries.append((parts[-2], parts[-1], name))
    return sorted(entries)


def scene15_class_names(root=None) -> list[str]:
    """The 15 class names, sorted (the label of a class is its index here)."""
    src = _scene15_source(root)
    return sorted({e[0] for e in (_scene15_entries_zip(src, "train") if src.is_file() else _scene15_entries_dir(src, "train"))})


def load_scene15(root=None, split: str = "train", *, progress: bool = True, use_prepared: bool = True):
    """Load one split of 15 Scene with images as decoded (variable sizes, grayscale kept 1-channel).

    Args:
      root: the ``15SceneData`` folder, a folder containing it, or ``15SceneData.zip``
        (default: ``$RDFIA_JAX_DATA``).
      split: ``"train"`` or ``"test"``.
      progress: report decoding progress (a bar on a terminal, plain lines in a log).
      use_prepared: with ``root=None``, read the prepared copy (``rdfia-jax data prepare scene15``) if any.
    Returns:
      ``(images, labels, class_names)``: a list of uint8 HxWx1 / HxWx3 arrays, int64 labels (N,),
      and the sorted class names (taken from ``train/``, so both splits share the same label order).
    Raises:
      RdfiaError: missing folder, wrong layout (no class folders, classes differing between splits),
        or an undecodable image.
    """
    if split not in SCENE15_COUNTS:
        raise RdfiaError(f"unknown split {split!r}; choose 'train' or 'test'")
    if root is None and use_prepared:
        from rdfia_jax.data import store

        prepared = store.load_prepared_scene15(split)
        if prepared is not None:
            return prepared
    src = _scene15_source(root)
    is_zip = src.is_file()
    list_entries = _scene15_entries_zip if is_zip else _scene15_entries_dir
    train_classes = sorted({e[0] for e in list_entries(src, "train")})
    entries = list_entries(src, split)
    classes = sorted({e[0] for e in entries})
    if not entries:
        raise RdfiaError(f"{src}: no images in {split}/<class>/ (expected 15SceneData/{split}/<class>/*.jpg)")
    if classes != train_classes:
        raise RdfiaError(f"{src}: the class folders of {split}/ ({', '.join(classes)}) differ from train/'s "
                         f"({', '.join(train_classes)})")
    index = {c: k for k, c in enumerate(train_classes)}
    images, labels = [], []
    zf = zipfile.ZipFile(src) if is_zip else None
    try:
        for cls, _, where in track(entries, f"15 Scene {split}", unit="img", enabled=progress):
            data = zf.read(where) if zf is not None else Path(where).read_bytes()
            images.append(decode_image(data, f"{src}:{where}" if zf is not None else str(where)))
            labels.append(index[cls])
    finally:
        if zf is not None:
            zf.close()
    return images, np.asarray(labels, np.int64), train_classes


# ----------------------------------------------------------------------------- ImageNet samples


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, index order (from the shipped ``imagenet_class_index.json``)."""
    with open(paths.asset("imagenet_class_index.json")) as f:
        index = json.load(f)
    return tuple(index[str(k)][1] for k in range(1000))


def load_imagenet_val25(path=None):
    """The 25 ImageNet validation images of the visualization practical.

    The npz is read with ``allow_pickle=False``: only ``X`` and ``y`` are used; the file's pickled
    ``label_map`` is never unpickled (names come from the shipped class index instead).

    Args:
      path: ``imagenet_val_25.npz``, or a folder holding it (default ``$RDFIA_JAX_DATA/imagenet_val_25``).
    Returns:
      ``(images uint8 (25, 224, 224, 3) RGB, labels int64 (25,), names)`` where ``names`` are the
      1,000 ImageNet class names (:func:`imagenet_class_names`): image i is ``names[labels[i]]``.
    """
    base = Path(path).expanduser() if path is not None else paths.data_dir() / "imagenet_val_25"
    candidates = [base] if base.suffix == ".npz" else [base / "imagenet_val_25.npz",
                                                       base / "imagenet_val_25" / "imagenet_val_25.npz"]
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        raise RdfiaError(
            f"imagenet_val_25.npz not found (looked at {', '.join(map(str, candidates))}); it is the file "
            "distributed with the practical (keys X uint8 (25,224,224,3), y int64 (25,)). Pass its path, "
            "or use your own images (a folder of .jpg/.png)."
        )
    try:
        with np.load(file, allow_pickle=False) as npz:
            if "X" not in npz.files or "y" not in npz.files:
                raise RdfiaError(f"{file}: expected arrays 'X' and 'y', found {', '.join(npz.files)}")
            images, labels = npz["X"], npz["y"]
    except ValueError as err:  # X or y itself is an object array
        raise RdfiaError(f"{file}: 'X'/'y' are pickled objects, refused for safety ({err})") from err
    except (OSError, zipfile.BadZipFile) as err:
        raise RdfiaError(f"{file}: not a readable .npz file ({err})") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise RdfiaError(f"{file}: 'X' must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise RdfiaError(f"{file}: 'y' must be integers of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= 1000:
        raise RdfiaError(f"{file}: labels must be ImageNet classes 0..999")
    return images, labels, list(imagenet_class_names())


# ----------------------------------------------------------------------------- user images


def load_image_folder(path, *, rgb: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """Load a user's image file, or every image file of a folder (sorted by name, not recursive).

    Args:
      path: an image file or a folder.
      rgb: convert grayscale to 3 channels (what ImageNet models take).
    Returns:
      ``(images, names)``: uint8 HxWx3 (or HxWx1 when ``rgb=False`` and gray) arrays and file names.
    """
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise RdfiaError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    else:
        raise RdfiaError(f"{path}: no such image file or folder")
    images = []
    for f in files:
        img = decode_image(f.read_bytes(), str(f))
        images.append(np.repeat(img, 3, axis=-1) if rgb and img.shape[-1] == 1 else img)
    return images, [f.name for f in files]
