"""Interleaved A/B of VGG16's relu7 forward on the CPU: rdfia-jax's tuned kernels (YNNPACK fusions) or XLA's
defaults, one batched program or chunks of ``--chunks`` images (``models.forward_chunked``).

    python benchmarks/vgg16_kernels_ab.py --rounds 5 --batches 8,32 --chunks 1,4,8

Prints each variant's median per batch and per image, and its largest difference from the first variant.
Results: benchmarks/RESULTS.md (2026-12-02, afternoon, change 2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--chunks", default="1", help="chunk sizes to try besides the batched program")
    args = ap.parse_args(argv)
    from rdfia_jax import xla

    xla.retain_host_memory()  # as the CLI runs
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from rdfia_jax import models

    jax.config.update("jax_default_matmul_precision", "highest")
    graphdef, state = nnx.split(models.create("vgg16"))

    def relu7(chunk):
        return lambda s, v: models.forward_chunked(graphdef, s, v, ("relu7",), chunk=chunk)[1]["relu7"]

    variants = {}
    for chunk in [int(c) for c in args.chunks.split(",") if c] + [None]:
        for tuned in (True, False):
            name = f"{'YNNPACK' if tuned else 'XLA default'}, {'batched' if chunk is None else f'chunk {chunk}'}"
            variants[name] = xla.jit(relu7(chunk), tuned_kernels=tuned)
    for batch in (int(b) for b in args.batches.split(",")):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype(np.float32))
        ref = None
        for name, fn in variants.items():  # compile, and check that every variant computes the same features
            out = np.asarray(fn(state, x))
            ref = out if ref is None else ref
            print(f"batch {batch} {name}: max abs difference {float(np.abs(out - ref).max()):.2g}", flush=True)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.rounds):  # alternate the order so drifts hit every variant alike
            for name, fn in (list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]):
                t0 = time.perf_counter()
                fn(state, x).block_until_ready()
                times[name].append(time.perf_counter() - t0)
        for name, t in times.items():
            med = statistics.median(t)
            print(f"batch {batch} {name}: median {med * 1e3:.0f} ms ({med / batch * 1e3:.1f} ms per image)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
