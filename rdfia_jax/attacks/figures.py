"""Figures of the attacks: example grids and robust-accuracy curves.

Drawn on a ``matplotlib.figure.Figure`` with an Agg canvas: no pyplot state, no ``matplotlib.use``.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from rdfia_jax.fileio import atomic_path


def _figure(figsize: tuple[float, float]):
    """A standalone Figure with an Agg canvas (nothing process-wide is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(path)[1][1:] or "png", dpi=110, bbox_inches="tight")


def _show(ax, img: np.ndarray) -> None:
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    if img.ndim == 3 and img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(path: str | os.PathLike, originals: np.ndarray, adversarials: np.ndarray, labels: Sequence[int],
                  preds: Sequence[int], class_names: Sequence[str], *, fields: np.ndarray | None = None,
                  orig_preds: Sequence[int] | None = None, title: str | None = None,
                  label_caption: str = "true") -> None:
    """One row per image: original, adversarial, difference, and (ADef) the displacement field.

    Args:
      path: output image file (.png/.pdf).
      originals, adversarials: (N, H, W, C) RGB or gray images in [0, 1] (denormalize first).
      labels: true classes; preds: predictions on the adversarial images.
      class_names: names indexed by class.
      fields: (N, H, W, 2) ADef displacement fields in pixels, (x, y) order.
      orig_preds: predictions on the originals (default: ``labels``).
      title: figure title.
      label_caption: what ``labels`` are, shown under the original ("true", or "attacked" when the
        labels are the model's own predictions).
    """

    originals = np.asarray(originals, np.float32)
    adversarials = np.asarray(adversarials, np.float32)
    n = originals.shape[0]
    orig_preds = labels if orig_preds is None else orig_preds
    cols = 4 if fields is not None else 3
    fig = _figure((2.4 * cols, 2.4 * n))
    axes = fig.subplots(n, cols, squeeze=False)

    def name(k):
        k = int(k)
        return class_names[k] if 0 <= k < len(class_names) else str(k)

    for i in range(n):
        ax = axes[i]
        _show(ax[0], originals[i])
        ax[0].set_title(f"original: {name(orig_preds[i])}\n({label_caption} {name(labels[i])})", fontsize=8)
        _show(ax[1], adversarials[i])
        fooled = int(preds[i]) != int(labels[i])
        ax[1].set_title(f"adversarial: {name(preds[i])}", fontsize=8, color="red" if fooled else "black")
        diff = (adversarials[i] - originals[i]).mean(axis=-1)
        bound = float(np.abs(diff).max()) or 1.0
        im = ax[2].imshow(diff, cmap="seismic", vmin=-bound, vmax=bound)
        ax[2].set_title(f"difference (max |d| = {bound:.3f})", fontsize=8)
        ax[2].set_xticks([])
        ax[2].set_yticks([])
        fig.colorbar(im, ax=ax[2], fraction=0.046, pad=0.04)
        if fields is not None:
            tau = np.asarray(fields[i], np.float32)
            mag = np.sqrt((tau ** 2).sum(-1))
            im = ax[3].imshow(mag, cmap="viridis")
            h, w = mag.shape
            step = max(1, min(h, w) // 14)
            yy, xx = np.mgrid[0:h:step, 0:w:step]
            # Arrows point where each pixel samples the original from (x right, y down).
            ax[3].quiver(xx, yy, tau[::step, ::step, 0], tau[::step, ::step, 1], color="white",
                         angles="xy", scale_units="xy", scale=max(float(mag.max()), 1e-6) / step)
            ax[3].set_title(f"displacement (max {mag.max():.2f} px)", fontsize=8)
            ax[3].set_xticks([])
            ax[3].set_yticks([])
            fig.colorbar(im, ax=ax[3], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_robust_accuracy(path: str | os.PathLike,
                         panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                         title: str | None = None) -> None:
    """Accuracy under attack against the budget, one panel per budget kind.

    Args:
      path: output image file.
      panels: ``{x-axis label: {curve label: (eps, accuracy)}}``.
      title: figure title.
    """

    fig = _figure((5 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (xlabel, curves) in zip(axes[0], panels.items()):
        for label, (eps, acc) in curves.items():
            ax.plot(np.asarray(eps), np.asarray(acc), marker="o", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy under attack")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
