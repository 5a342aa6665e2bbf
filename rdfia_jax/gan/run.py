"""One GAN / cGAN training run end to end: data, training loop, checkpoints, figures, score, samples.

:func:`train` is what ``rdfia-jax gan`` / ``rdfia-jax cgan`` and the sweeps call. An output folder
holds::

    checkpoints/          orbax checkpoints (resume with resume=True / --resume)
    samples/step_*.png    grids from a fixed z during training (inference-mode BatchNorm)
    samples_final.png     the final grid;  real.png: real training digits beside it
    class_grid.png        (cGAN) fixed z (columns) x the 10 classes (rows)
    interpolation.png     latent interpolation between pairs of fixed z
    losses.png, scores.png, history.csv, summary.json
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_path, atomic_write_bytes
from rdfia_jax.gan import figures, steps
from rdfia_jax.train import checkpoint, loop

DATASETS = ("mnist", "digits")
GRID_SAMPLES = 64
CLASS_GRID_COLUMNS = 8
SCORE_BATCH = 500


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything about a run that is not a hyper-parameter.

    Attributes:
      out: output folder.
      dataset: "mnist" (real MNIST files in data_dir) or "digits" (embedded, NOT MNIST).
      data_dir: raw data folder (default ``$RDFIA_JAX_DATA``).
      resume: continue from the folder's last checkpoint.
      smoke: tiny run (256 training images, batch 32, 1 epoch, 500 scored samples) for a quick check.
      save_every: checkpoint period in steps.
      sample_every: sample-grid period in steps (0: only at the end).
      score: compute the classifier score at the end.
      score_samples: how many generated images to score.
      samples: write this many generated images to ``samples_out`` (npz) at the end.
      samples_out: path of that npz.
      progress: progress bars.
      on_divergence: "raise" (single runs) or "return" (sweeps: record and go on).
    """

    out: str | Path = "runs/gan"
    dataset: str = "digits"
    data_dir: str | Path | None = None
    resume: bool = False
    smoke: bool = False
    save_every: int = 500
    sample_every: int = 250
    score: bool = True
    score_samples: int = 10_000
    samples: int = 0
    samples_out: str | Path | None = None
    progress: bool = True
    on_divergence: str = "raise"


@functools.lru_cache(maxsize=4)
def load_training_data(dataset: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, str, bool]:
    """Training digits resized to 32x32 (uint8, as torchvision's Resize(32) on PIL images).

    Returns:
      ``(images (N, 32, 32, 1) uint8, labels int64, description, is_real_mnist)``.
    """
    from rdfia_jax import data
    from rdfia_jax.data.transforms import gan_resize32

    if dataset not in DATASETS:
        raise RdfiaError(f"--dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    ds = data.load(dataset, "train", data_dir=data_dir)
    images = gan_resize32(np.asarray(ds.images))
    images.setflags(write=False)
    labels = np.asarray(ds.labels, np.int64)
    return images, labels, ds.description, bool(getattr(ds, "is_real_mnist", dataset == "mnist"))


@functools.lru_cache(maxsize=2)
def _scorer(dataset: str, data_dir: str | None, progress: bool):
    from rdfia_jax.gan.score import make_scorer

    return make_scorer(dataset, data_dir=data_dir, progress=progress)


@functools.lru_cache(maxsize=4)
def _ceiling(dataset: str, data_dir: str | None, n: int, progress: bool) -> dict:
    from rdfia_jax.gan.score import real_ceiling

    images, labels, _, _ = load_training_data(dataset, data_dir)
    return real_ceiling(_scorer(dataset, data_dir, progress), images, labels, min(n, len(images)))


def effective_config(cfg: steps.GanConfig, smoke: bool) -> steps.GanConfig:
    """The configuration actually trained (``--smoke`` shrinks batch and epochs, not the networks)."""
    return cfg.replace(batch_size=min(cfg.batch_size, 32), epochs=1) if smoke else cfg


def fixed_latents(cfg: steps.GanConfig) -> dict:
    """The fixed z (and labels) used for every grid of a run: the same across resumes."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), 2)
    k_grid, k_cls, k_interp = jax.random.split(key, 3)
    z_grid = jax.random.normal(k_grid, (GRID_SAMPLES, cfg.nz), jnp.float32)
    z_cls = jax.random.normal(k_cls, (CLASS_GRID_COLUMNS, cfg.nz), jnp.float32)
    # class grid: row k = class k, column j = z_cls[j]
    z_class_grid = jnp.tile(z_cls, (10, 1))
    y_class_grid = jnp.repeat(jnp.arange(10, dtype=jnp.int32), CLASS_GRID_COLUMNS)
    ends = jax.random.normal(k_interp, (2, 4, cfg.nz), jnp.float32)
    t = jnp.linspace(0.0, 1.0, 10, dtype=jnp.float32)
    z_interp = ((1 - t)[None, :, None] * ends[0][:, None, :] + t[None, :, None] * ends[1][:, None, :]).reshape(-1, cfg.nz)
    y_grid = jnp.arange(GRID_SAMPLES, dtype=jnp.int32) % 10
    y_interp = jnp.repeat(jnp.arange(4, dtype=jnp.int32) * 2 + 1, 10)  # cGAN rows: classes 1, 3, 5, 7
    return {"z_grid": z_grid, "y_grid": y_grid, "z_class_grid": z_class_grid, "y_class_grid": y_class_grid,
            "z_interp": z_interp, "y_interp": y_interp}


def generate_many(sample, g_state, cfg: steps.GanConfig, n: int, key) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` images from fresh z (inference mode); cGAN labels cycle 0..9."""
    images, labels = [], []
    for i in range(0, n, SCORE_BATCH):
        z = jax.random.normal(jax.random.fold_in(key, i), (SCORE_BATCH, cfg.nz), jnp.float32)
        y = (jnp.arange(i, i + SCORE_BATCH, dtype=jnp.int32) % 10) if cfg.kind == "cgan" else None
        images.append(np.asarray(sample(g_state, z, y)))
        if y is not None:
            labels.append(np.asarray(y))
    images = np.concatenate(images)[:n]
    return images, (np.concatenate(labels)[:n].astype(np.int64) if labels else None)


def _write_history_csv(history: dict, path: Path) -> None:
    keys = list(history)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step"] + keys)
            for i in range(len(history[keys[0]]) if keys else 0):
                w.writerow([i + 1] + [f"{history[k][i]:.6g}" for k in keys])


def train(cfg: steps.GanConfig, opts: RunOptions, *, name: str = "") -> dict:
    """Train one GAN/cGAN run and write its outputs to ``opts.out``.

    Args:
      cfg: hyper-parameters (``--smoke`` shrinks batch size and epochs, see :func:`effective_config`).
      opts: output folder, data, resume, scoring and sample options.
      name: run name (sweeps), for titles and the summary.
    Returns:
      The summary dict (also written to ``summary.json``): status "ok" or "diverged", steps,
      steps/s, final losses, score and real-digit ceiling.
    Raises:
      RdfiaError: bad options, data missing, checkpoint of another configuration; and
        :class:`rdfia_jax.train.loop.TrainingDiverged` on NaN/inf when ``on_divergence="raise"``
        (after writing the figures so far).
    """
    out = Path(opts.out)
    cfg = effective_config(cfg, opts.smoke)
    if opts.samples < 0:
        raise RdfiaError(f"--samples {opts.samples}: must be >= 0")
    if opts.samples and not opts.samples_out:
        raise RdfiaError("--samples needs --samples-out FILE.npz")
    data_dir = str(opts.data_dir) if opts.data_dir is not None else None
    images, labels, description, is_real = load_training_data(opts.dataset, data_dir)
    if opts.smoke:
        images, labels = images[:256], labels[:256]
    if len(images) < cfg.batch_size:
        raise RdfiaError(f"{description}: {len(images)} images, fewer than one batch of {cfg.batch_size}")
    not_mnist = "" if is_real else f" [data: {description}]"
    title = (name or cfg.kind) + not_mnist
    print(f"{cfg.kind}: {description}; {len(images)} training images; output {out}" + ("" if is_real else " -- NOT MNIST"))

    parts, init_state = steps.build(cfg)
    sample = steps.make_sampler(parts)
    fixed = fixed_latents(cfg)
    conditional = cfg.kind == "cgan"
    batch_arrays = {"x": images, "y": labels.astype(np.int32)} if conditional else {"x": images}
    get_batch, steps_per_epoch = loop.array_batches(batch_arrays, cfg.batch_size, cfg.seed)
    store = checkpoint.CheckpointStore(
        out / "checkpoints",
        fingerprint={"gan": cfg.fingerprint(), "dataset": opts.dataset, "smoke": opts.smoke},
        keep=3,
    )
    (out / "samples").mkdir(parents=True, exist_ok=True)

    def grid_hook(steps_done: int, state: Any, history: dict) -> None:
        imgs = np.asarray(sample(state["g"], fixed["z_grid"], fixed["y_grid"] if conditional else None))
        if np.all(np.isfinite(imgs)):
            figures.sample_grid(imgs, out / "samples" / f"step_{steps_done:06d}.png",
                                title=f"{title}: step {steps_done}")

    hooks = [loop.Hook(opts.sample_every, grid_hook)] if opts.sample_every > 0 else []
    figures.sample_grid(uint8_to_float(images[:GRID_SAMPLES]), out / "real.png", title=f"real: {description}")
    t0 = time.perf_counter()
    try:
        result = loop.run(
            steps.make_train_step(parts), init_state, get_batch,
            steps_per_epoch=steps_per_epoch, epochs=cfg.epochs, store=store,
            save_every=opts.save_every, resume=opts.resume, hooks=hooks,
            metadata={"config": dataclasses.asdict(cfg), "dataset": opts.dataset, "name": name},
            on_divergence="return", progress=opts.progress, desc=name or cfg.kind,
        )
    finally:
        store.close()
    summary: dict[str, Any] = {
        "name": name or cfg.kind,
        "config": dataclasses.asdict(cfg),
        "dataset": opts.dataset,
        "data_description": description,
        "is_real_mnist": is_real,
        "smoke": opts.smoke,
        "steps": result.steps_done,
        "total_steps": result.total_steps,
        "resumed_from": result.resumed_from,
        "status": "diverged" if result.diverged else "ok",
        "message": result.message,
        "wall_s": round(time.perf_counter() - t0, 2),
        "train_s": round(result.seconds, 2),
        "compile_s": round(result.first_step_seconds, 2),
        "steps_per_s": (round((result.steps_run - 1) / (result.seconds - result.first_step_seconds), 3)
                        if result.steps_run > 1 and result.seconds > result.first_step_seconds else None),
        "out": str(out),
    }
    hist = result.history
    for k in ("loss_d", "loss_g", "d_real", "d_fake"):
        if k in hist and len(hist[k]):
            tail = hist[k][-100:]
            summary[f"final_{k}"] = float(np.mean(tail[np.isfinite(tail)])) if np.isfinite(tail).any() else None
    if hist:
        figures.loss_curves(hist, out / "losses.png", title=f"{title}: losses")
        figures.score_curves(hist, out / "scores.png", title=f"{title}: D(x) and D(G(z))")
        _write_history_csv(hist, out / "history.csv")
    if not result.diverged:
        g = result.state["g"]
        final = np.asarray(sample(g, fixed["z_grid"], fixed["y_grid"] if conditional else None))
        figures.sample_grid(final, out / "samples_final.png", title=f"{title}: after {result.steps_done} iterations")
        interp = np.asarray(sample(g, fixed["z_interp"], fixed["y_interp"] if conditional else None))
        figures.interpolation(interp, 4, out / "interpolation.png", title=f"{title}: latent interpolation")
        if conditional:
            cls = np.asarray(sample(g, fixed["z_class_grid"], fixed["y_class_grid"]))
            figures.class_grid(cls, CLASS_GRID_COLUMNS, out / "class_grid.png",
                               title=f"{title}: fixed z (columns) x class (rows)")
        if opts.score:
            n = min(opts.score_samples, 500) if opts.smoke else opts.score_samples
            scorer = _scorer(opts.dataset, data_dir, opts.progress)
            gen, gen_labels = generate_many(sample, g, cfg, n, jax.random.fold_in(jax.random.key(cfg.seed), 3))
            summary["score"] = scorer.score(gen, gen_labels)
            summary["score_real"] = _ceiling(opts.dataset, data_dir, n, opts.progress)
            summary["score_description"] = scorer.description
        if opts.samples:
            gen, gen_labels = generate_many(sample, g, cfg, opts.samples, jax.random.fold_in(jax.random.key(cfg.seed), 4))
            write_samples(opts.samples_out, gen, gen_labels, description=f"{cfg.kind} trained on {description}")
            summary["samples_out"] = str(opts.samples_out)
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    if result.diverged and opts.on_divergence == "raise":
        raise loop.TrainingDiverged(
            f"{result.message}. Figures so far are in {out}; resume with --resume from the last good checkpoint "
            "or lower the learning rates", result)
    return summary


def uint8_to_float(images_u8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1]."""
    return images_u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def write_samples(path: str | Path, images: np.ndarray, labels: np.ndarray | None, *, description: str) -> Path:
    """Write generated images to an npz: ``images`` uint8 (N, 32, 32, 1), ``labels`` (cGAN), ``description``."""
    path = Path(path)
    if path.suffix != ".npz":
        raise RdfiaError(f"--samples-out {path}: must end in .npz")
    u8 = np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    arrays = {"images": u8, "description": np.asarray(description)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def evaluate_checkpoint(cfg: steps.GanConfig, out: str | Path, *, dataset: str = "digits", data_dir=None,
                        smoke: bool = False, n: int = 10_000, step: int | None = None, progress: bool = False) -> dict:
    """Score the generator of a run's checkpoint (default: the latest) without training further.

    Args:
      cfg: the run's configuration (must match the checkpoint's).
      out: the run's output folder.
      dataset, data_dir, smoke: as the run was started.
      n: generated images scored.
      step: which checkpoint (default the latest).
      progress: progress bar if the classifier must be trained.
    Returns:
      ``{"step", "score", "score_real"}``.
    """
    cfg = effective_config(cfg, smoke)
    parts, state = steps.build(cfg)
    store = checkpoint.CheckpointStore(
        Path(out) / "checkpoints", fingerprint={"gan": cfg.fingerprint(), "dataset": dataset, "smoke": smoke})
    try:
        step = store.latest_step() if step is None else step
        state, _ = store.restore(state, step)
    finally:
        store.close()
    data_dir = str(data_dir) if data_dir is not None else None
    sample = steps.make_sampler(parts)
    gen, gen_labels = generate_many(sample, state["g"], cfg, n, jax.random.fold_in(jax.random.key(cfg.seed), 3))
    return {"step": step, "score": _scorer(dataset, data_dir, progress).score(gen, gen_labels),
            "score_real": _ceiling(dataset, data_dir, n, progress)}
