#!/usr/bin/env python
"""Report section 3 (domain adaptation MNIST -> MNIST-M) in one command.

Runs the report's experiments in order -- source-only and DANN over the seeds (mean ± sd), then
target-only (upper bound), DANN without GRL, with a positive factor, with constant factors -1 and
-0.1 (Figures 32-37), pseudo-labelling alone and DANN + pseudo-labels (seed 0 only each) -- and
writes results.md / results.csv / results.json, a t-SNE figure and training curves per run to --out. Same options
as ``rdfia-jax dann``:

    python scripts/section3_dann.py --data-dir DIR --seeds 0,1,2 --out outputs/section3_dann
    python scripts/section3_dann.py --dataset-pair digits --smoke      # check the pipeline, no download
    python scripts/section3_dann.py --data-dir DIR --resume            # continue after an interruption

Full runs are long on a CPU (DANN: 18,740 steps for 20 epochs); every run checkpoints and resumes.
"""

import sys

from rdfia_jax.cli import main

MULTI_SEED = ("source-only", "dann")
ONE_SEED = ("target-only", "dann-no-grl", "dann-positive", "dann-const-1", "dann-const-0.1", "pseudo-label",
            "dann-pseudo-label")


def _pop_seeds(argv: list[str]) -> tuple[list[str], str]:
    seeds = "0,1,2"
    out = []
    it = iter(argv)
    for a in it:
        if a == "--seeds":
            seeds = next(it, seeds)
        elif a.startswith("--seeds="):
            seeds = a.split("=", 1)[1]
        else:
            out.append(a)
    return out, seeds


if __name__ == "__main__":
    argv, seeds = _pop_seeds(sys.argv[1:])
    if "--out" not in argv:
        argv += ["--out", "outputs/section3_dann"]
    first = seeds.split(",")[0]
    for run in MULTI_SEED:
        status = main(["dann", run, "--seeds", seeds, *argv])
        if status:
            sys.exit(status)
    for run in ONE_SEED:
        status = main(["dann", run, "--seeds", first, *argv])
        if status:
            sys.exit(status)
    sys.exit(0)
