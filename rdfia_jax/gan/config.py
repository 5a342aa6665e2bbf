"""The options of a GAN / cGAN run as two frozen dataclasses, each checked when it is built.

:class:`GanConfig` holds the hyper-parameters (what a checkpoint must match), :class:`RunOptions`
everything else (output, data, scoring, samples). Neither module imports JAX, so the command line
refuses a bad value in milliseconds, before any data is loaded or anything is compiled;
:meth:`RunOptions.check_paths` checks that the output paths can be written.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import check_writable_dir

KINDS = ("gan", "cgan")
DATASETS = ("mnist", "digits")
MAX_SEED = 2**63 - 1  # jax.random.key takes a C long


def _positive_int(option: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RdfiaError(f"{option} {value!r}: must be a positive integer")


def _int_at_least(option: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise RdfiaError(f"{option} {value!r}: must be an integer >= {low}")


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """Hyper-parameters of one GAN run (defaults = the practical's).

    Attributes:
      kind: "gan" (DCGAN) or "cgan" (conditional DCGAN).
      nz: latent size.
      ngf: generator width (DCGAN only; the cDCGAN's widths are fixed).
      ndf: discriminator width (DCGAN only).
      lr_d, lr_g: Adam learning rates (finite, > 0).
      beta1, beta2: Adam betas (in [0, 1)).
      batch_size: images per step.
      epochs: passes over the training set.
      seed: model-initialization, z and data-order seed (0 .. 2**63 - 1).
    """

    kind: str = "gan"
    nz: int = 100
    ngf: int = 32
    ndf: int = 32
    lr_d: float = 2e-4
    lr_g: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 128
    epochs: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise RdfiaError(f"unknown GAN kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name in ("nz", "ngf", "ndf", "batch_size", "epochs"):
            _positive_int(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("lr_d", "lr_g"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise RdfiaError(f"--{name.replace('_', '-')} {value!r}: must be a finite number > 0")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise RdfiaError(f"{name} {value!r}: must be in [0, 1)")
        _int_at_least("--seed", self.seed, 0)
        if self.seed > MAX_SEED:
            raise RdfiaError(f"--seed {self.seed}: must be at most {MAX_SEED}")

    def fingerprint(self) -> dict:
        """What a checkpoint must match to be resumed (all but ``epochs``, which a resume may extend)."""
        d = dataclasses.asdict(self)
        d.pop("epochs")
        if self.kind == "cgan":  # fixed widths
            d.pop("ngf")
            d.pop("ndf")
        return d

    def replace(self, **changes) -> "GanConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything about a run that is not a hyper-parameter.

    Attributes:
      out: output folder.
      dataset: "mnist" (real MNIST files in data_dir) or "digits" (embedded, NOT MNIST).
      data_dir: raw data folder (default ``$RDFIA_JAX_DATA``).
      resume: continue from the folder's last checkpoint.
      allow_lr_change: with ``resume``, accept a checkpoint written with other learning rates (the
        change and the step it happened at are recorded in the checkpoints and the summary).
      smoke: tiny run (256 training images, batch 32, 1 epoch, 500 scored samples): a pipeline
        check, whose samples look like noise.
      save_every: checkpoint period in steps (>= 1).
      sample_every: sample-grid period in steps (0: only at the end).
      score: compute the classifier score at the end.
      score_samples: how many generated images to score (>= 1; ``score=False`` skips the score).
      samples: write this many generated images to ``samples_out`` (npz) at the end.
      samples_out: path of that npz (must end in ``.npz``).
      progress: progress bars.
      on_divergence: "raise" (single runs) or "return" (sweeps: record and go on).
    """

    out: str | Path = "runs/gan"
    dataset: str = "digits"
    data_dir: str | Path | None = None
    resume: bool = False
    allow_lr_change: bool = False
    smoke: bool = False
    save_every: int = 500
    sample_every: int = 250
    score: bool = True
    score_samples: int = 10_000
    samples: int = 0
    samples_out: str | Path | None = None
    progress: bool = True
    on_divergence: str = "raise"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise RdfiaError(f"--dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}")
        _positive_int("--save-every", self.save_every)
        _int_at_least("--sample-every", self.sample_every, 0)
        _int_at_least("--score-samples", self.score_samples, 1)
        _int_at_least("--samples", self.samples, 0)
        if self.samples and not self.samples_out:
            raise RdfiaError("--samples needs --samples-out FILE.npz")
        if self.samples_out is not None and Path(self.samples_out).suffix != ".npz":
            raise RdfiaError(f"--samples-out {self.samples_out}: must end in .npz")
        if self.allow_lr_change and not self.resume:
            raise RdfiaError("--allow-lr-change continues a checkpoint with other learning rates: it needs --resume")
        if self.on_divergence not in ("raise", "return"):
            raise RdfiaError(f"on_divergence {self.on_divergence!r}: 'raise' or 'return'")

    def check_paths(self) -> None:
        """RdfiaError unless ``out`` (and the folder of ``samples_out``) can be created and written."""
        check_writable_dir(self.out, "--out")
        if self.samples_out is not None:
            check_writable_dir(Path(self.samples_out).parent, f"--samples-out {self.samples_out}: its folder",
                               fix="choose another --samples-out")


#: The report's GAN experiments (Figures 38-52): sweep name -> [(run name, changes to the base config)].
SWEEPS: dict[str, list[tuple[str, dict]]] = {
    "nz": [("nz10", {"nz": 10}), ("nz100", {}), ("nz1000", {"nz": 1000})],
    "epochs": [("epochs30", {"epochs": 30})],
    "lr": [("lr_x100", {"lr_d": 2e-2, "lr_g": 5e-2}), ("lr_div100", {"lr_d": 2e-6, "lr_g": 5e-6})],
    "ngf": [("ngf256", {"ngf": 256})],
}
SWEEPS["report"] = [
    ("default", {}), ("nz10", {"nz": 10}), ("nz1000", {"nz": 1000}), ("epochs30", {"epochs": 30}),
    ("lr_x100", {"lr_d": 2e-2, "lr_g": 5e-2}), ("lr_div100", {"lr_d": 2e-6, "lr_g": 5e-6}), ("ngf256", {"ngf": 256}),
]
# The report's runs without the default one: for callers that train the default run themselves
# (`rdfia-jax reproduce`), so the same run is not trained twice.
SWEEPS["variants"] = [run for run in SWEEPS["report"] if run[0] != "default"]


def sweep_runs(name: str) -> list[tuple[str, dict]]:
    """The runs of sweep ``name``; RdfiaError for an unknown name."""
    if name not in SWEEPS:
        raise RdfiaError(f"unknown sweep {name!r}; choose one of {', '.join(SWEEPS)}")
    return SWEEPS[name]
