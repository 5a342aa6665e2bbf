"""Figures of section 2 (report Figures 12-19 and 21-31), written as PNG files with matplotlib.

Each figure is a :class:`matplotlib.figure.Figure` drawn on its own Agg canvas: no pyplot state, no
``matplotlib.use``, so calling these changes nothing in the caller's process.

All functions take *display* images (RGB or grayscale floats in [0, 1]); use :func:`to_display` to
turn model-space images into them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rdfia_jax.fileio import atomic_path


def to_display(network, x) -> np.ndarray:
    """Model-space images -> float [0, 1] (N, H, W, 3) or (N, H, W) for grayscale."""
    img = np.clip(np.asarray(network.preprocessing.denormalize(x)), 0.0, 1.0)
    return img[..., 0] if img.shape[-1] == 1 else img


def new_figure(rows: int, cols: int, figsize: tuple[float, float]):
    """A figure on its own Agg canvas and its (rows, cols) array of axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    return path


def _title(fig, text: str) -> None:
    """Lay the panels out tightly, then put the title just above them (no empty band)."""
    fig.tight_layout()
    if text:
        fig.suptitle(text, fontsize=10, y=1.0 + 0.12 / fig.get_figheight())


def _show(ax, img, title: str | None = None, cmap=None) -> None:
    ax.imshow(img, cmap=cmap if cmap is not None else ("gray" if img.ndim == 2 else None))
    if title:
        ax.set_title(title, fontsize=8)
    ax.axis("off")


def attribution_grid(images: np.ndarray, rows: dict[str, np.ndarray], titles: Sequence[str], path, *,
                     suptitle: str = "") -> Path:
    """Images on the first row, one row of maps per method (the practical's saliency figure).

    Args:
      images: display images (N, H, W[, 3]).
      rows: {row label: maps (N, H, W)}.
      titles: one title per image (e.g. the class name).
      path: PNG to write.
      suptitle: figure title (say RANDOM WEIGHTS when they are).
    """
    n, k = len(images), 1 + len(rows)
    fig, axes = new_figure(k, n, (2.2 * n, 2.3 * k))
    for j in range(n):
        _show(axes[0, j], images[j], titles[j])
        for i, (label, maps) in enumerate(rows.items(), start=1):
            _show(axes[i, j], np.asarray(maps[j]), label if j == 0 else None, cmap="hot")
    _title(fig, suptitle)
    return _save(fig, path)


def fooling_figure(original: np.ndarray, fooled: np.ndarray, original_names: Sequence[str],
                   fooled_names: Sequence[str], path, *, magnify: float = 10.0, suptitle: str = "") -> Path:
    """Per image: original, fooled, difference and magnified difference (report Figures 18-19).

    Differences are shown around mid-grey (0.5 + d and 0.5 + magnify * d, clipped).
    """
    n = len(original)
    fig, axes = new_figure(n, 4, (9, 2.4 * n))
    for i in range(n):
        diff = np.asarray(fooled[i], np.float32) - np.asarray(original[i], np.float32)
        _show(axes[i, 0], original[i], f"original\n{original_names[i]}")
        _show(axes[i, 1], fooled[i], f"fooled\n{fooled_names[i]}")
        _show(axes[i, 2], np.clip(0.5 + diff, 0, 1), "difference")
        _show(axes[i, 3], np.clip(0.5 + magnify * diff, 0, 1), f"magnified difference (x{magnify:g})")
    _title(fig, suptitle)
    return _save(fig, path)


def snapshots_figure(rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[Sequence[str]],
                     row_labels: Sequence[str], path, *, suptitle: str = "") -> Path:
    """Rows of images (e.g. class-visualization snapshots over iterations), titled per cell."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = new_figure(n_rows, n_cols, (2.3 * n_cols, 2.5 * n_rows))
    for i, row in enumerate(rows):
        for j in range(n_cols):
            if j < len(row):
                title = column_titles[i][j]
                if j == 0 and row_labels[i]:
                    title = f"{row_labels[i]}\n{title}"
                _show(axes[i, j], row[j], title)
            else:
                axes[i, j].axis("off")
    _title(fig, suptitle)
    return _save(fig, path)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path, *, cols: int = 5,
               suptitle: str = "") -> Path:
    """A plain grid of images with titles."""
    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = new_figure(rows, cols, (2.3 * cols, 2.5 * rows))
    for k in range(rows * cols):
        ax = axes[k // cols, k % cols]
        if k < n:
            _show(ax, images[k], titles[k])
        else:
            ax.axis("off")
    _title(fig, suptitle)
    return _save(fig, path)


__all__ = ["to_display", "attribution_grid", "fooling_figure", "snapshots_figure", "image_grid"]


def classvis_rows(network, res, ids, label_fn, final_iters: int | None = None):
    """Rows of (start, snapshot..., [final]) images for :func:`snapshots_figure`.

    Args:
      network: the visualized network (for display de-normalization).
      res: a class-visualization result (``initial``, ``snapshots``, ``snapshot_iters``, ``images``).
      ids: the objective targets, one row each.
      label_fn: target -> row label.
      final_iters: when given and no snapshot was taken, append the final image labelled with it.
    Returns:
      (rows of images, rows of titles, row labels).
    """
    rows, titles, labels = [], [], []
    for i, t in enumerate(ids):
        imgs = [to_display(network, res.initial[i:i + 1])[0]]
        ttl = ["start"]
        for k, it in enumerate(res.snapshot_iters):
            imgs.append(to_display(network, res.snapshots[k, i:i + 1])[0])
            ttl.append(f"iteration {int(it)}")
        if final_iters is not None and not len(res.snapshot_iters):
            imgs.append(to_display(network, res.images[i:i + 1])[0])
            ttl.append(f"iteration {final_iters}")
        rows.append(imgs)
        titles.append(ttl)
        labels.append(label_fn(t))
    return rows, titles, labels
