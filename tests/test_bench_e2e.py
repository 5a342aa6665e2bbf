"""benchmarks.e2e: each run's own wall time, peak memory from wait4, nothing measured lost on a rerun."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import types

import pytest

from benchmarks import e2e


def _fake_run(tmp_path, framework, seconds, alloc_mb=0, rc=0):
    out = tmp_path / "runs" / framework
    code = (f"import json, os, time, pathlib; b = bytearray({alloc_mb} * 2**20); time.sleep({seconds}); "
            f"p = pathlib.Path({str(out)!r}); p.mkdir(parents=True, exist_ok=True); "
            f"(p / 'summary.json').write_text(json.dumps({{'steps': 7, 'score': {{'frechet': 1.5}}, 'x': 1}})); "
            f"raise SystemExit({rc})")
    return e2e.Run("dcgan", framework, (sys.executable, "-c", code), out, "summary.json")


def test_reap_measures_peak_memory_and_exit_status(tmp_path):
    run = _fake_run(tmp_path, "jax", 0.1, alloc_mb=300, rc=3)
    proc = subprocess.Popen(run.argv)
    pid, measured = e2e.reap({proc.pid: time.perf_counter()})
    assert pid == proc.pid and measured["rc"] == 3
    assert measured["peak_mib"] >= 300  # the bytearray was resident
    assert measured["wall_s"] >= 0.1


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not installed: pair mode needs it")
def test_pair_mode_times_each_run_to_its_own_end_and_reruns_skip_finished(tmp_path, monkeypatch):
    runs = [_fake_run(tmp_path, "jax", 2.0), _fake_run(tmp_path, "torch", 0.1)]
    monkeypatch.setattr(e2e, "plan", lambda *a, **k: runs)
    monkeypatch.setattr(e2e, "prepare", lambda *a, **k: None)
    args = types.SimpleNamespace(data_dir=tmp_path, out=tmp_path, threads=1, smoke=False, force=False, mode="pair")
    results: dict = {}
    e2e.run_workload("dcgan", args, results)
    saved = json.loads((tmp_path / "e2e.json").read_text())
    assert saved.keys() == {"dcgan/jax", "dcgan/torch"}
    assert saved["dcgan/torch"]["wall_s"] < 1.5 <= saved["dcgan/jax"]["wall_s"]  # not the partner's end
    assert saved["dcgan/jax"]["numbers"] == {"steps": 7, "score.frechet": 1.5}
    assert {saved[k]["cpu"] for k in saved} == {0, 1}

    launched = []
    monkeypatch.setattr(e2e, "launch", lambda *a, **k: launched.append(a))
    e2e.run_workload("dcgan", args, e2e.load_results(tmp_path))  # finished runs are kept, not rerun
    assert launched == []
    assert "dcgan | pair, 1 core each" in e2e.to_markdown(saved)


def test_cli_refuses_a_missing_data_folder_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        e2e.main(["run", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "absent")])
    assert err.value.code == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        e2e.main(["run", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--only", "vgg"])
