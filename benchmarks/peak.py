"""The chip's measured bfloat16 matrix rate, and VGG16 bfloat16 inference as a share of it.

Issue 10's accelerator target: VGG16 bf16 inference at >= 25 % of the chip's *measured* bf16 matrix
rate, counting 15.5 GFLOP per 224x224 image (2 x 7.75 G multiply-adds). The matrix rate is measured
here, with the same JAX, rather than taken from a datasheet.

Usage::

    python -m benchmarks.peak                       # on a GPU: n 8192, VGG16 batch 256
    python -m benchmarks.peak --n 1024 --batch 2    # a quick check on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

VGG16_FLOP_PER_IMAGE = 15.5e9


def _median_seconds(fn, repeats: int) -> float:
    fn()  # compile and warm up
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_rate(n: int, repeats: int) -> float:
    """FLOP/s of an n x n x n bfloat16 matrix product (float32 accumulation) on the default device."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    product = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    seconds = _median_seconds(lambda: product(a, b).block_until_ready(), repeats)
    return 2.0 * n ** 3 / seconds


def vgg16_rate(batch: int, repeats: int) -> float:
    """Images/s of VGG16 bfloat16 inference (random weights, logits only) at ``batch``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from rdfia_jax import models, xla

    graphdef, state = nnx.split(models.create("vgg16", dtype=jnp.bfloat16))
    state = jax.tree.map(lambda a: a.astype(jnp.bfloat16), state)
    x = jax.random.normal(jax.random.key(1), (batch, 224, 224, 3), jnp.bfloat16)
    forward = xla.jit(lambda s, v: models.forward(graphdef, s, v)[0],
                      tuned_kernels=models.cpu_tuned_kernels("vgg16"))
    seconds = _median_seconds(lambda: forward(state, x).block_until_ready(), repeats)
    return batch / seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="matrix side of the bf16 product (default 8192)")
    ap.add_argument("--batch", type=int, default=256, help="VGG16 batch (default 256)")
    ap.add_argument("--repeats", type=int, default=10, help="timed repeats after two warm-up calls")
    ap.add_argument("--json-out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    import jax

    device = jax.devices()[0]
    peak = matmul_rate(args.n, args.repeats)
    images_per_s = vgg16_rate(args.batch, args.repeats)
    share = images_per_s * VGG16_FLOP_PER_IMAGE / peak
    result = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
              "matmul_n": args.n, "bf16_matmul_tflops": peak / 1e12, "vgg16_batch": args.batch,
              "vgg16_bf16_images_per_s": images_per_s, "vgg16_share_of_matmul_rate": share,
              "target_share": 0.25}
    print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}: bf16 {args.n}^3 matrix product "
          f"{peak / 1e12:.1f} TFLOP/s; VGG16 bf16 batch {args.batch}: {images_per_s:.1f} images/s = "
          f"{images_per_s * VGG16_FLOP_PER_IMAGE / 1e12:.1f} TFLOP/s = {100 * share:.1f} % of it (target 25 %)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
