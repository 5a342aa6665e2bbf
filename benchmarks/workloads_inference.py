"""Section 1.1 workloads: ImageNet-model inference (logits of a batch) at batch 1 / 8 / 32.

Keras: ``keras.applications.VGG16(weights=None)`` and ``model.predict_on_batch(x)`` on the NHWC
batch, as Keras users run it (the result comes back as a NumPy array, so the call blocks)."""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Workload, torch_compiled

BATCHES = (1, 8, 32)
SIZE = 224


def _inputs(batch: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32)


def _jax_setup(model: str, batch: int):
    def setup(precision: str):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from rdfia_jax import models, xla

        dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
        graphdef, state = nnx.split(models.create(model, dtype=dtype))
        state = jax.tree.map(lambda a: a.astype(dtype), state)
        x = jnp.asarray(_inputs(batch), dtype)
        fn = xla.jit(lambda s, v: models.forward(graphdef, s, v)[0],  # as rdfia-jax predict runs it
                     tuned_kernels=models.cpu_tuned_kernels(model))
        return lambda: fn(state, x).block_until_ready()
    return setup


def _torch_setup(model: str, batch: int):
    def setup(precision: str):
        import torch

        from benchmarks.torch_models import MODELS

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        net = torch_compiled(MODELS[model]().eval().to(dev, dtype))
        x = torch.from_numpy(_inputs(batch).transpose(0, 3, 1, 2).copy()).to(dev, dtype)

        def run():
            with torch.inference_mode():
                out = net(x)
            if dev == "cuda":
                torch.cuda.synchronize()
            return out
        return run
    return setup


def keras_model(build, precision: str):
    """``build()`` under the precision's Keras dtype policy (bfloat16: parameters and compute)."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16" if precision == "bfloat16" else "float32")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def _keras_setup(model: str, batch: int):
    def setup(precision: str):
        import ml_dtypes

        from benchmarks import keras_models

        net = keras_model(keras_models.MODELS[model], precision)
        x = _inputs(batch).astype(ml_dtypes.bfloat16 if precision == "bfloat16" else np.float32)
        return lambda: net.predict_on_batch(x)
    return setup


def workloads() -> list[Workload]:
    out = []
    for model in ("vgg16",):
        for b in BATCHES:
            name = f"{model}_infer_b{b}"
            out.append(Workload(name, "jax", _jax_setup(model, b), b, "images", "1.1"))
            out.append(Workload(name, "torch", _torch_setup(model, b), b, "images", "1.1"))
            out.append(Workload(name, "keras", _keras_setup(model, b), b, "images", "1.1"))
    return out
