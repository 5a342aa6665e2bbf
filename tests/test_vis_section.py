"""Section 2 as a library experiment set (rdfia_jax.vis.section) behind `rdfia-jax visualize`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rdfia_jax.cli import main
from rdfia_jax.errors import RdfiaError
from rdfia_jax.results import read_results
from rdfia_jax.vis import section

ROOT = Path(__file__).resolve().parents[1]


def test_results_rows_are_replaced_kept_and_raw(tmp_path):
    lines = []
    res = section.Results(tmp_path, log=lines.append)
    res.add("2.1", "figure 12", "figure12.png", "squeezenet1_1")
    res.add("mnist", "success rate", np.float32(0.875), "180 pairs")
    res.add("mnist", "mean L2", float("nan"), "no success")
    res.add("mnist", "success rate", 0.5, "again")  # same (section, item): replaced in place of the old row
    rows = read_results(tmp_path)
    assert [(r["section"], r["item"]) for r in rows] == [("2.1", "figure 12"), ("mnist", "mean L2"),
                                                        ("mnist", "success rate")]
    assert rows[2]["value"] == 0.5 and rows[2]["note"] == "again"  # raw number in the JSON
    assert rows[1]["value"] == "nan"
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["columns"] == list(section.COLUMNS)
    md = (tmp_path / "results.md").read_text()
    assert "| section | item | value | note |" in md and "| mnist | success rate | 0.5 | again |" in md
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == "section,item,value,note"
    assert lines[1] == "  [mnist] success rate: 0.875 180 pairs"
    # a second run into the same folder keeps the rows it does not measure again
    again = section.Results(tmp_path, log=None)
    again.add("2.2", "figure 18", "fooled", "")
    assert len(read_results(tmp_path)) == 4


def test_val25_is_found_in_either_layout_without_a_doubled_path(tmp_path):
    with pytest.raises(RdfiaError) as err:
        section.find_val25(tmp_path, hint="or use --images")
    assert "imagenet_val_25/imagenet_val_25/" not in str(err.value) and "or use --images" in str(err.value)
    flat = tmp_path / "imagenet_val_25.npz"
    flat.write_bytes(b"")
    assert section.find_val25(tmp_path) == flat
    nested = tmp_path / "imagenet_val_25" / "imagenet_val_25.npz"
    nested.parent.mkdir()
    nested.write_bytes(b"")
    assert section.find_val25(tmp_path) == nested


def test_settings_are_checked_before_work(tmp_path):
    s = section.Settings(out=tmp_path, random_weights=True, data_dir=str(tmp_path))
    with pytest.raises(RdfiaError, match="unknown experiment"):
        section.check_settings(s, ["saliency", "nope"])
    with pytest.raises(RdfiaError, match="--models 'resnet'"):
        section.check_settings(section.Settings(out=tmp_path, models=("resnet",)), ["classvis"])
    with pytest.raises(RdfiaError, match="unknown ImageNet class 'dragonx'"):
        section.check_settings(section.Settings(out=tmp_path, random_weights=True, start_target="dragonx"),
                               ["classvis-image"])
    with pytest.raises(RdfiaError, match="imagenet_val_25.npz not found"):
        section.check_settings(s, ["fooling"])
    section.check_settings(s, ["classvis"])  # needs neither images nor (with random weights) weight files


def test_script_is_a_thin_wrapper_over_the_cli():
    text = (ROOT / "scripts" / "section2_visualization.py").read_text()
    assert 'main(["visualize", *argv])' in text and len(text.splitlines()) < 30
    assert "_load" not in text and "class Results" not in text
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "section2_visualization.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0 and "rdfia-jax visualize" in out.stdout and "mnist-proof" in out.stdout


@pytest.fixture()
def fake_val25(tmp_path):
    """imagenet_val_25.npz-shaped data (noise images with the practical's labels): the pipeline, not the numbers."""
    rng = np.random.default_rng(0)
    path = tmp_path / "data" / "imagenet_val_25" / "imagenet_val_25.npz"
    path.parent.mkdir(parents=True)
    labels = np.array([958, 85, 244, 182, 294, 804, 697, 366, 817, 999, 824, 975, 724, 92, 231, 877, 946, 264, 496,
                       812, 985, 813, 662, 883, 100], np.int64)  # the practical's file's labels
    np.savez(path, X=rng.integers(0, 256, (25, 64, 64, 3), np.uint8), y=labels)
    return tmp_path / "data"


@pytest.mark.slow
def test_visualize_imagenet_experiments_random_weights(tmp_path, fake_val25, capsys):
    out = tmp_path / "out"
    assert main(["visualize", "fooling", "classvis-image", "--random-weights", "--quick", "--data-dir",
                 str(fake_val25), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "NOTE: RANDOM WEIGHTS" in captured.err and "results:" in captured.out
    rows = read_results(out)
    items = [r["item"] for r in rows]
    assert items[:2] == ["figure 18: quail -> stingray", "figure 19: gorilla -> vase"]
    assert items[2].startswith("figures 26-28: hay -> Tibetan")
    assert all("RANDOM WEIGHTS" in r["note"] for r in rows)
    assert 0.0 <= rows[2]["value"] <= 1.0
    for name in ("figure18_fooling_quail_to_stingray.png", "figure26_classvis_from_image_first.png",
                 "figure27_classvis_from_image_final.png", "figure28_classvis_from_image.png"):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.slow
def test_visualize_proof_on_the_embedded_digits(tmp_path, monkeypatch, capsys):
    """mnist-proof end to end on 'digits' (no download); classifiers trained briefly into a temporary cache."""
    from rdfia_jax import classifier

    monkeypatch.setenv("RDFIA_JAX_CACHE", str(tmp_path / "cache"))
    fast = classifier.TrainConfig(epochs=3, batch_size=64)
    for seed in (0, 1):
        classifier.get_classifier("digits", seed=seed, config=fast, progress=False)
    out = tmp_path / "out"
    assert main(["visualize", "mnist-proof", "--proof-dataset", "digits", "--quick", "--out", str(out)]) == 0
    rows = {r["item"]: r["value"] for r in read_results(out)}
    assert rows["classifier seed 0 test accuracy"] > 0.5
    share = rows["saliency: share of map mass on digit pixels (x>0)"]
    assert 0.0 < share <= 1.0
    assert 0.0 <= rows["fooling lr=1.0 clamp=False: success rate"] <= 1.0
    assert 0.0 <= rows["class visualization: classified as target by the seed-1 net"] <= 1.0
    assert not any(isinstance(v, float) and math.isnan(v) for k, v in rows.items() if "success rate" in k)
    for name in ("mnist_saliency.png", "mnist_fooling.png", "mnist_classvis.png"):
        assert (out / name).stat().st_size > 1000
    assert "embedded digits (NOT MNIST)" in (out / "results.md").read_text()


def test_proof_measurements_shared_with_reproduce():
    maps = np.array([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    mask = np.array([[[True, False], [False, False]], [[True, True], [True, True]]])
    np.testing.assert_allclose(section.mass_share(maps, mask), [0.25, 0.0])  # an all-zero map shares nothing
    xs, targets = section.fooling_pairs(np.arange(2 * 3, dtype=np.float32).reshape(2, 3), np.array([4, 0]))
    assert xs.shape == (18, 3) and (xs[:9] == [0, 1, 2]).all() and (xs[9:] == [3, 4, 5]).all()
    assert targets.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9] + list(range(1, 10))
