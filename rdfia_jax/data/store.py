"""Prepared datasets: tensorflow-datasets builders writing ``array_record`` files, read back without TensorFlow.

``rdfia-jax data prepare NAME`` builds a versioned tfds dataset under
``$RDFIA_JAX_DATA/prepared/tfds/<builder>/<config>/<version>/`` from arrays the loaders have already
read and validated (:func:`rdfia_jax.data.prepare` does that *before* tfds runs, so a missing
file fails in milliseconds, never in tfds' network retry loop). The store takes arrays and imports no
loader.
Features are ``tfds.features.Tensor`` (zlib-encoded, which also handles 15 Scene's variable sizes);
TensorFlow is not needed to write or read them (tfds 4.9 serializes and parses examples in numpy).
Reading goes through ``tfds.builder_from_directory(...).as_data_source(split)`` (random access).

Record layout. The 28x28 digit sets store *blocks* of up to :data:`BLOCK` consecutive examples per
record (``images`` (n, 28, 28, C), ``labels`` (n,), ``start``): tfds' TensorFlow-free parser costs
~0.3 ms per record in Python, i.e. ~20 s for 60,000 single-image records, against well under a
second for 59 blocks. :class:`ExampleSource` gives per-example random access on top.
15 Scene stores one image per record (variable size).

Atomicity. tfds writes into ``incomplete.*`` and renames the finished version folder into place; a
killed preparation leaves only an ``incomplete.*`` folder, which is ignored on reading and removed
by the next preparation. Without ``array_record`` (no wheel on some platforms) the same content is
written as ``.npz`` files through :func:`rdfia_jax.fileio.atomic_path`, with ``info.json`` written
last as the completion marker.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

from rdfia_jax import paths
from rdfia_jax.data.base import ArrayDataset
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_path, atomic_write_bytes

PREPARED_VERSION = "1.0.0"
BLOCK = 1024
BUILDER_NAME = "rdfia_digit_sets"
SCENE_BUILDER_NAME = "rdfia_scene15"
DIGIT_SETS = ("mnist", "fashion_mnist", "mnistm", "digits", "digits_m")
SEEDED = ("mnistm", "digits_m")
PREPARABLE = DIGIT_SETS + ("scene15",)
EMBEDDED_SETS = ("digits", "digits_m")  # built from data inside scikit-learn: usable without preparation


def have_array_record() -> bool:
    """Whether tfds can write and read ``array_record`` here: the ``array_record`` package (no wheel on
    some platforms) and ``importlib_resources`` (which tfds' builders need and pip may not pull in)."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("array_record", "importlib_resources", "tensorflow_datasets"))


def prepared_root() -> Path:
    """Root folder of prepared datasets: ``$RDFIA_JAX_DATA/prepared``."""
    return paths.data_dir() / "prepared"


def config_name(name: str, seed: int = 0) -> str:
    """tfds builder-config name of a dataset (seeded datasets get one config per seed)."""
    return f"{name}_seed{int(seed)}" if name in SEEDED else name


def version_dir(name: str, seed: int = 0, *, fmt: str | None = None) -> Path:
    """Folder of a prepared dataset version (``fmt`` "array_record" or "npz"; default: the available one)."""
    fmt = fmt or ("array_record" if have_array_record() else "npz")
    builder = SCENE_BUILDER_NAME if name == "scene15" else BUILDER_NAME
    sub = "tfds" if fmt == "array_record" else "npz"
    return prepared_root() / sub / builder / config_name(name, seed) / PREPARED_VERSION


def is_prepared(name: str, seed: int = 0) -> bool:
    """True when a complete prepared copy exists (completion markers only; contents are checked on load)."""
    vdir = version_dir(name, seed)
    return (vdir / ("dataset_info.json" if have_array_record() else "info.json")).is_file()


# ----------------------------------------------------------------------------- tfds builders (lazy)

_BUILDERS: dict[str, type] = {}


def _tfds():
    import tensorflow_datasets as tfds  # imported only when preparing or reading prepared data

    return tfds


def _builder_classes():
    """Define the tfds builder classes on first use (importing tfds takes about a second)."""
    if _BUILDERS:
        return _BUILDERS
    tfds = _tfds()

    class RdfiaDigitSets(tfds.core.GeneratorBasedBuilder):
        """MNIST, Fashion-MNIST, MNIST-M, sklearn digits and digits-M, in blocks of examples."""

        VERSION = tfds.core.Version(PREPARED_VERSION)
        RELEASE_NOTES = {PREPARED_VERSION: "Blocks of up to 1024 examples per record, zlib-encoded uint8 images."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Raw files are read from --data-dir (mnist/, fashion_mnist/, bsds500/train/); see "
            "`rdfia-jax data list`.")

        def __init__(self, *, arrays=None, channels=1, description="", **kwargs):
            self._arrays = arrays  # {split: (images, labels)}, already validated by the raw loaders
            self._channels = channels
            self._description = description
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=self._description,
                features=tfds.features.FeaturesDict({
                    # zlib shrinks grayscale digits ~4x; MNIST-M's photo crops hardly compress, and
                    # decompressing them costs more than reading raw bytes.
                    "images": tfds.features.Tensor(shape=(None, 28, 28, self._channels), dtype=np.uint8,
                                                   encoding=tfds.features.Encoding.ZLIB if self._channels == 1
                                                   else tfds.features.Encoding.BYTES),
                    "labels": tfds.features.Tensor(shape=(None,), dtype=np.int64, encoding=tfds.features.Encoding.ZLIB),
                    "start": tfds.features.Tensor(shape=(), dtype=np.int64),
                }),
                disable_shuffling=True,  # record k holds examples [k*BLOCK, (k+1)*BLOCK): keep the order
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in self._arrays}

        def _generate_examples(self, split):
            images, labels = self._arrays[split]
            for start in range(0, images.shape[0], BLOCK):
                yield start, {"images": images[start: start + BLOCK], "labels": labels[start: start + BLOCK],
                              "start": start}

    class RdfiaScene15(tfds.core.GeneratorBasedBuilder):
        """15 Scene, one variable-size image per record (zlib-encoded uint8 HxWxC tensor)."""

        VERSION = tfds.core.Version(PREPARED_VERSION)
        RELEASE_NOTES = {PREPARED_VERSION: "Images as decoded from the JPEGs, grayscale kept 1-channel."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = "The 15SceneData folder (or zip) is read from --data-dir."

        def __init__(self, *, splits=None, class_names=(), **kwargs):
            self._splits = splits  # {split: (list of images, labels)}
            self._class_names = list(class_names)
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="15 Scene categories (Lazebnik et al. 2006), the practical's train/test split.",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8,
                                                  encoding=tfds.features.Encoding.ZLIB),
                    "label": tfds.features.ClassLabel(names=self._class_names or [str(k) for k in range(15)]),
                }),
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in self._splits}

        def _generate_examples(self, split):
            images, labels = self._splits[split]
            for i, (img, lab) in enumerate(zip(images, labels)):
                yield i, {"image": img, "label": int(lab)}

    _BUILDERS.update(digits=RdfiaDigitSets, scene15=RdfiaScene15)
    return _BUILDERS


def _clean_incomplete(vdir: Path) -> None:
    """Remove leftovers of killed preparations (tfds ``incomplete.*`` folders, our ``*.partial``)."""
    parent = vdir.parent
    if parent.is_dir():
        for p in parent.iterdir():
            if p.name.startswith("incomplete.") or p.name.endswith(".partial"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    if vdir.is_dir():
        for p in vdir.iterdir():
            if p.name.endswith(".partial"):
                p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- prepare


def resolve_format(fmt: str | None = None) -> str:
    """The storage format: ``fmt``, or array_record when tfds can write it here, else npz."""
    fmt = fmt or ("array_record" if have_array_record() else "npz")
    if fmt not in ("array_record", "npz"):
        raise RdfiaError(f"unknown prepared format {fmt!r}; choose array_record or npz")
    if fmt == "array_record" and not have_array_record():
        raise RdfiaError("tfds' array_record format needs the packages array_record and importlib_resources "
                         "(pip install array_record importlib_resources); or use --format npz")
    return fmt


def complete_copy(name: str, seed: int = 0, fmt: str | None = None) -> Path | None:
    """The version folder of a complete prepared copy in format ``fmt``, or None."""
    fmt = resolve_format(fmt)
    vdir = version_dir(name, seed, fmt=fmt)
    return vdir if (vdir / ("dataset_info.json" if fmt == "array_record" else "info.json")).is_file() else None


def write(name: str, splits: dict, *, description: str = "", class_names=(), seed: int = 0,
          fmt: str | None = None) -> Path:
    """Write a prepared copy from arrays already loaded and validated (atomic; replaces any old copy).

    Args:
      name: one of :data:`PREPARABLE`.
      splits: ``{split: (images, labels)}``: uint8 NHWC arrays for the digit sets, lists of
        variable-size uint8 HxWxC images for ``scene15``; int64 labels.
      description: one line about the data (digit sets).
      class_names: the class names (``scene15``).
      seed: composition seed of MNIST-M / digits_m (part of the folder name).
      fmt: "array_record" (tfds) or "npz"; default array_record when available.
    Returns:
      The prepared version folder.
    """
    if name not in PREPARABLE:
        raise RdfiaError(f"cannot prepare {name!r}; choose one of {', '.join(PREPARABLE)}")
    fmt = resolve_format(fmt)
    vdir = version_dir(name, seed, fmt=fmt)
    _clean_incomplete(vdir)
    if vdir.exists():
        shutil.rmtree(vdir)
    if fmt == "npz":
        vdir.mkdir(parents=True, exist_ok=True)
        if name == "scene15":
            for split, (images, labels) in splits.items():
                _write_npz(vdir / f"{split}.npz", labels=labels, shapes=np.array([im.shape for im in images]),
                           flat=np.concatenate([im.ravel() for im in images]))
            info = {"name": name, "version": PREPARED_VERSION, "class_names": list(class_names)}
        else:
            for split, (images, labels) in splits.items():
                _write_npz(vdir / f"{split}.npz", images=images, labels=labels)
            info = {"name": name, "version": PREPARED_VERSION, "description": description, "seed": seed}
        atomic_write_bytes(vdir / "info.json", json.dumps(info, indent=1).encode())
        return vdir
    tfds = _tfds()
    classes = _builder_classes()
    config = tfds.core.BuilderConfig(name=config_name(name, seed), version=PREPARED_VERSION)
    root = vdir.parent.parent.parent  # .../tfds ; tfds adds <builder>/<config>/<version>
    if name == "scene15":
        builder = classes["scene15"](splits=splits, class_names=list(class_names), config=config, data_dir=str(root),
                                     file_format="array_record")
    else:
        builder = classes["digits"](arrays=splits, channels=splits["train"][0].shape[-1], description=description,
                                    config=config, data_dir=str(root), file_format="array_record")
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # hides "Using custom data configuration" noise
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(paths.data_dir()), try_download_gcs=False))
    finally:
        absl_logging.set_verbosity(verbosity)
    return vdir


def _write_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


# ----------------------------------------------------------------------------- read


class ExampleSource:
    """Per-example access over a block-record data source (``len`` and ``[i]``).

    Recently used blocks are cached, so sequential scans decode each block once; *random* access
    decodes a block per example (slow: train from :func:`rdfia_jax.data.load`'s in-memory arrays).
    """

    def __init__(self, block_source, cache_blocks: int = 4):
        import functools

        self._blocks = functools.lru_cache(maxsize=cache_blocks)(block_source.__getitem__)
        self._n = 0
        self._starts = []
        for k in range(len(block_source)):
            self._starts.append(self._n)
            self._n += BLOCK if k < len(block_source) - 1 else len(self._blocks(k)["labels"])

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self._n:
            raise IndexError(i)
        block = self._blocks(i // BLOCK)
        return {"image": block["images"][i % BLOCK], "label": block["labels"][i % BLOCK]}


def data_source(name: str, split: str, *, seed: int = 0):
    """The tfds data source (random access, no TensorFlow) of a prepared dataset's split.

    For the digit sets, each element is a block dict (``images``, ``labels``, ``start``); wrap it in
    :class:`ExampleSource` for per-example access. For ``scene15``, each element is one example.
    """
    vdir = version_dir(name, seed, fmt="array_record")
    if not (vdir / "dataset_info.json").is_file():
        raise RdfiaError(f"{name} is not prepared (no {vdir}); run `rdfia-jax data prepare {name}`")
    builder = _tfds().builder_from_directory(str(vdir))
    return builder.as_data_source(split=split)


def _corrupt(name, vdir, err) -> RdfiaError:
    return RdfiaError(f"the prepared copy of {name} in {vdir} is damaged ({err}); rebuild it with "
                      f"`rdfia-jax data prepare {name} --force`")


def load_prepared(name: str, split: str, *, data_dir=None, seed: int = 0) -> ArrayDataset | None:
    """The prepared copy of a digit dataset as an :class:`ArrayDataset`, or None if not prepared."""
    if name not in DIGIT_SETS:
        return None
    is_real = name in ("mnist", "mnistm")
    if have_array_record():
        vdir = version_dir(name, seed, fmt="array_record")
        if (vdir / "dataset_info.json").is_file():
            try:
                source = data_source(name, split, seed=seed)
                blocks = [source[k] for k in range(len(source))]
                images = np.concatenate([b["images"] for b in blocks])
                labels = np.concatenate([b["labels"] for b in blocks]).astype(np.int64)
                description = source.dataset_info.description
            except RdfiaError:
                raise
            except Exception as err:  # any read/parse failure of our own files means damage
                raise _corrupt(name, vdir, err) from err
            # tfds checked the record count; the blocks must also tile [0, N) in order.
            starts = [int(b["start"]) for b in blocks]
            sizes = [b["labels"].shape[0] for b in blocks]
            if (starts != [k * BLOCK for k in range(len(blocks))] or any(n != BLOCK for n in sizes[:-1])
                    or images.shape[0] != labels.shape[0]):
                raise _corrupt(name, vdir, "blocks out of order or of the wrong size")
            return _frozen(ArrayDataset(images, labels, name, split, f"{description} ({split}, prepared copy)", is_real))
    vdir = version_dir(name, seed, fmt="npz")
    if (vdir / "info.json").is_file():
        try:
            info = json.loads((vdir / "info.json").read_text())
            with np.load(vdir / f"{split}.npz", allow_pickle=False) as z:
                images, labels = z["images"], z["labels"].astype(np.int64)
        except Exception as err:
            raise _corrupt(name, vdir, err) from err
        return _frozen(ArrayDataset(images, labels, name, split, f"{info['description']} ({split}, prepared copy)", is_real))
    return None


def load_prepared_scene15(split: str):
    """Prepared 15 Scene: ``(images, labels, class_names)`` like :func:`load_scene15`, or None."""
    if have_array_record():
        vdir = version_dir("scene15", fmt="array_record")
        if (vdir / "dataset_info.json").is_file():
            try:
                source = data_source("scene15", split)
                examples = [source[k] for k in range(len(source))]
                names = source.dataset_info.features["label"].names
            except Exception as err:
                raise _corrupt("scene15", vdir, err) from err
            return ([e["image"] for e in examples], np.array([e["label"] for e in examples], np.int64), list(names))
    vdir = version_dir("scene15", fmt="npz")
    if (vdir / "info.json").is_file():
        try:
            info = json.loads((vdir / "info.json").read_text())
            with np.load(vdir / f"{split}.npz", allow_pickle=False) as z:
                shapes, flat, labels = z["shapes"], z["flat"], z["labels"]
            offsets = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))])
            if offsets[-1] != flat.size or len(labels) != len(shapes):
                raise ValueError("image sizes do not add up to the stored pixels")
            images = [flat[offsets[i]: offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
        except Exception as err:  # same rule as the array_record path: damage -> rebuild message
            raise _corrupt("scene15", vdir, err) from err
        return images, labels.astype(np.int64), info["class_names"]
    return None


def _frozen(ds: ArrayDataset) -> ArrayDataset:
    ds.images.flags.writeable = False
    ds.labels.flags.writeable = False
    return ds


def list_datasets() -> list[dict]:
    """One row per preparable dataset: name, prepared (bool), location."""
    rows = []
    for name in PREPARABLE:
        seeds = [0]
        if name in SEEDED:
            parent = version_dir(name, 0).parent.parent
            found = sorted(int(p.name.rsplit("seed", 1)[1]) for p in parent.glob(f"{name}_seed*")
                           if p.name.rsplit("seed", 1)[1].isdigit()) if parent.is_dir() else []
            seeds = found or [0]
        for seed in seeds:
            rows.append({"name": name, "seed": seed if name in SEEDED else None,
                         "prepared": is_prepared(name, seed), "path": str(version_dir(name, seed))})
    return rows
