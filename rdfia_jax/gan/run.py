"""One GAN / cGAN training run end to end: data, training loop, checkpoints, figures, score, samples.

:func:`train` is what ``rdfia-jax gan`` / ``rdfia-jax cgan`` and the sweeps call. An output folder
holds::

    checkpoints/          orbax checkpoints (resume with resume=True / --resume)
    samples/step_*.png    grids from a fixed z during training (inference-mode BatchNorm)
    samples_final.png     the final grid;  real.png: real training digits beside it
    class_grid.png        (cGAN) fixed z (columns) x the 10 classes (rows)
    interpolation.png     latent interpolation between pairs of fixed z
    losses.png, scores.png, history.csv, summary.json

The same command run again on a finished folder trains nothing: it says where the outputs are.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_path, atomic_write_bytes
from rdfia_jax.gan import figures, steps
from rdfia_jax.gan.config import DATASETS, RunOptions  # noqa: F401 (re-exported: run.RunOptions)
from rdfia_jax.train import checkpoint, loop

GRID_SAMPLES = 64
CLASS_GRID_COLUMNS = 8
SCORE_BATCH = 500


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


#: ``--dataset digits`` epochs after which the DCGAN's samples are recognizable digits (judged on
#: its sample grids and classifier score); the cGAN is given as many.
REAL_RESULT_EPOCHS = {"gan": 30, "cgan": 30}
#: How long that takes on 2 CPU cores (with the score at the end; measured times in benchmarks/RESULTS.md).
REAL_RESULT_TIME = {"gan": "a few minutes on 2 CPU cores", "cgan": "several times longer than the DCGAN on a CPU"}


def smoke_note(kind: str) -> str:
    """What a smoke run is, and the command that gives a real result instead."""
    return (f"this was a smoke run: a pipeline check (one epoch of 256 images), so its samples look like "
            f"noise and its scores mean nothing. For recognizable digits run: rdfia-jax {kind} --dataset digits "
            f"--epochs {REAL_RESULT_EPOCHS[kind]} --out runs/{kind}_digits ({REAL_RESULT_TIME[kind]}), "
            f"or the whole report's demo: rdfia-jax reproduce")


def _check_existing(store: checkpoint.CheckpointStore, target: Callable[[], Any], opts: RunOptions,
                    cfg: steps.GanConfig, total: int, steps_per_epoch: int) -> dict | None:
    """What the output folder's checkpoints mean for this request, before anything is written.

    ``target()`` gives the state structure to restore into; it is built only to name the settings
    that differ (building the networks is the slow part of a rerun).

    Returns:
      None: no checkpoint, or a resume to go on with. The stored summary: the same run is already
      complete (nothing to train).
    Raises:
      RdfiaError: checkpoints of other settings (the keys that differ), an unfinished run without
        ``--resume``, or a run already past the requested number of epochs.
    """
    latest = store.latest_step()
    if latest is None:
        return None
    meta = store.read_metadata(latest)
    if not opts.resume and meta.get("fingerprint") != store.fingerprint:
        store.restore(target(), latest)  # raises naming the settings that differ (unless only defaults do)
    user = meta.get("user", {})
    done, run_total = int(user.get("steps_done", latest)), user.get("total_steps")
    out = Path(opts.out)
    loop.check_resume_length(store.directory / str(latest), done, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs)
    if opts.resume:
        return None
    if done == total == run_total:
        summary_path = out / "summary.json"
        if not summary_path.is_file():
            raise RdfiaError(f"{out} holds a complete run (step {done} of {total}) but no summary.json: "
                             "add --resume to write its outputs again (nothing is retrained)")
        print(f"{cfg.kind}: the run in {out} is already complete (step {done} of {total}); nothing to train. "
              f"Its figures: {out}/samples_final.png, losses.png, scores.png, interpolation.png"
              + (", class_grid.png" if cfg.kind == "cgan" else "") + f"; summary: {summary_path}")
        summary = json.loads(summary_path.read_text())
        summary["already_complete"] = True
        return summary
    if done == run_total:  # finished, and this request asks for more epochs
        raise RdfiaError(f"{out} holds a finished run of {done} steps; add --resume to continue it to step {total}, "
                         "or choose another --out")
    raise RdfiaError(f"{out} holds an unfinished run (step {done} of {run_total}); add --resume to continue it"
                     + (f" to step {total}" if total != run_total else "") + ", or choose another --out")


def _divergence_advice(cfg: steps.GanConfig, message: str, has_checkpoint: bool) -> str:
    """What to do after a divergence, true for this run: resume with lower rates, or rerun with them."""
    lower = f"--lr-d {cfg.lr_d / 10:g} --lr-g {cfg.lr_g / 10:g}"
    if has_checkpoint:
        return (f"resume from the last good checkpoint with --resume --allow-lr-change {lower} (lower learning "
                "rates; the change and its step are recorded)")
    return ("" if "no checkpoint was written" in message else "no checkpoint was written; ") + \
        f"rerun with lower learning rates, e.g. {lower}"


def train(cfg: steps.GanConfig, opts: RunOptions, *, name: str = "") -> dict:
    """Train one GAN/cGAN run and write its outputs to ``opts.out``.

    A folder that already holds this run, complete, is not retrained: its stored summary is
    returned. Nothing is written before the checkpoints in the folder have been checked against
    this request.

    Args:
      cfg: hyper-parameters (``--smoke`` shrinks batch size and epochs, see :func:`effective_config`).
      opts: output folder, data, resume, scoring and sample options.
      name: run name (sweeps), for titles and the summary.
    Returns:
      The summary dict (also written to ``summary.json``): status "ok" or "diverged", steps,
      steps/s, final losses, score and real-digit ceiling, learning-rate changes on resume.
    Raises:
      RdfiaError: bad options or paths, data missing, checkpoints of other settings, an unfinished
        run without resume; and :class:`rdfia_jax.train.loop.TrainingDiverged` on NaN/inf when
        ``on_divergence="raise"`` (after writing the figures so far).
    """
    out = Path(opts.out)
    cfg = effective_config(cfg, opts.smoke)
    opts.check_paths()
    data_dir = str(opts.data_dir) if opts.data_dir is not None else None
    images, labels, description, is_real = load_training_data(opts.dataset, data_dir)
    if opts.smoke:
        images, labels = images[:256], labels[:256]
    if len(images) < cfg.batch_size:
        raise RdfiaError(f"{description}: {len(images)} images, fewer than one batch of {cfg.batch_size}")
    not_mnist = "" if is_real else f" [data: {description}]"
    title = (name or cfg.kind) + not_mnist

    conditional = cfg.kind == "cgan"
    batch_arrays = {"x": images, "y": labels.astype(np.int32)} if conditional else {"x": images}
    get_batch, steps_per_epoch = loop.array_batches(batch_arrays, cfg.batch_size, cfg.seed)
    # may_change only when asked (the store refuses any other difference, naming the keys)
    may_change = {"may_change": ("gan.lr_d", "gan.lr_g")} if opts.allow_lr_change else {}
    store = checkpoint.CheckpointStore(
        out / "checkpoints",
        fingerprint={"gan": cfg.fingerprint(), "dataset": opts.dataset, "smoke": opts.smoke},
        keep=3, **may_change,
    )
    try:
        complete = _check_existing(store, lambda: steps.build(cfg)[1], opts, cfg, steps_per_epoch * cfg.epochs,
                                   steps_per_epoch)
    except BaseException:
        store.close()
        raise
    if complete is not None:
        store.close()
        return complete
    parts, init_state = steps.build(cfg)
    print(f"{cfg.kind}: {description}; {len(images)} training images; output {out}" + ("" if is_real else " -- NOT MNIST"))
    sample = steps.make_sampler(parts)
    fixed = fixed_latents(cfg)
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
        has_checkpoint = store.latest_step() is not None
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
        "changes": list(getattr(result, "changes", [])),  # learning rates changed on resume, with their step
    }
    if opts.smoke:
        summary["note"] = smoke_note(cfg.kind)
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
            f"{result.message}. Figures so far are in {out}; "
            + _divergence_advice(cfg, result.message, has_checkpoint), result)
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
