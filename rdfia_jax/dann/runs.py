"""The DANN section's runs: data, one training run per (run name, seed), results table.

Run names (:data:`RUN_NAMES`), all with the practical's networks and SGD(momentum 0.9,
lr 0.01 / (1 + 10 p)^0.75):

* ``source-only``: labelled source only, 10 epochs, batch 128 (the lower bound);
* ``target-only``: labelled target only, 10 epochs, batch 128 (the upper bound; uses target labels);
* ``dann``: 20 epochs, 64 source + 64 target per step, GRL with lambda(p) (gamma 2 by default);
* ``dann-no-grl``: same, the domain classifier attached without GRL (its gradient helps it);
* ``dann-positive``: GRL factor +lambda(p) instead of -lambda(p);
* ``dann-const-1`` / ``dann-const-0.1``: constant GRL factors -1 / -0.1 from the start;
* ``pseudo-label``: labelled source loss + alpha(p) x loss on confident target pseudo-labels;
* ``dann-pseudo-label``: DANN plus the pseudo-label loss, whose weight ramps up over the second half
  of training (once lambda(p) > 0.46 has aligned the features), instead of from p = 0.1 on unaligned ones.

Input standardization (:data:`INPUT_NORMS`, ``--input-norm``): ``source`` (the practical: both
domains with the MNIST-train mean and std) or ``per-domain`` (each domain with the scalar mean and std
of its own train images; the target's are computed from unlabelled images only).

Parameter averaging (``--ema-decay d``): the state also carries an exponential moving average of the
parameters; the run then reports the averaged network (``result.json`` keeps the last iterate's numbers
under ``"last_iterate"``). Training is unchanged. Gradient clipping (``--clip-norm c``): the gradient's
global norm is capped at ``c`` before the momentum (every run logs the unclipped norm, ``grad_norm``).

Every run also measures the proxy A-distance of its features (:mod:`rdfia_jax.dann.alignment`: a fresh
linear probe telling source test from target test features apart, no class labels).

Every run also trains its domain classifier; in the baselines and pseudo-labelling it is a *probe*
(GRL factor 0: it learns to tell the domains apart from the features but does not shape them), so
every run reports a domain accuracy: how separable its features are.

Outputs under ``out/<run>/seed<k>/``: ``checkpoints/``, ``result.json``, ``history.npz``,
``curves.png``, ``tsne.png``; and ``out/results.csv`` + ``out/results.md`` over all runs found.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdfia_jax.dann import steps as dsteps
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_write_bytes


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What distinguishes one run of the section.

    Attributes:
      name: the run name.
      objective: "dann" or "pseudo" (see :class:`rdfia_jax.dann.steps.StepConfig`).
      labelled: "source" or "target".
      grl_scale, grl_offset: GRL strength = grl_scale * lambda(p) + grl_offset.
      epochs: default number of epochs.
      src_batch, tgt_batch: images per step from each domain (one forward pass).
      about: one line for the results table.
      pseudo_ramp: for objective "pseudo": the pseudo-label weight grows from 0 at p = ramp[0] to 1
        at p = ramp[1].
    """

    name: str
    objective: str
    labelled: str
    grl_scale: float
    grl_offset: float
    epochs: int
    src_batch: int
    tgt_batch: int
    about: str
    pseudo_ramp: tuple[float, float] = (0.1, 0.5)


RUNS: dict[str, RunSpec] = {
    r.name: r
    for r in (
        RunSpec("source-only", "dann", "source", 0.0, 0.0, 10, 128, 64,
                "labelled source only (domain classifier = probe)"),
        RunSpec("target-only", "dann", "target", 0.0, 0.0, 10, 64, 128,
                "labelled target only: upper bound (domain classifier = probe)"),
        RunSpec("dann", "dann", "source", 1.0, 0.0, 20, 64, 64, "DANN, GRL factor -lambda(p)"),
        RunSpec("dann-no-grl", "dann", "source", 0.0, -1.0, 20, 64, 64,
                "domain classifier without GRL (factor +1)"),
        RunSpec("dann-positive", "dann", "source", -1.0, 0.0, 20, 64, 64, "GRL factor +lambda(p)"),
        RunSpec("dann-const-1", "dann", "source", 0.0, 1.0, 20, 64, 64, "GRL factor constant -1"),
        RunSpec("dann-const-0.1", "dann", "source", 0.0, 0.1, 20, 64, 64, "GRL factor constant -0.1"),
        RunSpec("pseudo-label", "pseudo", "source", 0.0, 0.0, 20, 64, 64,
                "source loss + alpha(p) x confident target pseudo-label loss (probe)"),
        # The ramp starts at p = 0.5 (lambda 0.46): in the DANN runs the domain classifier's batch
        # accuracy is still 0.8-0.98 before that and settles near 0.7 after p ~ 0.65 (a domain-side
        # criterion, no target labels); pseudo-labels from unaligned features fail (run pseudo-label).
        RunSpec("dann-pseudo-label", "pseudo", "source", 1.0, 0.0, 20, 64, 64,
                "DANN + alpha(p) x confident target pseudo-label loss, alpha 0 -> 1 over p 0.5-1",
                pseudo_ramp=(0.5, 1.0)),
    )
}
RUN_NAMES = tuple(RUNS)
INPUT_NORMS = {
    "source": "both domains standardized with the source train statistics (the practical)",
    # MNIST-M's pixels average 0.45 against MNIST's 0.13 (std 0.25 against 0.31): with MNIST's
    # statistics every MNIST-M image enters the network shifted by about one standard deviation.
    # Standardizing each domain with its own unlabelled statistics removes that shift at the input.
    "per-domain": "each domain standardized with the statistics of its own train images",
}
DATASET_PAIRS = {"mnist": ("mnist", "mnistm"), "digits": ("digits", "digits_m")}

# --smoke: a few hundred steps on subsets, to check the whole pipeline in a minute or two.
SMOKE_TRAIN, SMOKE_TEST, SMOKE_EPOCHS, SMOKE_TSNE = 1024, 500, 1, 150
TSNE_PER_DOMAIN = 1000
EVAL_SUBSET = 2000  # per-epoch evaluation curves use this many test images per domain


@dataclasses.dataclass
class Domains:
    """Source and target train/test sets (``.images`` uint8 NHWC, ``.labels`` int64)."""

    source_train: Any
    source_test: Any
    target_train: Any
    target_test: Any
    source_name: str = "source"
    target_name: str = "target"
    mean: float | None = None  # standardization; None: computed from source_train
    std: float | None = None


def get_spec(name: str) -> RunSpec:
    """The :class:`RunSpec` of ``name``; RdfiaError naming the valid runs otherwise."""
    if name not in RUNS:
        raise RdfiaError(f"unknown DANN run {name!r}; choose one of {', '.join(RUN_NAMES)} (or 'all')")
    return RUNS[name]


def check_domains(domains: Domains) -> None:
    """Refuses empty sets, non-uint8/NHWC images and image shapes that cannot share one network."""
    sets = {"source train": domains.source_train, "source test": domains.source_test,
            "target train": domains.target_train, "target test": domains.target_test}
    hw = None
    for what, ds in sets.items():
        images = np.asarray(ds.images)
        labels = np.asarray(ds.labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise RdfiaError(f"{what} images must be uint8 NHWC, got {images.dtype} shape {images.shape}")
        if images.shape[0] == 0:
            raise RdfiaError(f"{what} set is empty ({getattr(ds, 'name', '?')}): DANN needs images "
                             "in both domains; check --data-dir / --dataset-pair")
        if labels.shape != images.shape[:1]:
            raise RdfiaError(f"{what}: {images.shape[0]} images but labels of shape {labels.shape}")
        if images.shape[-1] not in (1, 3):
            raise RdfiaError(f"{what} images have {images.shape[-1]} channels; expected 1 or 3")
        if hw is None:
            hw = images.shape[1:3]
        elif images.shape[1:3] != hw:
            raise RdfiaError(f"image shapes differ: {what} is {images.shape[1:3]}, the source train "
                             f"set {hw}; source and target must have the same height and width")
    if hw != (28, 28):
        raise RdfiaError(f"images are {hw[0]}x{hw[1]}; the practical's network takes 28x28 images")


def load_domains(pair: str = "mnist", *, data_dir=None, smoke: bool = False) -> Domains:
    """Source/target train/test sets of a dataset pair.

    Args:
      pair: "mnist" (MNIST -> MNIST-M, needs the raw files) or "digits" (the embedded sklearn
        digits -> digits_m; NOT MNIST, for quick checks without any download).
      data_dir: raw-data folder for :func:`rdfia_jax.data.load`.
      smoke: keep only small subsets (first images of each split).
    """
    from rdfia_jax import data

    if pair not in DATASET_PAIRS:
        raise RdfiaError(f"unknown --dataset-pair {pair!r}; choose one of {', '.join(DATASET_PAIRS)}")
    src, tgt = DATASET_PAIRS[pair]
    sets = [data.load(n, s, data_dir=data_dir) for n, s in ((src, "train"), (src, "test"),
                                                            (tgt, "train"), (tgt, "test"))]
    if smoke:
        sets = [ds.subset(np.arange(min(len(ds), SMOKE_TRAIN if ds.split == "train" else SMOKE_TEST)))
                for ds in sets]
    mean = std = None
    if src == "mnist":  # the practical's constants (= statistics of the full MNIST train set)
        mean, std = data.MNIST_TRAIN_MEAN, data.MNIST_TRAIN_STD
    return Domains(*sets, source_name=src, target_name=tgt, mean=mean, std=std)


def image_statistics(images_u8: np.ndarray) -> tuple[float, float]:
    """One scalar mean and std of a domain's train images in [0, 1] (MNIST: 0.1307, 0.3081)."""
    x = np.asarray(images_u8, np.float64) / 255.0
    return float(x.mean()), float(x.std())


def step_config(spec: RunSpec, *, steps_per_epoch: int, epochs: int, gamma: float,
                mean: float, std: float, lr_per_epoch: bool = False,
                target_stats: tuple[float, float] | None = None, ema_decay: float = 0.0,
                clip_norm: float | None = None) -> dsteps.StepConfig:
    """The :class:`StepConfig` of a run; ``target_stats``: the target's own (mean, std), or None."""
    return dsteps.StepConfig(
        objective=spec.objective, labelled=spec.labelled, total_steps=steps_per_epoch * epochs,
        steps_per_epoch=steps_per_epoch, gamma=float(gamma), grl_scale=spec.grl_scale,
        grl_offset=spec.grl_offset, lr_per_epoch=lr_per_epoch, mean=mean, std=std,
        pseudo_ramp=tuple(spec.pseudo_ramp),
        target_mean=None if target_stats is None else float(target_stats[0]),
        target_std=None if target_stats is None else float(target_stats[1]), ema_decay=float(ema_decay),
        clip_norm=None if clip_norm is None else float(clip_norm))


def make_get_batch(spec: RunSpec, domains: Domains, seed: int):
    """``(get_batch(epoch, index), steps_per_epoch)``: source and target shuffled independently
    (``epoch_order`` streams 0 and 1 of the same seed); an epoch ends with the shorter domain."""
    from rdfia_jax.train.loop import array_batches

    src_arrays = {"src_x": np.asarray(domains.source_train.images),
                  "src_y": np.asarray(domains.source_train.labels, np.int32)}
    tgt_arrays = {"tgt_x": np.asarray(domains.target_train.images)}
    if spec.labelled == "target":  # only the upper bound ever sees target labels
        tgt_arrays["tgt_y"] = np.asarray(domains.target_train.labels, np.int32)
    for what, arrays, bs in (("source", src_arrays, spec.src_batch), ("target", tgt_arrays, spec.tgt_batch)):
        n = len(next(iter(arrays.values())))
        if n < bs:
            raise RdfiaError(f"the {what} train set has {n} images, fewer than one batch of {bs}")
    get_src, spe_src = array_batches(src_arrays, spec.src_batch, seed, stream=0)
    get_tgt, spe_tgt = array_batches(tgt_arrays, spec.tgt_batch, seed, stream=1)

    def get_batch(epoch: int, index: int) -> dict:
        return {**get_src(epoch, index), **get_tgt(epoch, index)}

    return get_batch, min(spe_src, spe_tgt)


def _tsne_indices(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def variant_name(name: str, spec: RunSpec, *, epochs: int, gamma: float, smoke: bool, lr_per_epoch: bool,
                 input_norm: str = "source", ema_decay: float = 0.0, clip_norm: float | None = None) -> str:
    """The run's folder name: ``name`` plus its non-default settings, so variants share an output folder.

    ``dann`` with the defaults stays ``dann``; ``--gamma 10 --lr-per-epoch`` gives
    ``dann-gamma10-lr-per-epoch``, ``--input-norm per-domain`` ``dann-per-domain-norm``,
    ``--ema-decay 0.999`` ``dann-ema0.999``, ``--clip-norm 5`` ``dann-clip5``, ``--epochs 100``
    ``dann-100ep``, ``--smoke`` ``dann-smoke``.
    """
    parts = [name]
    if gamma != 2.0:
        parts.append(f"gamma{gamma:g}")
    if lr_per_epoch:
        parts.append("lr-per-epoch")
    if input_norm != "source":
        parts.append(f"{input_norm}-norm")
    if ema_decay:
        parts.append(f"ema{ema_decay:g}")
    if clip_norm is not None:
        parts.append(f"clip{clip_norm:g}")
    if smoke:
        parts.append("smoke")
    elif epochs != spec.epochs:
        parts.append(f"{epochs}ep")
    return "-".join(parts)


def _setup(name: str, seed: int, *, out, domains: Domains, epochs: int | None, gamma: float, smoke: bool,
           lr_per_epoch: bool, batch_sizes: tuple[int, int] | None, input_norm: str,
           ema_decay: float = 0.0, clip_norm: float | None = None) -> dict:
    """Everything a run (or an evaluation of its checkpoints) derives from its arguments."""
    spec = get_spec(name)
    if input_norm not in INPUT_NORMS:
        raise RdfiaError(f"unknown --input-norm {input_norm!r}; choose one of {', '.join(INPUT_NORMS)}")
    if not 0.0 <= ema_decay < 1.0:
        raise RdfiaError(f"--ema-decay {ema_decay}: must be in [0, 1) (0: no averaging; e.g. 0.999)")
    if clip_norm is not None and not clip_norm > 0:
        raise RdfiaError(f"--clip-norm {clip_norm}: must be > 0")
    if batch_sizes is not None:
        if min(batch_sizes) < 1:
            raise RdfiaError(f"batch sizes {batch_sizes}: must be >= 1")
        spec = dataclasses.replace(spec, src_batch=int(batch_sizes[0]), tgt_batch=int(batch_sizes[1]))
    check_domains(domains)
    if epochs is None:
        epochs = SMOKE_EPOCHS if smoke else spec.epochs
    if epochs < 1:
        raise RdfiaError(f"--epochs {epochs}: must be >= 1")
    if domains.mean is not None and domains.std is not None:
        mean, std = float(domains.mean), float(domains.std)
    else:
        mean, std = image_statistics(domains.source_train.images)
    # The target's statistics come from its TRAIN images, which a run sees without labels.
    target_stats = image_statistics(domains.target_train.images) if input_norm == "per-domain" else None
    get_batch, steps_per_epoch = make_get_batch(spec, domains, seed)
    cfg = step_config(spec, steps_per_epoch=steps_per_epoch, epochs=epochs, gamma=gamma, mean=mean,
                      std=std, lr_per_epoch=lr_per_epoch, target_stats=target_stats, ema_decay=ema_decay,
                      clip_norm=clip_norm)
    graphdef, state = dsteps.init_state(seed, cfg)
    fingerprint = {"model": "dann-practical", "run": name, "seed": seed, "config": dataclasses.asdict(cfg),
                   "src_batch": spec.src_batch, "tgt_batch": spec.tgt_batch,
                   "source": domains.source_name, "target": domains.target_name,
                   "n_source": len(domains.source_train.images), "n_target": len(domains.target_train.images)}
    # StepConfig fields added after the first release, at their "off" values: checkpoints written
    # before they existed describe the same run (see CheckpointStore's fingerprint_defaults).
    fingerprint_defaults = {"config": {"target_mean": None, "target_std": None, "ema_decay": 0.0,
                                       "clip_norm": None}}
    run_dir = Path(out) / variant_name(name, spec, epochs=epochs, gamma=gamma, smoke=smoke,
                                       lr_per_epoch=lr_per_epoch, input_norm=input_norm,
                                       ema_decay=ema_decay, clip_norm=clip_norm) / f"seed{seed}"
    return {"spec": spec, "cfg": cfg, "epochs": epochs, "run_dir": run_dir,
            "graphdef": graphdef, "state": state, "get_batch": get_batch,
            "steps_per_epoch": steps_per_epoch, "fingerprint": fingerprint,
            "fingerprint_defaults": fingerprint_defaults}


def evaluate_checkpoint(name: str, seed: int = 0, *, out, domains: Domains, step: int | None = None,
                        epochs: int | None = None, gamma: float = 2.0, smoke: bool = False,
                        lr_per_epoch: bool = False, batch_sizes: tuple[int, int] | None = None,
                        input_norm: str = "source", ema_decay: float = 0.0, clip_norm: float | None = None,
                        params: str = "params",
                        pad: bool = False) -> dict:
    """Test accuracies of a run's saved checkpoint (default: the latest), e.g. of a run still going.

    The run's arguments must be those it was started with (the checkpoint's fingerprint is checked).
    ``params``: which parameters to evaluate, ``"params"`` (the last iterate) or ``"ema_params"``
    (runs with ``ema_decay``). ``pad``: also measure the proxy A-distance of the features
    (:func:`feature_alignment`).

    Returns:
      :func:`rdfia_jax.dann.steps.evaluate`'s dict plus ``"step"`` and ``"total_steps"`` (and
      ``"pad"``, ``"pad_error"``).
    """
    from rdfia_jax.train import checkpoint

    setup = _setup(name, seed, out=out, domains=domains, epochs=epochs, gamma=gamma, smoke=smoke,
                   lr_per_epoch=lr_per_epoch, batch_sizes=batch_sizes, input_norm=input_norm,
                   ema_decay=ema_decay, clip_norm=clip_norm)
    if params not in setup["state"]:
        raise RdfiaError(f"a checkpoint of this run holds no {params!r} (ema_params need --ema-decay)")
    with checkpoint.CheckpointStore(setup["run_dir"] / "checkpoints", fingerprint=setup["fingerprint"],
                                    fingerprint_defaults=setup["fingerprint_defaults"]) as store:
        step = store.latest_step() if step is None else step
        if step is None:
            raise RdfiaError(f"no checkpoint yet in {setup['run_dir'] / 'checkpoints'}")
        state, _ = store.restore(setup["state"], step)
    eval_src, eval_tgt = dsteps.make_eval_fns(setup["graphdef"], setup["cfg"])
    res = dsteps.evaluate(eval_src, state[params], domains.source_test, domains.target_test,
                          target_eval_fn=eval_tgt)
    res.update(step=step, total_steps=setup["cfg"].total_steps)
    if pad:
        res.update(feature_alignment(eval_src, eval_tgt, state[params], domains, seed, smoke=smoke)[0])
    return res


def feature_alignment(eval_src, eval_tgt, params, domains: Domains, seed: int, *, smoke: bool = False):
    """Features of the t-SNE subsets (1,000 source test + 1,000 target test images) and their proxy
    A-distance.

    Returns:
      ``({"pad": ..., "pad_error": ...}, source_features, target_features)``.
    """
    from rdfia_jax.dann.alignment import proxy_a_distance

    k = SMOKE_TSNE if smoke else TSNE_PER_DOMAIN
    si = _tsne_indices(len(domains.source_test.images), k, seed)
    ti = _tsne_indices(len(domains.target_test.images), k, seed + 1)
    _, _, fs = dsteps.predict(eval_src, params, np.asarray(domains.source_test.images)[si], want_features=True)
    _, _, ft = dsteps.predict(eval_tgt, params, np.asarray(domains.target_test.images)[ti], want_features=True)
    pad = proxy_a_distance(fs, ft, seed=seed)
    return {"pad": pad["pad"], "pad_error": pad["error"]}, fs, ft


def run_one(name: str, seed: int = 0, *, out, domains: Domains | None = None, epochs: int | None = None,
            gamma: float = 2.0, smoke: bool = False, resume: bool = False, dataset_pair: str = "mnist",
            data_dir=None, lr_per_epoch: bool = False, save_every: int = 1000, figures: bool = True,
            progress: bool = True, eval_every_epoch: bool = True, hooks: Sequence = (),
            batch_sizes: tuple[int, int] | None = None, input_norm: str = "source",
            ema_decay: float = 0.0, clip_norm: float | None = None) -> dict:
    """Train and evaluate one run; writes its outputs under ``out/<name>/seed<seed>/``.

    Args:
      name: a run name (:data:`RUN_NAMES`).
      seed: network initialisation and data-order seed.
      out: output folder.
      domains: the data (default: :func:`load_domains` of ``dataset_pair``).
      epochs: override the run's default number of epochs.
      gamma: lambda(p) steepness (2: practical, 10: paper).
      smoke: small subsets, 1 epoch, small t-SNE.
      resume: continue from the run's latest checkpoint.
      dataset_pair, data_dir: see :func:`load_domains`.
      lr_per_epoch: step the lr's progress per epoch, as the original notebook did.
      save_every: checkpoint period in steps.
      figures: write curves.png and tsne.png.
      progress: report progress (a bar on a terminal, plain lines in a log).
      eval_every_epoch: evaluate on test subsets after every epoch (curves).
      hooks: extra :class:`rdfia_jax.train.loop.Hook` callbacks (progress reports, tests).
      batch_sizes: override the run's (source, target) images per step (tests, small data).
      input_norm: a key of :data:`INPUT_NORMS`.
      ema_decay: 0, or the decay of a parameter average that the run evaluates (and reports)
        instead of the last iterate.
      clip_norm: None, or the cap on the gradient's global norm.
    Returns:
      The result dict written to ``result.json``, plus ``"state"``: the final training state.
    """
    from rdfia_jax.train import checkpoint, loop

    if domains is None:
        get_spec(name)  # unknown run name: fail before loading data
        domains = load_domains(dataset_pair, data_dir=data_dir, smoke=smoke)
    setup = _setup(name, seed, out=out, domains=domains, epochs=epochs, gamma=gamma, smoke=smoke,
                   lr_per_epoch=lr_per_epoch, batch_sizes=batch_sizes, input_norm=input_norm,
                   ema_decay=ema_decay, clip_norm=clip_norm)
    spec, cfg, epochs, run_dir = setup["spec"], setup["cfg"], setup["epochs"], setup["run_dir"]
    graphdef, state = setup["graphdef"], setup["state"]
    get_batch, steps_per_epoch, fingerprint = setup["get_batch"], setup["steps_per_epoch"], setup["fingerprint"]
    step = dsteps.make_train_step(graphdef, cfg, jit=False)
    eval_src, eval_tgt = dsteps.make_eval_fns(graphdef, cfg)

    def evaluate(params, source, target) -> dict:
        return dsteps.evaluate(eval_src, params, source, target, target_eval_fn=eval_tgt)

    # The network the run reports: the parameter average when there is one, else the last iterate.
    reported = "ema_params" if cfg.ema_decay > 0 else "params"

    eval_rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    sub = lambda ds: ds if len(ds.images) <= EVAL_SUBSET else _Subset(ds, eval_rng.choice(len(ds.images), EVAL_SUBSET, replace=False))  # noqa: E731
    src_eval, tgt_eval = sub(domains.source_test), sub(domains.target_test)
    evals: list[dict] = []

    def on_epoch(steps_done: int, st, history) -> None:
        if steps_done % steps_per_epoch == 0 or steps_done == cfg.total_steps:
            res = evaluate(st[reported], src_eval, tgt_eval)
            if reported != "params":
                res["last_iterate"] = evaluate(st["params"], src_eval, tgt_eval)
            res["step"] = steps_done
            evals.append(res)

    store = checkpoint.CheckpointStore(run_dir / "checkpoints", fingerprint=fingerprint, keep=2,
                                       fingerprint_defaults=setup["fingerprint_defaults"])
    hooks = ([loop.Hook(every=steps_per_epoch, fn=on_epoch)] if eval_every_epoch else []) + list(hooks)
    trace_before = dsteps.TRACE_COUNTS["train_step"]
    try:
        result = loop.run(step, state, get_batch, steps_per_epoch=steps_per_epoch, epochs=epochs,
                          store=store, save_every=save_every, resume=resume, hooks=hooks,
                          metadata={"run": name, "seed": seed}, progress=progress,
                          desc=f"dann {run_dir.parent.name} seed {seed}")
    finally:
        store.close()
    traces = dsteps.TRACE_COUNTS["train_step"] - trace_before
    if result.steps_run > 0 and traces != 1:
        raise AssertionError(f"the training step was traced {traces} times in one run (expected once)")

    params = result.state[reported]
    final = evaluate(params, domains.source_test, domains.target_test)
    alignment, fs, ft = feature_alignment(eval_src, eval_tgt, params, domains, seed, smoke=smoke)
    record = {
        "run": name, "seed": seed, "epochs": epochs, "steps": result.steps_done,
        "steps_per_epoch": steps_per_epoch, "gamma": gamma, "lr_per_epoch": lr_per_epoch,
        "input_norm": input_norm,
        "source": domains.source_name, "target": domains.target_name,
        "source_acc": final["source_acc"], "target_acc": final["target_acc"],
        "domain_acc": final["domain_acc"], "domain_acc_source": final["domain_acc_source"],
        "domain_acc_target": final["domain_acc_target"], **alignment,
        "ema_decay": cfg.ema_decay, "clip_norm": cfg.clip_norm,
        "wall_s": result.seconds, "steps_run": result.steps_run,
        "steps_per_s": result.steps_run / result.seconds if result.seconds > 0 else float("nan"),
        "resumed_from": result.resumed_from, "smoke": smoke, "about": spec.about,
        "src_batch": spec.src_batch, "tgt_batch": spec.tgt_batch,
        "evals": evals,
    }
    if reported != "params":  # the last iterate's numbers, for the comparison with its average
        last = evaluate(result.state["params"], domains.source_test, domains.target_test)
        last.update(feature_alignment(eval_src, eval_tgt, result.state["params"], domains, seed, smoke=smoke)[0])
        record["last_iterate"] = last
    run_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **result.history)
    atomic_write_bytes(run_dir / "history.npz", buf.getvalue())
    if figures:
        from rdfia_jax.dann import figures as figs

        title = f"{name} (seed {seed}, {epochs} ep): {domains.source_name} {final['source_acc']:.4f}, " \
                f"{domains.target_name} {final['target_acc']:.4f}, domain {final['domain_acc']:.3f}"
        figs.plot_curves(result.history, evals, run_dir / "curves.png", title)
        emb = figs.tsne_embedding(np.concatenate([fs, ft]), seed=seed)
        is_src = np.concatenate([np.ones(len(fs), bool), np.zeros(len(ft), bool)])
        figs.plot_tsne(emb, is_src, run_dir / "tsne.png", f"t-SNE of features: {title}",
                       names=(domains.source_name, domains.target_name))
        record["figures"] = ["curves.png", "tsne.png"]
    atomic_write_bytes(run_dir / "result.json", json.dumps(record, indent=2).encode())
    record["state"] = result.state  # not in result.json: the final params and optimizer state
    return record


class _Subset:
    """A lightweight view ``(images[idx], labels[idx])`` of a dataset."""

    def __init__(self, ds, idx):
        idx = np.sort(np.asarray(idx))
        self.images = np.asarray(ds.images)[idx]
        self.labels = np.asarray(ds.labels)[idx]


# ------------------------------------------------------------------------------------------------
# Results table

TABLE_COLUMNS = ("run", "seeds", "epochs", "source acc", "target acc", "domain acc", "PAD", "wall time (s)")


def collect_results(out) -> list[dict]:
    """All ``result.json`` records under ``out`` (sorted by run order, then seed)."""
    records = []
    for path in sorted(Path(out).glob("*/seed*/result.json")):
        records.append(json.loads(path.read_text()))
    order = {n: i for i, n in enumerate(RUN_NAMES)}
    records.sort(key=lambda r: (order.get(r["run"], 99), r.get("smoke", False), r["seed"]))
    return records


def _mean_sd(values: Sequence[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def results_table(records: list[dict]) -> list[dict]:
    """One row per (run, epochs, gamma, lr schedule, input norm, smoke): mean ± sd over its seeds."""
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
            "source acc": _mean_sd([r["source_acc"] for r in rs]),
            "target acc": _mean_sd([r["target_acc"] for r in rs]),
            "domain acc": _mean_sd([r["domain_acc"] for r in rs]),
            "PAD": _mean_sd([r.get("pad") for r in rs], digits=3),
            "wall time (s)": _mean_sd([r["wall_s"] for r in rs], digits=0),
            "source": rs[0]["source"], "target": rs[0]["target"],
        })
    return rows


def write_results(out) -> tuple[Path, Path]:
    """Writes ``out/results.csv`` and ``out/results.md`` from every run found under ``out``."""
    out = Path(out)
    rows = results_table(collect_results(out))
    names = ("mnist", "mnistm")
    if rows:
        names = (rows[0]["source"], rows[0]["target"])
    header = ["run", "seeds", "epochs", f"{names[0]} acc", f"{names[1]} acc", "domain acc", "PAD", "wall time (s)"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in rows:
        writer.writerow([r[c] for c in TABLE_COLUMNS])
    csv_path, md_path = out / "results.csv", out / "results.md"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[c]) for c in TABLE_COLUMNS) + " |" for r in rows]
    lines.append("")
    lines.append("Domain accuracy: the domain classifier's accuracy on source test + target test "
                 "(source when sigmoid(logit) > 0.5); for source-only, target-only and pseudo-label it "
                 "is a probe that does not shape the features. PAD: proxy A-distance of the features "
                 "(2 = domains linearly separable, 0 = indistinguishable; 1,000 + 1,000 test images, "
                 "a fresh linear SVM). Mean ± sd over seeds.")
    atomic_write_bytes(md_path, ("\n".join(lines) + "\n").encode())
    return csv_path, md_path


def run_many(names: Sequence[str], seeds: Sequence[int], *, out, **kwargs) -> list[dict]:
    """Runs every (name, seed) in turn, then rewrites the results table. Returns the records."""
    for n in names:
        get_spec(n)
    records = []
    domains = kwargs.pop("domains", None)
    if domains is None:
        domains = load_domains(kwargs.pop("dataset_pair", "mnist"), data_dir=kwargs.pop("data_dir", None),
                               smoke=kwargs.get("smoke", False))
    else:
        kwargs.pop("dataset_pair", None), kwargs.pop("data_dir", None)
    for n in names:
        for s in seeds:
            t0 = time.perf_counter()
            rec = run_one(n, s, out=out, domains=domains, **kwargs)
            rec["total_s"] = time.perf_counter() - t0
            rec.pop("state", None)  # keep memory flat over many runs
            records.append(rec)
            write_results(out)
    return records
