"""The DANN section's data: source and target train/test sets, their checks, statistics and batches."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rdfia_jax.dann.catalogue import DATASET_PAIRS, RunSpec
from rdfia_jax.errors import RdfiaError

# --smoke: the first images of each split only.
SMOKE_TRAIN, SMOKE_TEST = 1024, 500


@dataclasses.dataclass
class Domains:
    """Source and target train/test sets (``.images`` uint8 NHWC, ``.labels`` int64)."""

    source_train: Any
    source_test: Any
    target_train: Any
    target_test: Any
    source_name: str = "source"
    target_name: str = "target"
    mean: float | None = None  # standardization; None: computed from source_train
    std: float | None = None


class Subset:
    """A lightweight view ``(images[idx], labels[idx])`` of a dataset (indices sorted)."""

    def __init__(self, ds, idx):
        idx = np.sort(np.asarray(idx))
        self.images = np.asarray(ds.images)[idx]
        self.labels = np.asarray(ds.labels)[idx]


def check_domains(domains: Domains) -> None:
    """Refuses empty sets, non-uint8/NHWC images and image shapes that cannot share one network."""
    sets = {"source train": domains.source_train, "source test": domains.source_test,
            "target train": domains.target_train, "target test": domains.target_test}
    hw = None
    for what, ds in sets.items():
        images = np.asarray(ds.images)
        labels = np.asarray(ds.labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise RdfiaError(f"{what} images must be uint8 NHWC, got {images.dtype} shape {images.shape}")
        if images.shape[0] == 0:
            raise RdfiaError(f"{what} set is empty ({getattr(ds, 'name', '?')}): DANN needs images "
                             "in both domains; check --data-dir / --dataset-pair")
        if labels.shape != images.shape[:1]:
            raise RdfiaError(f"{what}: {images.shape[0]} images but labels of shape {labels.shape}")
        if images.shape[-1] not in (1, 3):
            raise RdfiaError(f"{what} images have {images.shape[-1]} channels; expected 1 or 3")
        if hw is None:
            hw = images.shape[1:3]
        elif images.shape[1:3] != hw:
            raise RdfiaError(f"image shapes differ: {what} is {images.shape[1:3]}, the source train "
                             f"set {hw}; source and target must have the same height and width")
    if hw != (28, 28):
        raise RdfiaError(f"images are {hw[0]}x{hw[1]}; the practical's network takes 28x28 images")


def load_domains(pair: str = "mnist", *, data_dir=None, smoke: bool = False, bsds_dir=None) -> Domains:
    """Source/target train/test sets of a dataset pair.

    Args:
      pair: "mnist" (MNIST -> MNIST-M, needs the raw files) or "digits" (the embedded sklearn
        digits -> digits_m; NOT MNIST, for quick checks without any download).
      data_dir: raw-data folder for :func:`rdfia_jax.data.load`.
      smoke: keep only small subsets (first images of each split).
      bsds_dir: folder of the BSDS500 train JPEGs that MNIST-M is built from (default
        ``data_dir/bsds500/train``).
    Raises:
      RdfiaError: unknown pair, or missing data (the message names ``--dataset-pair digits``).
    """
    from rdfia_jax import data

    if pair not in DATASET_PAIRS:
        raise RdfiaError(f"unknown --dataset-pair {pair!r}; choose one of {', '.join(DATASET_PAIRS)}")
    src, tgt = DATASET_PAIRS[pair]
    try:
        sets = [data.load(n, s, data_dir=data_dir, bsds_dir=bsds_dir if n == "mnistm" else None)
                for n, s in ((src, "train"), (src, "test"), (tgt, "train"), (tgt, "test"))]
    except RdfiaError as err:
        if pair == "digits":
            raise
        raise RdfiaError(f"{err}\n(--dataset-pair {pair} is the default; `--dataset-pair digits` "
                         "trains on the embedded digits -> digits_m instead, with no download; "
                         "NOT MNIST)") from None
    if smoke:
        sets = [ds.subset(np.arange(min(len(ds), SMOKE_TRAIN if ds.split == "train" else SMOKE_TEST)))
                for ds in sets]
    mean = std = None
    if src == "mnist":  # the practical's constants (= statistics of the full MNIST train set)
        mean, std = data.MNIST_TRAIN_MEAN, data.MNIST_TRAIN_STD
    return Domains(*sets, source_name=src, target_name=tgt, mean=mean, std=std)


def image_statistics(images_u8: np.ndarray) -> tuple[float, float]:
    """One scalar mean and std of a domain's train images in [0, 1] (MNIST: 0.1307, 0.3081)."""
    x = np.asarray(images_u8, np.float64) / 255.0
    return float(x.mean()), float(x.std())


def make_get_batch(spec: RunSpec, domains: Domains, seed: int):
    """``(get_batch(epoch, index), steps_per_epoch)``: source and target shuffled independently
    (``epoch_order`` streams 0 and 1 of the same seed); an epoch ends with the shorter domain."""
    from rdfia_jax.train.loop import array_batches

    src_arrays = {"src_x": np.asarray(domains.source_train.images),
                  "src_y": np.asarray(domains.source_train.labels, np.int32)}
    tgt_arrays = {"tgt_x": np.asarray(domains.target_train.images)}
    if spec.labelled == "target":  # only the upper bound ever sees target labels
        tgt_arrays["tgt_y"] = np.asarray(domains.target_train.labels, np.int32)
    for what, arrays, bs in (("source", src_arrays, spec.src_batch), ("target", tgt_arrays, spec.tgt_batch)):
        n = len(next(iter(arrays.values())))
        if n < bs:
            raise RdfiaError(f"the {what} train set has {n} images, fewer than one batch of {bs}")
    get_src, spe_src = array_batches(src_arrays, spec.src_batch, seed, stream=0)
    get_tgt, spe_tgt = array_batches(tgt_arrays, spec.tgt_batch, seed, stream=1)

    def get_batch(epoch: int, index: int) -> dict:
        return {**get_src(epoch, index), **get_tgt(epoch, index)}

    return get_batch, min(spe_src, spe_tgt)
