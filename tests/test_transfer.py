"""Transfer learning (report 1.2): layer/cut mapping, feature extraction, cache, classifiers, pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from rdfia_jax import models
from rdfia_jax.errors import RdfiaError
from rdfia_jax.preprocess import CAFFE
from rdfia_jax.transfer import classifiers, features as F
from rdfia_jax.transfer import pipeline

WIDTH = 1 / 16  # hidden fc size 256, conv channels / 16


def tiny_network(name: str, seed: int = 0, width: float = WIDTH) -> models.Network:
    """A reduced-width model with He-initialized numpy weights.

    Filled from numpy rather than ``models.create`` because eager ``jax.random`` initialization compiles
    one kernel per parameter shape (about a minute on a loaded 2-core machine).
    """
    graphdef, state = nnx.split(models.abstract(name, width=width))
    rng = np.random.default_rng(seed)
    pure = nnx.to_pure_dict(state)

    def fill(node):
        if "kernel" in node:
            shape = node["kernel"].shape
            fan_in = int(np.prod(shape[:-1]))
            return {"kernel": (rng.normal(0, np.sqrt(2.0 / fan_in), shape)).astype(np.float32),
                    "bias": (0.01 * rng.normal(0, 1, node["bias"].shape)).astype(np.float32)}
        return {k: fill(v) for k, v in node.items()}

    nnx.replace_by_pure_dict(state, fill(pure))
    return models.Network(name, graphdef, state)


@pytest.fixture(scope="module")
def vgg():
    return tiny_network("vgg16")


@pytest.fixture(scope="module")
def alexnet():
    return tiny_network("alexnet")


def write_scene_folder(root: Path, classes=("coast", "forest", "kitchen"), n_train=4, n_test=3, seed=0) -> Path:
    """A tiny 15SceneData-like folder of grayscale JPEGs whose brightness pattern depends on the class."""
    rng = np.random.default_rng(seed)
    base = root / "15SceneData"
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            d = base / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = 70 + 3 * i, 80
                yy, xx = np.mgrid[0:h, 0:w]
                img = 120 + 100 * np.sin(xx * (k + 1) / 9.0) + rng.normal(0, 10, (h, w))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(d / f"img{i:02d}.jpg")
    return base


# ------------------------------------------------------------------------------------------- layers

def test_cut_mapping_matches_torchvision_sequential_indexing():
    vgg = [F.layer_for_cut("vgg16", n) for n in range(8)]
    assert vgg == ["fc8", "relu7", "relu7", "fc7", "relu6", "relu6", "fc6", "avgpool"]
    alex = [F.layer_for_cut("alexnet", n) for n in range(8)]
    assert alex == ["fc8", "relu7", "fc7", "relu6", "relu6", "fc6", "avgpool", "avgpool"]
    # the practical's settings: relu7 = classifier[:-2], "3 layers before" = [:-5] = relu6
    assert F.layer_for_cut("vgg16", 2) == "relu7" and F.layer_for_cut("vgg16", 5) == "relu6"
    with pytest.raises(RdfiaError, match="cut must be"):
        F.layer_for_cut("vgg16", 8)
    with pytest.raises(RdfiaError, match="defined for"):
        F.layer_for_cut("squeezenet1_1", 1)


def test_unknown_layer_is_a_clear_error(vgg):
    with pytest.raises(RdfiaError, match="unknown layer 'relu9'.*available layers"):
        F.resolve_layer(vgg, "relu9")
    with pytest.raises(RdfiaError, match="bad layer"):
        F.resolve_layer(vgg, "cutx")
    with pytest.raises(RdfiaError, match="unknown layer"):
        F.FeatureExtractor(vgg, ["fc9"])


def test_feature_dims_per_layer_and_cut_and_one_trace(vgg, alexnet):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (70 + i, 66, 1), dtype=np.uint8) for i in range(5)]
    ex = F.FeatureExtractor(vgg, ["cut2", "cut5", "fc8", "avgpool", "pool5"], batch_size=2)
    out = ex.from_images(images, "crop", 64, progress=False)
    assert {k: v.shape for k, v in out.items()} == {
        "relu7": (5, 256), "relu6": (5, 256), "fc8": (5, 1000), "avgpool": (5, 7 * 7 * 32), "pool5": (5, 2 * 2 * 32)}
    assert ex.trace_count == 1  # the ragged last batch (1 of 2) is padded, not retraced
    assert np.all(out["relu7"] >= 0)
    ex = F.FeatureExtractor(alexnet, ["cut1", "cut2"], batch_size=4)
    out = ex.from_images(images, "resize", 64, progress=False)
    assert out["relu7"].shape == (5, 256) and out["fc7"].shape == (5, 256)
    assert np.all(out["relu7"] == np.maximum(out["fc7"], 0))  # cut 2 is fc7 before its ReLU


def test_features_equal_a_direct_forward_and_gray_is_replicated(vgg):
    rng = np.random.default_rng(1)
    gray = [rng.integers(0, 256, (64, 64, 1), dtype=np.uint8) for _ in range(3)]
    rgb = [np.repeat(g, 3, axis=-1) for g in gray]
    ex = F.FeatureExtractor(vgg, ["relu7"], batch_size=2)
    a = ex.from_images(gray, "resize", 64, progress=False)["relu7"]
    b = ex.from_images(rgb, "resize", 64, progress=False)["relu7"]
    np.testing.assert_array_equal(a, b)
    x = vgg.preprocessing.normalize(np.stack(rgb).astype(np.float32) / 255.0)
    direct = np.asarray(models.forward(vgg.graphdef, vgg.state, x, ("relu7",))[1]["relu7"])
    np.testing.assert_allclose(a, direct, rtol=1e-4, atol=1e-4)  # batch size changes matmul blocking


def test_prepare_images_modes():
    img = np.zeros((256, 320, 1), np.uint8)
    img[:, 160:] = 255
    crop = F.prepare_images([img], "crop", 224)
    res = F.prepare_images([img], "resize", 224)
    assert crop.shape == res.shape == (1, 224, 224, 3)
    assert not np.array_equal(crop, res)
    with pytest.raises(RdfiaError, match="unknown"):
        F.prepare_images([img], "stretch", 224)


# -------------------------------------------------------------------------------------------- cache

def test_cache_hit_and_miss_rules(vgg, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (64, 64, 1), dtype=np.uint8) for _ in range(3)]
    kw = dict(weights_id="w1", mode="resize", size=64, batch_size=2, cache_root=tmp_path, progress=False)
    first, info = F.cached_features(vgg, images, ["relu7", "relu6"], **kw)
    assert info["computed"] == ["relu7", "relu6"] and info["cached"] == []
    assert len(list((tmp_path / "transfer").glob("*.npz"))) == 2

    calls = {"n": 0}
    real = F.FeatureExtractor.from_images

    def counting(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(F.FeatureExtractor, "from_images", counting)
    again, info = F.cached_features(vgg, images, ["cut2", "relu6"], **kw)  # "cut2" is relu7
    assert calls["n"] == 0 and info["cached"] == ["relu7", "relu6"] and info["seconds"] == 0.0
    np.testing.assert_array_equal(again["relu7"], first["relu7"])

    # every part of the key forces a recomputation
    for change in ({"weights_id": "w2"}, {"mode": "crop"}, {"size": 72}):
        _, info = F.cached_features(vgg, images, ["relu7"], **{**kw, **change})
        assert info["computed"] == ["relu7"], change
    other_images = [im.copy() for im in images]
    other_images[0][0, 0, 0] ^= 1
    _, info = F.cached_features(vgg, other_images, ["relu7"], **kw)
    assert info["computed"] == ["relu7"]
    other_net = models.Network(vgg.name, vgg.graphdef, vgg.state, CAFFE)  # other preprocessing
    _, info = F.cached_features(other_net, images, ["relu7"], **kw)
    assert info["computed"] == ["relu7"]

    # a file at the key's path holding another key (stale or colliding) is never used
    key = F.cache_key(model="vgg16", weights_id="w1", layer="relu7", mode="resize", size=64,
                      preprocessing=vgg.preprocessing.to_dict(), data_id=F.images_fingerprint(images))
    stale = dict(key, weights="w-old")
    path = F.cache_file(key, tmp_path)
    np.savez(path, features=np.zeros((3, 256), np.float32), key=np.asarray(json.dumps(stale, sort_keys=True)))
    assert F.load_cached(key, tmp_path) is None
    path.write_bytes(b"corrupt")
    assert F.load_cached(key, tmp_path) is None
    n_before = calls["n"]
    fixed, info = F.cached_features(vgg, images, ["relu7"], **kw)
    assert calls["n"] == n_before + 1 and info["computed"] == ["relu7"]
    np.testing.assert_array_equal(fixed["relu7"], first["relu7"])
    assert not list((tmp_path / "transfer").glob(".*partial"))  # atomic writes leave no temporaries


def test_extractor_reused_across_splits_compiles_once(vgg, tmp_path):
    rng = np.random.default_rng(5)
    train = [rng.integers(0, 256, (64, 64, 1), dtype=np.uint8) for _ in range(3)]
    test = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    kw = dict(weights_id="w1", mode="resize", size=64, batch_size=2, cache_root=tmp_path, progress=False,
              use_cache=False)
    extractors: dict = {}
    f_train, _ = F.cached_features(vgg, train, ["relu7"], extractors=extractors, **kw)
    f_test, _ = F.cached_features(vgg, test, ["relu7"], extractors=extractors, **kw)
    (extractor,) = extractors.values()
    assert extractor.trace_count == 1  # the test split ran on the train split's compiled function
    alone, _ = F.cached_features(vgg, test, ["relu7"], **kw)
    np.testing.assert_allclose(f_test["relu7"], alone["relu7"], rtol=1e-6, atol=1e-6)
    assert f_train["relu7"].shape == (3, alone["relu7"].shape[1])


def test_weights_fingerprint(vgg, tmp_path):
    assert F.weights_fingerprint(vgg, seed=3) == "random-seed3"
    real = models.Network(vgg.name, vgg.graphdef, vgg.state, vgg.preprocessing, "torchvision test file")
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    h1 = F.weights_fingerprint(real, weights_file=f, cache_root=tmp_path)
    assert h1 == "sha256-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    f.write_bytes(b"abd")  # new size/mtime -> rehashed, not the memo
    assert F.weights_fingerprint(real, weights_file=f, cache_root=tmp_path) != h1
    assert F.weights_fingerprint(real).startswith("params-")


# ---------------------------------------------------------------------------------------- classifiers

def blobs(n_per_class=30, dims=40, classes=4, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, dims))
    x = np.concatenate([c + spread * rng.normal(0, 1, (n_per_class, dims)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    return np.abs(x), y  # non-negative like ReLU features


def test_svm_c_sweep_and_head_beat_chance():
    tr_x, tr_y = blobs(seed=0)
    te_x, te_y = blobs(seed=0, n_per_class=20)[0] * 1.0, blobs(seed=0, n_per_class=20)[1]
    res = classifiers.svm_accuracy(tr_x, tr_y, te_x, te_y)
    assert res["accuracy"] > 0.9 and res["dims"] == 40
    sweep = classifiers.c_sweep(tr_x, tr_y, te_x, te_y, (0.01, 1.0, 10.0), folds=3)
    assert sweep["best_C"] in (0.01, 1.0, 10.0) and set(sweep["test"]) == {0.01, 1.0, 10.0}
    # C is chosen on the train split only: scrambling the test labels cannot change the choice
    scrambled = classifiers.c_sweep(tr_x, tr_y, te_x, np.roll(te_y, 7), (0.01, 1.0, 10.0), folds=3)
    assert scrambled["best_C"] == sweep["best_C"] and scrambled["cv"] == sweep["cv"]
    head = classifiers.train_head(tr_x, tr_y, te_x, te_y, num_classes=4, epochs=5, batch_size=16,
                                  learning_rate=1e-2, optimizer="adam")
    assert len(head["test_accuracy"]) == 5 and head["accuracy"] > 0.9
    assert head["trace_count"] == 1  # 120 examples / 16 = ragged last batch, masked not retraced
    # fine-tuning a hidden layer initialized from given weights also learns
    rng = np.random.default_rng(0)
    hidden = [{"kernel": rng.normal(0, 0.2, (40, 32)).astype(np.float32), "bias": np.zeros(32, np.float32)}]
    tuned = classifiers.train_head(tr_x, tr_y, te_x, te_y, num_classes=4, epochs=5, batch_size=16,
                                   learning_rate=1e-2, optimizer="adam", hidden=hidden)
    assert tuned["accuracy"] > 0.9
    assert not np.allclose(np.asarray(tuned["params"]["hidden"][0]["kernel"]), hidden[0]["kernel"])


def test_head_trains_through_the_shared_loop_and_stops_on_nan(monkeypatch):
    """The head runs in train.loop.run: a NaN feature stops it with TrainingDiverged (before: chance
    accuracy, silently), and its one compilation is counted by xla.TraceCounter."""
    from rdfia_jax.train import loop

    tr_x, tr_y = blobs(seed=0)
    te_x, te_y = blobs(seed=0, n_per_class=20)
    head = classifiers.train_head(tr_x, tr_y, te_x, te_y, num_classes=4, epochs=2, batch_size=50)
    assert head["steps"] == 2 * 3 and head["trace_count"] == 1 and len(head["train_loss"]) == 2
    bad = tr_x.copy()
    bad[70, 3] = np.nan
    with pytest.raises(loop.TrainingDiverged, match=r"training diverged at step \d+ \(epoch 0, batch \d\): loss=nan"):
        classifiers.train_head(bad, tr_y, te_x, te_y, num_classes=4, epochs=2, batch_size=50)
    calls = []
    real_run = loop.run
    monkeypatch.setattr(loop, "run", lambda *a, **k: calls.append(k["steps_per_epoch"]) or real_run(*a, **k))
    classifiers.train_head(tr_x, tr_y, te_x, te_y, num_classes=4, epochs=1, batch_size=50)
    assert calls == [3]  # 120 examples in batches of 50: the ragged last one is masked, not dropped


def test_pca_keeps_the_requested_variance_share():
    tr_x, tr_y = blobs(seed=1, dims=60)
    te_x, te_y = blobs(seed=1, dims=60, n_per_class=10)
    res = classifiers.pca_svm(tr_x, tr_y, te_x, te_y, variance=0.9)
    ratios = np.asarray(res["explained_variance_ratio"])
    assert res["variance_kept"] >= 0.9 and ratios[:-1].sum() < 0.9  # the fewest components reaching 90 %
    assert res["dims_kept"] == ratios.size < 60 and res["dims_in"] == 60
    assert res["accuracy"] > 0.9 and res["baseline"]["accuracy"] > 0.9
    with pytest.raises(RdfiaError, match="variance"):
        classifiers.pca_svm(tr_x, tr_y, te_x, te_y, variance=1.5)


# --------------------------------------------------------------------------------------- multi-device

_SHARDED_SCRIPT = textwrap.dedent("""
    import sys, jax, numpy as np
    sys.path.insert(0, {tests_dir!r})
    from test_transfer import tiny_network
    from rdfia_jax.transfer.features import FeatureExtractor
    assert len(jax.devices()) == 4, jax.devices()
    net = tiny_network("alexnet")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 1), dtype=np.uint8) for _ in range(7)]
    sharded = FeatureExtractor(net, ["relu7", "relu5"], batch_size=6)      # rounded up to 8 = 4 x 2
    single = FeatureExtractor(net, ["relu7", "relu5"], batch_size=6, devices=jax.devices()[:1])
    assert sharded.batch_size == 8 and single.batch_size == 6
    a = sharded.from_images(images, "resize", 64, progress=False)
    b = single.from_images(images, "resize", 64, progress=False)
    out = sharded._fn(sharded.state, jax.device_put(np.zeros((8, 64, 64, 3), np.uint8), sharded.batch_sharding))
    assert len(out[0].sharding.device_set) == 4
    for k in a:
        assert a[k].shape == b[k].shape == (7, a[k].shape[1]), (k, a[k].shape)
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4)
    print("OK", sharded.trace_count, single.trace_count)
""")


def test_sharded_equals_unsharded_on_four_host_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    script = _SHARDED_SCRIPT.replace("{tests_dir!r}", repr(str(Path(__file__).parent)))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK 1 1" in proc.stdout


# -------------------------------------------------------------------------------------- data / pipeline

def test_bad_input_empty_class_and_unreadable_jpeg(tmp_path):
    base = write_scene_folder(tmp_path / "a", n_train=2, n_test=1)
    (base / "train" / "office").mkdir()
    (base / "test" / "office").mkdir()
    with pytest.raises(RdfiaError, match="office.*no images"):
        pipeline.load_data(pipeline.Settings(data=base, out=tmp_path / "o", progress=False))
    base = write_scene_folder(tmp_path / "b", n_train=2, n_test=1)
    (base / "test" / "coast" / "img00.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(RdfiaError, match="img00.jpg"):
        pipeline.load_data(pipeline.Settings(data=base, out=tmp_path / "o", progress=False))
    with pytest.raises(RdfiaError, match="unknown row"):
        pipeline.run_section(pipeline.Settings(data=base, out=tmp_path / "o", rows=("relu8",)))


def test_pipeline_end_to_end_on_tiny_dataset(tmp_path):
    base = write_scene_folder(tmp_path)
    loader = lambda model: (tiny_network(model), f"tiny-{model}")  # noqa: E731
    settings = pipeline.Settings(data=base, out=tmp_path / "out", image_size=64, batch_size=4, Cs=(1.0, 10.0),
                                 cv_folds=2, head_epochs=2, cache_root=tmp_path / "cache", progress=False)
    result = pipeline.run_section(settings, loader=loader)
    ids = [r.row_id for r in result["rows"]]
    assert ids == ["relu7-resize", "relu7-crop", "relu6", "alexnet-cut1", "alexnet-cut2", "c-sweep-1", "c-sweep-10",
                   "pca", "fc-head"]
    by_id = {r.row_id: r for r in result["rows"]}
    assert by_id["relu7-crop"].report == "0.905863" and by_id["alexnet-cut2"].layer == "fc7"
    assert all(0.0 <= r.accuracy <= 1.0 for r in result["rows"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert "RANDOM WEIGHTS" in md and "0.918928" in md
    csv_lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("setting,model,layer,preprocessing,dims,accuracy,feature_s,fit_s,report")
    assert len(csv_lines) == 1 + len(ids)
    from rdfia_jax.results import read_results

    table = read_results(tmp_path / "out")  # the shared results table, not overwritten by the details
    assert [r["setting"] for r in table] == [r.setting for r in result["rows"]]
    assert set(json.loads((tmp_path / "out" / "details.json").read_text())["rows"]) >= {"relu6", "pca"}
    for fig in ("fc_head_curve.png", "c_sweep.png", "pca_variance.png"):
        assert (tmp_path / "out" / fig).stat().st_size > 1000
    # 3 passes (vgg resize, vgg crop with relu7+relu6, alexnet crop with relu7+fc7); a rerun is all cache hits
    assert len(result["passes"]) == 3
    again = pipeline.run_section(settings, loader=loader)
    assert all(not p["computed"] for p in again["passes"].values())
    assert [r.accuracy for r in again["rows"]][:5] == [r.accuracy for r in result["rows"]][:5]
    # fine-tuning fc6 + fc7 with the head: trained on the frozen avgpool activation
    tuned = pipeline.run_section(dataclasses.replace(settings, rows=("fc-head",), finetune=2), loader=loader)
    (row,) = tuned["rows"]
    assert row.layer == "avgpool" and row.dims == 7 * 7 * 32 and "fc6+fc7" in row.notes


def test_cli_errors_exit_2(tmp_path, capsys):
    from rdfia_jax.cli import main

    assert main(["transfer", "--data", str(tmp_path / "nowhere"), "--random-weights", "--out", str(tmp_path / "o")]) == 2
    assert "15 Scene not found" in capsys.readouterr().err
    assert main(["transfer", "--weights", "bogus", "--out", str(tmp_path / "o")]) == 2
    assert main(["transfer", "--weights", "timm", "--random-weights", "--out", str(tmp_path / "o")]) == 2
