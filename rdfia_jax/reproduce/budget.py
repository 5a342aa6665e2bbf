"""Budgets of ``rdfia-jax reproduce``: how much of each report section runs, one frozen dataclass each.

A budget fixes everything a section's numbers depend on (epochs, subset sizes, seeds); its
:func:`section_settings` go into the section's fingerprint, so a rerun in the same folder reuses a
finished section only when they are unchanged.
"""

from __future__ import annotations

import dataclasses

from rdfia_jax.errors import RdfiaError


@dataclasses.dataclass(frozen=True)
class S1Budget:
    """Section 1 (VGG16, transfer learning on 15 Scene).

    Attributes:
      photos: "sklearn" (scikit-learn's two sample photographs, offline) or "val25" (imagenet_val_25).
      predict: top-5 predictions and activation maps on the photos (VGG16 forward passes).
      transfer: run the 15 Scene transfer rows (needs the data; meaningful only with converted weights).
      per_class: 15 Scene images per class and split used (None = all).
      settings: rows of ``rdfia-jax transfer`` run (e.g. "relu7-resize", "relu7-crop", "relu6").
    """

    photos: str = "sklearn"
    predict: bool = True
    transfer: bool = False
    per_class: int | None = None
    settings: tuple[str, ...] = ("relu7-resize",)


@dataclasses.dataclass(frozen=True)
class S2Budget:
    """Section 2 (saliency, fooling, class visualization).

    Attributes:
      dataset: the small classifier's data, "digits" (embedded) or "mnist".
      n_images: test images for the saliency statistics.
      fool_images: test images, each pushed to the 9 other classes.
      classvis_iters: gradient-ascent iterations; classvis_seeds: noise starts per digit.
      imagenet: also the ImageNet figures on SqueezeNet 1.1 (converted weights, else random, marked).
      imagenet_iters: class-visualization iterations there (the practical: 200).
    """

    dataset: str = "digits"
    n_images: int = 200
    fool_images: int = 20
    classvis_iters: int = 100
    classvis_seeds: int = 2
    imagenet: bool = False
    imagenet_iters: int = 200


@dataclasses.dataclass(frozen=True)
class S3Budget:
    """Section 3 (DANN).

    Attributes:
      dataset_pair: "digits" (embedded digits -> digits_m) or "mnist" (MNIST -> MNIST-M).
      source_only_epochs, dann_epochs: epochs of the two runs (None: the practical's 10 / 20).
      seeds: seeds of source-only and DANN.
      extra_runs: further runs of the report (seed 0 only), e.g. "dann-positive".
      smoke: the dann command's --smoke (small subsets; numbers meaningless).
    """

    dataset_pair: str = "digits"
    source_only_epochs: int | None = None
    dann_epochs: int | None = None
    seeds: tuple[int, ...] = (0,)
    extra_runs: tuple[str, ...] = ()
    smoke: bool = False


@dataclasses.dataclass(frozen=True)
class S4Budget:
    """Section 4 (DCGAN, conditional DCGAN).

    Attributes:
      dataset: "digits" (embedded, NOT MNIST) or "mnist".
      epochs, batch_size: the DCGAN run's.
      score_samples: generated images scored by the reference classifier.
      cgan_epochs: the conditional DCGAN's epochs (0: not run).
      sweeps: run the report's sweeps (nz, epochs, lr, ngf).
      smoke: the gan command's --smoke (256 images, 1 epoch; numbers meaningless).
    """

    dataset: str = "digits"
    epochs: int = 5
    batch_size: int = 128
    score_samples: int = 2000
    cgan_epochs: int = 0
    sweeps: bool = False
    smoke: bool = False


@dataclasses.dataclass(frozen=True)
class Budget:
    """One level of ``--budget``: a name, what it promises, and each section's budget."""

    name: str
    description: str
    s1: S1Budget
    s2: S2Budget
    s3: S3Budget
    s4: S4Budget
    internal: bool = False  # tests only; not offered on the command line


BUDGETS = {
    "smoke": Budget(
        "smoke", "internal test budget: tiny sizes, numbers meaningless",
        S1Budget(predict=False),
        S2Budget(n_images=16, fool_images=2, classvis_iters=4, classvis_seeds=1),
        S3Budget(source_only_epochs=1, dann_epochs=1, smoke=True),
        S4Budget(epochs=1, batch_size=32, score_samples=200, smoke=True),
        internal=True),
    "demo": Budget(
        "demo", "embedded data only (scikit-learn digits and photos), no download; about 5 minutes on 2 CPU cores "
        "(measured times: benchmarks/RESULTS.md)",
        S1Budget(),
        S2Budget(),
        # Source-only sees as many training steps as DANN (its batches are twice as large): a fair baseline.
        S3Budget(source_only_epochs=40, dann_epochs=20),
        S4Budget(epochs=30, batch_size=64, score_samples=2000)),
    "quick": Budget(
        "quick", "the real data where found (MNIST, MNIST-M from BSDS500, a 15 Scene subset), each section cut "
        "to fit about 45 minutes on 2 CPU cores",
        S1Budget(photos="val25", transfer=True, per_class=20, settings=("relu7-resize", "relu6")),
        S2Budget(dataset="mnist", n_images=500, fool_images=50, classvis_iters=200, classvis_seeds=2,
                 imagenet=True, imagenet_iters=50),
        S3Budget(dataset_pair="mnist", source_only_epochs=4, dann_epochs=2),  # equal steps: 1,872 vs 1,874
        S4Budget(dataset="mnist", epochs=1, batch_size=128, score_samples=2000)),
    "full": Budget(
        "full", "everything the report has: every transfer row, DANN over 3 seeds and its variants, the GAN "
        "sweeps and the conditional DCGAN (hours on a CPU; measured times and the expected GPU time: "
        "benchmarks/RESULTS.md)",
        S1Budget(photos="val25", transfer=True, settings=("relu7-resize", "relu7-crop", "relu6", "alexnet-cut1",
                                                        "alexnet-cut2", "c-sweep", "pca", "fc-head")),
        S2Budget(dataset="mnist", n_images=1000, fool_images=200, classvis_iters=200, classvis_seeds=10,
                 imagenet=True, imagenet_iters=200),
        S3Budget(dataset_pair="mnist", seeds=(0, 1, 2),
                 extra_runs=("target-only", "dann-no-grl", "dann-positive", "dann-const-1", "dann-const-0.1")),
        S4Budget(dataset="mnist", epochs=5, batch_size=128, score_samples=10_000, cgan_epochs=5, sweeps=True)),
}
BUDGETS["quick-smoke"] = Budget(
    "quick-smoke", "internal check of the quick budget's paths: its real data (MNIST, MNIST-M, imagenet_val_25, "
    "15 Scene) at smoke sizes, numbers meaningless",
    dataclasses.replace(BUDGETS["quick"].s1, per_class=2),
    S2Budget(dataset="mnist", n_images=16, fool_images=2, classvis_iters=4, classvis_seeds=1, imagenet=True,
             imagenet_iters=4),
    S3Budget(dataset_pair="mnist", source_only_epochs=1, dann_epochs=1, smoke=True),
    S4Budget(dataset="mnist", epochs=1, batch_size=32, score_samples=200, smoke=True),
    internal=True)
PUBLIC_BUDGETS = tuple(k for k, b in BUDGETS.items() if not b.internal)


def get_budget(name: str) -> Budget:
    """The budget called ``name`` (RdfiaError naming the choices otherwise)."""
    if name not in BUDGETS:
        raise RdfiaError(f"unknown budget {name!r}; choose one of {', '.join(PUBLIC_BUDGETS)}")
    return BUDGETS[name]


def section_settings(budget: Budget, section: int) -> dict:
    """The budget of one section as a plain dict (part of the section's fingerprint)."""
    return dataclasses.asdict(getattr(budget, f"s{section}"))
