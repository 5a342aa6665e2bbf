"""How well a feature extractor aligns two domains, measured without any class label.

The proxy A-distance (PAD) of Ben-David et al. estimates the H-divergence between the source and
target feature distributions from how well a linear classifier tells them apart:
``PAD = 2 (1 - 2 err)``, ``err`` its error on held-out features. 2 means perfectly separable
domains, 0 indistinguishable ones (a classifier at chance). Unlike the DANN domain classifier's own
accuracy, it uses a fresh probe, so it can compare feature extractors whose domain classifiers
differ (e.g. a last iterate against a parameter average).

References:
  Ben-David, Blitzer, Crammer, Pereira, "Analysis of representations for domain adaptation",
  NeurIPS 2007. Ganin et al., "Domain-adversarial training of neural networks", JMLR 2016, sec. 5.1.
"""

from __future__ import annotations

import warnings

import numpy as np

from rdfia_jax.errors import RdfiaError


def proxy_a_distance(source_features: np.ndarray, target_features: np.ndarray, *, seed: int = 0,
                     C: float = 1.0) -> dict[str, float]:
    """Proxy A-distance between two sets of feature vectors.

    Each domain is split in half at random (``seed``); a linear SVM (``LinearSVC``, hinge loss,
    regularization ``C``) is fitted on the first halves after standardization (statistics of the
    fitting half) and its error is measured on the second halves.

    Args:
      source_features: (Ns, D) features of source images.
      target_features: (Nt, D) features of target images.
      seed: the random split.
      C: the SVM's inverse regularization strength (fixed, not tuned).
    Returns:
      ``{"pad": 2 (1 - 2 err), "error": err, "n_fit": ..., "n_test": ...}``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    xs = np.asarray(source_features, np.float64)
    xt = np.asarray(target_features, np.float64)
    if xs.ndim != 2 or xt.ndim != 2 or xs.shape[1] != xt.shape[1]:
        raise RdfiaError(f"proxy_a_distance needs two (N, D) arrays with the same D, got {xs.shape} and {xt.shape}")
    if min(len(xs), len(xt)) < 4:
        raise RdfiaError(f"proxy_a_distance needs at least 4 feature vectors per domain, got {len(xs)} and {len(xt)}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(xt))):
        raise RdfiaError("proxy_a_distance: the features hold NaN or inf")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    halves = []
    for x, label in ((xs, 1), (xt, 0)):
        order = rng.permutation(len(x))
        cut = len(x) // 2
        halves.append((x[order[:cut]], x[order[cut:]], label))
    x_fit = np.concatenate([h[0] for h in halves])
    y_fit = np.concatenate([np.full(len(h[0]), h[2]) for h in halves])
    x_test = np.concatenate([h[1] for h in halves])
    y_test = np.concatenate([np.full(len(h[1]), h[2]) for h in halves])
    scaler = StandardScaler().fit(x_fit)
    svm = LinearSVC(C=C, max_iter=20000, random_state=seed)
    with warnings.catch_warnings():
        # The iteration budget is part of the measurement's definition (every feature set compared
        # gets the same probe); near-separable data may stop it short of the exact optimum.
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(scaler.transform(x_fit), y_fit)
    err = float(np.mean(svm.predict(scaler.transform(x_test)) != y_test))
    return {"pad": 2.0 * (1.0 - 2.0 * err), "error": err, "n_fit": int(len(y_fit)), "n_test": int(len(y_test))}
