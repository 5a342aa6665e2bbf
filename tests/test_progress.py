"""The progress reporter: a bar on a terminal, plain lines in a log file (pytest's stderr is not a terminal)."""

import re

import pytest

from rdfia_jax import progress
from rdfia_jax.progress import Progress, track


@pytest.fixture
def every_5_percent(monkeypatch):
    """Drop the 10-second spacing between plain lines so a fast loop shows every 5 % line."""
    monkeypatch.setattr(progress, "PLAIN_MIN_SECONDS", 0.0)


def _lines(capsys, prefix):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(prefix)]


def test_plain_lines_every_5_percent_with_rate_eta_and_metrics(capsys, every_5_percent):
    with Progress(40, "toy", unit="steps") as p:
        assert p.is_plain
        for i in range(40):
            p.set_postfix({"loss": 1.0 / (i + 1), "epoch": i // 10})
            p.update(1)
    lines = _lines(capsys, "toy: ")
    assert len(lines) == 20  # every 2 steps, none repeated by close()
    assert lines[0].startswith("toy: 2/40 steps (5 %), ")
    assert re.search(r"steps/s, eta [0-9]+ s; loss 0.5, epoch 0$", lines[0])
    assert lines[-1].startswith("toy: 40/40 steps (100 %)") and lines[-1].endswith("loss 0.025, epoch 3")


def test_uneven_updates_print_once_per_crossed_step_and_the_end(capsys, every_5_percent):
    with Progress(100, "imgs", unit="img") as p:
        for _ in range(14):
            p.update(7)  # 98 images
        p.update(2)
    counts = [int(re.match(r"imgs: (\d+)/100", ln).group(1)) for ln in _lines(capsys, "imgs: ")]
    # one line per update that crosses the next multiple of 5, never two lines for one update
    assert counts == sorted(set(counts)) and counts[-1] == 100
    assert counts[:4] == [7, 14, 21, 28]


def test_resumed_progress_counts_rate_from_new_work(capsys, every_5_percent):
    with Progress(10, "resumed", unit="steps", initial=6) as p:
        assert p.done == 6
        for _ in range(4):
            p.update(1)
    lines = _lines(capsys, "resumed: ")
    assert [ln.split(" ")[1] for ln in lines] == ["7/10", "8/10", "9/10", "10/10"]


def test_unknown_total_and_byte_units(capsys):
    with Progress(None, "download.pth", unit="B", unit_scale=True) as p:
        p.update(3_500_000)
    (line,) = _lines(capsys, "download.pth: ")
    assert line.startswith("download.pth: 3.5M B, ") and "B/s" in line and "eta" not in line


def test_disabled_is_silent_and_track_yields_everything(capsys):
    with Progress(10, "quiet", enabled=False) as p:
        p.update(10)
    assert list(track(range(5), "listed", enabled=False)) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""
    assert list(track(["a", "b"], "named")) == ["a", "b"]
    assert _lines(capsys, "named: ")[-1].startswith("named: 2/2 it (100 %)")


def test_nothing_done_prints_nothing(capsys):
    with Progress(10, "idle"):
        pass
    assert _lines(capsys, "idle") == []


@pytest.mark.parametrize("total", [1, 3, 19])
def test_small_totals_end_with_a_full_line(capsys, every_5_percent, total):
    with Progress(total, "small") as p:
        for _ in range(total):
            p.update(1)
    lines = _lines(capsys, "small: ")
    assert lines[-1].startswith(f"small: {total}/{total} it (100 %)")
    assert len(lines) == total  # 5 % of fewer than 20 units is one unit


def test_fast_loops_write_one_line_not_twenty(capsys):
    # default spacing: at most one line per PLAIN_MIN_SECONDS, but the end is always reported
    with Progress(40, "fast", unit="img") as p:
        for _ in range(40):
            p.update(1)
    (line,) = _lines(capsys, "fast: ")
    assert line.startswith("fast: 40/40 img (100 %)") and line.endswith("eta 0 s")
