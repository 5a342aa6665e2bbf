"""The in-memory dataset type every loader returns, and the shared in-process cache of loaded datasets."""

from __future__ import annotations

import dataclasses

import numpy as np

from rdfia_jax.errors import RdfiaError

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """Images and labels held as numpy arrays.

    Attributes:
      images: ``uint8`` NHWC, e.g. ``(N, 28, 28, 1)`` for MNIST, ``(N, 28, 28, 3)`` for MNIST-M.
      labels: ``int64`` ``(N,)``.
      name: the dataset name given to :func:`rdfia_jax.data.load` (``"mnist"``, ``"digits"``, ...).
      split: ``"train"`` or ``"test"``.
      description: one line saying what the data is (and, when it is not MNIST, that it is not).
      is_real_mnist: True only for the real MNIST digits and the MNIST-M built from them.
      num_classes: number of label values.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    split: str
    description: str
    is_real_mnist: bool
    num_classes: int = 10

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({self.images.shape[0]},), got {self.labels.dtype} {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one image (H, W, C)."""
        return tuple(self.images.shape[1:])

    def subset(self, indices) -> "ArrayDataset":
        """A dataset with only ``images[indices]`` (same name, split and description)."""
        indices = np.asarray(indices)
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices])


_CACHE: dict[tuple, ArrayDataset] = {}


def cached(key, build) -> ArrayDataset:
    """``build()`` once per ``key``; the arrays are made read-only, since every caller shares them."""
    if key not in _CACHE:
        ds = build()
        ds.images.flags.writeable = False
        ds.labels.flags.writeable = False
        _CACHE[key] = ds
    return _CACHE[key]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise RdfiaError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
