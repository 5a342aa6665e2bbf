"""Runs the report's sections one after another, each in its own folder, and rebuilds the report.

Layout of ``--out``::

    reproduce.json        the budget and settings of this folder
    section<N>/           everything section N wrote; section<N>/section.json: its status
                          ("ok" / "failed" with the error / "skipped" / "running" while it runs),
                          wall time, fingerprint and measured results
    report.md, index.html the report, rebuilt after every section (a kill leaves a valid partial one)

A second run of the same command in the same folder reuses every finished ("ok") section whose
fingerprint (budget, data folder, converted weights present) is unchanged, reruns failed ones and
sections whose fingerprint changed, and rebuilds the report. A section left "running" by a kill is
started again from scratch, or continued from its checkpoints with ``resume=True`` (``--resume``: the
DANN and GAN runs restart from their last checkpoint). A different budget in an existing folder is
refused with an error naming both. A section's ``wall_s`` is its time over every invocation that
worked on it (``invocations``): while it runs, the elapsed time is written every :data:`HEARTBEAT_S`
seconds, so a continued section adds its new time to what the killed one had measured.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_write_bytes
from rdfia_jax.reproduce import budget as budgets

SECTIONS = {
    1: "Transfer learning (VGG16, 15 Scene)",
    2: "Visualizing a network (saliency, fooling, class visualization)",
    3: "Domain adaptation (DANN)",
    4: "Generative adversarial networks (DCGAN, cDCGAN)",
}
FOLDER_FILE = "reproduce.json"
HEARTBEAT_S = 30.0  # how often a running section's elapsed time is written (a kill loses at most this much)


@dataclasses.dataclass(frozen=True)
class SectionContext:
    """What an adapter needs besides the budget: its output folder, the data folder, resume."""

    out: Path
    data_dir: str | None
    resume: bool


def adapter(section: int) -> Callable:
    """The section's ``run(budget, ctx) -> dict`` (looked up at call time, so tests can replace it)."""
    return importlib.import_module(f"rdfia_jax.reproduce.sections.s{section}").run


def parse_sections(text: str) -> list[int]:
    """``"1,3"`` -> [1, 3] (RdfiaError for anything else)."""
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        out = []
    if not out or any(s not in SECTIONS for s in out) or len(set(out)) != len(out):
        raise RdfiaError(f"--sections {text!r}: expected distinct section numbers among 1,2,3,4, e.g. 1,2,3,4 or 3")
    return sorted(out)


def _weights_present() -> list[str]:
    from rdfia_jax import paths

    d = paths.weights_dir()
    return sorted(p.name for p in d.glob("*.safetensors")) if d.is_dir() else []


def fingerprint(budget: budgets.Budget, section: int, data_dir: str | None) -> dict:
    """Everything a finished section's results depend on; a rerun reuses the section only when equal."""
    fp = {"budget": budget.name, "section": section, "settings": budgets.section_settings(budget, section),
          "data_dir": data_dir}
    if section in (1, 2):
        fp["weights"] = _weights_present()
    return json.loads(json.dumps(fp))  # tuples -> lists, as read back from section.json


def _changes(old: dict, new: dict, prefix: str = "") -> str:
    """Dotted keys that differ between two fingerprints, with old -> new values."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _changes(a, b, f"{prefix}{k}.")
            out += [sub] if sub else []
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return ", ".join(out)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode())


def read_section(out: Path, section: int) -> dict | None:
    path = Path(out) / f"section{section}" / "section.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _check_folder(out: Path, budget: budgets.Budget, data_dir: str | None) -> None:
    path = out / FOLDER_FILE
    if path.is_file():
        try:
            prev = json.loads(path.read_text())
        except ValueError:
            prev = {}
        if prev.get("budget") not in (None, budget.name):
            raise RdfiaError(f"{out} holds a reproduction with budget {prev['budget']!r}, not {budget.name!r}: "
                             f"choose another --out (or delete {out}) to run budget {budget.name!r}")
    elif out.is_dir() and any(out.iterdir()):
        raise RdfiaError(f"{out} exists and is not a `rdfia-jax reproduce` folder (no {FOLDER_FILE}); "
                         "choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, {"budget": budget.name, "description": budget.description, "data_dir": data_dir,
                       "updated": _now()})


class _Heartbeat:
    """Rewrites a running section's record with its elapsed time every :data:`HEARTBEAT_S` seconds."""

    def __init__(self, path: Path, record: dict, elapsed: Callable[[], float]):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(path, record, elapsed), daemon=True,
                                        name="reproduce-heartbeat")
        self._thread.start()

    def _beat(self, path, record, elapsed) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            _write_json(path, {**record, "wall_s": round(elapsed(), 2)})

    def stop(self) -> None:
        """Stop, and wait for a write in progress (the caller's next write is then the last)."""
        self._stop.set()
        self._thread.join()


def run_section(section: int, budget: budgets.Budget, out: Path, *, data_dir: str | None, resume: bool,
                log: Callable[[str], None] = print) -> dict:
    """Run (or reuse) one section; returns its section.json record. Never raises for a failing section."""
    folder = out / f"section{section}"
    fp = fingerprint(budget, section, data_dir)
    prev = read_section(out, section)
    name = f"section {section} ({SECTIONS[section]})"
    if prev and prev.get("status") == "ok" and prev.get("fingerprint") == fp:
        log(f"[reproduce] {name}: finished earlier with the same settings ({prev['wall_s']:.1f} s), reused")
        return prev
    continuing = False
    if folder.exists():
        if resume and prev and prev.get("status") in ("running", "failed") and prev.get("fingerprint") == fp:
            log(f"[reproduce] {name}: continuing the interrupted run (--resume, {float(prev.get('wall_s') or 0):.1f} s "
                "measured before)")
            continuing = True
        else:
            why = (f"settings changed: {_changes(prev.get('fingerprint') or {}, fp)}"
                   if prev and prev.get("fingerprint") != fp else
                   f"previous state {prev.get('status') if prev else 'unknown'}")
            log(f"[reproduce] {name}: starting again from scratch ({why}; its old outputs are removed)")
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    before_s = float(prev.get("wall_s") or 0.0) if continuing else 0.0
    record = {"section": section, "title": SECTIONS[section], "status": "running", "error": None,
              "budget": budget.name, "fingerprint": fp, "started": (prev.get("started") or _now()) if continuing else _now(),
              "finished": None, "wall_s": before_s,
              "invocations": int(prev.get("invocations") or 1) + 1 if continuing else 1, "result": None}
    _write_json(folder / "section.json", record)
    log(f"[reproduce] {name}: started (budget {budget.name})")
    t0 = time.perf_counter()
    heartbeat = _Heartbeat(folder / "section.json", record, lambda: before_s + time.perf_counter() - t0)
    try:
        try:
            record["result"] = adapter(section)(budget, SectionContext(folder, data_dir, continuing))
            record["status"] = "ok"
        finally:
            heartbeat.stop()
    except KeyboardInterrupt:
        record.update(status="running", error="interrupted", wall_s=round(before_s + time.perf_counter() - t0, 2))
        _write_json(folder / "section.json", record)
        raise
    except Exception as err:  # noqa: BLE001 -- a failing section is reported, the others go on
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
    record["wall_s"] = round(before_s + time.perf_counter() - t0, 2)
    record["finished"] = _now()
    record["load_avg"] = [round(v, 2) for v in os.getloadavg()]  # 1/5/15 min: contention during the section
    _write_json(folder / "section.json", record)
    log(f"[reproduce] {name}: {record['status']} in {record['wall_s']:.1f} s"
        + (f" -- {record['error']}" if record["error"] else ""))
    return record


def reproduce(budget_name: str = "demo", sections=(1, 2, 3, 4), *, out, data_dir=None, resume: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Run the requested sections of ``budget_name`` into ``out`` and write report.md and index.html.

    Returns:
      {"records": {section: section.json record}, "report": path of report.md, "html": path of index.html,
      "wall_s": total seconds}.
    """
    from rdfia_jax.reproduce import report

    budget = budgets.get_budget(budget_name)
    out = Path(out)
    data_dir = str(data_dir) if data_dir is not None else None
    _check_folder(out, budget, data_dir)
    t0 = time.perf_counter()
    records: dict[int, dict] = {}
    for s in SECTIONS:
        if s in sections:
            continue
        prev = read_section(out, s)
        records[s] = (prev if prev and prev.get("status") == "ok" and prev.get("fingerprint") == fingerprint(
            budget, s, data_dir) else {"section": s, "title": SECTIONS[s], "status": "skipped",
                                       "error": "not requested (--sections)", "wall_s": 0.0, "result": None})
    paths = report.write_report(out, budget, records)
    for s in sections:
        records[s] = run_section(s, budget, out, data_dir=data_dir, resume=resume, log=log)
        paths = report.write_report(out, budget, records)
    total = time.perf_counter() - t0
    log(f"[reproduce] done in {total:.1f} s: {paths[0]}, {paths[1]}")
    return {"records": records, "report": paths[0], "html": paths[1], "wall_s": total}
