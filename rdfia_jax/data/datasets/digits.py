"""The embedded digit sets, built from data shipped inside scikit-learn (no download at all).

``digits``: sklearn's 1,797 8x8 handwritten digits upsampled to 28x28; ``digits_m``: the same blended
with crops of sklearn's two sample photos by MNIST-M's recipe. Neither is MNIST, and both say so.
"""

from __future__ import annotations

import numpy as np

from rdfia_jax.data.base import ArrayDataset, cached, check_split
from rdfia_jax.data.datasets.mnistm import compose_m, split_rng


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
    check_split(split)

    def build():
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        test = _digits_split_mask(len(bunch.target))
        keep = test if split == "test" else ~test
        images = digits_to_28(bunch.images[keep])[..., None]
        return ArrayDataset(images, bunch.target[keep].astype(np.int64), "digits", split,
                            "scikit-learn handwritten digits (8x8 upsampled to 28x28) -- NOT MNIST", False)

    return cached(("digits", split), build)



def sample_photos() -> list[np.ndarray]:
    """The two colour photos bundled with scikit-learn (china.jpg, flower.jpg), RGB uint8."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]


def load_digits_m(split: str, *, seed: int = 0) -> ArrayDataset:
    """The embedded "M" variant: sklearn digits blended with crops of sklearn's two sample photos,
    by the same recipe as MNIST-M. Needs no download; NOT MNIST-M."""
    check_split(split)

    def build():
        digits = load_digits(split)
        images = compose_m(digits.images, sample_photos(), split_rng(seed, split), threshold=127)
        return ArrayDataset(images, np.array(digits.labels), "digits_m", split,
                            f"scikit-learn digits on crops of scikit-learn's sample photos (seed {seed}) -- NOT MNIST-M",
                            False)

    return cached(("digits_m", split, seed), build)
