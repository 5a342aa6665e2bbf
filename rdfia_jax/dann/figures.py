"""Figures of the DANN section: t-SNE of features coloured by domain, training curves.

Drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no backend switch): a library call
changes no process-wide state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdfia_jax.fileio import atomic_path


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-d t-SNE (scikit-learn) of ``features`` (N, D), after a PCA to 50 dims to keep it fast."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, np.float32)
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")


def plot_tsne(embedding: np.ndarray, is_source: np.ndarray, path, title: str,
              names: tuple[str, str] = ("MNIST", "MNIST-M")) -> Path:
    """Scatter plot of a 2-d embedding, source in blue, target in red.

    Args:
      embedding: (N, 2) points.
      is_source: (N,) bool, True for source points.
      path: output image file (png).
      title: figure title.
      names: (source, target) dataset names for the legend.
    Returns:
      The written path.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    src = np.asarray(is_source, bool)
    ax.scatter(embedding[src, 0], embedding[src, 1], s=4, c="tab:blue", label=f"source ({names[0]})", alpha=0.6)
    ax.scatter(embedding[~src, 0], embedding[~src, 1], s=4, c="tab:red", label=f"target ({names[1]})", alpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", markerscale=3, fontsize=8)
    _save(fig, path)
    return path


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(values) < width:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="valid")


def plot_curves(history: dict[str, np.ndarray], evals: list[dict], path, title: str) -> Path:
    """Loss, accuracy and schedule curves of one run.

    Args:
      history: per-step metrics from the training loop (loss, label_loss, domain_loss, label_acc,
        domain_acc, lambda, grl, lr, ...).
      evals: per-epoch evaluations ``{"step", "source_acc", "target_acc", "domain_acc"}`` (and
        ``"last_iterate"``, the same for the raw parameters of a parameter-averaged run).
      path: output png.
      title: figure title.
    Returns:
      The written path.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    n = len(next(iter(history.values()))) if history else 0
    width = max(1, n // 200)
    from matplotlib.ticker import MaxNLocator

    # constrained layout makes room for the first panel's right-hand (gradient norm) tick labels,
    # which otherwise overlap the second panel's.
    fig = Figure(figsize=(16, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    steps = np.arange(n)
    for key in ("loss", "label_loss", "domain_loss", "pseudo_loss"):
        if key in history:
            v = _smooth(history[key], width)
            axes[0].plot(steps[: len(v)] + (width - 1), v, label=key)
    if "grad_norm" in history:  # a blow-up shows here first; its own scale, on the right
        v = _smooth(history["grad_norm"], width)
        norm_axis = axes[0].twinx()
        norm_axis.plot(steps[: len(v)] + (width - 1), v, color="0.5", lw=0.8, label="gradient norm (right)")
        norm_axis.set_ylabel("gradient norm", color="0.4")
        norm_axis.tick_params(axis="y", labelsize=8, colors="0.4")
        norm_axis.legend(fontsize=8, loc="upper center")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses (moving average)")
    axes[0].legend(fontsize=8)
    for key in ("label_acc", "domain_acc"):
        if key in history:
            v = _smooth(history[key], width)
            axes[1].plot(steps[: len(v)] + (width - 1), v, label=f"train {key}", alpha=0.6)
    if evals:
        es = [e["step"] for e in evals]
        for key, style in (("source_acc", "o-"), ("target_acc", "s-"), ("domain_acc", "^-")):
            axes[1].plot(es, [e[key] for e in evals], style, label=f"test {key}", ms=3)
        if "last_iterate" in evals[0]:  # a parameter-averaged run: the raw iterate for comparison
            axes[1].plot(es, [e["last_iterate"]["target_acc"] for e in evals], "s:", ms=2, alpha=0.6,
                         label="test target_acc, last iterate")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("step")
    axes[1].set_title("accuracies")
    axes[1].legend(fontsize=7)
    for key in ("lambda", "grl", "lr", "alpha"):
        if key == "alpha" and "pseudo_loss" not in history:
            continue  # the pseudo-label weight only matters in the pseudo-label run
        if key in history:
            v = history[key] * (10.0 if key == "lr" else 1.0)
            label = {"lambda": "lambda(p)", "grl": "GRL strength (grad x -this)", "lr": "lr x10",
                     "alpha": "pseudo-label weight"}[key]
            axes[2].plot(steps, v, label=label, ls="--" if key == "grl" else "-")
    axes[2].set_xlabel("step")
    axes[2].set_title("schedules")
    axes[2].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return path
