"""15 Scene (Lazebnik et al. 2006), the practical's split, from a folder or a zip (images as decoded)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rdfia_jax import paths
from rdfia_jax.data import store
from rdfia_jax.data.decode import IMAGE_EXTENSIONS, decode
from rdfia_jax.errors import RdfiaError
from rdfia_jax.progress import track

SCENE15_URL = ("https://figshare.com/articles/dataset/15-Scene_Image_Dataset/7007177 (the practical's split: "
               "the first 100 images of each class in train/, the rest in test/)")
SCENE15_COUNTS = {"train": 1500, "test": 2985}


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
            if f.suffix.lower() in IMAGE_EXTENSIONS:
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
        if parts[-3] == split and Path(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS:
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
            # as torchvision's ImageFolder reads them (no EXIF rotation), gray kept 1-channel
            images.append(decode(data, name=f"{src}:{where}" if zf is not None else str(where), keep_gray=True,
                                 exif=False))
            labels.append(index[cls])
    finally:
        if zf is not None:
            zf.close()
    return images, np.asarray(labels, np.int64), train_classes
