"""load_network, conversion errors (wrong model, keys, shapes, dtypes, corrupt files), fetch, list,
eval and the CLI of the weights area."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from rdfia_jax import cli
from rdfia_jax.errors import RdfiaError
from rdfia_jax.weights import (PUBLISHED, convert_file, converted_path, load_network, read_converted,
                               read_info)
from rdfia_jax.weights.fetch import fetch
from rdfia_jax.weights.published import PublishedFile
from weight_files import random_source_tensors, write_keras_h5, write_source_file

W = 1.0 / 16


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    monkeypatch.setenv("RDFIA_JAX_WEIGHTS", str(d))
    return d


@functools.lru_cache(maxsize=None)
def _tensors(model, source):
    return random_source_tensors(model, source, width=W, seed=5)


def _write(tmp_path, model, source, layout="zip", name=None, **changes):
    tensors = dict(_tensors(model, source))
    for k, v in changes.items():
        k = k.replace("__", ".")
        if v is None:
            tensors.pop(k)
        else:
            tensors[k] = v
    return write_source_file(tmp_path / (name or f"{model}-{source}.bin"), source, tensors, layout=layout)


# ---------------------------------------------------------------------------------------------
# load_network
# ---------------------------------------------------------------------------------------------


def test_missing_weights_message_says_how_to_get_them(weights_dir):
    with pytest.raises(RdfiaError) as err:
        load_network("vgg16")
    msg = str(err.value)
    for needle in ("rdfia-jax weights fetch vgg16", "weights convert vgg16", "vgg16-397923af.pth",
                   "https://download.pytorch.org/models/vgg16-397923af.pth", "--random-weights",
                   str(weights_dir)):
        assert needle in msg, needle
    with pytest.raises(RdfiaError, match="weights fetch vgg16 --source keras"):
        load_network("vgg16", "keras")


@pytest.mark.slow  # initializer compilation: ~5 s idle, much longer on a loaded machine
def test_random_weights(weights_dir):
    net = load_network("squeezenet", random_weights=True, seed=3)
    assert net.is_random and "RANDOM" in net.weights_desc and net.name == "squeezenet1_1"
    assert "seed 3" in net.weights_desc


def test_convert_then_load_roundtrip_and_metadata(tmp_path, weights_dir):
    src = _write(tmp_path, "squeezenet1_1", "torchvision", layout="legacy")
    out = convert_file("squeezenet1_1", src)
    assert out == converted_path("squeezenet1_1") and out.parent == weights_dir
    assert not [p for p in weights_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    info, params = read_converted(out)
    assert info.model == "squeezenet1_1" and info.source == "torchvision"
    assert info.source_format == "pth-legacy" and info.source_file == src.name
    assert info.model_config == {"width": W, "num_classes": 1000}
    assert len(info.source_sha256) == 64
    np.testing.assert_array_equal(params[("conv1", "kernel")],
                                  _tensors("squeezenet1_1", "torchvision")["features.0.weight"].transpose(2, 3, 1, 0))
    net = load_network("squeezenet1_1")
    assert not net.is_random and src.name in net.weights_desc
    assert net.preprocessing.name == "torchvision"
    # a published file can also be given directly (converted in memory)
    net2 = load_network("squeezenet1_1", src)
    assert "in memory" in net2.weights_desc


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_converted_file_gets_the_umask_mode_not_0600(tmp_path, weights_dir, umask):
    """safetensors re-creates its file 0600; a converted file in a shared folder must be readable
    like any other file the user writes (0o666 less the umask)."""
    import os
    import stat

    src = _write(tmp_path, "squeezenet1_1", "torchvision")
    old = os.umask(umask)
    try:
        out = convert_file("squeezenet1_1", src)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_keras_weights_carry_caffe_preprocessing(tmp_path, weights_dir):
    src = _write(tmp_path, "vgg16", "keras", name="vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    convert_file("vgg16", src)
    assert read_info(converted_path("vgg16", "keras")).preprocessing.name == "caffe"
    net = load_network("vgg16")  # torchvision variant missing -> falls back to the keras one
    assert net.preprocessing.bgr and net.preprocessing.scale == 255.0
    assert "keras" in net.weights_desc


def test_loading_does_not_initialize_random_weights(tmp_path, weights_dir, monkeypatch):
    """Parameters come from nnx.eval_shape + the file: initializers only ever see tracers."""
    from rdfia_jax.models import imagenet_models

    src = _write(tmp_path, "vgg16", "torchvision")
    convert_file("vgg16", src)
    concrete_calls, traced_calls = [], []
    for name in ("_conv_init", "_linear_init"):
        original = getattr(imagenet_models, name)

        def spy(key, shape, dtype=np.float32, _orig=original):
            (traced_calls if isinstance(key, jax.core.Tracer) else concrete_calls).append(shape)
            return _orig(key, shape, dtype)

        monkeypatch.setattr(imagenet_models, name, spy)
    net = load_network("vgg16")
    assert concrete_calls == []
    assert traced_calls  # the spy is wired: eval_shape traced the initializers, never ran them
    assert not net.is_random


def test_converted_file_for_another_model_is_refused(tmp_path, weights_dir):
    out = convert_file("squeezenet1_1", _write(tmp_path, "squeezenet1_1", "torchvision"))
    with pytest.raises(RdfiaError, match="holds squeezenet1_1 weights, not alexnet"):
        load_network("alexnet", out)


def test_damaged_converted_file(tmp_path, weights_dir):
    out = convert_file("squeezenet1_1", _write(tmp_path, "squeezenet1_1", "torchvision"))
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(RdfiaError, match=str(out)):
        load_network("squeezenet1_1")


# ---------------------------------------------------------------------------------------------
# Bad input files: one clear error naming the file and the problem
# ---------------------------------------------------------------------------------------------


def test_wrong_model_for_file(tmp_path, weights_dir):
    src = _write(tmp_path, "alexnet", "torchvision")
    with pytest.raises(RdfiaError) as err:
        convert_file("vgg16", src)
    assert str(src) in str(err.value) and "holds alexnet weights" in str(err.value)
    keras = _write(tmp_path, "vgg16", "keras")
    with pytest.raises(RdfiaError, match="no keras layout is known for squeezenet1_1"):
        convert_file("squeezenet1_1", keras)


def test_missing_and_extra_keys(tmp_path, weights_dir):
    src = _write(tmp_path, "vgg16", "torchvision", name="missing.pth", **{"classifier__6__bias": None})
    with pytest.raises(RdfiaError, match=r"1 missing \(e.g. classifier.6.bias\)"):
        convert_file("vgg16", src)
    bn = np.ones(4, np.float32)
    src = _write(tmp_path, "vgg16", "torchvision", name="extra.pth", **{"features__1__running_mean": bn})
    with pytest.raises(RdfiaError, match=r"1 unexpected \(e.g. features.1.running_mean\)") as err:
        convert_file("vgg16", src)
    assert str(src) in str(err.value)


def test_wrong_shapes(tmp_path, weights_dir):
    t = _tensors("alexnet", "torchvision")
    bad = t["features.3.weight"][:, :, :3, :3].copy()  # 3x3 instead of 5x5 kernel
    src = _write(tmp_path, "alexnet", "torchvision", name="shape.pth", **{"features__3__weight": bad})
    with pytest.raises(RdfiaError, match=r"features.3.weight.*\(3, 3, 4, 12\).*needs \(5, 5, 4, 12\)"):
        convert_file("alexnet", src)
    src = _write(tmp_path, "alexnet", "torchvision", name="bias.pth",
                 **{"features__0__bias": np.zeros(7, np.float32)})
    with pytest.raises(RdfiaError, match=r"features.0.bias.*\(7,\)"):
        convert_file("alexnet", src)
    src = _write(tmp_path, "alexnet", "torchvision", name="rank.pth",
                 **{"classifier__4__weight": t["classifier.4.weight"].reshape(-1)})
    with pytest.raises(RdfiaError, match="classifier.4.weight.*expected a 2-D"):
        convert_file("alexnet", src)


def test_wrong_dtypes(tmp_path, weights_dir):
    t = _tensors("squeezenet1_1", "torchvision")
    src = _write(tmp_path, "squeezenet1_1", "torchvision", name="int.pth",
                 **{"features__0__weight": t["features.0.weight"].astype(np.int64)})
    with pytest.raises(RdfiaError, match=r"features.0.weight.*dtype int64"):
        convert_file("squeezenet1_1", src)
    # half precision is accepted and widened
    src = _write(tmp_path, "squeezenet1_1", "torchvision", name="half.pth",
                 **{"features__0__weight": t["features.0.weight"].astype(np.float16)})
    _, params = read_converted(convert_file("squeezenet1_1", src))
    assert params[("conv1", "kernel")].dtype == np.float32


@pytest.mark.parametrize("source,layout", [("torchvision", "legacy"), ("torchvision", "zip"),
                                           ("timm", None), ("keras", None)])
def test_truncated_and_corrupt_source_files(tmp_path, weights_dir, source, layout):
    src = _write(tmp_path, "vgg16", source, layout=layout or "zip")
    data = src.read_bytes()
    for i, cut in enumerate((len(data) // 3, len(data) - 100)):
        bad = tmp_path / f"bad{i}-{src.name}"
        bad.write_bytes(data[:cut])
        with pytest.raises(RdfiaError) as err:
            convert_file("vgg16", bad)
        assert str(bad) in str(err.value)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(RdfiaError, match="unrecognized file format"):
        convert_file("vgg16", garbage)
    assert not converted_path("vgg16", source).exists()


def test_keras_notop_file_is_missing_the_classifier(tmp_path, weights_dir):
    t = {k: v for k, v in _tensors("vgg16", "keras").items() if k.startswith("block")}
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(path, t)
    with pytest.raises(RdfiaError, match=r"6 missing \(e.g. fc1/bias"):
        convert_file("vgg16", path)


@pytest.mark.parametrize("layout", ["keras3-sequential", "keras3-functional", "keras2.13", "keras3-archive"])
def test_keras3_weights_h5_converts_like_the_published_keras2_file(tmp_path, weights_dir, capsys, layout):
    """Keras 3's save_weights names layer groups by class and rank (conv2d, ..., dense_2), not by
    layer name: mapped by position, the conversion equals the published Keras 2 file's, array for
    array (logit parity: test_weights_parity)."""
    from rdfia_jax.weights.sources import convert, read_source

    t = _tensors("vgg16", "keras")
    ref = convert(read_source(write_source_file(tmp_path / "k2.h5", "keras", t)), "vgg16")
    path = write_source_file(tmp_path / "vgg16.weights.h5", "keras", t, layout=layout)
    src = read_source(path)
    fmt = "keras" if layout == "keras3-archive" else "h5-keras3"
    assert src.file_format == fmt and "conv2d_12/kernel" in src.tensors
    got = convert(src, "vgg16")
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    assert cli.main(["weights", "convert", "vgg16", str(path)]) == 0, capsys.readouterr().err
    info = read_info(converted_path("vgg16", "keras"))
    assert info.source == "keras" and info.source_format == fmt
    assert info.preprocessing.name == "caffe"


def test_keras3_file_errors_name_the_stored_datasets(tmp_path, weights_dir):
    import h5py

    t = dict(_tensors("vgg16", "keras"))
    t["block2_conv1/kernel"] = t["block2_conv1/kernel"][..., :5].copy()
    path = write_source_file(tmp_path / "bad.weights.h5", "keras", t, layout="keras3-sequential")
    with pytest.raises(RdfiaError, match=r"block2_conv1/bias \(stored as /layers/conv2d_2/vars/1\)"
                                         r"' has shape \(8,\); expected \(5,\)"):
        convert_file("vgg16", path)
    extra = write_source_file(tmp_path / "extra.weights.h5", "keras", _tensors("vgg16", "keras"),
                              layout="keras3-sequential")
    with h5py.File(extra, "a") as f:  # a 14th Conv2D: not a VGG16, must not be mapped by position
        f["layers/conv2d_13/vars/0"] = np.zeros((3, 3, 32, 32), np.float32)
        f["layers/conv2d_13/vars/1"] = np.zeros(32, np.float32)
    with pytest.raises(RdfiaError, match=r"weighted layers .*'conv2d_13'.* are not those of a Keras vgg16"):
        convert_file("vgg16", extra)
    notop = write_source_file(tmp_path / "notop.weights.h5", "keras",
                              {k: v for k, v in _tensors("vgg16", "keras").items() if k.startswith("block")},
                              layout="keras3-functional")
    with pytest.raises(RdfiaError, match=r"6 missing \(e.g. fc1/bias"):
        convert_file("vgg16", notop)
    assert not converted_path("vgg16", "keras").exists()


def test_hostile_pth_through_convert_and_cli(tmp_path, weights_dir, capsys):
    from pth_writer import PickleWriter, save_pth

    sentinel = tmp_path / "PWNED"
    payload = PickleWriter().glob("os", "system").obj((f"touch {sentinel}",)).raw(b"R").finish()
    evil = tmp_path / "vgg16-397923af.pth"
    save_pth(evil, {"w": np.ones(1, np.float32)}, legacy=True, data_pickle=payload)
    assert cli.main(["weights", "convert", "vgg16", str(evil)]) == 2
    assert "refused" in capsys.readouterr().err and not sentinel.exists()


# ---------------------------------------------------------------------------------------------
# fetch (local HTTP server only; nothing leaves the machine) and the offline message
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _entry_for(path: Path, prefix: str | None) -> PublishedFile:
    from rdfia_jax.preprocess import TORCHVISION

    return PublishedFile("squeezenet1_1", "torchvision", path.name, "https://example.invalid/" + path.name,
                         "pth", prefix, None, 0.1, TORCHVISION, None, None)


def test_fetch_downloads_verifies_and_converts(tmp_path, weights_dir):
    from rdfia_jax.weights.store import sha256_file

    served = tmp_path / "served"
    served.mkdir()
    src = _write(served, "squeezenet1_1", "torchvision", layout="legacy", name="sq.pth")
    entry = _entry_for(src, sha256_file(src)[:8])
    with _serve(served) as base:
        out = fetch("squeezenet1_1", entry=entry, url=f"{base}/sq.pth")
    assert out == converted_path("squeezenet1_1") and (weights_dir / "downloads" / "sq.pth").is_file()
    # second call: uses the downloaded copy, no network needed
    assert fetch("squeezenet1_1", entry=entry, url="http://127.0.0.1:9/none") == out


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, weights_dir):
    served = tmp_path / "served"
    served.mkdir()
    src = _write(served, "squeezenet1_1", "torchvision", name="sq.pth")
    with _serve(served) as base, pytest.raises(RdfiaError, match="checksum mismatch.*must start with 00000000"):
        fetch("squeezenet1_1", entry=_entry_for(src, "00000000"), url=f"{base}/sq.pth")
    downloads = weights_dir / "downloads"
    assert not downloads.exists() or not list(downloads.iterdir())
    assert not converted_path("squeezenet1_1").exists()
    # a manually placed wrong file is caught as well
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / "sq.pth").write_bytes(src.read_bytes())
    with pytest.raises(RdfiaError, match="checksum mismatch"):
        fetch("squeezenet1_1", entry=_entry_for(src, "00000000"))


def test_fetch_offline_fails_fast_with_instructions(weights_dir):
    entry = [e for e in PUBLISHED if e.model == "squeezenet1_1"][0]
    start = time.monotonic()
    with pytest.raises(RdfiaError) as err:  # port 9 on localhost: connection refused, no network
        fetch("squeezenet1_1", url="http://127.0.0.1:9/squeezenet1_1-b8a52dc0.pth", connect_timeout=2)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert entry.filename in msg and entry.url in msg
    assert str(weights_dir / "downloads" / entry.filename) in msg


def test_fetch_unresponsive_server_times_out(weights_dir):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP connection but never answers
    try:
        start = time.monotonic()
        with pytest.raises(RdfiaError, match="could not download"):
            fetch("squeezenet1_1", url=f"http://127.0.0.1:{listener.getsockname()[1]}/x.pth",
                  connect_timeout=1)
        assert time.monotonic() - start < 4
    finally:
        listener.close()


def test_manifest_json_matches_published_table():
    manifest = json.loads((Path(__file__).resolve().parents[1] / "weights" / "manifest.json").read_text())
    assert manifest["files"] == json.loads(json.dumps([e.to_json() for e in PUBLISHED]))


# ---------------------------------------------------------------------------------------------
# CLI: list, convert, eval
# ---------------------------------------------------------------------------------------------


def test_cli_convert_and_list(tmp_path, weights_dir, capsys):
    src = _write(tmp_path, "squeezenet1_1", "torchvision")
    assert cli.main(["weights", "convert", "squeezenet", str(src)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1_1-b8a52dc0.pth" in out and "yes (squeezenet1_1.safetensors)" in out
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in out
    assert cli.main(["weights", "convert", "vgg16", str(tmp_path / "nope.pth")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_eval_on_a_tiny_folder(tmp_path, weights_dir, capsys):
    from PIL import Image

    from rdfia_jax import imagenet

    root = tmp_path / "val"
    rng = np.random.default_rng(0)
    wnids = imagenet.wnids()
    for cls in (0, 1):
        d = root / wnids[cls]
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(d / f"img{i}.JPEG")
    convert_file("squeezenet1_1", _write(tmp_path, "squeezenet1_1", "torchvision"))
    assert cli.main(["eval", "squeezenet1_1", "--imagenet-val", str(root), "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "images: 4" in out and "top-1:" in out and "top-5:" in out
    # flat folder + labels file
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted(root.glob("*/*.JPEG"))):
        (flat / f"{i}.JPEG").write_bytes(p.read_bytes())
    (flat / "labels.txt").write_text("\n".join(["0", "0", wnids[1], "1"]) + "\n")
    from rdfia_jax.weights.evaluate import evaluate, list_labeled_images

    paths, labels = list_labeled_images(flat, flat / "labels.txt")
    assert labels.tolist() == [0, 0, 1, 1]
    res = evaluate(load_network("squeezenet1_1"), paths, labels, batch_size=4)
    assert res.n == 4 and 0 <= res.top1_correct <= res.top5_correct <= 4
    # the counts agree with an independent argmax / top-5 over the same decoded images
    from rdfia_jax import models
    from rdfia_jax.data.transforms import load_images, to_unit

    net = load_network("squeezenet1_1")
    x = net.preprocessing.normalize(to_unit(load_images(paths, mode="crop")))
    logits = np.asarray(models.forward(net.graphdef, net.state, x)[0])
    order = np.argsort(-logits, axis=1)
    assert res.top1_correct == int((order[:, 0] == labels).sum())
    assert res.top5_correct == int((order[:, :5] == labels[:, None]).any(axis=1).sum())
    assert cli.main(["eval", "squeezenet1_1", "--imagenet-val", str(flat)]) == 2
    assert "WordNet id" in capsys.readouterr().err


def test_state_dict_wrapped_or_prefixed_is_accepted(tmp_path, weights_dir):
    from pth_writer import save_pth

    t = _tensors("squeezenet1_1", "torchvision")
    prefixed = tmp_path / "dataparallel.pth"
    save_pth(prefixed, {f"module.{k}": v for k, v in t.items()})
    _, params = read_converted(convert_file("squeezenet1_1", prefixed))
    np.testing.assert_array_equal(params[("conv10", "bias")], t["classifier.1.bias"])
