"""The DANN section's results table: every run's ``result.json`` under an output folder, mean ± sd over seeds.

Written by :func:`rdfia_jax.results.write_results` as ``results.md``, ``results.csv`` and ``results.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax.dann.catalogue import RUN_NAMES, RUNS
from rdfia_jax.results import write_results

TABLE_COLUMNS = ("run", "seeds", "epochs", "source acc", "target acc", "domain acc", "PAD", "wall time (s)")
FOOTER = ("Domain accuracy: the domain classifier's accuracy on source test + target test "
          "(source when sigmoid(logit) > 0.5); for source-only, target-only and pseudo-label it "
          "is a probe that does not shape the features. PAD: proxy A-distance of the features "
          "(2 = domains linearly separable, 0 = indistinguishable; 1,000 + 1,000 test images, "
          "a fresh linear SVM). Mean ± sd over seeds.")


def collect_results(out) -> list[dict]:
    """All ``result.json`` records under ``out`` (sorted by run order, then seed)."""
    records = [json.loads(path.read_text()) for path in sorted(Path(out).glob("*/seed*/result.json"))]
    order = {n: i for i, n in enumerate(RUN_NAMES)}
    records.sort(key=lambda r: (order.get(r["run"], 99), r.get("smoke", False), r["seed"]))
    return records


def mean_sd(values: Sequence[float | None], digits: int = 4) -> str:
    """``"m ± s"`` (sample sd) of the non-missing values; the value alone for one; ``"n/a"`` for none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def results_table(records: list[dict]) -> list[dict]:
    """One row per (run, epochs, gamma, lr schedule, input norm, EMA, clip, smoke, source): mean ± sd over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["run"], r["epochs"], r["gamma"], r.get("lr_per_epoch", False), r.get("input_norm", "source"),
               r.get("ema_decay", 0.0), r.get("clip_norm"), r.get("smoke", False), r["source"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (run, epochs, gamma, lr_per_epoch, input_norm, ema_decay, clip_norm, smoke, source), rs in groups.items():
        label = run + (f" (gamma {gamma:g})" if RUNS.get(run) and RUNS[run].grl_scale != 0 and gamma != 2.0 else "")
        label += " (lr per epoch)" if lr_per_epoch else ""
        label += f" ({input_norm} norm)" if input_norm != "source" else ""
        label += f" (EMA {ema_decay:g})" if ema_decay else ""
        label += f" (clip {clip_norm:g})" if clip_norm is not None else ""
        label += " [smoke]" if smoke else ""
        rows.append({
            "run": label,
            "seeds": ",".join(str(r["seed"]) for r in rs),
            "epochs": epochs,
            "source acc": mean_sd([r["source_acc"] for r in rs]),
            "target acc": mean_sd([r["target_acc"] for r in rs]),
            "domain acc": mean_sd([r["domain_acc"] for r in rs]),
            "PAD": mean_sd([r.get("pad") for r in rs], digits=3),
            "wall time (s)": mean_sd([r["wall_s"] for r in rs], digits=0),
            "source": rs[0]["source"], "target": rs[0]["target"],
        })
    return rows


def write_table(out) -> dict[str, Path]:
    """Writes ``out/results.{md,csv,json}`` from every run found under ``out``; returns their paths."""
    rows = results_table(collect_results(out))
    source, target = (rows[0]["source"], rows[0]["target"]) if rows else ("mnist", "mnistm")
    header = {"source acc": f"{source} acc", "target acc": f"{target} acc"}
    table = [{header.get(c, c): r[c] for c in TABLE_COLUMNS} for r in rows]
    return write_results(table, out, columns=[header.get(c, c) for c in TABLE_COLUMNS], footer=FOOTER)
