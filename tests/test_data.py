"""Data layer: real-format tiny files written here, bad input, batching, and (fixture) real data."""

from __future__ import annotations

import gzip
import hashlib
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdfia_jax import data
from rdfia_jax.data import download, idx, transforms
from rdfia_jax.data.datasets import digits as embedded
from rdfia_jax.data.datasets import mnist as M
from rdfia_jax.data.datasets import mnistm
from rdfia_jax.errors import RdfiaError


# ----------------------------------------------------------------------------- helpers


def write_mnist_like(folder: Path, n_train=12, n_test=5, seed=0, gz=True) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (n,), dtype=np.uint8)
        img_name, lab_name = M._IDX_FILES[split]
        sfx = ".gz" if gz else ""
        idx.write_idx(folder / (img_name + sfx), images)
        idx.write_idx(folder / (lab_name + sfx), labels)
        out[split] = (images, labels)
    return out


def write_jpeg(path: Path, shape, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path, format="JPEG")


# ----------------------------------------------------------------------------- IDX


def test_idx_roundtrip_gz_and_raw(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for name in ("a-idx3-ubyte.gz", "a-idx3-ubyte"):
        idx.write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(idx.parse_idx(idx.read_bytes(tmp_path / name)), arr)


def test_idx_pair_loads_tiny_files(tmp_path):
    written = write_mnist_like(tmp_path)
    images, labels = idx.load_idx_pair(tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz")
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images[..., 0], written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])


@pytest.mark.parametrize("corrupt", ["magic", "truncated", "gzip", "dtype"])
def test_idx_corrupt_files_raise(tmp_path, corrupt):
    arr = np.zeros((3, 28, 28), np.uint8)
    idx.write_idx(tmp_path / "x-idx3-ubyte", arr)
    raw = (tmp_path / "x-idx3-ubyte").read_bytes()
    if corrupt == "magic":
        bad = b"\x12\x34" + raw[2:]
    elif corrupt == "truncated":
        bad = raw[:-10]
    elif corrupt == "dtype":
        bad = raw[:2] + b"\x0d" + raw[3:]
    else:
        bad = gzip.compress(raw)[:-20]
    name = "bad-idx3-ubyte.gz" if corrupt == "gzip" else "bad-idx3-ubyte"
    (tmp_path / name).write_bytes(bad)
    with pytest.raises(RdfiaError, match="bad-idx3-ubyte"):
        idx.parse_idx(idx.read_bytes(tmp_path / name), source=str(tmp_path / name))


def test_idx_count_disagreement_raises(tmp_path):
    idx.write_idx(tmp_path / "i.gz", np.zeros((3, 28, 28), np.uint8))
    idx.write_idx(tmp_path / "l.gz", np.zeros((4,), np.uint8))
    with pytest.raises(RdfiaError, match="3 images but .* 4 labels"):
        idx.load_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz")


def test_mnist_checksum_mismatch_is_reported(tmp_path):
    write_mnist_like(tmp_path / "mnist")
    with pytest.raises(RdfiaError, match="checksum mismatch"):
        data.load("mnist", "test", data_dir=tmp_path, use_prepared=False)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "mnistm"])
def test_missing_files_fail_fast_with_instructions(tmp_path, monkeypatch, name):
    monkeypatch.setenv("RDFIA_JAX_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(M, "FASHION_DEBIAN_DIR", tmp_path / "no-debian")
    start = time.monotonic()
    with pytest.raises(RdfiaError) as info:
        data.load(name, "train")
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "--data-dir" in msg and "https://" in msg
    assert str(tmp_path / "nothing") in msg


def test_unknown_name_and_split():
    with pytest.raises(RdfiaError, match="unknown dataset"):
        data.load("cifar", "train")
    with pytest.raises(RdfiaError, match="unknown split"):
        data.load("digits", "valid")


# ----------------------------------------------------------------------------- embedded digits, M variants


def test_digits_embedded_say_not_mnist():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert train.images.shape == (1438, 28, 28, 1) and test.images.shape == (359, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert "NOT MNIST" in train.description and not train.is_real_mnist
    assert set(np.unique(train.labels)) == set(range(10))
    # MNIST layout: a 4-pixel empty frame around a 20x20 digit
    assert train.images[:, :4].max() == 0 and train.images[:, 24:].max() == 0
    assert train.images.max() > 200


def test_digits_m_deterministic_and_colour():
    a = data.load("digits_m", "test", seed=3)
    b = mnistm.compose_m(data.load("digits", "test").images, embedded.sample_photos(), mnistm.split_rng(3, "test"), threshold=127)
    assert a.images.shape == (359, 28, 28, 3) and "NOT MNIST" in a.description
    np.testing.assert_array_equal(a.images, b)
    assert not np.array_equal(a.images, data.load("digits_m", "test", seed=4).images)


def test_compose_m_equals_signed_abs_difference():
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8) * (rng.random((50, 28, 28)) < 0.3)
    bgs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (33, 29, 3), dtype=np.uint8)]
    out = mnistm.compose_m(digits.astype(np.uint8), bgs, np.random.default_rng(7))
    # Replay the draws and apply the practical's formula literally, in float (a signed type).
    r = np.random.default_rng(7)
    u = r.random((50, 3))
    which = np.floor(u[:, 0] * 2).astype(int)
    hs, ws = np.array([40, 33]), np.array([50, 29])
    rows = np.floor(u[:, 1] * (hs[which] - 28)).astype(int)
    cols = np.floor(u[:, 2] * (ws[which] - 28)).astype(int)
    for i in range(50):
        crop = bgs[which[i]][rows[i]:rows[i] + 28, cols[i]:cols[i] + 28].astype(np.float32)
        digit = np.repeat(((digits[i] > 0).astype(np.float32) * 255)[..., None], 3, -1)
        np.testing.assert_array_equal(out[i], np.abs(crop - digit).astype(np.uint8))


def test_mnistm_from_tiny_files(tmp_path):
    # load_mnistm on tiny files: bypass the official checksum by building through compose_m directly,
    # and check the BSDS lookup and JPEG errors of the real entry point.
    write_jpeg(tmp_path / "bsds500" / "train" / "a.jpg", (40, 60, 3))
    write_jpeg(tmp_path / "bsds500" / "train" / "b.jpg", (50, 30, 3), seed=1)
    bgs, where = mnistm.load_bsds_backgrounds(tmp_path)
    assert where == tmp_path / "bsds500" / "train" and [b.shape for b in bgs] == [(40, 60, 3), (50, 30, 3)]
    (tmp_path / "bsds500" / "train" / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(RdfiaError, match="c.jpg"):
        mnistm.load_bsds_backgrounds(tmp_path)


# ----------------------------------------------------------------------------- batching


def test_epoch_order_deterministic_and_independent_streams():
    a = data.epoch_order(100, seed=1, epoch=2)
    np.testing.assert_array_equal(a, data.epoch_order(100, seed=1, epoch=2))
    assert sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, data.epoch_order(100, seed=1, epoch=3))
    assert not np.array_equal(a, data.epoch_order(100, seed=1, epoch=2, stream=1))


def test_iterate_batches_drop_pad_resume():
    x = np.arange(10) * 10
    y = np.arange(10)
    batches = list(data.iterate_batches((x, y), 4, seed=0, epoch=0))
    assert len(batches) == 2 and all(b[0].shape == (4,) for b in batches)
    np.testing.assert_array_equal(batches[0][0], batches[0][1] * 10)
    padded = list(data.iterate_batches({"x": x, "y": y}, 4, seed=0, epoch=0, drop_last=False, pad_last=True))
    assert len(padded) == 3 and padded[-1]["x"].shape == (4,)
    assert padded[-1]["mask"].tolist() == [True, True, False, False] and padded[0]["mask"].all()
    seen = np.concatenate([b["y"][b["mask"]] for b in padded])
    assert sorted(seen.tolist()) == list(range(10))
    short = list(data.iterate_batches((x,), 4, seed=None, drop_last=False))
    assert short[-1][0].tolist() == [80, 90]
    resumed = list(data.iterate_batches((x, y), 4, seed=0, epoch=0, start_batch=1))
    np.testing.assert_array_equal(resumed[0][1], batches[1][1])
    assert data.num_batches(60000, 128) == 468 and data.num_batches(60000, 128, drop_last=False) == 469


# ----------------------------------------------------------------------------- transforms


def test_normalizations():
    imgs = np.zeros((2, 28, 28, 1), np.uint8)
    imgs[0, 10:18, 10:18] = 255
    x = transforms.dann_normalize(imgs)
    assert x.shape == (2, 28, 28, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[1, 0, 0], -data.MNIST_TRAIN_MEAN / data.MNIST_TRAIN_STD, rtol=1e-6)
    g = transforms.gan_normalize(transforms.gan_resize32(imgs))
    assert g.shape == (2, 32, 32, 1) and g.min() == -1.0 and g.max() == 1.0
    ref = np.asarray(Image.fromarray(imgs[0, :, :, 0]).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(transforms.gan_resize32(imgs)[0, :, :, 0], ref)
    gray = np.random.default_rng(0).integers(0, 256, (300, 400, 1), dtype=np.uint8)
    assert transforms.imagenet_resize(gray, "resize").shape == (224, 224, 3)
    assert transforms.imagenet_resize(gray, "center_crop").shape == (224, 224, 3)


# ----------------------------------------------------------------------------- 15 Scene, ImageNet, user images


def make_scene_tree(root: Path, classes=("coast", "bedroom", "forest"), per=(3, 2)):
    for split, n in zip(("train", "test"), per):
        for k, cls in enumerate(classes):
            for i in range(n):
                mode = "L" if k % 2 == 0 else "RGB"
                shape = (20 + i, 30 + k) if mode == "L" else (24, 36, 3)
                write_jpeg(root / "15SceneData" / split / cls / f"image_{i:04d}.jpg", shape, seed=i, mode=mode)


def test_scene15_folder_and_zip(tmp_path):
    make_scene_tree(tmp_path)
    images, labels, names = data.load_scene15(tmp_path, "train", progress=False)
    assert names == ["bedroom", "coast", "forest"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert images[0].shape == (24, 36, 3) and images[3].shape == (20, 30, 1)  # gray stays 1-channel
    zpath = tmp_path / "15SceneData.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((tmp_path / "15SceneData").rglob("*.jpg")):
            zf.write(f, f.relative_to(tmp_path).as_posix())
    zimages, zlabels, znames = data.load_scene15(zpath, "test", progress=False)
    fimages, flabels, _ = data.load_scene15(tmp_path / "15SceneData", "test", progress=False)
    assert znames == names and zlabels.tolist() == flabels.tolist() == [0, 0, 1, 1, 2, 2]
    for a, b in zip(zimages, fimages):
        np.testing.assert_array_equal(a, b)


def test_scene15_bad_layouts(tmp_path):
    with pytest.raises(RdfiaError, match="15SceneData"):
        data.load_scene15(tmp_path, "train")
    make_scene_tree(tmp_path)
    (tmp_path / "15SceneData" / "test" / "extra").mkdir()
    write_jpeg(tmp_path / "15SceneData" / "test" / "extra" / "x.jpg", (8, 8, 3))
    with pytest.raises(RdfiaError, match="differ"):
        data.load_scene15(tmp_path, "test", progress=False)
    (tmp_path / "15SceneData" / "train" / "coast" / "image_0000.jpg").write_bytes(b"garbage")
    with pytest.raises(RdfiaError, match="image_0000.jpg"):
        data.load_scene15(tmp_path, "train", progress=False)


def test_scene15_flat_layout_is_rejected(tmp_path):
    write_jpeg(tmp_path / "15SceneData" / "train" / "a.jpg", (8, 8, 3))
    write_jpeg(tmp_path / "15SceneData" / "test" / "b.jpg", (8, 8, 3))
    with pytest.raises(RdfiaError, match="<class>"):
        data.load_scene15(tmp_path, "train", progress=False)


UNPICKLED = []


class _Trap:
    """Unpickling this appends to UNPICKLED: proves whether the loader unpickled anything."""

    def __reduce__(self):
        return (UNPICKLED.append, ("unpickled!",))


def test_imagenet_npz_never_unpickles(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    y = np.array([958, 85, 244])
    label_map = np.array({"trap": _Trap()}, dtype=object)
    np.savez(tmp_path / "imagenet_val_25.npz", X=X, y=y, label_map=label_map)
    images, labels, names = data.load_imagenet_val25(tmp_path)
    assert UNPICKLED == []
    np.testing.assert_array_equal(images, X)
    assert labels.dtype == np.int64 and len(names) == 1000
    assert [names[k] for k in labels] == ["hay", "quail", "Tibetan mastiff"]  # the one display form (spaces)
    np.savez(tmp_path / "objy.npz", X=X, y=np.array([1, 2, _Trap()], dtype=object))
    with pytest.raises(RdfiaError, match="pickled"):
        data.load_imagenet_val25(tmp_path / "objy.npz")
    assert UNPICKLED == []
    with pytest.raises(RdfiaError, match="imagenet_val_25.npz"):
        data.load_imagenet_val25(tmp_path / "nowhere")


def test_image_folder(tmp_path):
    write_jpeg(tmp_path / "b.jpg", (10, 12), mode="L")
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("hi")
    images, names = data.load_image_folder(tmp_path)
    assert names == ["a.png", "b.jpg"] and images[1].shape == (10, 12, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RdfiaError, match="no image files"):
        data.load_image_folder(tmp_path / "empty")


# ----------------------------------------------------------------------------- real data (fixture)

MNISTM_TEST_SEED0_SHA256 = "f53bf21f11d9b606c006e1661797c68c7244d3cfdb8ac1fcf9fce9aae290179f"


@pytest.mark.realdata
def test_real_mnist_counts_and_checksums(shared_data):
    train = data.load("mnist", "train", data_dir=shared_data, use_prepared=False)
    test = data.load("mnist", "test", data_dir=shared_data, use_prepared=False)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.is_real_mnist and train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    raw = gzip.decompress((shared_data / "mnist" / "train-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    np.testing.assert_allclose(train.images.mean() / 255.0, data.MNIST_TRAIN_MEAN, rtol=1e-12)


def test_fashion_mnist_from_debian_package():
    if not (M.FASHION_DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({M.FASHION_DEBIAN_DIR})")
    ds = M.load_fashion_mnist("test", data_dir=Path("/nonexistent"))
    assert ds.images.shape == (10000, 28, 28, 1) and "NOT MNIST" in ds.description
    assert np.bincount(ds.labels).tolist() == [1000] * 10


@pytest.mark.realdata
def test_real_mnistm_deterministic_golden(shared_data):
    a = data.load("mnistm", "test", data_dir=shared_data, use_prepared=False)
    assert a.images.shape == (10000, 28, 28, 3) and a.is_real_mnist
    assert a.images[0, 14, 10:13].tolist() == [[99, 129, 183], [98, 128, 182], [98, 128, 182]]
    assert a.images[9999, 0, 0].tolist() == [81, 146, 174]
    assert a.images[4321, 20, 20].tolist() == [128, 151, 97]
    assert hashlib.sha256(a.images.tobytes()).hexdigest() == MNISTM_TEST_SEED0_SHA256
    mnist = data.load("mnist", "test", data_dir=shared_data, use_prepared=False)
    np.testing.assert_array_equal(a.labels, mnist.labels)
    # image i depends only on MNIST image i and the seed: composing a prefix gives the same bytes
    bgs, _ = mnistm.load_bsds_backgrounds(shared_data)
    again = mnistm.compose_m(mnist.images[:100], bgs, mnistm.split_rng(0, "test"))
    np.testing.assert_array_equal(again, a.images[:100])


@pytest.mark.realdata
def test_real_scene15_counts(shared_data):
    src = shared_data / "15SceneData"
    per_class = {}
    for cls, _, _ in D_entries(src, "test"):
        per_class[cls] = per_class.get(cls, 0) + 1
    assert per_class == {"bedroom": 116, "coast": 260, "forest": 228, "highway": 160, "industrial": 211,
                         "insidecity": 208, "kitchen": 110, "livingroom": 189, "mountain": 274, "office": 115,
                         "opencountry": 310, "store": 215, "street": 192, "suburb": 141, "tallbuilding": 256}
    images, labels, names = data.load_scene15(shared_data, "train", progress=False)
    assert len(images) == 1500 and np.bincount(labels).tolist() == [100] * 15 and len(names) == 15
    assert images[0].dtype == np.uint8 and images[0].shape[-1] in (1, 3)


@pytest.mark.realdata
def test_real_scene15_is_read_like_torchvision_imagefolder(shared_data):
    """kitchen/image_0172.jpg carries EXIF orientation 6: 15 Scene is read without EXIF rotation, as
    torchvision's ImageFolder reads it (the practical's numbers), while a user's photo is turned upright."""
    from rdfia_jax.data.decode import decode

    f = shared_data / "15SceneData" / "train" / "kitchen" / "image_0172.jpg"
    with Image.open(f) as im:
        assert im.getexif().get(0x0112) == 6
        want = np.asarray(im.convert("L"))[..., None]
    images, labels, names = data.load_scene15(shared_data, "train", progress=False, use_prepared=False)
    kitchen = [im for im, lab in zip(images, labels) if names[lab] == "kitchen"]
    assert any(im.shape == want.shape and np.array_equal(im, want) for im in kitchen)
    assert decode(f, keep_gray=True).shape == (220, 293, 1)  # user path: upright


def D_entries(src, split):
    from rdfia_jax.data.datasets.scene15 import _scene15_entries_dir

    return _scene15_entries_dir(src, split)


@pytest.mark.realdata
def test_real_imagenet_val25(shared_data):
    images, labels, names = data.load_imagenet_val25(shared_data / "imagenet_val_25" / "imagenet_val_25.npz")
    assert images.shape == (25, 224, 224, 3)
    assert labels.tolist()[:5] == [958, 85, 244, 182, 294] and labels[-1] == 100
    assert [names[k] for k in labels[:2]] == ["hay", "quail"] and names[6] == "stingray"


# ----------------------------------------------------------------------------- prepared copies (tfds, npz)


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """An empty $RDFIA_JAX_DATA, so prepared copies go to a temporary folder."""
    monkeypatch.setenv("RDFIA_JAX_DATA", str(tmp_path / "home"))
    return tmp_path / "home"


def test_prepare_tfds_array_record_roundtrip(data_home):
    from rdfia_jax.data import store

    if not store.have_array_record():
        pytest.skip("array_record not installed; the npz fallback is tested separately")
    import sys

    assert not store.is_prepared("digits")
    vdir = data.prepare("digits")
    assert (vdir / "dataset_info.json").is_file() and store.is_prepared("digits")
    assert list(vdir.glob("*.array_record*"))
    for split in ("train", "test"):
        raw = data.load("digits", split, use_prepared=False)
        prepared = data.load("digits", split)
        assert "prepared" in prepared.description and "NOT MNIST" in prepared.description
        np.testing.assert_array_equal(prepared.images, raw.images)
        np.testing.assert_array_equal(prepared.labels, raw.labels)
    source = store.ExampleSource(store.data_source("digits", "train"))
    assert len(source) == 1438 and source[1437]["image"].shape == (28, 28, 1)
    assert "tensorflow" not in sys.modules  # tfds worked without TensorFlow
    from tensorflow_datasets.core.utils import gcs_utils

    assert gcs_utils._is_gcs_disabled  # tfds never tries the network here
    assert data.prepare("digits") == vdir  # runs once


def test_killed_preparation_is_detected_and_redone(data_home, monkeypatch):
    from rdfia_jax.data import store

    if not store.have_array_record():
        pytest.skip("array_record not installed")
    cls = store._builder_classes()["digits"]
    original = cls._generate_examples

    def dies_midway(self, split):
        for k, item in enumerate(original(self, split)):
            if k == 1:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C during preparation
            yield item

    monkeypatch.setattr(cls, "_generate_examples", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        data.prepare("digits")
    assert not store.is_prepared("digits")
    assert data.load("digits", "test").description.endswith("NOT MNIST")  # half-done copy ignored
    monkeypatch.setattr(cls, "_generate_examples", original)
    vdir = data.prepare("digits")
    assert store.is_prepared("digits") and not list(vdir.parent.glob("incomplete.*"))
    np.testing.assert_array_equal(data.load("digits", "train").images, data.load("digits", "train", use_prepared=False).images)


def test_damaged_prepared_copy_raises(data_home):
    from rdfia_jax.data import store

    if not store.have_array_record():
        pytest.skip("array_record not installed")
    vdir = data.prepare("digits")
    shard = next(vdir.glob("*-train.array_record*"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(RdfiaError, match="--force"):
        data.load("digits", "train")
    data.prepare("digits", force=True)
    assert len(data.load("digits", "train")) == 1438


def test_prepare_npz_fallback(data_home, monkeypatch):
    from rdfia_jax.data import store

    monkeypatch.setattr(store, "have_array_record", lambda: False)
    vdir = data.prepare("digits_m", seed=2)
    assert (vdir / "info.json").is_file() and (vdir / "train.npz").is_file()
    a, b = data.load("digits_m", "test", seed=2), data.load("digits_m", "test", seed=2, use_prepared=False)
    assert "prepared" in a.description
    np.testing.assert_array_equal(a.images, b.images)


def test_prepare_scene15_variable_sizes_and_mock_data(tmp_path, data_home, monkeypatch):
    from rdfia_jax.data import store

    make_scene_tree(tmp_path / "raw")
    fmts = ["npz"] + (["array_record"] if store.have_array_record() else [])
    raw = data.load_scene15(tmp_path / "raw", "train", progress=False)
    for fmt in fmts:
        monkeypatch.setattr(store, "have_array_record", (lambda f=fmt: f == "array_record"))
        data.prepare("scene15", data_dir=tmp_path / "raw", fmt=fmt)
        images, labels, names = data.load_scene15(None, "train", progress=False)
        assert names == raw[2] and labels.tolist() == raw[1].tolist()
        for a, b in zip(images, raw[0]):
            np.testing.assert_array_equal(a, b)
    if "array_record" in fmts:
        import tensorflow_datasets as tfds

        # The reader relies only on the data-source protocol: tfds' mock data passes through it.
        with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_FILES,
                                    data_dir=str(store.version_dir("scene15"))):
            images, labels, names = store.load_prepared_scene15("test")
        assert len(images) == 4 and all(im.ndim == 3 and im.dtype == np.uint8 for im in images)
        assert labels.dtype == np.int64 and names == raw[2]


def test_cli_data_list_and_prepare(data_home, capsys):
    from rdfia_jax.cli import main

    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "NOT MNIST" in out and str(data_home) in out
    assert main(["data", "prepare", "mnist", "--data-dir", str(data_home / "none")]) == 2
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_cli_data_list_says_embedded_sets_are_always_available(data_home, capsys):
    from rdfia_jax.cli import main

    data.load("digits", "train")  # what `gan` / `dann --dataset-pair digits` do: no preparation involved
    assert main(["data", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert "embedded, always available" in lines["digits"] and "not prepared" not in lines["digits"]
    assert "embedded, always available" in lines["digits_m"]
    assert "not prepared" in lines["mnist"]


@pytest.mark.parametrize("argv,needle", [
    (["digits", "--seed", "-1"], "--seed must be >= 0"),
    (["digits", "--download"], "--download applies to mnist, fashion_mnist and mnistm"),
    (["mnist", "--data-dir", "FILE"], "--data-dir"),
    (["mnistm", "--bsds-dir", "FILE"], "--bsds-dir"),
])
def test_cli_data_prepare_validates_before_work(argv, needle, data_home, tmp_path, capsys, monkeypatch):
    from rdfia_jax.cli import main

    monkeypatch.setattr(data, "prepare", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work started")))
    (tmp_path / "FILE").write_text("x")
    argv = [str(tmp_path / "FILE") if a == "FILE" else a for a in argv]
    assert main(["data", "prepare", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_cli_data_prepare_refuses_an_unwritable_data_folder(tmp_path, capsys, monkeypatch):
    from rdfia_jax.cli import main

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("RDFIA_JAX_DATA", str(tmp_path / "file" / "data"))
    monkeypatch.setattr(data, "prepare", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work started")))
    assert main(["data", "prepare", "digits"]) == 2
    err = capsys.readouterr().err
    assert "prepared-data folder" in err and f"cannot be created, {tmp_path / 'file'} is a file" in err
    assert "RDFIA_JAX_DATA" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- download (local server)


@pytest.fixture
def http_folder(tmp_path):
    """Serve a folder over HTTP on localhost (stands in for a mirror)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_checks_content_and_fails_fast(tmp_path, http_folder):
    root, url = http_folder
    write_mnist_like(root)  # wrong content for the official checksums
    with pytest.raises(RdfiaError, match="checksum mismatch"):
        download.download_idx("mnist", tmp_path / "dest", mirrors=[url], files=["t10k-labels-idx1-ubyte"])
    assert not (tmp_path / "dest" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    start = time.monotonic()
    with pytest.raises(RdfiaError, match="could not download"):
        download.download_idx("mnist", tmp_path / "dest", mirrors=["http://127.0.0.1:9/"], files=["t10k-labels-idx1-ubyte"])
    assert time.monotonic() - start < 5


@pytest.mark.realdata
def test_download_real_file_from_local_mirror(tmp_path, http_folder, shared_data):
    root, url = http_folder
    src = shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    (root / src.name).write_bytes(src.read_bytes())
    dest = download.download_idx("mnist", tmp_path, mirrors=["http://127.0.0.1:9/", url], files=["t10k-labels-idx1-ubyte"])
    assert (dest / src.name).read_bytes() == src.read_bytes()


def test_damaged_npz_scene15_copy_raises(tmp_path, data_home, monkeypatch):
    from rdfia_jax.data import store

    make_scene_tree(tmp_path / "raw")
    monkeypatch.setattr(store, "have_array_record", lambda: False)
    vdir = data.prepare("scene15", data_dir=tmp_path / "raw", fmt="npz")
    npz = vdir / "train.npz"
    npz.write_bytes(npz.read_bytes()[:200])
    with pytest.raises(RdfiaError, match="--force"):
        data.load_scene15(None, "train", progress=False)


def test_map_batches_pads_once_and_trims():
    import jax
    import jax.numpy as jnp

    from rdfia_jax.data.batching import map_batches

    traces = []

    @jax.jit
    def fn(x, y):
        traces.append(x.shape)
        return {"sum": x.sum(axis=1) + y, "x2": x * 2}

    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    y = np.arange(7, dtype=np.float32)
    out = map_batches(fn, (x, y), 3)
    np.testing.assert_array_equal(out["sum"], x.sum(axis=1) + y)
    np.testing.assert_array_equal(out["x2"], x * 2)
    assert traces == [(3, 3)]  # one shape: the ragged last batch was padded
    single = map_batches(jax.jit(lambda a: jnp.tanh(a)), x, 4)
    np.testing.assert_allclose(single, np.tanh(x), rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        map_batches(fn, (x, y), 0)
    with pytest.raises(ValueError, match="disagree"):
        map_batches(fn, (x, y[:3]), 3)


def test_write_results_md_csv_json_roundtrip(tmp_path):
    from rdfia_jax.errors import RdfiaError
    from rdfia_jax.results import read_results, write_results

    rows = [{"run": "a|b", "acc": 0.912345678, "n": 3}, {"run": "c", "acc": float("nan")}]
    paths = write_results(rows, tmp_path, note="NOTE", footer="acc: test accuracy")
    md = paths["md"].read_text()
    assert md.startswith("NOTE\n\n| run | acc | n |") and "| a/b | 0.9123 | 3 |" in md and "| c | nan |  |" in md
    assert md.rstrip().endswith("acc: test accuracy")
    assert paths["csv"].read_text().splitlines() == ["run,acc,n", "a|b,0.9123,3", "c,nan,"]
    back = read_results(tmp_path)
    assert back[0] == {"run": "a|b", "acc": 0.912345678, "n": 3} and back[1]["acc"] == "nan"
    with pytest.raises(RdfiaError, match="not in the table"):
        write_results(rows, tmp_path, columns=["run"])
    paths["json"].write_text("{broken")
    with pytest.raises(RdfiaError, match="damaged"):
        read_results(tmp_path)
