"""`rdfia-jax reproduce`: status computation, the report's structure, failures, reruns, resume, and a
headless-browser check that every figure of index.html loads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from rdfia_jax.errors import RdfiaError
from rdfia_jax.reproduce import budget as budgets
from rdfia_jax.reproduce import report, runner
from rdfia_jax.reproduce.references import BY_KEY, REFERENCES, Reference, format_value
from rdfia_jax.reproduce.sections.common import SectionResult

SECTION_TITLES = list(runner.SECTIONS.values())


# ----------------------------------------------------------------------------- the status function


def test_status_abs_within_and_outside_tolerance():
    ref = Reference("k", "3", "x", report=None, lab=0.8132, tol=0.04)
    assert report.row_status(ref, {"value": 0.80}) == "reproduced (within ±0.0400)"
    assert report.row_status(ref, {"value": 0.8132 + 0.04}) .startswith("reproduced")  # the bound itself
    assert report.row_status(ref, {"value": 0.70}) == "differs by -0.1132"
    assert report.row_status(ref, {"value": 0.90}) == "differs by +0.0868"


def test_status_does_not_judge_a_shorter_run_against_a_longer_runs_reference():
    ref = Reference("k", "4", "after 5 epochs", report=None, lab=0.857, tol=0.05, epochs=5)
    assert report.row_status(ref, {"value": 0.729, "epochs": 1}) == "not comparable: shorter run (1 of 5 epochs)"
    assert report.row_status(ref, {"value": 0.729, "epochs": 5}) == "differs by -0.1280"
    assert report.row_status(ref, {"value": 0.86, "epochs": 5}).startswith("reproduced")
    assert report.row_status(ref, {"value": 0.86}).startswith("reproduced")  # length unknown: judged
    assert BY_KEY["s3.dann_mnistm"].epochs == 20 and BY_KEY["s4.dcgan_confidence"].epochs == 5


def test_status_prefers_the_reports_value_and_exact_counts():
    ref = Reference("k", "1", "params", report=138_357_544, lab=1, fmt="int")
    assert report.row_status(ref, {"value": 138_357_544}) == "reproduced (exact)"
    assert report.row_status(ref, {"value": 138_357_545}) == "differs by +1"


def test_status_bounds_claims_weights_and_missing_values():
    lo = Reference("k", "4", "conf", None, None, check="min", bound=0.8, fmt="f3")
    assert report.row_status(lo, {"value": 0.81}) == "reproduced (>= 0.800)"
    assert report.row_status(lo, {"value": 0.75}) == "differs by -0.050"
    hi = Reference("k", "2", "iters", None, 100, check="max", bound=100, fmt="int", needs_pretrained=True)
    assert report.row_status(hi, {"value": 37}) == "reproduced (<= 100)"
    assert report.row_status(hi, {"value": 37, "random_weights": True}) == report.RANDOM
    assert report.row_status(hi, None) == report.NEEDS_WEIGHTS
    assert report.row_status(hi, {"value": None}) == report.NEEDS_WEIGHTS  # e.g. not fooled at all
    claim = Reference("k", "3", "gain", None, 0.27, check="claim")
    assert report.row_status(claim, {"value": 0.1}).startswith("reproduced")
    assert report.row_status(claim, {"value": -0.02}) == "differs by -0.0200 (claim not reproduced)"
    assert report.row_status(claim, None) == report.NOT_RUN
    assert report.row_status(claim, {"value": 0.1}, section_ok=False) == "section failed"
    none = BY_KEY["s1.photo_top1"]
    assert report.row_status(none, {"value": 0.3}) == report.NO_REFERENCE
    assert report.row_status(none, {"value": 0.3, "random_weights": True}) == report.RANDOM


def test_every_reference_cites_a_source_and_has_a_value_to_meet():
    for ref in REFERENCES:
        assert ref.source, ref.key
        assert ref.check in ("abs", "min", "max", "claim", "none"), ref.key
        if ref.check == "abs":
            assert ref.target is not None, ref.key
        if ref.check in ("min", "max"):
            assert ref.bound is not None, ref.key
    assert len(BY_KEY) == len(REFERENCES)


def test_budgets_and_sections_parse():
    assert budgets.get_budget("demo").s4.dataset == "digits"
    assert budgets.get_budget("demo").s3.dataset_pair == "digits"
    assert "smoke" not in budgets.PUBLIC_BUDGETS
    with pytest.raises(RdfiaError, match="unknown budget 'huge'; choose one of demo, quick, full"):
        budgets.get_budget("huge")
    assert runner.parse_sections("3,1") == [1, 3]
    for bad in ("", "5", "1,1", "a"):
        with pytest.raises(RdfiaError, match="--sections"):
            runner.parse_sections(bad)


# ----------------------------------------------------------------------------- fake sections: fast structure tests


def _png(path: Path, value: float) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.5, 1.5))
    fig.add_subplot(1, 1, 1).imshow(np.full((4, 4), value), vmin=0, vmax=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=40)
    return path


# measured values chosen to land on known statuses
FAKE = {1: {"s1.params_total": 138_357_544, "s1.params_fc6": 1.0, "s1.photo_top1": 0.2},
        2: {"s2.small_fool_rate": 0.99},
        3: {"s3.dann_gain": 0.1, "s3.dann_mnistm": 0.70},
        4: {"s4.digits_confidence": 0.9, "s4.digits_coverage": 0.5}}


def _fake_adapter(section: int, calls: list):
    def run(budget, ctx):
        calls.append((section, ctx.resume))
        res = SectionResult(seeds=[0])
        for k, v in FAKE[section].items():
            res.measure(k, v, random_weights=(k == "s1.photo_top1"))
        res.add(f"extra {section}", 0.5, "note")
        res.figure(f"Figure {section}", f"figure of section {section}", _png(ctx.out / "fig.png", section / 4), ctx.out)
        return res.to_dict()
    return run


@pytest.fixture
def fake_sections(monkeypatch):
    calls: list = []
    adapters = {s: _fake_adapter(s, calls) for s in runner.SECTIONS}
    monkeypatch.setattr(runner, "adapter", lambda s: adapters[s])
    return adapters, calls


def _quiet(_line: str) -> None:
    pass


def _row(md: str, label: str) -> str:
    lines = [ln for ln in md.splitlines() if ln.startswith(f"| {label} |")]
    assert len(lines) == 1, label
    return lines[0]


def check_report_structure(out: Path, records: dict) -> str:
    """Every section in order, every reference number in its row, statuses = row_status(measured),
    every file the markdown links exists, every HTML image embedded and decodable."""
    md = (out / "report.md").read_text()
    page = (out / "index.html").read_text()
    heads = [md.index(f"## {s} {t}") for s, t in runner.SECTIONS.items()]
    assert heads == sorted(heads)
    assert md.index("## Environment") > heads[-1]
    for key in ("jax", "flax", "optax", "python", "device", "date (UTC)", "seeds"):
        assert f"| {key} |" in md
    for ref in REFERENCES:
        row = _row(md, ref.label)
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[2] == format_value(ref.report, ref.fmt) and cells[3] == format_value(ref.lab, ref.fmt), row
        rec = records.get(int(ref.section)) or {}
        measured = ((rec.get("result") or {}).get("measured") or {}).get(ref.key) if rec.get("status") == "ok" else None
        expected = report.row_status(ref, measured, section_ok=rec.get("status") != "failed")
        assert cells[6] == expected, (row, expected)
        if measured is not None:
            assert cells[4].startswith(format_value(measured["value"], ref.fmt)), row
    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    srcs = re.findall(r"<img [^>]*src='([^']+)'", page)
    assert "missing file" not in page
    for src in srcs:  # self-contained: only embedded PNGs, each a valid PNG
        assert src.startswith("data:image/png;base64,")
        import base64

        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return md


def test_report_structure_failure_rerun_and_budget_change(tmp_path, fake_sections, monkeypatch):
    adapters, calls = fake_sections

    def broken(budget, ctx):
        calls.append((2, ctx.resume))
        raise ValueError("boom in section 2")

    monkeypatch.setitem(adapters, 2, broken)
    out = tmp_path / "rep"
    res = runner.reproduce("smoke", (1, 2, 3, 4), out=out, log=_quiet)
    recs = res["records"]
    assert [recs[s]["status"] for s in (1, 2, 3, 4)] == ["ok", "failed", "ok", "ok"]
    assert recs[2]["error"] == "ValueError: boom in section 2" and "Traceback" in recs[2]["traceback"]
    md = check_report_structure(out, recs)
    assert "ValueError: boom in section 2" in md and "ValueError: boom in section 2" in (out / "index.html").read_text()
    assert "section failed" in _row(md, BY_KEY["s2.small_fool_rate"].label)
    assert "reproduced (exact)" in _row(md, BY_KEY["s1.params_total"].label)
    assert "differs by -102,764,543" in _row(md, BY_KEY["s1.params_fc6"].label)
    assert report.RANDOM in _row(md, BY_KEY["s1.photo_top1"].label)
    assert report.NEEDS_WEIGHTS in _row(md, BY_KEY["s1.relu6"].label)
    assert "differs by -0.1132" in _row(md, BY_KEY["s3.dann_mnistm"].label)
    assert report.NOT_RUN in _row(md, BY_KEY["s3.dann_mnist"].label)
    assert "differs by -0.400" in _row(md, BY_KEY["s4.digits_coverage"].label)
    for s in (1, 3, 4):
        assert json.loads((out / f"section{s}" / "section.json").read_text())["status"] == "ok"

    # second run, same command: finished sections reused, the failed one rerun (now fixed)
    monkeypatch.setitem(adapters, 2, _fake_adapter(2, calls))
    calls.clear()
    lines: list[str] = []
    res = runner.reproduce("smoke", (1, 2, 3, 4), out=out, log=lines.append)
    assert calls == [(2, False)]
    assert sum("reused" in ln for ln in lines) == 3
    assert all(r["status"] == "ok" for r in res["records"].values())
    check_report_structure(out, res["records"])

    # a different budget in the same folder is refused
    with pytest.raises(RdfiaError, match="budget 'smoke', not 'demo'"):
        runner.reproduce("demo", (1,), out=out, log=_quiet)
    # a folder that is not ours is refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(RdfiaError, match="not a `rdfia-jax reproduce` folder"):
        runner.reproduce("smoke", (1,), out=tmp_path / "other", log=_quiet)


def test_interrupted_section_restarts_or_resumes_and_partial_report(tmp_path, fake_sections, monkeypatch):
    adapters, calls = fake_sections

    def killed(budget, ctx):
        (ctx.out / "checkpoint").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setitem(adapters, 3, killed)
    out = tmp_path / "rep"
    with pytest.raises(KeyboardInterrupt):
        runner.reproduce("smoke", (1, 2, 3, 4), out=out, log=_quiet)
    rec3 = json.loads((out / "section3" / "section.json").read_text())
    assert rec3["status"] == "running" and rec3["error"] == "interrupted"
    md = (out / "report.md").read_text()  # the partial report of the kill is valid
    assert "| 1 Transfer learning" in md and "pending" in md and "## 4 " in md

    monkeypatch.setitem(adapters, 3, _fake_adapter(3, calls))
    calls.clear()
    runner.reproduce("smoke", (1, 2, 3, 4), out=out, resume=True, log=_quiet)
    assert calls == [(3, True), (4, False)]  # 1, 2 reused; 3 continued; 4 started
    assert (out / "section3" / "checkpoint").is_file()  # --resume keeps the section's checkpoints

    # without --resume an interrupted section starts from scratch
    rec = json.loads((out / "section3" / "section.json").read_text())
    rec["status"] = "running"
    (out / "section3" / "section.json").write_text(json.dumps(rec))
    calls.clear()
    runner.reproduce("smoke", (3,), out=out, log=_quiet)
    assert calls == [(3, False)] and not (out / "section3" / "checkpoint").exists()


def test_wall_time_is_written_while_running_and_adds_up_over_resumed_invocations(tmp_path, fake_sections,
                                                                                 monkeypatch):
    """A kill loses at most one heartbeat of the section's measured time; --resume adds its own to it."""
    adapters, calls = fake_sections
    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.05)
    out = tmp_path / "rep"
    seen: list[float] = []

    def slow_then_killed(budget, ctx):
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # until the heartbeat has written a time of at least 0.3 s
            rec = json.loads((ctx.out / "section.json").read_text())
            if rec["wall_s"] >= 0.3:
                seen.append(rec["wall_s"])
                break
            time.sleep(0.02)
        raise SystemExit("killed")  # not caught by the runner: the record on disk is the heartbeat's last

    monkeypatch.setitem(adapters, 3, slow_then_killed)
    with pytest.raises(SystemExit):
        runner.reproduce("smoke", (3,), out=out, log=_quiet)
    assert seen and seen[0] >= 0.3, "the heartbeat never wrote the elapsed time"
    killed = json.loads((out / "section3" / "section.json").read_text())
    time.sleep(0.2)
    assert json.loads((out / "section3" / "section.json").read_text()) == killed, "the heartbeat outlived its section"
    assert killed["status"] == "running" and killed["invocations"] == 1 and 0.3 <= killed["wall_s"] < 5.0

    monkeypatch.setitem(adapters, 3, _fake_adapter(3, calls))
    lines: list[str] = []
    res = runner.reproduce("smoke", (3,), out=out, resume=True, log=lines.append)
    rec = res["records"][3]
    assert rec["status"] == "ok" and rec["invocations"] == 2 and rec["started"] == killed["started"]
    assert killed["wall_s"] <= rec["wall_s"] < killed["wall_s"] + 5.0
    assert any(f"{killed['wall_s']:.1f} s measured before" in ln for ln in lines), lines
    md = (out / "report.md").read_text()
    assert f"| 3 | ok | {rec['wall_s']:.1f} | 2 |" in md

    # a fresh start (no --resume) measures from zero again
    rec = json.loads((out / "section3" / "section.json").read_text())
    rec["status"] = "running"
    (out / "section3" / "section.json").write_text(json.dumps(rec))
    res = runner.reproduce("smoke", (3,), out=out, log=_quiet)
    assert res["records"][3]["invocations"] == 1 and res["records"][3]["wall_s"] < killed["wall_s"]


def test_changed_settings_rerun_the_section_and_say_what_changed(tmp_path, fake_sections):
    _, calls = fake_sections
    out = tmp_path / "rep"
    runner.reproduce("smoke", (3,), out=out, log=_quiet)
    rec = json.loads((out / "section3" / "section.json").read_text())
    rec["fingerprint"]["settings"]["dann_epochs"] = 7
    (out / "section3" / "section.json").write_text(json.dumps(rec))
    lines: list[str] = []
    calls.clear()
    runner.reproduce("smoke", (3,), out=out, log=lines.append)
    assert calls == [(3, False)]
    assert any("settings changed: settings.dann_epochs 7 -> 1" in ln for ln in lines), lines


def test_sections_option_reports_the_others_as_skipped_or_reused(tmp_path, fake_sections):
    _, calls = fake_sections
    out = tmp_path / "rep"
    res = runner.reproduce("smoke", (4,), out=out, log=_quiet)
    assert calls == [(4, False)]
    assert [res["records"][s]["status"] for s in (1, 2, 3)] == ["skipped"] * 3
    check_report_structure(out, res["records"])
    res = runner.reproduce("smoke", (1,), out=out, log=_quiet)
    assert res["records"][4]["status"] == "ok"  # finished earlier: kept in the report


def test_cli_registers_reproduce_and_rejects_bad_sections(tmp_path, capsys):
    from rdfia_jax.cli import main

    assert main(["reproduce", "--sections", "7", "--out", str(tmp_path / "x")]) == 2
    assert "--sections '7'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the real sections, smoke budget


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """All four real adapters at the smoke budget, with tiny cached classifiers and no converted weights."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("reproduce")
    mp.setenv("RDFIA_JAX_CACHE", str(root / "cache"))
    mp.setenv("RDFIA_JAX_WEIGHTS", str(root / "no-weights"))
    from rdfia_jax.classifier import TrainConfig, get_classifier

    for seed in (0, 1):  # the tiny recipe stands in for the 40-epoch one (the cache is keyed by name)
        get_classifier("digits", seed, config=TrainConfig(epochs=3, batch_size=64), progress=False)
    lines: list[str] = []
    t0 = time.perf_counter()
    res = runner.reproduce("smoke", (1, 2, 3, 4), out=root / "out", log=lines.append)
    res["test_wall_s"] = time.perf_counter() - t0
    res["lines"] = lines
    yield res
    mp.undo()


def test_smoke_budget_end_to_end(smoke_run):
    recs = smoke_run["records"]
    assert {s: r["status"] for s, r in recs.items()} == {1: "ok", 2: "ok", 3: "ok", 4: "ok"}, \
        {s: r.get("error") for s, r in recs.items()}
    out = Path(smoke_run["report"]).parent
    md = check_report_structure(out, recs)
    assert sum("started" in ln for ln in smoke_run["lines"]) == 4
    assert sum(re.search(r": ok in \d+\.\d s", ln) is not None for ln in smoke_run["lines"]) == 4
    m = {k: v for r in recs.values() for k, v in r["result"]["measured"].items()}
    assert m["s1.params_total"]["value"] == 138_357_544
    assert m["s4.g_params"]["value"] == 369_600 and m["s4.cd_params"]["value"] == 2_642_433
    assert "s4.digits_confidence" in m and "s3.dann_gain" in m and "s2.small_fool_rate" in m
    assert "Figure 40" in md and "Figures 33, 35" in md and "Figures 18-19" in md
    # a rerun reuses every section and rebuilds the report
    lines: list[str] = []
    res = runner.reproduce("smoke", (1, 2, 3, 4), out=out, log=lines.append)
    assert sum("reused" in ln for ln in lines) == 4 and res["wall_s"] < 60


# ----------------------------------------------------------------------------- headless browser


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium/chrome on PATH (apt-get install -y chromium): the browser rendering test is SKIPPED")


def test_index_html_renders_with_no_broken_image(tmp_path, fake_sections):
    browser = _chromium()
    out = tmp_path / "rep"
    runner.reproduce("smoke", (1, 2, 3, 4), out=out, log=_quiet)
    page = (out / "index.html").read_text()
    n_img = page.count("<img ")
    assert n_img == 4
    probe = out / "probe.html"  # the page plus a script that reports each image's natural size in the title
    probe.write_text(page.replace("</body>", "<script>window.addEventListener('load',()=>{document.title='IMGS:'+"
                                  "Array.from(document.images).map(i=>i.complete?i.naturalWidth:-1).join(',')});"
                                  "</script></body>"))
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000", "--dump-dom",
           probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    widths = re.search(r"<title>IMGS:([-0-9,]*)</title>", dom)
    assert widths, dom[:500]
    sizes = [int(w) for w in widths.group(1).split(",")]
    assert len(sizes) == n_img and all(w > 0 for w in sizes), sizes
    shot = tmp_path / "index.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                    "--window-size=1200,2400", (out / "index.html").as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
