"""The data layer: every section reads its data through here.

Digit datasets (uint8 NHWC 28x28, int64 labels), via :func:`load`:

* ``"mnist"`` / ``"fashion_mnist"``: the official IDX files (user-supplied, checksum-verified);
* ``"mnistm"``: built from MNIST + BSDS500 train JPEGs, seeded (byte-identical per seed);
* ``"digits"`` / ``"digits_m"``: embedded defaults built from data shipped inside scikit-learn
  (no download at all); their ``description`` says they are NOT MNIST.

Image datasets: :func:`load_scene15`, :func:`load_imagenet_val25`, :func:`load_image_folder`.
Batching: :func:`epoch_order`, :func:`iterate_batches`; normalizations in
:mod:`rdfia_jax.data.transforms`.
"""

from __future__ import annotations

from rdfia_jax.data.base import ArrayDataset
from rdfia_jax.data.batching import epoch_order, iterate_batches, num_batches
from rdfia_jax.data.digits import MNIST_TRAIN_MEAN, MNIST_TRAIN_STD, SPLITS
from rdfia_jax.data.images import imagenet_class_names, load_image_folder, load_imagenet_val25, load_scene15
from rdfia_jax.data.store import prepare  # tfds is imported only when preparing/reading prepared copies
from rdfia_jax.errors import RdfiaError

DATASET_NAMES = ("mnist", "fashion_mnist", "mnistm", "digits", "digits_m")
EMBEDDED = ("digits", "digits_m")


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
    from rdfia_jax.data import digits

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
        return digits.load_mnist(split, data_dir)
    if name == "fashion_mnist":
        return digits.load_fashion_mnist(split, data_dir)
    if name == "mnistm":
        return digits.load_mnistm(split, data_dir, seed=seed, bsds_dir=bsds_dir)
    if name == "digits":
        return digits.load_digits(split)
    return digits.load_digits_m(split, seed=seed)


__all__ = [
    "ArrayDataset", "DATASET_NAMES", "EMBEDDED", "MNIST_TRAIN_MEAN", "MNIST_TRAIN_STD", "epoch_order",
    "imagenet_class_names", "iterate_batches", "load", "load_image_folder", "load_imagenet_val25",
    "load_scene15", "num_batches", "prepare",
]
