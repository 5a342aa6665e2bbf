"""The report's GAN experiments (Figures 38-52) as named sweeps, written to one results table.

Each sweep is a list of (run name, changes to the base configuration). Every run trains in its own
subfolder (figures, checkpoints, summary), and ``results.md`` / ``results.csv`` / ``results.json``
(:func:`rdfia_jax.results.write_results`) in the sweep folder get one row per run, rewritten after
each run. A run that diverges (NaN/inf) is recorded as "diverged", keeps its figures up to that
point, and the sweep goes on.
"""

from __future__ import annotations

from pathlib import Path

from rdfia_jax.gan import run, steps
from rdfia_jax.gan.config import SWEEPS, sweep_runs  # noqa: F401 (re-exported; defined without JAX for the CLI)
from rdfia_jax.results import write_results

COLUMNS = ["run", "status", "kind", "nz", "ngf", "lr_d", "lr_g", "epochs", "steps", "final_loss_d", "final_loss_g",
           "confidence", "coverage", "frechet", "label_accuracy", "steps_per_s", "wall_s", "data", "folder"]


def _row(summary: dict) -> dict:
    """One table row (raw values: the writer formats floats to 4 significant digits)."""
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
    return row


def write_table(rows: list[dict], out: Path, *, note: str = "") -> None:
    """Write ``results.md``, ``results.csv`` and ``results.json`` (atomically) in ``out``."""
    write_results(rows, out, columns=COLUMNS, note=note)


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
