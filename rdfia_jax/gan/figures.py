"""Figures of the GAN section: sample grids, loss and score curves, cGAN class grid, interpolation.

Every function writes one PNG (atomically) and returns its path. Images are (N, 32, 32, 1) float in
[-1, 1]. Figures are ``matplotlib.figure.Figure`` objects drawn by an Agg canvas: no display needed,
and no process-wide matplotlib state (backend, pyplot's figure list) is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdfia_jax.fileio import atomic_path


def _figure(figsize: tuple[float, float]):
    """A new Figure with one Axes, on its own Agg canvas: ``(fig, ax)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def tile(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """Arrange (N, H, W, 1) images in [-1, 1] into one (rows*H, cols*W) array in [0, 1]."""
    images = np.clip((np.asarray(images, np.float32)[..., 0] + 1.0) / 2.0, 0.0, 1.0)
    n, h, w = images.shape
    nrows = -(-n // ncols)
    canvas = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    return canvas


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def sample_grid(images: np.ndarray, path: str | Path, *, ncols: int = 8, title: str = "") -> Path:
    """A grid of images (e.g. 64 samples from the fixed z, or real digits)."""
    canvas = tile(images, ncols)
    fig, ax = _figure((canvas.shape[1] / 40, canvas.shape[0] / 40 + (0.4 if title else 0)))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window <= 1:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def loss_curves(history: dict, path: str | Path, *, title: str = "") -> Path:
    """D and G losses per iteration (raw, faint, and a moving average)."""
    fig, ax = _figure((7, 3.5))
    for key, label, color in (("loss_d", "D loss", "tab:blue"), ("loss_g", "G loss", "tab:orange")):
        v = np.asarray(history.get(key, []), np.float64)
        if len(v) == 0:
            continue
        ax.plot(np.arange(len(v)), v, color=color, alpha=0.3, linewidth=0.7)
        w = max(1, min(50, len(v) // 20))
        s = _smooth(v, w)
        ax.plot(np.arange(len(s)) + (w - 1), s, color=color, label=f"{label} (moving avg {w})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("BCE loss")
    ax.legend(fontsize=8)
    ax.set_title(title or "GAN losses", fontsize=10)
    return _save(fig, path)


def score_curves(history: dict, path: str | Path, *, title: str = "") -> Path:
    """Mean D(x) on real images and D(G(z)) (before and after D's update) per iteration."""
    fig, ax = _figure((7, 3.5))
    for key, label, color in (("d_real", "D(x)", "tab:green"), ("d_fake", "D(G(z)) (D step)", "tab:red"),
                              ("d_fake_g", "D(G(z)) (G step)", "tab:purple")):
        v = np.asarray(history.get(key, []), np.float64)
        if len(v) == 0:
            continue
        w = max(1, min(50, len(v) // 20))
        s = _smooth(v, w)
        ax.plot(np.arange(len(s)) + (w - 1), s, color=color, label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean discriminator output")
    ax.legend(fontsize=8)
    ax.set_title(title or "real / fake scores", fontsize=10)
    return _save(fig, path)


def class_grid(images: np.ndarray, ncols: int, path: str | Path, *, title: str = "") -> Path:
    """cGAN grid: row k = class k, column j = fixed z_j (images ordered row-major)."""
    canvas = tile(images, ncols)
    fig, ax = _figure((canvas.shape[1] / 40 + 0.4, canvas.shape[0] / 40 + 0.4))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    step = canvas.shape[0] / 10
    ax.set_yticks([step * (k + 0.5) for k in range(10)], [str(k) for k in range(10)])
    ax.set_xticks([])
    ax.set_ylabel("class")
    ax.set_xlabel("fixed z")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def interpolation(images: np.ndarray, nrows: int, path: str | Path, *, title: str = "") -> Path:
    """Latent interpolation: each row goes from z_a (left) to z_b (right)."""
    ncols = len(images) // nrows
    return sample_grid(images, path, ncols=ncols, title=title or "latent interpolation z_a -> z_b")
