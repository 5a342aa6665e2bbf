#!/usr/bin/env python
"""Report section 1.2 (transfer learning on 15 Scene) in one command.

Same as ``rdfia-jax transfer ...`` (every option of that command is accepted) with ``--out``
defaulting to outputs/section1_transfer:

    python scripts/section1_transfer.py --data ../shared/data/15SceneData
    python scripts/section1_transfer.py --data DIR --random-weights --smoke   # check the setup quickly

Writes results.md / results.csv / results.json / details.json and figures (fc_head_curve.png = Figure 11, c_sweep.png,
pca_variance.png).
"""

import sys

from rdfia_jax.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", "outputs/section1_transfer"]
    sys.exit(main(["transfer", *argv]))
