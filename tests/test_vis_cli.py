"""The saliency / fool / classvis commands end to end on the small digit model (random weights, tiny npz)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rdfia_jax import cli


@pytest.fixture()
def digits_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = np.zeros((3, 28, 28), np.uint8)
    x[:, 6:22, 12:16] = 255  # a crude "1"
    x = np.clip(x.astype(int) + rng.integers(0, 30, x.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "digits.npz"
    np.savez(path, X=x, y=np.array([1, 1, 1], np.int64))
    return path


def _run(argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.mark.slow
def test_commands_write_outputs(tmp_path, digits_npz, capsys):
    common = ["--model", "mnist-small", "--random-weights", "--images", digits_npz]
    assert _run(["saliency", *common, "--method", "gradcam", "--sanity-check",
                 "--out", tmp_path / "s"]) == 0
    summary = json.loads((tmp_path / "s" / "saliency.json").read_text())
    assert "randomization_mean_spearman" in summary["methods"]["gradcam"]
    assert (tmp_path / "s" / "saliency.png").stat().st_size > 0
    assert _run(["fool", *common, "--target", "7", "--max-iters", "20", "--out", tmp_path / "f"]) == 0
    rows = json.loads((tmp_path / "f" / "fooling.json").read_text())["results"]
    assert len(rows) == 3 and all(r["target"] == "7" for r in rows)
    assert _run(["classvis", "--model", "mnist-small", "--random-weights", "--target", "3", "five",
                 "--iters", "4", "--jitter", "1", "--snapshot-every", "2", "--out", tmp_path / "c"]) == 0
    cv = np.load(tmp_path / "c" / "classvis.npz")
    assert cv["snapshots"].shape == (2, 2, 28, 28, 1)
    assert "RANDOM" in capsys.readouterr().out


def test_command_errors(tmp_path, digits_npz, capsys):
    common = ["--model", "mnist-small", "--random-weights", "--images", digits_npz, "--out", tmp_path]
    assert _run(["fool", *common, "--target", "eleven"]) == 2
    assert "unknown class 'eleven'" in capsys.readouterr().err
    assert _run(["saliency", *common, "--indices", "7"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert _run(["classvis", "--model", "mnist-small", "--random-weights", "--objective", "channel",
                 "--layer", "conv9", "--channel", "0", "--iters", "2", "--out", tmp_path]) == 2
    assert "no layer 'conv9'" in capsys.readouterr().err
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, X=np.zeros((1, 28, 28, 3), np.uint8))
    assert _run(["saliency", "--model", "mnist-small", "--random-weights", "--images", rgb, "--target", "1",
                 "--out", tmp_path]) == 2
    assert "28x28 grayscale" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    parser = cli.build_parser()
    for command in ("saliency", "fool", "classvis", "visualize"):
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            assert action.help, f"{command} {action.option_strings} has no help"


def test_digits_small_runs_on_the_embedded_test_set(tmp_path, capsys):
    """No download needed: the default inputs of digits-small are the embedded digits' test images."""
    assert _run(["saliency", "--model", "digits-small", "--random-weights", "--indices", "0,3",
                 "--out", tmp_path]) == 0
    summary = json.loads((tmp_path / "saliency.json").read_text())
    assert summary["images"] == ["digits test[0]", "digits test[3]"]
    err = capsys.readouterr().err
    assert "NOTE: RANDOM WEIGHTS" in err and "Drop --random-weights" in err
