"""A quantitative score for generated digits, by the project's small digit classifier.

The practical judged samples by eye; here an independently trained classifier
(:func:`rdfia_jax.classifier.get_classifier`) measures them:

* ``confidence`` -- mean max-softmax probability (are the samples recognisable digits?);
* ``coverage`` -- normalized entropy ``H(p) / log 10`` of the histogram ``p`` of predicted classes
  (1 = the 10 classes equally often; mode collapse lowers it); ``classes_hit`` counts the classes
  predicted for at least 1 % of the samples;
* ``frechet`` -- Fréchet distance between Gaussians fitted to the classifier's penultimate features
  of the samples and of the real test digits (10,000) (an FID computed in the space of a digit
  classifier instead of Inception);
* ``label_accuracy`` (cGAN) -- fraction of samples classified as the label they were generated for.

Images go to the classifier as it was trained: 28x28 in [0, 1]. Generated 32x32 images in
[-1, 1] are mapped to [0, 1] and resized to 28x28 (antialiased bilinear); the real reference
digits take the same path (28 -> 32 with PIL as for training, then the same 32 -> 28 resize), so
that resizing is no difference between them. :func:`real_ceiling` scores real *training* digits
the same way: the best a generator can do.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from rdfia_jax import xla

NUM_CLASSES = 10


@xla.jit
def to_classifier_input(images: jax.Array) -> jax.Array:
    """(N, 32, 32, 1) in [-1, 1] -> (N, 28, 28, 1) in [0, 1]."""
    x = (images.astype(jnp.float32) + 1.0) * 0.5
    x = jax.image.resize(x, (x.shape[0], 28, 28, x.shape[3]), "linear", antialias=True)
    return jnp.clip(x, 0.0, 1.0)


def uint8_32_to_unit(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 1) -> float32 in [-1, 1] (the generator's range)."""
    return images_u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, float64."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), via symmetric eigen-decompositions (stable)."""
    w1, v1 = np.linalg.eigh(cov1)
    sqrt1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    middle = sqrt1 @ cov2 @ sqrt1
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)))
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


@dataclasses.dataclass
class Scorer:
    """Scores batches of generated images against a reference set of real test digits.

    Attributes:
      classifier: a :class:`rdfia_jax.classifier.Classifier`.
      ref_mu, ref_cov: feature statistics of the real reference digits.
      description: what the classifier and reference are (printed with results).
    """

    classifier: object
    ref_mu: np.ndarray
    ref_cov: np.ndarray
    description: str

    def score(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict:
        """Score (N, 32, 32, 1) images in [-1, 1]; ``labels`` = the cGAN's conditioning labels.

        Returns:
          dict with n, confidence, coverage, classes_hit, frechet (+ label_accuracy with labels).
        """
        x = np.concatenate([np.asarray(to_classifier_input(jnp.asarray(images[i:i + 1000])))
                            for i in range(0, len(images), 1000)])
        logits = np.asarray(self.classifier.logits(x), np.float64)
        feats = np.asarray(self.classifier.features(x), np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        pred = probs.argmax(axis=1)
        hist = np.bincount(pred, minlength=NUM_CLASSES) / len(pred)
        nz = hist[hist > 0]
        out = {
            "n": int(len(images)),
            "confidence": float(probs.max(axis=1).mean()),
            "coverage": abs(float(-(nz * np.log(nz)).sum() / math.log(NUM_CLASSES))),  # abs: no -0.0
            "classes_hit": int((hist >= 0.01).sum()),
            "frechet": frechet_distance(*gaussian_stats(feats), self.ref_mu, self.ref_cov),
        }
        if labels is not None:
            out["label_accuracy"] = float((pred == np.asarray(labels)).mean())
        return out


def make_scorer(dataset: str = "mnist", *, data_dir=None, classifier_seed: int = 0, n_ref: int = 10_000,
                progress: bool = True) -> Scorer:
    """A :class:`Scorer` for ``dataset`` ("mnist" or "digits"): its classifier and its test digits.

    Args:
      dataset: which classifier and reference digits.
      data_dir: raw data folder (default ``$RDFIA_JAX_DATA``).
      classifier_seed: which cached classifier (trained on first use, about a minute).
      n_ref: number of test digits in the reference statistics (all when fewer).
      progress: progress bar if the classifier must be trained.
    """
    from rdfia_jax import data
    from rdfia_jax.classifier import get_classifier
    from rdfia_jax.data.transforms import gan_resize32

    clf = get_classifier(dataset, classifier_seed, data_dir=data_dir, progress=progress)
    test = data.load(dataset, "test", data_dir=data_dir)
    images = gan_resize32(np.asarray(test.images[:n_ref]))
    x = np.asarray(to_classifier_input(jnp.asarray(uint8_32_to_unit(images))))
    mu, cov = gaussian_stats(np.asarray(clf.features(x)))
    desc = (f"{dataset} classifier seed {classifier_seed} (test acc {clf.test_accuracy:.4f}); "
            f"reference: {len(images)} {dataset} test digits")
    return Scorer(clf, mu, cov, desc)


def real_ceiling(scorer: Scorer, train_images32_u8: np.ndarray, labels: np.ndarray, n: int, seed: int = 0) -> dict:
    """The score of ``n`` real training digits (uint8 32x32), labels as 'conditioning': the ceiling."""
    idx = np.random.default_rng(seed).permutation(len(train_images32_u8))[:n]
    return scorer.score(uint8_32_to_unit(train_images32_u8[idx]), labels[idx])
