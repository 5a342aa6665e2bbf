"""`rdfia-jax reproduce` sections 1 and 2 on their pretrained-weights branch, and the converse without files.

No real ImageNet weights exist on the test machines, so the converted files are made the honest way: seeded
random tensors written as published torchvision ``.pth`` files (tests/weight_files.py), then turned into
converted files by the library's own converter (``convert_file``) in a temporary ``RDFIA_JAX_WEIGHTS``.
SqueezeNet 1.1 is full size (1.2 M parameters). VGG16 is converted at width 1/16: at full size (138 M
parameters, 528 MB) writing, converting and loading it cost tens of seconds on 2 cores, too slow for the
suite; the file format, the converter and ``load_network``'s pretrained branch are the same (the converted
file's model_config carries the width). imagenet_val_25 is a fake npz in the real file's layout (X uint8
(N, 224, 224, 3), y int64, a pickled ``label_map``) with 6 images and the real file's first 6 labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rdfia_jax.reproduce import budget as budgets
from rdfia_jax.reproduce import report, runner
from rdfia_jax.reproduce.references import BY_KEY, format_value

pytest.importorskip("safetensors")

# The real imagenet_val_25.npz's first labels: image 1 is the quail the report fools into a stingray.
VAL25_LABELS = [958, 85, 244, 182, 294, 804]
BUDGET = "pretrained-smoke"
STINGRAY = 6  # ImageNet class index


def _budget() -> budgets.Budget:
    """Section 1's predictions on imagenet_val_25 and section 2's ImageNet part, at smoke sizes."""
    return budgets.Budget(
        BUDGET, "internal test budget: the pretrained-weights branch of sections 1-2 at smoke sizes",
        budgets.S1Budget(photos="val25", predict=True, transfer=False),
        budgets.S2Budget(n_images=16, fool_images=2, classvis_iters=4, classvis_seeds=1, imagenet=True,
                         imagenet_iters=4),
        budgets.BUDGETS["smoke"].s3, budgets.BUDGETS["smoke"].s4, internal=True)


def write_fake_val25(data_dir: Path, n: int = 6) -> Path:
    """imagenet_val_25.npz in the real file's layout (keys X, y, label_map), smooth random images."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.uint8)
    x = np.repeat(np.repeat(coarse, 28, axis=1), 28, axis=2)  # (n, 224, 224, 3) uint8
    folder = data_dir / "imagenet_val_25"
    folder.mkdir(parents=True)
    path = folder / "imagenet_val_25.npz"
    label_map = {i: f"class {i}" for i in range(1000)}  # the loader never unpickles it
    np.savez(path, X=x, label_map=np.array(label_map, dtype=object), y=np.asarray(VAL25_LABELS[:n], np.int64))
    return path


def write_converted_weights(folder: Path) -> dict[str, Path]:
    """Published-layout torchvision .pth files (seeded random values) converted by ``convert_file``."""
    from weight_files import random_source_tensors, write_source_file

    from rdfia_jax.weights import convert_file

    out = {}
    for model, width, seed in (("squeezenet1_1", 1.0, 1), ("vgg16", 1.0 / 16, 2)):
        tensors = random_source_tensors(model, "torchvision", width=width, seed=seed)
        if model == "squeezenet1_1":
            # These random weights cannot fool the quail into a stingray within 100 steps (measured: a
            # stingray logit 0.94 below the top one is not reached); raising the stingray bias makes the
            # quail a stingray from the start, so the fooling row gets a value (0 iterations) at no cost.
            tensors["classifier.1.bias"][STINGRAY] += 10.0
        pth = write_source_file(folder / f"published-{model}.pth", "torchvision", tensors, layout="zip")
        out[model] = convert_file(model, pth)  # default destination: paths.weights_dir()
        pth.unlink()
    return out


def _small_stub(b, ctx, res, out):
    """Stands in for section 2's small-classifier part (its real run is tests/test_reproduce.py's smoke test)."""
    res.notes.append("small-classifier part not run in this test")


def _run(root: Path, weights: Path, mp: pytest.MonkeyPatch) -> dict:
    from rdfia_jax.reproduce.sections import s2

    mp.setenv("RDFIA_JAX_WEIGHTS", str(weights))
    mp.setenv("RDFIA_JAX_CACHE", str(root / "cache"))
    mp.setenv("RDFIA_JAX_DATA", str(root / "data"))
    mp.setitem(budgets.BUDGETS, BUDGET, _budget())
    mp.setattr(s2, "_small", _small_stub)
    return runner.reproduce(BUDGET, (1, 2), out=root / f"out-{weights.name}", data_dir=root / "data",
                            log=lambda _line: None)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """Sections 1 and 2 through the runner with converted VGG16 and SqueezeNet 1.1 files present."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("pretrained")
    write_fake_val25(root / "data")
    weights = root / "weights"
    weights.mkdir()
    try:
        mp.setenv("RDFIA_JAX_WEIGHTS", str(weights))
        files = write_converted_weights(weights)
        res = _run(root, weights, mp)
        res["files"] = files
        yield res
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """The same run with no converted files: the random-weights branch.

    The library's random VGG16 is full size (138 M parameters drawn on the host, tens of seconds here), so
    only for this test ``load_network(..., random_weights=True)`` builds VGG16 at width 1/16; SqueezeNet is
    the library's own random network. The sections' branch logic is what is under test.
    """
    from rdfia_jax import models, weights as W
    from rdfia_jax.preprocess import TORCHVISION

    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("random")
    write_fake_val25(root / "data")
    real = W.load_network

    def load(name, weights=None, *, random_weights=False, seed=0):
        if random_weights and models.canonical_name(name) == "vgg16":
            return models.Network.from_module("vgg16", models.create("vgg16", seed=seed, width=1.0 / 16),
                                              TORCHVISION, f"RANDOM weights, seed {seed} (outputs are meaningless)")
        return real(name, weights, random_weights=random_weights, seed=seed)

    mp.setattr(W, "load_network", load)
    try:
        yield _run(root, root / "no-weights", mp)
    finally:
        mp.undo()


def _row(md: str, label: str) -> list[str]:
    lines = [ln for ln in md.splitlines() if ln.startswith(f"| {label} |")]
    assert len(lines) == 1, label
    return [c.strip() for c in lines[0].strip("|").split(" | ")]


def _ok(res: dict) -> tuple[dict, str]:
    recs = res["records"]
    assert {s: recs[s]["status"] for s in (1, 2)} == {1: "ok", 2: "ok"}, \
        {s: (recs[s].get("error"), recs[s].get("traceback")) for s in (1, 2)}
    return recs, Path(res["report"]).read_text()


def _tagged(result: dict, marker: str) -> list[str]:
    """Captions of the figures and notes of a section result that mention ``marker``."""
    return [f["caption"] for f in result["figures"] if marker in f["caption"]] + \
        [n for n in result["notes"] if marker in n]


@pytest.mark.slow
def test_section2_imagenet_part_runs_on_converted_squeezenet(pretrained_run):
    recs, md = _ok(pretrained_run)
    r2 = recs[2]["result"]
    sq = pretrained_run["files"]["squeezenet1_1"]
    assert sq.name == "squeezenet1_1.safetensors" and sq.parent.name == "weights"
    # the weights are described by the converted file and its published source, never as random
    assert any("published-squeezenet1_1.pth" in n and str(sq) in n for n in r2["notes"]), r2["notes"]
    assert not _tagged(r2, "RANDOM") and "RANDOM" not in md.split("## 2 ")[1].split("## 3 ")[0]
    imagenet_figs = {f["report"]: f for f in r2["figures"]}
    assert set(imagenet_figs) == {"Figure 12", "Figure 18", "Figure 21"}
    for f in imagenet_figs.values():
        assert "torchvision published-squeezenet1_1.pth" in f["caption"], f
        assert (Path(pretrained_run["report"]).parent / "section2" / f["path"]).stat().st_size > 1000
    # the fooling row: a measured value, its status computed from it (<= 100 iterations) and not a weights status
    m = r2["measured"]["s2.fool_iters"]
    assert m["random_weights"] is False
    ref = BY_KEY["s2.fool_iters"]
    cells = _row(md, ref.label)
    status = report.row_status(ref, m)
    assert cells[6] == status and status not in (report.RANDOM, report.NEEDS_WEIGHTS)
    assert m["value"] == 0 and m["note"] == "fooled" and m["failed"] is None, m  # stingray from the start
    assert status == "reproduced (<= 100)" and cells[4].startswith(format_value(m["value"], "int"))
    gorilla = [x for x in r2["extra"] if x["label"].startswith("class visualization gorilla")]
    assert len(gorilla) == 1 and 0.0 <= gorilla[0]["value"] <= 1.0 and "RANDOM" not in gorilla[0]["note"]


@pytest.mark.slow
def test_section1_predictions_run_on_converted_vgg16(pretrained_run):
    recs, md = _ok(pretrained_run)
    r1 = recs[1]["result"]
    vgg = pretrained_run["files"]["vgg16"]
    assert not _tagged(r1, "RANDOM") and "RANDOM" not in md.split("## 1 ")[1].split("## 2 ")[0]
    desc = "torchvision published-vgg16.pth"
    assert {f["report"] for f in r1["figures"]} == {"Figure 1", "Figures 2-5", "Figures 6-8", "Figures 9-10"}
    for f in r1["figures"][1:]:
        assert desc in f["caption"] and str(vgg) in f["caption"], f
    # the photos are imagenet_val_25's (the quick budget's), named by their true class
    assert any("imagenet_val_25[1] (quail)" in n for n in r1["notes"]), r1["notes"]
    m = r1["measured"]["s1.photo_top1"]
    assert m["random_weights"] is False and 0.0 < m["value"] <= 1.0
    ref = BY_KEY["s1.photo_top1"]
    cells = _row(md, ref.label)
    assert cells[6] == report.row_status(ref, m) == report.NO_REFERENCE  # measured; the authors' photo is absent
    assert cells[4].startswith(format_value(m["value"], "pct"))
    tops = [x for x in r1["extra"] if x["label"].startswith("top-1 on imagenet_val_25")]
    assert len(tops) == 5 and all(x["note"].startswith(desc) for x in tops)
    assert re.fullmatch(r".+ \d+\.\d\d %", tops[0]["value"])


@pytest.mark.slow
def test_without_converted_files_the_rows_say_random_weights(random_run):
    recs, md = _ok(random_run)
    r1, r2 = recs[1]["result"], recs[2]["result"]
    assert any(n.startswith("RANDOM WEIGHTS") and "rdfia-jax weights fetch vgg16" in n for n in r1["notes"])
    assert any(n.startswith("ImageNet figures: SqueezeNet 1.1, RANDOM WEIGHTS (meaningless) (no converted weights "
                            "for squeezenet1_1") for n in r2["notes"]), r2["notes"]
    for f in r1["figures"][1:] + r2["figures"]:
        assert "RANDOM WEIGHTS (meaningless)" in f["caption"], f
    assert r1["measured"]["s1.photo_top1"]["random_weights"] is True
    assert _row(md, BY_KEY["s1.photo_top1"].label)[6] == report.RANDOM
    fool = r2["measured"]["s2.fool_iters"]
    assert fool["random_weights"] is True
    assert _row(md, BY_KEY["s2.fool_iters"].label)[6] == report.RANDOM  # fooled or not: meaningless
    for key in ("s1.relu7_resize", "s1.relu6"):  # not run at this budget: still pretrained-only rows
        assert _row(md, BY_KEY[key].label)[6] == report.NEEDS_WEIGHTS


def test_not_fooled_on_real_weights_differs_rather_than_asking_for_weights():
    """A converted network that is not fooled within 100 iterations is a measured failure, not a missing file."""
    from rdfia_jax.reproduce.sections.common import SectionResult

    ref = BY_KEY["s2.fool_iters"]
    res = SectionResult()
    res.measure("s2.fool_iters", None, note="NOT fooled within 100 iterations",
                failed="not fooled within 100 iterations")
    assert report.row_status(ref, res.measured["s2.fool_iters"]) == "differs (not fooled within 100 iterations)"
    res.measure("s2.fool_iters", None, random_weights=True, failed="not fooled within 100 iterations")
    assert report.row_status(ref, res.measured["s2.fool_iters"]) == report.RANDOM
    res.measure("s2.fool_iters", 37)
    assert report.row_status(ref, res.measured["s2.fool_iters"]) == "reproduced (<= 100)"
    assert report.row_status(ref, None) == report.NEEDS_WEIGHTS  # no file at all


def test_figure_titles_name_the_weights_file_without_its_path():
    """The full description (sha256, converted file's absolute path) overflowed the figure titles."""
    from types import SimpleNamespace

    from rdfia_jax.reproduce.sections.common import figure_label

    net = SimpleNamespace(weights_desc="torchvision vgg16-397923af.pth (sha256 397923af8e79..., torchvision "
                                       "preprocessing) from /home/u/.cache/rdfia-jax/weights/vgg16.safetensors")
    assert figure_label(net, False) == "pretrained: torchvision vgg16-397923af.pth"
    assert figure_label(net, True) == "RANDOM WEIGHTS (meaningless)"
