"""The results table (markdown + CSV + JSON, through :func:`rdfia_jax.results.write_results`) and the
figures of the transfer-learning section."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax.fileio import atomic_path
from rdfia_jax.results import markdown_table, write_results

# The report's numbers (LAB.md section 1.2), by row id.
REPORT_NUMBERS = {
    "relu7-resize": "0.888107",
    "relu7-crop": "0.905863",
    "relu6": "0.918928",
    "alexnet-cut1": "0.882412",
    "alexnet-cut2": "0.870352",
    "c-sweep-1": "0.91893",
    "c-sweep-5": "0.91960",
    "c-sweep-10": "0.91993",
    "c-sweep-20": "0.91859",
    "pca": "614 of 4096 dims kept (90 % variance)",
    "fc-head": "above 0.90 after 5 epochs (Figure 11)",
}

COLUMNS = ("setting", "model", "layer", "preprocessing", "dims", "accuracy", "feature_s", "fit_s", "report", "notes")


@dataclasses.dataclass
class Row:
    """One line of the results table.

    Attributes:
      row_id: stable id (e.g. "relu7-crop"; keys :data:`REPORT_NUMBERS`).
      setting: human description.
      model, layer, preprocessing: where the features come from.
      dims: feature dimensionality the classifier sees.
      accuracy: test accuracy (None when not computed).
      feature_s: seconds spent extracting the features (train + test; 0.0 when read from the cache).
      fit_s: classifier fitting time in seconds.
      notes: anything a reader needs (chosen C, cache hits, convergence).
    """

    row_id: str
    setting: str
    model: str
    layer: str
    preprocessing: str
    dims: int
    accuracy: float | None
    feature_s: float | None
    fit_s: float | None
    notes: str = ""

    @property
    def report(self) -> str:
        return REPORT_NUMBERS.get(self.row_id, "")

    def values(self) -> dict:
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        return {"setting": self.setting, "model": self.model, "layer": self.layer,
                "preprocessing": self.preprocessing, "dims": str(self.dims), "accuracy": fmt(self.accuracy, ".4f"),
                "feature_s": fmt(self.feature_s, ".1f"), "fit_s": fmt(self.fit_s, ".2f"), "report": self.report,
                "notes": self.notes}


def table_markdown(rows: Sequence[Row], *, header: str = "") -> str:
    """The rows as a GitHub markdown table, preceded by ``header`` (e.g. a random-weights warning)."""
    table = markdown_table([r.values() for r in rows], COLUMNS)
    return (header.rstrip() + "\n\n" if header else "") + table


def table_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r.values())
    return buf.getvalue()


def write_table(rows: Sequence[Row], out_dir: str | Path, *, header: str = "") -> tuple[Path, Path]:
    """Write ``results.md``, ``results.csv`` (and a ``results.json``) atomically into ``out_dir``.

    Cells are formatted as :meth:`Row.values` says (accuracies to 4 decimals). The pipeline then
    replaces ``results.json`` with its full record (raw numbers per row id, passes, header).
    Returns the Markdown and CSV paths.
    """
    paths = write_results([r.values() for r in rows], out_dir, columns=COLUMNS, note=header)
    return paths["md"], paths["csv"]


def _axes(figsize: tuple[float, float]):
    """One axes on a figure with its own Agg canvas (no pyplot state, no ``matplotlib.use``)."""
    from rdfia_jax.vis.figures import new_figure

    fig, axes = new_figure(1, 1, figsize)
    return fig, axes[0, 0]


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight")
    return path


def plot_head_curve(curves: dict[str, Sequence[float]], path: str | Path, *, title: str = "") -> Path:
    """Figure 11: test accuracy after each epoch of training a new FC head (one line per setting)."""
    import matplotlib.ticker

    fig, ax = _axes((5, 3.5))
    for label, acc in curves.items():
        ax.plot(np.arange(1, len(acc) + 1), acc, marker="o", label=label)
    ax.axhline(0.90, color="gray", ls="--", lw=0.8, label="report: above 0.90")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "New FC layer on frozen VGG16 features")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_c_sweep(cv: dict[float, float], test: dict[float, float], path: str | Path, *, best_C: float,
                 title: str = "") -> Path:
    """Cross-validated (train) and test accuracy against the SVM's C."""
    Cs = sorted(cv)
    fig, ax = _axes((5, 3.5))
    ax.plot(Cs, [cv[c] for c in Cs], marker="o", label="cross-validation on train")
    ax.plot(Cs, [test[c] for c in Cs], marker="s", label="test")
    ax.axvline(best_C, color="gray", ls="--", lw=0.8, label=f"chosen C = {best_C:g}")
    ax.set_xscale("log")
    ax.set_xlabel("C")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "LinearSVC C sweep")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_pca_variance(ratios: Sequence[float], path: str | Path, *, target: float, dims_in: int) -> Path:
    """Cumulative explained variance of the kept PCA components."""
    cum = np.cumsum(ratios)
    fig, ax = _axes((5, 3.5))
    ax.plot(np.arange(1, cum.size + 1), cum)
    ax.axhline(target, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("components kept")
    ax.set_ylabel("cumulative explained variance")
    ax.set_title(f"PCA: {cum.size} of {dims_in} dims keep {cum[-1]:.1%} (target {target:.0%})")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


__all__ = ["REPORT_NUMBERS", "Row", "table_markdown", "table_csv", "write_table", "plot_head_curve", "plot_c_sweep",
           "plot_pca_variance"]
