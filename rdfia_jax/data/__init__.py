"""The data layer: every section reads its data through here.

Layout (one job per module):

* :mod:`~rdfia_jax.data.decode`: the one image decoder (EXIF, modes, 16-bit/float, size guard, extensions);
* :mod:`~rdfia_jax.data.transforms`: the one resize/crop (torchvision's semantics) and the digit-set
  normalizations; ImageNet mean/std normalization is :class:`rdfia_jax.preprocess.Preprocessing`;
* :mod:`~rdfia_jax.data.idx`: IDX files (format, checksums, image/label pairs);
  :mod:`~rdfia_jax.data.download`: the opt-in MNIST download;
* :mod:`rdfia_jax.data.datasets`: one module per dataset (``mnist``, ``mnistm``, ``digits``,
  ``scene15``, ``imagenet_val25``, ``folder``);
* :mod:`~rdfia_jax.data.store`: prepared copies (takes arrays, imports no loader);
  :func:`prepare` loads the raw files and hands them to the store;
* :mod:`~rdfia_jax.data.batching`: epoch orders, batches, :func:`map_batches`.

Digit datasets (uint8 NHWC 28x28, int64 labels), via :func:`load`:

* ``"mnist"`` / ``"fashion_mnist"``: the official IDX files (user-supplied, checksum-verified);
* ``"mnistm"``: built from MNIST + BSDS500 train JPEGs, seeded (byte-identical per seed);
* ``"digits"`` / ``"digits_m"``: embedded defaults built from data shipped inside scikit-learn
  (no download, no preparation); their ``description`` says they are NOT MNIST.

Image datasets: :func:`load_scene15`, :func:`load_imagenet_val25`, :func:`load_image_folder`.
"""

from __future__ import annotations

from pathlib import Path

from rdfia_jax.data.base import SPLITS, ArrayDataset
from rdfia_jax.data.batching import epoch_order, iterate_batches, map_batches, num_batches
from rdfia_jax.data.datasets.folder import load_image_folder
from rdfia_jax.data.datasets.imagenet_val25 import load_imagenet_val25
from rdfia_jax.data.datasets.mnist import MNIST_TRAIN_MEAN, MNIST_TRAIN_STD
from rdfia_jax.data.datasets.scene15 import load_scene15
from rdfia_jax.data.store import EMBEDDED_SETS as EMBEDDED  # usable without download or preparation
from rdfia_jax.errors import RdfiaError

DATASET_NAMES = ("mnist", "fashion_mnist", "mnistm", "digits", "digits_m")


def load(name: str, split: str = "train", *, data_dir=None, seed: int = 0, bsds_dir=None,
         use_prepared: bool = True) -> ArrayDataset:
    """Load a 28x28 digit dataset into memory.

    Args:
      name: one of :data:`DATASET_NAMES`.
      split: ``"train"`` or ``"test"``.
      data_dir: folder with the raw files (``mnist/``, ``fashion_mnist/``, ``bsds500/train/``);
        default ``$RDFIA_JAX_DATA`` (:func:`rdfia_jax.paths.data_dir`).
      seed: MNIST-M / digits_m composition seed (ignored by the others).
      bsds_dir: folder of BSDS500 train JPEGs for MNIST-M (default ``data_dir/bsds500/train``).
      use_prepared: read a prepared copy (``rdfia-jax data prepare``) when one exists (prepared
        copies live in ``$RDFIA_JAX_DATA/prepared``, keyed by name and seed); a damaged one raises.
    Returns:
      An :class:`ArrayDataset`; arrays are shared and read-only (copy before modifying).
    Raises:
      RdfiaError: unknown name/split, or raw files missing or damaged (within seconds, never a
        network wait).
    """
    from rdfia_jax.data.datasets import digits, mnist, mnistm

    if name not in DATASET_NAMES:
        raise RdfiaError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise RdfiaError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if use_prepared and bsds_dir is None:  # an explicit BSDS folder means: build from it
        from rdfia_jax.data import store

        ds = store.load_prepared(name, split, data_dir=data_dir, seed=seed)
        if ds is not None:
            return ds
    if name == "mnist":
        return mnist.load_mnist(split, data_dir)
    if name == "fashion_mnist":
        return mnist.load_fashion_mnist(split, data_dir)
    if name == "mnistm":
        return mnistm.load_mnistm(split, data_dir, seed=seed, bsds_dir=bsds_dir)
    if name == "digits":
        return digits.load_digits(split)
    return digits.load_digits_m(split, seed=seed)


def prepare(name: str, *, data_dir=None, seed: int = 0, bsds_dir=None, force: bool = False,
            fmt: str | None = None) -> Path:
    """Prepare ``name`` once (idempotent; atomic; ``force`` rebuilds).

    Args:
      name: one of :data:`rdfia_jax.data.store.PREPARABLE`.
      data_dir: folder of the raw files (default ``$RDFIA_JAX_DATA``).
      seed: composition seed of MNIST-M / digits_m.
      bsds_dir: BSDS500 train folder for MNIST-M.
      force: rebuild even if a complete copy exists.
      fmt: "array_record" (tfds) or "npz"; default array_record when available.
    Returns:
      The prepared version folder.
    Raises:
      RdfiaError: unknown name, or raw files missing or damaged (raised before anything is written).
    """
    from rdfia_jax.data import store

    if name not in store.PREPARABLE:
        raise RdfiaError(f"cannot prepare {name!r}; choose one of {', '.join(store.PREPARABLE)}")
    fmt = store.resolve_format(fmt)
    done = store.complete_copy(name, seed, fmt)
    if done is not None and not force:
        return done
    if name == "scene15":
        splits, class_names = {}, []
        for split in ("train", "test"):
            images, labels, class_names = load_scene15(data_dir, split, use_prepared=False)
            splits[split] = (images, labels)
        return store.write(name, splits, class_names=class_names, fmt=fmt)
    splits, description = {}, ""
    for split in ("train", "test"):
        ds = load(name, split, data_dir=data_dir, seed=seed, bsds_dir=bsds_dir, use_prepared=False)
        splits[split] = (ds.images, ds.labels)
        description = ds.description.replace(f" {split}", "")
    return store.write(name, splits, description=description, seed=seed, fmt=fmt)


__all__ = [
    "ArrayDataset", "DATASET_NAMES", "EMBEDDED", "MNIST_TRAIN_MEAN", "MNIST_TRAIN_STD", "epoch_order",
    "iterate_batches", "load", "load_image_folder", "load_imagenet_val25", "load_scene15", "map_batches",
    "num_batches", "prepare",
]
