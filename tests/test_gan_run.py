"""GAN runs end to end and the command line's failure paths: argument checks before any work, a
finished run rerun, resume limits, learning-rate changes on resume, the divergence advice, figures."""

import inspect
import json
import os
import time

import numpy as np
import pytest

from rdfia_jax import cli
from rdfia_jax.errors import RdfiaError
from rdfia_jax.gan import config, figures, run, steps
from rdfia_jax.train import checkpoint, loop

# a tiny DCGAN: the run tests are about the pipeline, not the networks
TINY = steps.GanConfig(nz=8, ngf=4, ndf=4, batch_size=256, epochs=1, seed=1)


def _opts(out, **kw):
    return config.RunOptions(**{"out": out, "dataset": "digits", "score": False, "sample_every": 0,
                                "progress": False, "save_every": 5, **kw})


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a refused command gets as far as loading data or building networks."""
    def forbidden(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(run, "load_training_data", forbidden)
    monkeypatch.setattr(steps, "build", forbidden)


BAD_ARGS = [
    (["--score-samples", "0"], "--score-samples 0: must be an integer >= 1"),
    (["--samples", "4", "--samples-out", "x.txt"], "--samples-out x.txt: must end in .npz"),
    (["--samples", "4"], "--samples needs --samples-out"),
    (["--samples", "-1"], "--samples -1: must be an integer >= 0"),
    (["--lr-d", "inf"], "--lr-d inf: must be a finite number > 0"),
    (["--lr-g", "nan"], "--lr-g nan: must be a finite number > 0"),
    (["--lr-g", "0"], "--lr-g 0.0: must be a finite number > 0"),
    (["--seed", "-1"], "--seed -1: must be an integer >= 0"),
    (["--seed", str(2**63)], "--seed 9223372036854775808: must be at most"),
    (["--epochs", "0"], "--epochs 0: must be a positive integer"),
    (["--batch-size", "0"], "--batch-size 0: must be a positive integer"),
    (["--batch-size=-4"], "--batch-size -4: must be a positive integer"),
    (["--nz", "0"], "--nz 0: must be a positive integer"),
    (["--ngf", "0"], "--ngf 0: must be a positive integer"),
    (["--ndf", "-2"], "--ndf -2: must be a positive integer"),
    (["--save-every", "0"], "--save-every 0: must be a positive integer"),
    (["--sample-every", "-1"], "--sample-every -1: must be an integer >= 0"),
    (["--allow-lr-change"], "--allow-lr-change continues a checkpoint with other learning rates: it needs --resume"),
    (["--sweep", "nope"], "unknown sweep 'nope'"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_argument_refused_fast_before_any_work(args, message, tmp_path, capsys, no_work):
    cli.build_parser()  # the subcommand modules imported (as a process does before parsing)
    t0 = time.perf_counter()
    status = cli.main(["gan", "--out", str(tmp_path / "out"), *args])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err, err
    assert elapsed < 1.0, f"refused after {elapsed:.2f} s"
    assert not (tmp_path / "out").exists()


def test_cgan_arguments_are_checked_too(tmp_path, capsys, no_work):
    assert cli.main(["cgan", "--out", str(tmp_path / "o"), "--lr-d=-1e-4"]) == 2
    assert "--lr-d -0.0001: must be a finite number > 0" in capsys.readouterr().err


def test_unwritable_outputs_refused_before_any_work(tmp_path, capsys, no_work):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["--out", str(a_file)], f"--out {a_file}: is an existing file, not a folder"),
        (["--out", str(a_file / "sub")], f"cannot be created, {a_file} is a file"),
        (["--out", str(tmp_path / "o"), "--samples", "3", "--samples-out", str(a_file / "s.npz")],
         "--samples-out"),
    ]
    if os.path.isdir("/proc/self"):  # not writable even for root (permission bits are not checked)
        cases.append((["--out", "/proc/self/rdfia-out"], "--out /proc/self/rdfia-out: not writable"))
    for args, message in cases:
        assert cli.main(["gan", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_refused(tmp_path, capsys, no_work):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert cli.main(["gan", "--out", str(ro / "run")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_help_texts_name_the_real_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "gan train a DCGAN on MNIST" not in top and "gan train a DCGAN (embedded digits by default, or MNIST)" in top
    import scripts.section4_gan as script  # noqa: F401 (the module's docstring is its --help)

    assert "../shared" not in script.__doc__ and "$RDFIA_JAX_DATA" in script.__doc__


def test_smoke_run_reruns_as_complete_and_says_it_is_a_pipeline_check(tmp_path, capsys):
    out = tmp_path / "quick"
    first = run.train(TINY, _opts(out, smoke=True))
    assert first["status"] == "ok" and first["steps"] == first["total_steps"] == 8
    note = first["note"]
    assert "pipeline check" in note and "look like noise" in note
    assert f"rdfia-jax gan --dataset digits --epochs {run.REAL_RESULT_EPOCHS['gan']}" in note
    assert json.loads((out / "summary.json").read_text())["note"] == note
    capsys.readouterr()
    stamp = (out / "summary.json").stat().st_mtime_ns
    again = run.train(TINY, _opts(out, smoke=True))  # the same command, pasted a second time
    printed = capsys.readouterr().out
    assert f"already complete (step 8 of 8)" in printed and "samples_final.png" in printed
    assert again["already_complete"] and again["steps"] == 8 and again["note"] == note
    assert (out / "summary.json").stat().st_mtime_ns == stamp  # nothing retrained or rewritten
    # other settings: refused, naming the setting that differs
    with pytest.raises(RdfiaError, match=r"another configuration.*nz"):
        run.train(TINY.replace(nz=9), _opts(out, smoke=True))


def test_cli_smoke_rerun_exits_0_and_prints_the_note(tmp_path, capsys, monkeypatch):
    out = tmp_path / "q"
    # what `rdfia-jax gan --smoke` prints, without training: a stored complete run
    monkeypatch.setattr(run, "train", lambda cfg, opts: {
        "name": "gan", "status": "ok", "steps": 8, "total_steps": 8, "smoke": True, "is_real_mnist": False,
        "data_description": "digits", "already_complete": True})
    assert cli.main(["gan", "--smoke", "--dataset", "digits", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: this was a smoke run: a pipeline check" in printed
    assert "rdfia-jax gan --dataset digits --epochs" in printed


def test_unfinished_run_needs_resume_and_a_shorter_resume_is_refused_before_writing(tmp_path):
    out = tmp_path / "r"
    run.train(TINY, _opts(out))  # 1 epoch = 5 steps
    with pytest.raises(RdfiaError, match=r"holds a finished run of 5 steps; add --resume to continue it to step 10"):
        run.train(TINY.replace(epochs=2), _opts(out))
    two = run.train(TINY.replace(epochs=2), _opts(out, resume=True))
    assert two["steps"] == 10 and two["resumed_from"] == 5 and two["config"]["epochs"] == 2
    before = (out / "summary.json").read_bytes()
    with pytest.raises(RdfiaError, match=r"--epochs 2"):
        run.train(TINY, _opts(out, resume=True))  # --resume --epochs 1 after 2 epochs
    assert (out / "summary.json").read_bytes() == before  # summary.json not rewritten with epochs 1


@pytest.mark.skipif("may_change" not in inspect.signature(checkpoint.CheckpointStore).parameters,
                    reason="needs CheckpointStore(may_change=...) (train helper's branch)")
def test_resume_with_lower_learning_rates_is_allowed_explicitly_and_recorded(tmp_path):
    out = tmp_path / "lr"
    run.train(TINY, _opts(out))
    lower = TINY.replace(epochs=2, lr_d=TINY.lr_d / 10, lr_g=TINY.lr_g / 10)
    with pytest.raises(RdfiaError, match=r"gan\.lr_d"):
        run.train(lower, _opts(out, resume=True))  # without --allow-lr-change: another configuration
    summary = run.train(lower, _opts(out, resume=True, allow_lr_change=True))
    assert summary["steps"] == 10 and summary["config"]["lr_d"] == lower.lr_d
    changes = {c["key"]: c for c in summary["changes"]}
    assert set(changes) == {"gan.lr_d", "gan.lr_g"}
    assert changes["gan.lr_d"]["step"] == 5 and changes["gan.lr_d"]["old"] == TINY.lr_d
    assert changes["gan.lr_d"]["new"] == lower.lr_d


def test_divergence_advice_is_true_for_the_run():
    cfg = steps.GanConfig(lr_d=2e-2, lr_g=5e-2)
    with_ckpt = run._divergence_advice(cfg, "training diverged at step 7: loss_d=nan", True)
    assert "--resume --allow-lr-change --lr-d 0.002 --lr-g 0.005" in with_ckpt
    without = run._divergence_advice(cfg, "training diverged at step 7: loss_d=nan", False)
    assert without.startswith("no checkpoint was written; rerun with lower learning rates")
    assert "--resume" not in without and "--lr-d 0.002 --lr-g 0.005" in without
    # the loop's own message may already say it: not twice
    said = run._divergence_advice(cfg, "loss_d=nan; no checkpoint was written", False)
    assert "no checkpoint was written" not in said


def test_figures_change_no_matplotlib_process_state(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    images = np.linspace(-1, 1, 4 * 32 * 32, dtype=np.float32).reshape(4, 32, 32, 1)
    figures.sample_grid(images, tmp_path / "g.png", ncols=2, title="t")
    figures.loss_curves({"loss_d": np.ones(30), "loss_g": np.zeros(30)}, tmp_path / "l.png")
    assert matplotlib.get_backend() == backend
    import sys

    if "matplotlib.pyplot" in sys.modules:  # pyplot's figure list untouched
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "matplotlib.use" not in open(figures.__file__).read()


def test_divergence_message_gives_the_advice_that_works_for_this_run(tmp_path):
    # Adam's first step puts G's weights near 1e30 (finite, so step 1 is saved): NaN at step 1
    exploding = TINY.replace(lr_g=1e30)
    with pytest.raises(loop.TrainingDiverged) as caught:
        run.train(exploding, _opts(tmp_path / "no_ckpt", save_every=5))
    message = str(caught.value)
    assert "no checkpoint was written" in message and "rerun with lower learning rates" in message
    assert "diverged at step 1" in message and message.count("no checkpoint was written") == 1
    assert "--resume" not in message and "--lr-d 2e-05 --lr-g 1e+29" in message
    assert cli_error_free(message)
    with pytest.raises(loop.TrainingDiverged) as caught:
        run.train(exploding, _opts(tmp_path / "ckpt", save_every=1))
    message = str(caught.value)
    assert "diverged at step 1" in message and "--resume --allow-lr-change --lr-d 2e-05 --lr-g 1e+29" in message
    summary = json.loads((tmp_path / "ckpt" / "summary.json").read_text())
    assert summary["status"] == "diverged"


def cli_error_free(message: str) -> bool:
    """One line for the CLI to print, without the old advice that could not work."""
    return "\n" not in message and "or lower the learning rates" not in message
