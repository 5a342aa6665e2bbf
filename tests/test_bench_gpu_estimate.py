"""benchmarks/gpu_estimate.py: the roofline, reading a reproduce folder, and the section arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import gpu_estimate as ge


def test_roofline_takes_the_slower_of_compute_and_memory_plus_the_call_cost():
    m = ge.GpuModel("m", flops_eff=0.5, bytes_eff=0.25, call_s=1e-3)
    compute_bound = m.seconds(ge.PEAK_TF32_FLOPS, 0.0)  # one second of peak work at half efficiency
    assert compute_bound == pytest.approx(2.0 + 1e-3)
    memory_bound = m.seconds(1.0, ge.PEAK_HBM_BYTES)
    assert memory_bound == pytest.approx(4.0 + 1e-3)
    assert [x.name for x in ge.MODELS] == ["optimistic", "expected", "pessimistic"]
    per_call = [x.seconds(1e12, 1e9) for x in ge.MODELS]
    assert per_call == sorted(per_call)  # the three settings bracket the answer in order


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    _write(run / "reproduce.json", {"budget": "full"})
    _write(run / "section1" / "section.json", {"status": "ok", "wall_s": 100.0})
    _write(run / "section1" / "transfer" / "details.json", {"passes": {
        "vgg16/crop": {"computed": ["relu6", "relu7"], "images": 65, "seconds": 60.0}}})
    _write(run / "section2" / "section.json", {"status": "failed", "wall_s": 5.0})
    _write(run / "section3" / "section.json", {"status": "ok", "wall_s": 50.0})
    _write(run / "section3" / "dann" / "seed0" / "result.json",
           {"run": "dann", "seed": 0, "steps": 1000, "steps_run": 400, "wall_s": 20.0, "src_batch": 64})
    _write(run / "section3" / "source-only" / "seed0" / "result.json",
           {"run": "source-only", "seed": 0, "steps": 100, "steps_run": 100, "wall_s": 10.0, "src_batch": 128})
    _write(run / "section4" / "section.json", {"status": "running", "wall_s": 7.0})
    _write(run / "section4" / "sweeps" / "ngf256" / "summary.json",
           {"name": "ngf256", "steps": 10, "train_s": 3.0, "config": {"kind": "gan", "ngf": 256, "nz": 100}})
    return run


def test_reads_finished_sections_and_their_hot_programs(tmp_path):
    run = _fake_run(tmp_path)
    assert ge.section_walls(run) == {1: 100.0, 3: 50.0}  # failed and running sections are not estimated
    work = {w["program"]: w for w in ge.hot_work(run)}
    assert work["vgg16_features"]["calls"] == 3 and work["vgg16_features"]["cpu_s"] == 60.0  # ceil(65 / 32)
    assert work["dann_step"]["calls"] == 400  # the steps this run's loop actually took (it was resumed)
    assert work["dann_step_source_only"]["calls"] == 100
    assert work["dcgan_step_ngf256"]["section"] == 4


def test_section_estimate_replaces_hot_cpu_time_by_modeled_gpu_time(tmp_path):
    run = _fake_run(tmp_path)
    walls = ge.section_walls(run)
    work = [w for w in ge.hot_work(run) if w["section"] in walls]
    costs = {"vgg16_features": (1e12, 1e9), "dann_step": (1e9, 1e8), "dann_step_source_only": (2e9, 2e8)}
    result = ge.estimate(walls, work, costs)
    s1, s3 = result["sections"][1], result["sections"][3]
    assert s1["host_s"] == pytest.approx(40.0) and s3["host_s"] == pytest.approx(20.0)
    for m in ge.MODELS:
        assert s1["gpu_s"][m.name] == pytest.approx(40.0 + 3 * m.seconds(1e12, 1e9))
        assert s3["gpu_s"][m.name] == pytest.approx(20.0 + 400 * m.seconds(1e9, 1e8) + 100 * m.seconds(2e9, 2e8))
        assert result["total"]["gpu_s"][m.name] == pytest.approx(s1["gpu_s"][m.name] + s3["gpu_s"][m.name])
    table = ge.markdown(result)
    assert "| 1 | 1.7 min | 1.0 min | 40 s |" in table and "| all | 2.5 min |" in table


def test_program_cost_of_the_dann_step_comes_from_xla():
    flops, bytes_accessed = ge.dann_step_cost(8, 8, "source")
    flops2, _ = ge.dann_step_cost(16, 16, "source")
    assert flops > 1e6 and bytes_accessed > 0
    assert 1.5 < flops2 / flops < 2.5  # twice the images, about twice the work


def test_refuses_a_folder_that_is_not_a_reproduction(tmp_path, capsys):
    assert ge.main(["--run-dir", str(tmp_path)]) == 2
    assert "not a `rdfia-jax reproduce` folder" in capsys.readouterr().err
