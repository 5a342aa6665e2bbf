"""benchmarks/transfer_torch_reference.py computes what rdfia-jax's ``relu7-resize`` row computes.

Issue 23 times the two against each other on the same 15 Scene folder and the same weight file, so
they must do the same work: the same images in the same order, the same resized pixels, the same
relu7 features for one torchvision ``.pth`` (a real ``torch.save`` of the full VGG16, read by
rdfia-jax's restricted unpickler), the same SVM. The data are tiny 15 Scene-like folders written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import transfer_torch_reference as ref

# (split, class, file, (width, height), mode): gray and RGB, shrunk, enlarged, one exactly 224x224
IMAGES = [
    ("train", "bedroom", "image_0001.jpg", (300, 250), "L"),
    ("train", "bedroom", "image_0002.jpg", (224, 224), "L"),
    ("train", "coast", "image_0003.jpg", (180, 260), "RGB"),
    ("train", "coast", "image_0004.jpg", (256, 200), "L"),
    ("test", "bedroom", "image_0005.jpg", (320, 240), "L"),
    ("test", "bedroom", "image_0006.jpg", (150, 150), "RGB"),
    ("test", "coast", "image_0007.jpg", (240, 320), "L"),
    ("test", "coast", "image_0008.jpg", (224, 300), "L"),
]


def _write_scene(root: Path, images=IMAGES) -> Path:
    """A 15SceneData-like folder of smooth random JPEGs (gray like 15 Scene, a few RGB)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, cls, name, (w, h), mode in images:
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC).convert(mode)
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        img.save(root / split / cls / name, quality=90)
    return root


@pytest.fixture
def scene(tmp_path) -> Path:
    return _write_scene(tmp_path / "15SceneData")


def _rdfia_data(root: Path, per_class=None):
    from rdfia_jax.transfer.pipeline import Settings, load_data

    return load_data(Settings(data=root, out=root.parent / "unused", per_class=per_class, progress=False))


@pytest.mark.parametrize("per_class", [None, 1])
def test_listing_and_decoding_match_rdfia_jax(scene, per_class):
    """ImageFolder's walk (sorted classes, sorted files, --per-class) gives rdfia-jax's images and labels."""
    train, test, classes = ref.splits(ref.scene_root(scene.parent), per_class)
    tr_x, tr_y, te_x, te_y, names = _rdfia_data(scene, per_class)
    assert classes == list(names) == ["bedroom", "coast"]
    assert len(train) == (4 if per_class is None else 2) and len(test) == len(te_x)
    for samples, images, labels in ((train, tr_x, tr_y), (test, te_x, te_y)):
        assert [t for _, t in samples] == labels.tolist()
        for (path, _), img in zip(samples, images):
            rgb = np.asarray(ref.pil_loader(path))  # convert("RGB"): gray becomes 3 equal channels
            assert rgb.shape[:2] == img.shape[:2]
            np.testing.assert_array_equal(rgb, np.broadcast_to(img, rgb.shape))


def test_transform_matches_rdfia_jax_preprocessing(scene):
    """Resize((224, 224)) + ToTensor + Normalize == rdfia-jax's resize-mode uint8 batch, normalized."""
    pytest.importorskip("torch", reason="torch (a bench extra) is not installed: the PyTorch reference is not tested")
    from rdfia_jax.data.transforms import prepare_images
    from rdfia_jax.preprocess import TORCHVISION

    train, test, _ = ref.splits(scene)
    tr_x, _, te_x, _, _ = _rdfia_data(scene)
    u8 = prepare_images(list(tr_x) + list(te_x), "resize", 224)
    ours = np.asarray(TORCHVISION.normalize(u8.astype(np.float32) / np.float32(255.0)))  # NHWC
    theirs = np.stack([ref.transform(ref.pil_loader(p)).numpy() for p, _ in train + test]).transpose(0, 2, 3, 1)
    assert theirs.shape == ours.shape == (8, 224, 224, 3) and theirs.dtype == np.float32
    # the same uint8 pixels: the float difference is rounding only (one uint8 step is 0.0175 here)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=2e-6)


def test_refuses_bad_arguments_with_exit_2(scene, tmp_path, capsys):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not read: the checks come first")
    out = str(tmp_path / "out")

    def refused(*argv) -> str:
        with pytest.raises(SystemExit) as exc:
            ref.main(list(argv))
        assert exc.value.code == 2
        return capsys.readouterr().err

    assert "no such folder" in refused("--data", str(tmp_path / "missing"), "--weights", str(weights), "--out", out)
    assert "no such file" in refused("--data", str(scene), "--weights", str(tmp_path / "none.pth"), "--out", out)
    assert "--weights is required" in refused("--data", str(scene), "--out", out)
    (tmp_path / "empty").mkdir()
    assert "no train/ and test/" in refused("--data", str(tmp_path / "empty"), "--weights", str(weights), "--out", out)
    assert "--batch-size must be at least 1" in refused("--data", str(scene), "--weights", str(weights), "--out", out,
                                                        "--batch-size", "0")
    (scene / "test" / "forest").mkdir()
    assert "different class folders" in refused("--data", str(scene), "--weights", str(weights), "--out", out)
    (scene / "train" / "forest").mkdir()
    assert "no images in class folder(s) forest" in refused("--data", str(scene), "--weights", str(weights),
                                                            "--out", out)
    assert not Path(out).exists()


def test_refuses_a_file_that_is_not_a_vgg16_state_dict(scene, tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="torch (a bench extra) is not installed: the PyTorch reference is not tested")
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    small = tmp_path / "small.pth"
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3)}, small)
    for path in (bogus, small):
        with pytest.raises(SystemExit) as exc:
            ref.main(["--data", str(scene), "--weights", str(path), "--out", str(tmp_path / "out")])
        assert exc.value.code == 2
        assert f"--weights {path}: not a torchvision VGG16 state_dict" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory) -> Path:
    """The shared weights as issue 23 makes them: full VGG16, torchvision init, seed 0, torch.save."""
    pytest.importorskip("torch", reason="torch (a bench extra) is not installed: the PyTorch reference is not tested")
    path = tmp_path_factory.mktemp("weights") / "vgg16_seed0.pth"
    assert ref.main(["--make-weights", str(path), "--seed", "0"]) == 0
    return path


@pytest.mark.slow
def test_same_weight_file_same_relu7_features_and_accuracy(scene, vgg16_file, tmp_path):
    """The torch script and rdfia-jax's relu7-resize row (its feature and SVM calls) on one .pth agree."""
    import torch
    from flax import nnx

    from rdfia_jax.transfer.classifiers import svm_accuracy
    from rdfia_jax.transfer.features import cached_features
    from rdfia_jax.weights import load_network

    out = tmp_path / "torch"
    assert ref.main(["--data", str(scene.parent), "--weights", str(vgg16_file), "--out", str(out),
                     "--no-progress", "--save-features", "--threads", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_train"], summary["n_test"], summary["classes"], summary["batch_size"]) == (4, 4, 2, 8)
    assert summary["total_s"] >= summary["feature_s"] + summary["svm_s"] > 0
    with np.load(out / "features.npz") as z:
        x_torch = np.concatenate([z["x_train"], z["x_test"]])
        assert z["y_train"].tolist() == [0, 0, 1, 1] and z["y_test"].tolist() == [0, 0, 1, 1]

    # rdfia-jax reads the torch.save file itself (restricted unpickler, converted in memory)
    net = load_network("vgg16", str(vgg16_file))
    assert not net.is_random and "torchvision" in net.weights_desc
    sd = torch.load(vgg16_file, weights_only=True)
    pure = nnx.to_pure_dict(net.state)
    np.testing.assert_array_equal(np.asarray(pure["conv5_3"]["kernel"]),
                                  sd["features.28.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(pure["fc7"]["kernel"]), sd["classifier.3.weight"].numpy().T)

    tr_x, tr_y, te_x, te_y, _ = _rdfia_data(scene)
    feats, _ = cached_features(net, list(tr_x) + list(te_x), ["cut2"], weights_id="test", mode="resize",
                               batch_size=8, use_cache=False, progress=False)
    x_jax = feats["relu7"]
    assert x_jax.shape == x_torch.shape == (8, 4096)
    scale = np.abs(x_torch).max()
    assert scale > 0 and 0.2 < (x_torch > 0).mean() < 0.8  # features that vary, not a dead network
    assert np.abs(x_jax - x_torch).max() <= 1e-4 * scale
    cos = (ref.l2_normalize(x_jax) * ref.l2_normalize(x_torch)).sum(1)
    assert cos.min() > 1 - 1e-6
    jax_row = svm_accuracy(x_jax[:4], tr_y, x_jax[4:], te_y, C=1.0, seed=0)
    assert jax_row["accuracy"] == summary["accuracy"]
