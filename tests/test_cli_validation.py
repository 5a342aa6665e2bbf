"""Every argument and output path of summary / predict / activations / saliency / fool / classvis /
transfer / visualize is checked before any work: a clear one-line error (exit 2), never a traceback,
and no model is loaded."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest

from rdfia_jax.cli import main
from rdfia_jax import fileio
from rdfia_jax.commands import common
from rdfia_jax.errors import RdfiaError


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail the test if a command gets as far as loading a network."""
    import rdfia_jax.classifier
    import rdfia_jax.weights

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(rdfia_jax.weights, "load_network", refuse)
    monkeypatch.setattr(rdfia_jax.classifier, "get_classifier", refuse)


@pytest.fixture()
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "im.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    return str(path)


def _usage_error(argv, capsys) -> str:
    """argparse refusals: SystemExit(2) and the message on stderr."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _error(argv, capsys) -> str:
    """Refusals after parsing: exit status 2 and one ``rdfia-jax CMD: error:`` line."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["summary", "vgg16", "--input-size", "0"], "--input-size: must be at least 1, got 0"),
    (["predict", "vgg16", "IMG", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["predict", "vgg16", "IMG", "--batch-size=-4"], "--batch-size: must be at least 1, got -4"),
    (["predict", "vgg16", "IMG", "-k", "0"], "-k/--top: must be between 1 and 1000, got 0"),
    (["predict", "vgg16", "IMG", "-k", "1001"], "-k/--top: must be between 1 and 1000, got 1001"),
    (["predict", "vgg16", "IMG", "--seed", "-1"], "--seed: must be between 0 and 4294967295, got -1"),
    (["activations", "vgg16", "IMG", "--layer", "relu1_1", "--max-maps", "0"], "--max-maps: must be at least 1"),
    (["saliency", "--samples", "0"], "--samples: must be at least 1, got 0"),
    (["saliency", "--steps", "-3"], "--steps: must be at least 1, got -3"),
    (["saliency", "--noise", "nan"], "--noise: must be a finite number, got nan"),
    (["saliency", "--seed", "-5"], "--seed: must be between 0 and"),
    (["fool", "--lr", "inf"], "--lr: must be a finite number, got inf"),
    (["fool", "--lr", "0"], "--lr: must be positive, got 0"),
    (["fool", "--max-iters", "0"], "--max-iters: must be at least 1, got 0"),
    (["fool", "--magnify", "-1"], "--magnify: must be positive"),
    (["classvis", "--lr", "-2"], "--lr: must be positive, got -2"),
    (["classvis", "--l2-reg", "-1"], "--l2-reg: must not be negative, got -1"),
    (["classvis", "--l2-reg", "inf"], "--l2-reg: must be a finite number"),
    (["classvis", "--iters", "0"], "--iters: must be at least 1, got 0"),
    (["classvis", "--blur-sigma", "0"], "--blur-sigma: must be positive"),
    (["classvis", "--jitter", "-1"], "--jitter: must be at least 0, got -1"),
    (["classvis", "--snapshot-every", "-1"], "--snapshot-every: must be at least 0"),
    (["classvis", "--channel", "-1"], "--channel: must be at least 0"),
    (["transfer", "--C", "0"], "--C: must be positive, got 0"),
    (["transfer", "--head-lr", "inf"], "--head-lr: must be a finite number, got inf"),
    (["transfer", "--pca-variance", "1.5"], "--pca-variance: must be at most 1"),
    (["transfer", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["transfer", "--cv-folds", "1"], "--cv-folds: must be at least 2, got 1"),
    (["transfer", "--head-epochs", "0"], "--head-epochs: must be at least 1"),
    (["transfer", "--seed", "-3"], "--seed: must be between 0 and"),
    (["visualize", "--seed", "-1"], "--seed: must be between 0 and"),
    (["visualize", "--start-index", "25"], "--start-index: must be between 0 and 24, got 25"),
    (["visualize", "bogus"], "unknown experiment 'bogus'"),
    (["visualize", "--models", "resnet"], "invalid choice: 'resnet'"),
])
def test_bad_numbers_are_refused_by_the_parser(argv, message, capsys, no_model_load):
    assert message in _usage_error(argv, capsys)


def test_out_that_is_a_file_is_refused_before_any_model_load(tmp_path, image, capsys, no_model_load):
    file = tmp_path / "taken"
    file.write_text("x")
    for argv in (["activations", "squeezenet1_1", "--random-weights", "--layer", "relu1", "--out", file, image],
                 ["saliency", "--model", "mnist-small", "--random-weights", "--images", image, "--out", file],
                 ["fool", "--random-weights", "--images", image, "--out", file],
                 ["classvis", "--random-weights", "--out", file],
                 ["transfer", "--random-weights", "--out", file],
                 ["visualize", "mnist-proof", "--proof-dataset", "digits", "--out", file]):
        err = _error(argv, capsys)
        assert f"--out {file}: is an existing file, not a folder" in err, argv
    err = _error(["activations", "squeezenet1_1", "--random-weights", "--layer", "relu1", "--out", file / "sub",
                  image], capsys)
    assert f"cannot be created, {file} is a file" in err
    err = _error(["transfer", "--random-weights", "--out", tmp_path / "o", "--cache-dir", file / "c"], capsys)
    assert "--cache-dir" in err and "is a file" in err


def test_read_only_out_is_refused_before_any_model_load(tmp_path, image, capsys, monkeypatch, no_model_load):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        can_write = os.access(locked, os.W_OK)  # root ignores the mode: simulate the read-only folder
        if can_write:
            def refuse(folder):
                raise PermissionError(13, "Permission denied")
            monkeypatch.setattr(fileio, "_probe_write", refuse)
        argv = ["activations", "squeezenet1_1", "--random-weights", "--layer", "relu1", "--out", locked / "maps",
                image]
        err = _error(argv, capsys)
        assert f"--out {locked / 'maps'}: not writable" in err and "Permission denied" in err
        assert f"cannot write in its nearest existing folder {locked}" in err and "choose another --out" in err
        assert not (locked / "maps").exists()
    finally:
        locked.chmod(0o755)


def test_bad_inputs_layers_and_classes_are_refused_before_any_model_load(tmp_path, image, capsys, no_model_load):
    err = _error(["predict", "vgg16", "--random-weights", str(tmp_path / "missing.png")], capsys)
    assert "input not found" in err and "missing.png" in err
    err = _error(["activations", "vgg16", "--random-weights", "--layer", "relu9_9", "--out", tmp_path, image], capsys)
    assert "unknown layer 'relu9_9'" in err and "relu5_3" in err
    err = _error(["predict", "vgg16", "--random-weights", "--indices", "a,b", image], capsys)
    assert "--indices must be comma-separated integers" in err
    err = _error(["fool", "--random-weights", "--images", image, "--target", "unicornx", "--out", tmp_path], capsys)
    assert "unknown ImageNet class 'unicornx'" in err
    err = _error(["saliency", "--model", "mnist-small", "--random-weights", "--images", image, "--method", "gradcam",
                  "--layer", "fire9", "--out", tmp_path], capsys)
    assert "has no layer 'fire9'" in err and "relu2" in err
    err = _error(["classvis", "--objective", "channel", "--layer", "fire6", "--out", tmp_path], capsys)
    assert "--channel is required" in err
    err = _error(["saliency", "--model", "resnet", "--out", tmp_path], capsys)
    assert "unknown model 'resnet'" in err and "digits-small" in err


def test_saliency_defaults_name_the_way_out(tmp_path, capsys, monkeypatch, no_model_load):
    """Issue 22 item 3: no doubled imagenet_val_25/imagenet_val_25/, and the message names --images and a
    model that needs no download."""
    monkeypatch.setenv("RDFIA_JAX_DATA", str(tmp_path / "data"))
    err = _error(["saliency", "--out", tmp_path / "o"], capsys)
    assert "imagenet_val_25/imagenet_val_25/" not in err
    assert str(tmp_path / "data" / "imagenet_val_25" / "imagenet_val_25.npz") in err
    assert str(tmp_path / "data" / "imagenet_val_25.npz") in err
    assert "--images" in err and "--model digits-small" in err and "--data-dir" in err
    err = _error(["visualize", "--out", tmp_path / "o"], capsys)
    assert "imagenet_val_25/imagenet_val_25/" not in err and "mnist-proof --proof-dataset digits" in err
    assert not (tmp_path / "o").exists()


def test_missing_weights_names_the_options(tmp_path, capsys, monkeypatch):
    from rdfia_jax import data

    monkeypatch.setenv("RDFIA_JAX_WEIGHTS", str(tmp_path / "no-weights"))
    npz = tmp_path / "imagenet_val_25" / "imagenet_val_25.npz"
    npz.parent.mkdir()
    np.savez(npz, X=np.zeros((25, 32, 32, 3), np.uint8), y=np.arange(25, dtype=np.int64))
    err = _error(["saliency", "--data-dir", tmp_path, "--out", tmp_path / "o"], capsys)
    assert "weights fetch squeezenet1_1" in err and "--random-weights" in err and "--model digits-small" in err
    err = _error(["visualize", "fooling", "--data-dir", tmp_path, "--out", tmp_path / "o"], capsys)
    assert "weights fetch squeezenet1_1" in err and "--random-weights" in err
    assert data.load_imagenet_val25(npz)[0].shape == (25, 32, 32, 3)


def test_type_functions():
    assert common.positive_int("3") == 3
    assert common.seed_int("0") == 0
    assert common.finite_float(positive=True, at_most=1.0)("1") == 1.0
    for parse, text in ((common.positive_int, "0"), (common.positive_int, "x"), (common.non_negative_int, "-1"),
                        (common.seed_int, str(2**32)), (common.positive_float, "-inf"),
                        (common.non_negative_float, "nan"), (common.positive_float, "abc")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_check_writable_dir_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert fileio.check_writable_dir(target) == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(RdfiaError, match="--cache-dir .*is an existing file"):
        fileio.check_writable_dir(tmp_path / "f", "--cache-dir")


def test_target_counts_and_missing_labels_are_refused_before_any_model_load(tmp_path, image, capsys,
                                                                            no_model_load):
    err = _error(["saliency", "--random-weights", "--images", image, "--out", tmp_path], capsys)
    assert "--target is required: the images have no labels" in err
    err = _error(["fool", "--random-weights", "--images", image, image, image, "--target", "vase", "quail",
                  "--out", tmp_path], capsys)
    assert "--target: give one class or one per image (3); got 2" in err
    err = _error(["classvis", "--random-weights", "--images", image, "--objective", "channel", "--layer", "fire6",
                  "--channel", "1", "2", "--out", tmp_path], capsys)
    assert "--channel: give one channel or one per image (1); got 2" in err
