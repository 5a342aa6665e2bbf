"""The report's GAN experiments (Figures 38-52) as named sweeps, written to one results table.

Each sweep is a list of (run name, changes to the base configuration). Every run trains in its own
subfolder (figures, checkpoints, summary), and ``results.md`` / ``results.csv`` in the sweep folder
get one row per run, rewritten after each run. A run that diverges (NaN/inf) is recorded as
"diverged", keeps its figures up to that point, and the sweep goes on.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_write_bytes
from rdfia_jax.gan import run, steps

BASE = ("default", {})
SWEEPS: dict[str, list[tuple[str, dict]]] = {
    "nz": [("nz10", {"nz": 10}), ("nz100", {}), ("nz1000", {"nz": 1000})],
    "epochs": [("epochs30", {"epochs": 30})],
    "lr": [("lr_x100", {"lr_d": 2e-2, "lr_g": 5e-2}), ("lr_div100", {"lr_d": 2e-6, "lr_g": 5e-6})],
    "ngf": [("ngf256", {"ngf": 256})],
}
SWEEPS["report"] = [
    ("default", {}), ("nz10", {"nz": 10}), ("nz1000", {"nz": 1000}), ("epochs30", {"epochs": 30}),
    ("lr_x100", {"lr_d": 2e-2, "lr_g": 5e-2}), ("lr_div100", {"lr_d": 2e-6, "lr_g": 5e-6}), ("ngf256", {"ngf": 256}),
]

COLUMNS = ["run", "status", "kind", "nz", "ngf", "lr_d", "lr_g", "epochs", "steps", "final_loss_d", "final_loss_g",
           "confidence", "coverage", "frechet", "label_accuracy", "steps_per_s", "wall_s", "data", "folder"]


def sweep_runs(name: str) -> list[tuple[str, dict]]:
    """The runs of sweep ``name``; RdfiaError for an unknown name."""
    if name not in SWEEPS:
        raise RdfiaError(f"unknown sweep {name!r}; choose one of {', '.join(SWEEPS)}")
    return SWEEPS[name]


def _row(summary: dict) -> dict:
    cfg = summary["config"]
    score = summary.get("score") or {}
    row = {
        "run": summary["name"], "status": summary["status"], "kind": cfg["kind"], "nz": cfg["nz"],
        "ngf": cfg["ngf"] if cfg["kind"] == "gan" else "-", "lr_d": cfg["lr_d"], "lr_g": cfg["lr_g"],
        "epochs": cfg["epochs"], "steps": f"{summary['steps']}/{summary['total_steps']}",
        "final_loss_d": summary.get("final_loss_d"), "final_loss_g": summary.get("final_loss_g"),
        "confidence": score.get("confidence"), "coverage": score.get("coverage"), "frechet": score.get("frechet"),
        "label_accuracy": score.get("label_accuracy"), "steps_per_s": summary.get("steps_per_s"),
        "wall_s": summary.get("wall_s"),
        "data": summary["dataset"] + (" (smoke)" if summary.get("smoke") else ""), "folder": summary["out"],
    }
    return {k: ("" if v is None else (f"{v:.4g}" if isinstance(v, float) else v)) for k, v in row.items()}


def write_table(rows: list[dict], out: Path, *, note: str = "") -> None:
    """Write ``results.md`` and ``results.csv`` (atomically) in ``out``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    text = (note + "\n\n" if note else "") + "\n".join(lines) + "\n"
    atomic_write_bytes(out / "results.md", text.encode())


def run_sweep(name: str, base: steps.GanConfig, opts: run.RunOptions) -> list[dict]:
    """Run every configuration of sweep ``name`` from ``base``; one table row per run.

    Args:
      name: a key of :data:`SWEEPS`.
      base: the configuration the sweep's changes apply to (kind, seed, ...).
      opts: output folder (each run in ``opts.out/<run>``), data, smoke, resume, scoring.
    Returns:
      The run summaries.
    """
    runs = sweep_runs(name)
    out = Path(opts.out)
    summaries, rows = [], []
    for run_name, changes in runs:
        cfg = base.replace(**changes)
        run_opts = run.RunOptions(**{**opts.__dict__, "out": out / run_name, "on_divergence": "return",
                                     "samples": 0, "samples_out": None})
        summary = run.train(cfg, run_opts, name=run_name)
        if summary["status"] == "diverged":
            print(f"{run_name}: diverged ({summary['message']}); recorded, going on")
        summaries.append(summary)
        rows.append(_row(summary))
        data_note = summaries[0]["data_description"]
        note = (f"GAN sweep '{name}' ({base.kind}, seed {base.seed}) on {data_note}"
                + (" -- SMOKE runs (tiny, not meaningful)" if opts.smoke else ""))
        write_table(rows, out, note=note)
    return summaries
