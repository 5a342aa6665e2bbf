"""The DANN section's run catalogue: what each named run is (objective, GRL factor, batches, epochs).

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

Every run also trains its domain classifier; in the baselines and pseudo-labelling it is a *probe*
(GRL factor 0: it learns to tell the domains apart from the features but does not shape them), so
every run reports a domain accuracy: how separable its features are.
"""

from __future__ import annotations

import dataclasses

from rdfia_jax.errors import RdfiaError


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


def get_spec(name: str) -> RunSpec:
    """The :class:`RunSpec` of ``name``; RdfiaError naming the valid runs otherwise."""
    if name not in RUNS:
        raise RdfiaError(f"unknown DANN run {name!r}; choose one of {', '.join(RUN_NAMES)} (or 'all')")
    return RUNS[name]
