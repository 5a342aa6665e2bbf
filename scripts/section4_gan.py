#!/usr/bin/env python
"""Report section 4 (GANs) in one command: DCGAN (Figures 38-40), the report's sweeps (41-52) and the
conditional DCGAN (53-56), each with loss curves, sample grids and the classifier score.

    python scripts/section4_gan.py --smoke --out runs/section4_smoke          # quick end-to-end check
    python scripts/section4_gan.py --out runs/section4                        # embedded digits (NOT MNIST)
    python scripts/section4_gan.py --dataset mnist --out runs/section4        # MNIST from $RDFIA_JAX_DATA
    python scripts/section4_gan.py --only dcgan,cgan --dataset mnist --data-dir DATA_DIR

``--dataset mnist`` reads the MNIST files from ``--data-dir`` (default ``$RDFIA_JAX_DATA``; see
``rdfia-jax data list``).

Parts (``--only``, comma-separated; default all): ``dcgan`` (the default run, ``OUT/dcgan``),
``sweeps`` (``OUT/sweeps``: nz 10 / 1000, 30 epochs, lr x100 and /100, ngf 256, one results row per
run; diverged runs recorded as such), ``cgan`` (``OUT/cgan``). Every part is a plain ``rdfia-jax gan``
/ ``rdfia-jax cgan`` call; killed parts continue with ``--resume``. Without ``--dataset mnist`` the
embedded scikit-learn digits are used (NOT MNIST; every output says so).
"""

from __future__ import annotations

import argparse
import sys

from rdfia_jax.cli import main as cli_main
from rdfia_jax.reproduce.sections.common import run_flags

PARTS = ("dcgan", "sweeps", "cgan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/section4", help="output folder (default runs/section4)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts among {', '.join(PARTS)}")
    ap.add_argument("--dataset", choices=("mnist", "digits"), default="digits", help="training digits (default: embedded, NOT MNIST)")
    ap.add_argument("--data-dir", default=None, help="raw-data folder holding mnist/ (default $RDFIA_JAX_DATA)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--smoke", action="store_true", help="tiny runs, to check the pipeline")
    ap.add_argument("--resume", action="store_true", help="continue killed runs from their checkpoints")
    args = ap.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"section4_gan: unknown part(s) {unknown}; choose among {', '.join(PARTS)}", file=sys.stderr)
        return 2
    common = ["--dataset", args.dataset, "--seed", str(args.seed),
              *run_flags(data_dir=args.data_dir, smoke=args.smoke, resume=args.resume)]
    status = 0
    if "dcgan" in parts:
        status |= cli_main(["gan", "--out", f"{args.out}/dcgan", *common])
    if "sweeps" in parts:
        status |= cli_main(["gan", "--sweep", "report", "--out", f"{args.out}/sweeps", *common])
    if "cgan" in parts:
        status |= cli_main(["cgan", "--out", f"{args.out}/cgan", *common])
    return status


if __name__ == "__main__":
    sys.exit(main())
