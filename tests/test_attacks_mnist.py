"""The attacks on the real small MNIST classifier, and the ``attack`` command (needs the cached classifier)."""

import json

import numpy as np
import pytest

from rdfia_jax.cli import main


@pytest.fixture(scope="module")
def classifier(shared_data):
    from rdfia_jax.classifier import get_classifier
    from rdfia_jax.errors import RdfiaError

    try:
        return get_classifier("mnist", seed=0, data_dir=shared_data, train_if_missing=False)
    except RdfiaError as err:
        pytest.skip(f"small MNIST classifier not trained yet ({err}); skipped")


@pytest.mark.slow
def test_pgd_and_adef_fool_the_mnist_classifier(classifier, shared_data):
    from rdfia_jax.attacks import adef, evaluate, pgd
    from rdfia_jax.data import load

    test = load("mnist", "test", data_dir=shared_data)
    x_all = np.asarray(test.images[:64], np.float32) / np.float32(255.0)
    idx = evaluate.correctly_classified(classifier.apply, classifier.params, x_all, test.labels[:64], 32)
    x, y = x_all[idx], np.asarray(test.labels)[idx]
    res = pgd(classifier.apply, classifier.params, x, y, eps=0.3, steps=40)
    assert float(np.mean(res.success)) >= 0.95
    assert float(np.max(res.linf)) <= 0.3 + 1e-6
    res = adef(classifier.apply, classifier.params, x, y, max_iter=30, candidates=3)
    assert float(np.mean(res.success)) >= 0.95
    assert np.all(np.asarray(res.adversarial) >= 0.0) and np.all(np.asarray(res.adversarial) <= 1.0)


@pytest.mark.slow
def test_attack_command_writes_figures_table_and_curve(classifier, shared_data, tmp_path, capsys):
    out = tmp_path / "pgd"
    status = main(["attack", "pgd", "--data-dir", str(shared_data), "--n-images", "16", "--steps", "10",
                   "--out", str(out), "--curve", "--curve-eps", "0.3", "--n-examples", "2"])
    assert status == 0
    for name in ("examples.png", "table.md", "results.json", "robust_accuracy.png", "curve.json"):
        assert (out / name).is_file(), name
    row = json.loads((out / "results.json").read_text())["row"]
    assert row["images"] == 16 and 0.0 <= row["success_rate"] <= 1.0
    assert "success_rate" in capsys.readouterr().out
    out = tmp_path / "adef"
    status = main(["attack", "adef", "--data-dir", str(shared_data), "--n-images", "4", "--steps", "20", "--targeted", "--target", "3",
                   "--out", str(out), "--n-examples", "2"])
    assert status == 0
    assert (out / "examples.png").is_file()


def test_attack_command_rejects_bad_options(capsys):
    assert main(["attack", "pgd", "--eps", "0"]) == 2
    assert "--eps" in capsys.readouterr().err
    assert main(["attack", "fgsm", "--norm", "l3"]) == 2
    assert "unknown norm" in capsys.readouterr().err
    assert main(["attack", "adef", "--target", "3"]) == 2
    assert "--targeted" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["pgd", "--n-images", "0"], "--n-images must be >= 1"),
    (["pgd", "--n-examples", "-2"], "--n-examples must be >= 1"),
    (["pgd", "--steps", "0"], "--steps must be >= 1"),
    (["fgsm", "--batch-size", "-4"], "--batch-size must be >= 1"),
    (["adef", "--candidates", "0"], "--candidates must be >= 1"),
    (["pgd", "--seed", "-1"], "--seed must be >= 0"),
    (["pgd", "--eps", "inf"], "--eps"),
    (["pgd", "--eps", "nan"], "--eps"),
    (["pgd", "--step-size", "inf"], "--step-size must be a finite number > 0"),
    (["pgd", "--step-size", "0"], "--step-size must be a finite number > 0"),
    (["adef", "--sigma", "nan"], "--sigma must be a finite number >= 0"),
    (["adef", "--overshoot", "0.5"], "--overshoot must be a finite number >= 1"),
    (["pgd", "--curve", "--curve-eps", "0.1,inf"], "--curve-eps must be positive finite"),
    (["pgd", "--curve", "--curve-eps", "a,b"], "--curve-eps must be comma-separated numbers"),
    (["pgd", "--curve-eps", "0.1"], "--curve-eps given without --curve"),
    (["pgd", "--images", "x.png"], "apply to ImageNet models"),
    (["pgd", "--model", "vgg16", "--images", "/nonexistent/x.png"], "no such file or folder"),
    (["pgd", "--model", "vgg16", "--weights", "/nonexistent/w.safetensors"], "--weights"),
])
def test_attack_command_validates_every_option_before_work(argv, needle, capsys, monkeypatch, tmp_path):
    from rdfia_jax.commands import attack

    def no_work(args):
        raise AssertionError("the model or the data was loaded before the options were checked")

    monkeypatch.setattr(attack, "_load_setup", no_work)
    assert main(["attack", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_attack_command_refuses_an_unwritable_out_before_work(capsys, monkeypatch, tmp_path):
    from rdfia_jax.commands import attack

    monkeypatch.setattr(attack, "_load_setup", lambda args: (_ for _ in ()).throw(AssertionError("work started")))
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["attack", "fgsm", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out {out}" in err and "Traceback" not in err
