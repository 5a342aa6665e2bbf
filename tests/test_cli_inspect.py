"""`rdfia-jax summary | predict | activations` end to end (random weights; no download)."""

import json

import numpy as np
from PIL import Image

from rdfia_jax.cli import main


def test_summary_prints_totals(capsys):
    assert main(["summary", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "138,357,544" in out and "fc6" in out and "(1, 7, 7, 512)" in out
    assert main(["summary", "alexnet"]) == 0
    assert "61,100,840" in capsys.readouterr().out


def test_unknown_model_is_one_clear_error(capsys):
    assert main(["summary", "resnet"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet'" in err and "Traceback" not in err


def test_predict_without_weights_says_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RDFIA_JAX_WEIGHTS", str(tmp_path / "empty"))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    assert main(["predict", "squeezenet1_1", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "weights fetch squeezenet1_1" in err and "--random-weights" in err


def test_predict_random_weights_top5(tmp_path, capsys):
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (50, 60, 3), np.uint8)).save(tmp_path / f"{i}.png")
    assert main(["predict", "squeezenet1_1", "--random-weights", str(tmp_path), "--json", "--batch-size", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["weights"].startswith("RANDOM")
    assert len(res["predictions"]) == 3
    for p in res["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_activations_writes_png_and_rejects_unknown_layer(tmp_path, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(tmp_path / "im.png")
    out = tmp_path / "out"
    assert main(["activations", "squeezenet1_1", "--random-weights", "--layer", "relu1", "--max-maps", "8",
                 "--out", str(out), str(tmp_path / "im.png")]) == 0
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1 and Image.open(pngs[0]).size[0] > 100
    assert main(["activations", "squeezenet1_1", "--random-weights", "--layer", "relu7",
                 "--out", str(out), str(tmp_path / "im.png")]) == 2
    assert "unknown layer 'relu7'" in capsys.readouterr().err


def test_unreadable_image_is_named(tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    assert main(["predict", "squeezenet1_1", "--random-weights", str(tmp_path / "bad.jpg")]) == 2
    assert "bad.jpg" in capsys.readouterr().err


def test_summary_attaches_every_parameter_to_a_named_layer():
    """Invariant: the shipped models' parameters all sit under a named activation (no shapeless extra rows),
    so the per-layer table adds up to the total."""
    from rdfia_jax.inspect import summary
    from rdfia_jax.models import MODEL_NAMES

    for name in MODEL_NAMES:
        rows, total = summary(name)
        assert all(r.output_shape for r in rows), name
        assert total == sum(r.params for r in rows) > 0


def test_summary_too_small_input_is_one_clear_error(capsys):
    assert main(["summary", "alexnet", "--input-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "alexnet" in err and "Traceback" not in err


def test_predict_padded_batches_agree(tmp_path):
    """predict maps through data.batching.map_batches: a padded last batch gives the same numbers."""
    from rdfia_jax.inspect import predict
    from rdfia_jax.weights import load_network

    network = load_network("squeezenet1_1", random_weights=True)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), np.uint8)
    sources = ["a", "b", "c"]
    whole = predict(network, images, sources, k=3, batch_size=16)  # one batch of 3, not padded to 16
    padded = predict(network, images, sources, k=3, batch_size=2)  # batches of 2, the last one padded
    assert [p.source for p in padded] == sources
    for a, b in zip(whole, padded):
        assert [c for c, _, _ in a.top] == [c for c, _, _ in b.top]
        np.testing.assert_allclose([p for _, _, p in a.top], [p for _, _, p in b.top], rtol=1e-5)
