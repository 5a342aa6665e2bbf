"""The small reference classifier: training, atomic cache, reload without retraining, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rdfia_jax import classifier as clf_mod
from rdfia_jax.errors import RdfiaError

FAST = clf_mod.TrainConfig(epochs=4, batch_size=64, peak_lr=3e-3)


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RDFIA_JAX_CACHE", str(tmp_path))
    return tmp_path


def test_train_cache_and_reload(tmp_cache, monkeypatch):
    clf = clf_mod.get_classifier("digits", seed=0, config=FAST, progress=False)
    folder = tmp_cache / "classifier" / "digits-seed0"
    meta = json.loads((folder / "meta.json").read_text())
    assert (folder / "params.npz").is_file() and meta["dataset"] == "digits" and not meta["is_real_mnist"]
    assert clf.test_accuracy > 0.85, clf.test_accuracy
    assert not list(tmp_cache.glob("classifier/.*partial"))  # nothing half-written left behind

    x = np.random.default_rng(0).random((1003, 28, 28, 1), dtype=np.float32)  # > one chunk, padded
    logits, feats = clf.logits(x), clf.features(x)
    assert logits.shape == (1003, 10) and feats.shape == (1003, 128)
    np.testing.assert_allclose(np.asarray(clf.apply(clf.params, x[:5])[0]), np.asarray(logits[:5]), atol=1e-4)
    _, acts = clf.apply(clf.params, x[:2], ("relu3",))
    np.testing.assert_allclose(np.asarray(acts["relu3"]), np.asarray(feats[:2]), atol=1e-4)

    def no_training(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(clf_mod, "train_classifier", no_training)
    again = clf_mod.get_classifier("digits", seed=0)
    np.testing.assert_allclose(np.asarray(again.logits(x[:7])), np.asarray(logits[:7]), atol=1e-5)
    assert again.test_accuracy == clf.test_accuracy


def test_seeds_differ_and_errors(tmp_cache):
    a = clf_mod.get_classifier("digits", seed=0, config=clf_mod.TrainConfig(epochs=1, batch_size=64), progress=False)
    b = clf_mod.get_classifier("digits", seed=1, config=clf_mod.TrainConfig(epochs=1, batch_size=64), progress=False)
    x = np.zeros((2, 28, 28, 1), np.uint8)
    assert not np.allclose(np.asarray(a.logits(x)), np.asarray(b.logits(x)))
    with pytest.raises(RdfiaError, match="train_if_missing"):
        clf_mod.get_classifier("digits", seed=7, train_if_missing=False)
    with pytest.raises(RdfiaError, match="unknown classifier dataset"):
        clf_mod.get_classifier("cifar10")
    with pytest.raises(RdfiaError, match=r"\(N, 28, 28, 1\)"):
        a.logits(np.zeros((2, 32, 32, 1), np.float32))


@pytest.mark.realdata
def test_cached_mnist_classifier_accuracy(shared_data):
    """The cached MNIST network (seed 0) reaches >= 99 % on the real test set (skips if not trained yet)."""
    try:
        clf = clf_mod.get_classifier("mnist", seed=0, train_if_missing=False)
    except RdfiaError as err:
        pytest.skip(f"MNIST classifier not cached yet: {err}")
    test = clf_mod._load("mnist", "test", shared_data)
    acc = float(np.mean(clf.predict(test.images) == test.labels))
    assert acc >= 0.99, acc
