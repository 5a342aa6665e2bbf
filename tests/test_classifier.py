"""The small reference classifier: training, atomic cache, reload without retraining, errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from rdfia_jax import classifier as clf_mod
from rdfia_jax.errors import RdfiaError
from rdfia_jax.train import checkpoint

FAST = clf_mod.TrainConfig(epochs=4, batch_size=64, peak_lr=3e-3)


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RDFIA_JAX_CACHE", str(tmp_path))
    return tmp_path


def _no_training(*a, **k):
    raise AssertionError("retrained although cached")


def test_train_cache_and_reload(tmp_cache, monkeypatch):
    clf = clf_mod.get_classifier("digits", seed=0, config=FAST, progress=False)
    folder = tmp_cache / "classifier" / "digits-seed0"
    # the cache is a CheckpointStore: one step folder (= training steps), checksummed arrays
    steps_done = 4 * (1437 // 64)
    assert sorted(p.name for p in folder.iterdir()) == [str(steps_done)]
    meta = checkpoint.CheckpointStore(folder, fingerprint=None).read_metadata()
    assert meta["fingerprint"] == {"model": "mnist-small", "dataset": "digits", "seed": 0, "recipe_version": 1}
    assert len(meta["checksums"]) == len(jax.tree_util.tree_leaves(clf.params))
    user = meta["user"]
    assert user["dataset"] == "digits" and not user["is_real_mnist"] and user["train_steps"] == steps_done
    assert clf.test_accuracy > 0.85, clf.test_accuracy
    assert not list(tmp_cache.glob("classifier/.*partial"))  # nothing half-written left behind

    x = np.random.default_rng(0).random((1003, 28, 28, 1), dtype=np.float32)  # > one chunk, padded
    logits, feats = clf.logits(x), clf.features(x)
    assert logits.shape == (1003, 10) and feats.shape == (1003, 128)
    np.testing.assert_allclose(np.asarray(clf.apply(clf.params, x[:5])[0]), np.asarray(logits[:5]), atol=1e-4)
    _, acts = clf.apply(clf.params, x[:2], ("relu3",))
    np.testing.assert_allclose(np.asarray(acts["relu3"]), np.asarray(feats[:2]), atol=1e-4)
    with pytest.raises(RdfiaError, match="no images"):
        clf.logits(x[:0])

    monkeypatch.setattr(clf_mod, "train_classifier", _no_training)
    again = clf_mod.get_classifier("digits", seed=0)
    np.testing.assert_array_equal(np.asarray(again.logits(x[:7])), np.asarray(clf.logits(x[:7])))
    assert again.test_accuracy == clf.test_accuracy and again.meta == clf.meta

    # an earlier-format cache (params.npz + meta.json, same recipe) is read in place, not retrained
    legacy = tmp_cache / "classifier" / "digits-seed5"
    legacy.mkdir()
    np.savez(legacy / "params.npz", **{jax.tree_util.keystr(p): np.asarray(v)
                                       for p, v in jax.tree_util.tree_leaves_with_path(clf.params)})
    (legacy / "meta.json").write_text(json.dumps(dict(clf.meta, format_version=1, seed=5)))
    old = clf_mod.get_classifier("digits", seed=5)
    np.testing.assert_array_equal(np.asarray(old.logits(x[:7])), np.asarray(clf.logits(x[:7])))
    assert sorted(p.name for p in legacy.iterdir()) == ["meta.json", "params.npz"]  # left as it was

    # a damaged cache is reported (naming the step folder), not silently used
    data = [p for p in (folder / str(steps_done) / "arrays").rglob("*") if p.is_file() and p.parent.name == "d"]
    big = max(data, key=lambda p: p.stat().st_size)
    raw = bytearray(big.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    big.write_bytes(bytes(raw))
    with pytest.raises(RdfiaError, match=rf"checkpoint {folder / str(steps_done)} is damaged"):
        clf_mod.get_classifier("digits", seed=0)


def test_earlier_recipe_caches_are_retrained(tmp_cache, monkeypatch):
    legacy = tmp_cache / "classifier" / "digits-seed2"
    legacy.mkdir(parents=True)
    np.savez(legacy / "params.npz", w=np.zeros(3))
    (legacy / "meta.json").write_text(json.dumps({"format_version": 0}))
    calls = []

    def fake_training(dataset, seed, **kw):
        calls.append(seed)
        graphdef, params = clf_mod.nnx.split(clf_mod._new_model(seed))
        return graphdef, params, {"test_accuracy": 0.5, "train_steps": 3}

    monkeypatch.setattr(clf_mod, "train_classifier", fake_training)
    clf = clf_mod.get_classifier("digits", seed=2)
    assert calls == [2] and clf.test_accuracy == 0.5
    assert sorted(p.name for p in legacy.iterdir()) == ["3"]  # replaced by the new format, atomically


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


def test_load_split_is_public():
    test = clf_mod.load_split("digits", "test")
    assert test.images.shape[1:] == (28, 28, 1) and len(test) == len(test.labels) > 0


@pytest.mark.realdata
def test_cached_mnist_classifier_accuracy(shared_data):
    """The cached MNIST network (seed 0) reaches >= 99 % on the real test set (skips if not trained yet)."""
    try:
        clf = clf_mod.get_classifier("mnist", seed=0, train_if_missing=False)
    except RdfiaError as err:
        pytest.skip(f"MNIST classifier not cached yet: {err}")
    test = clf_mod.load_split("mnist", "test", shared_data)
    acc = float(np.mean(clf.predict(test.images) == test.labels))
    assert acc >= 0.99, acc
