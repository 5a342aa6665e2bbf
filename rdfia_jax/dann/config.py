"""A DANN run's options as one frozen :class:`DannConfig`, and what a run derives from them.

Input standardization (:data:`~rdfia_jax.dann.catalogue.INPUT_NORMS`, ``input_norm``): ``source``
(the practical: both domains with the MNIST-train mean and std) or ``per-domain`` (each domain with
the scalar mean and std of its own train images; the target's are computed from unlabelled images).

Parameter averaging (``ema_decay``): the state also carries an exponential moving average of the
parameters, and the run reports the averaged network (training is unchanged). Gradient clipping
(``clip_norm``): the gradient's global norm is capped before the momentum.

:func:`plan_run` derives from a config, a run name, a seed and the data everything else: the step
configuration, the number of epochs, the run's folder and the checkpoint fingerprint.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

from rdfia_jax.dann import steps as dsteps
from rdfia_jax.dann.catalogue import DATASET_PAIRS, INPUT_NORMS, RunSpec, get_spec
from rdfia_jax.dann.domains import Domains, check_domains, image_statistics, make_get_batch
from rdfia_jax.errors import RdfiaError

SMOKE_EPOCHS = 1  # --smoke: one epoch on the small subsets

# StepConfig fields added after the first release, at their "off" values: checkpoints written
# before they existed describe the same run (see CheckpointStore's fingerprint_defaults).
FINGERPRINT_DEFAULTS = {"config": {"target_mean": None, "target_std": None, "ema_decay": 0.0, "clip_norm": None}}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_seed(seed: Any) -> int:
    """``seed`` if it is a non-negative int; RdfiaError otherwise."""
    if not _is_int(seed) or seed < 0:
        raise RdfiaError(f"seed {seed!r}: seeds must be non-negative integers, e.g. 0 or 0,1,2")
    return seed


@dataclasses.dataclass(frozen=True)
class DannConfig:
    """The options of a DANN run (defaults = the practical's); validated on creation (RdfiaError).

    Attributes:
      epochs: number of epochs; None = the run's own (10 for the baselines, 20 otherwise; 1 with smoke).
      gamma: lambda(p) steepness (2: the practical, 10: the paper); finite, > 0.
      lr_per_epoch: step the lr's progress per epoch, as the original notebook did.
      input_norm: a key of :data:`~rdfia_jax.dann.catalogue.INPUT_NORMS`.
      ema_decay: 0, or the decay in (0, 1) of a parameter average that the run reports.
      clip_norm: None, or the cap (finite, > 0) on the gradient's global norm.
      smoke: small subsets, 1 epoch, small t-SNE (checks the pipeline; numbers meaningless).
      dataset_pair: a key of :data:`~rdfia_jax.dann.catalogue.DATASET_PAIRS`.
      data_dir: raw-data folder (default ``$RDFIA_JAX_DATA``).
      bsds_dir: folder of the BSDS500 train JPEGs for MNIST-M (default ``data_dir/bsds500/train``).
      batch_sizes: (source, target) images per step instead of the run's own (tests, small data).
    """

    epochs: int | None = None
    gamma: float = 2.0
    lr_per_epoch: bool = False
    input_norm: str = "source"
    ema_decay: float = 0.0
    clip_norm: float | None = None
    smoke: bool = False
    dataset_pair: str = "mnist"
    data_dir: str | None = None
    bsds_dir: str | None = None
    batch_sizes: tuple[int, int] | None = None

    def __post_init__(self):
        if self.epochs is not None and (not _is_int(self.epochs) or self.epochs < 1):
            raise RdfiaError(f"--epochs {self.epochs!r}: must be an integer >= 1")
        if not _finite(self.gamma) or not self.gamma > 0:
            raise RdfiaError(f"--gamma {self.gamma!r}: must be a finite number > 0 (2: the practical, 10: the paper)")
        if self.input_norm not in INPUT_NORMS:
            raise RdfiaError(f"unknown --input-norm {self.input_norm!r}; choose one of {', '.join(INPUT_NORMS)}")
        if not _finite(self.ema_decay) or not 0.0 <= self.ema_decay < 1.0:
            raise RdfiaError(f"--ema-decay {self.ema_decay!r}: must be in [0, 1) (0: no averaging; e.g. 0.999)")
        if self.clip_norm is not None and (not _finite(self.clip_norm) or not self.clip_norm > 0):
            raise RdfiaError(f"--clip-norm {self.clip_norm!r}: must be a finite number > 0 (e.g. 3)")
        if self.dataset_pair not in DATASET_PAIRS:
            raise RdfiaError(f"unknown --dataset-pair {self.dataset_pair!r}; choose one of {', '.join(DATASET_PAIRS)}")
        if self.batch_sizes is not None:
            sizes = tuple(self.batch_sizes)
            if len(sizes) != 2 or not all(_is_int(b) and b >= 1 for b in sizes):
                raise RdfiaError(f"batch sizes {self.batch_sizes!r}: must be two integers >= 1 (source, target)")
            object.__setattr__(self, "batch_sizes", sizes)

    def replace(self, **changes) -> "DannConfig":
        return dataclasses.replace(self, **changes)

    def spec(self, name: str) -> RunSpec:
        """The catalogue's :class:`RunSpec` of ``name`` with this config's batch sizes."""
        spec = get_spec(name)
        if self.batch_sizes is not None:
            spec = dataclasses.replace(spec, src_batch=self.batch_sizes[0], tgt_batch=self.batch_sizes[1])
        return spec

    def epochs_of(self, spec: RunSpec) -> int:
        """The number of epochs a run of ``spec`` trains for."""
        if self.epochs is not None:
            return self.epochs
        return SMOKE_EPOCHS if self.smoke else spec.epochs

    def folder_name(self, name: str) -> str:
        """The run's folder name: ``name`` plus its non-default settings, so variants share an output folder.

        ``dann`` with the defaults stays ``dann``; ``gamma=10, lr_per_epoch=True`` gives
        ``dann-gamma10-lr-per-epoch``, ``input_norm="per-domain"`` ``dann-per-domain-norm``,
        ``ema_decay=0.999`` ``dann-ema0.999``, ``clip_norm=5`` ``dann-clip5``, ``epochs=100``
        ``dann-100ep``, ``smoke=True`` ``dann-smoke`` (the dataset pair is not in the name).
        """
        spec = get_spec(name)
        parts = [name]
        if self.gamma != 2.0:
            parts.append(f"gamma{self.gamma:g}")
        if self.lr_per_epoch:
            parts.append("lr-per-epoch")
        if self.input_norm != "source":
            parts.append(f"{self.input_norm}-norm")
        if self.ema_decay:
            parts.append(f"ema{self.ema_decay:g}")
        if self.clip_norm is not None:
            parts.append(f"clip{self.clip_norm:g}")
        if self.smoke:
            parts.append("smoke")
        elif self.epochs_of(spec) != spec.epochs:
            parts.append(f"{self.epochs_of(spec)}ep")
        return "-".join(parts)


def step_config(spec: RunSpec, config: DannConfig, *, steps_per_epoch: int, mean: float, std: float,
                target_stats: tuple[float, float] | None = None) -> dsteps.StepConfig:
    """The :class:`~rdfia_jax.dann.steps.StepConfig` of a run; ``target_stats``: the target's own (mean, std), or None."""
    return dsteps.StepConfig(
        objective=spec.objective, labelled=spec.labelled, total_steps=steps_per_epoch * config.epochs_of(spec),
        steps_per_epoch=steps_per_epoch, gamma=float(config.gamma), grl_scale=spec.grl_scale,
        grl_offset=spec.grl_offset, lr_per_epoch=config.lr_per_epoch, mean=mean, std=std,
        pseudo_ramp=tuple(spec.pseudo_ramp),
        target_mean=None if target_stats is None else float(target_stats[0]),
        target_std=None if target_stats is None else float(target_stats[1]), ema_decay=float(config.ema_decay),
        clip_norm=None if config.clip_norm is None else float(config.clip_norm))


def fingerprint(name: str, seed: int, spec: RunSpec, cfg: dsteps.StepConfig, domains: Domains) -> dict:
    """What a checkpoint must match to be resumed (the same dict since the first release)."""
    return {"model": "dann-practical", "run": name, "seed": seed, "config": dataclasses.asdict(cfg),
            "src_batch": spec.src_batch, "tgt_batch": spec.tgt_batch,
            "source": domains.source_name, "target": domains.target_name,
            "n_source": len(domains.source_train.images), "n_target": len(domains.target_train.images)}


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Everything one run (or an evaluation of its checkpoints) derives from its arguments.

    Attributes:
      name, seed: the run and its seed.
      spec: its :class:`RunSpec` (batch sizes overridden by the config).
      epochs, steps_per_epoch: its length.
      step_config: the static :class:`~rdfia_jax.dann.steps.StepConfig` of its training step.
      run_dir: ``out/<folder name>/seed<seed>``.
      fingerprint: the checkpoint fingerprint (:func:`fingerprint`).
      get_batch: ``(epoch, index) -> batch`` (:func:`~rdfia_jax.dann.domains.make_get_batch`).
    """

    name: str
    seed: int
    spec: RunSpec
    epochs: int
    steps_per_epoch: int
    step_config: dsteps.StepConfig
    run_dir: Path
    fingerprint: dict
    get_batch: Callable[[int, int], dict]
    fingerprint_defaults: dict = dataclasses.field(default_factory=lambda: FINGERPRINT_DEFAULTS)


def plan_run(name: str, seed: int, config: DannConfig, domains: Domains, out) -> RunPlan:
    """The :class:`RunPlan` of run ``name`` with ``seed`` and ``config`` on ``domains``, under ``out``."""
    spec = config.spec(name)
    check_seed(seed)
    check_domains(domains)
    if domains.mean is not None and domains.std is not None:
        mean, std = float(domains.mean), float(domains.std)
    else:
        mean, std = image_statistics(domains.source_train.images)
    # The target's statistics come from its TRAIN images, which a run sees without labels.
    target_stats = image_statistics(domains.target_train.images) if config.input_norm == "per-domain" else None
    get_batch, steps_per_epoch = make_get_batch(spec, domains, seed)
    cfg = step_config(spec, config, steps_per_epoch=steps_per_epoch, mean=mean, std=std, target_stats=target_stats)
    return RunPlan(name=name, seed=seed, spec=spec, epochs=config.epochs_of(spec), steps_per_epoch=steps_per_epoch,
                   step_config=cfg, run_dir=Path(out) / config.folder_name(name) / f"seed{seed}",
                   fingerprint=fingerprint(name, seed, spec, cfg, domains), get_batch=get_batch)
