#!/usr/bin/env python
"""Report section 2 (visualizing a network) in one command: every figure and a results table.

Same as ``rdfia-jax visualize ...`` (every option of that command is accepted) with ``--out``
defaulting to runs/section2:

    python scripts/section2_visualization.py --data-dir ../shared/data              # all experiments
    python scripts/section2_visualization.py fooling classvis --random-weights --quick
    python scripts/section2_visualization.py mnist-proof --proof-dataset digits --quick   # no download
"""

import sys

from rdfia_jax.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", "runs/section2"]
    sys.exit(main(["visualize", *argv]))
