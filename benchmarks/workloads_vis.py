"""Section 2 workloads: saliency maps and class-visualization iterations, JAX vs the PyTorch practical.

* ``saliency_<model>_b5``: saliency maps of a batch of 5 images (the practical's groups of 5):
  one jitted gradient of the target logits, |.|, max over channels. Items: maps.
* ``classvis_<model>_<k>it``: k iterations of the practical's class-visualization loop (jitter, step,
  unjitter, per-channel clamp, Gaussian blur every 10 iterations) on one 224x224 image. JAX runs
  ``classvis.run_loop`` with the default engine (one compiled ``lax.fori_loop`` on accelerators, one
  compiled iteration per call on CPU); the torch side is the practical's Python loop (its blur
  uses scipy on the CPU, as the practical's ``blur_image`` does). Items: iterations.

Keras (saliency only): the network built with the functional API (``benchmarks.keras_models``), the
gradient of the target logits w.r.t. the input taken with ``jax.grad`` over ``model.stateless_call``
(the documented way to differentiate a Keras model on JAX), jitted, then |.| and max over channels.
No Keras class-visualization row: the practical's loop (random jitter, in-place clamps, SciPy blur
every 10 iterations) has no Keras idiom of its own; written out it would be the JAX loop again.

Random weights (timing only). float32 only for the class-visualization loop (a bfloat16 run reports it
as unsupported).
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Workload, torch_compiled

SIZE = 224
BATCH = 5
CLASSVIS_ITERS = {"squeezenet1_1": 10, "vgg16": 4}
# rdfia-jax's default engine: the whole loop in one lax.fori_loop on accelerators, one compiled
# iteration called from Python on CPU (XLA:CPU runs VGG16 ~3x slower inside a while-loop body).
ENGINE = "auto"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _inputs(batch: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32)


def _targets(batch: int) -> np.ndarray:
    return np.array([958, 85, 244, 182, 294][:batch] + [366] * max(0, batch - 5), np.int64)


# ----------------------------------------------------------------------------- JAX


def _jax_network(model: str, precision: str):
    import jax
    import jax.numpy as jnp

    from rdfia_jax import models

    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    net = models.Network.from_module(model, models.create(model, dtype=dtype))
    net.state = jax.tree.map(lambda a: a.astype(dtype), net.state)
    return net, dtype


def _jax_saliency(model: str):
    def setup(precision: str):
        import jax.numpy as jnp

        from rdfia_jax.vis import saliency as S

        net, dtype = _jax_network(model, precision)
        x = jnp.asarray(_inputs(BATCH), dtype)
        t = jnp.asarray(_targets(BATCH), jnp.int32)
        return lambda: S._saliency(net.graphdef, net.state, x, t).block_until_ready()
    return setup


def _jax_classvis(model: str, iters: int):
    def setup(precision: str):
        import jax
        import jax.numpy as jnp

        from rdfia_jax.vis import classvis as C

        if precision != "float32":
            raise NotImplementedError("the class-visualization workload runs in float32 only")
        net, _ = _jax_network(model, precision)
        lo, hi = (jnp.asarray(b, jnp.float32).reshape(1, 1, 1, -1) for b in net.preprocessing.bounds())
        x0 = C.random_init((1, SIZE, SIZE, 3), 0)
        t = jnp.asarray([366], jnp.int32)

        def run():
            out = C.run_loop(ENGINE, net.state, x0, t, jax.random.key(1), jnp.float32(5.0), jnp.float32(1e-3), lo, hi,
                             graphdef=net.graphdef, objective=C.Objective(), iters=iters, blur_every=10,
                             blur_sigma=0.5, max_jitter=16, clamp=True, snapshot_every=0, normalize_grad=False)
            return jax.block_until_ready(out[0])
        return run
    return setup


# ----------------------------------------------------------------------------- torch (the practical's code)


def _torch_model(model: str, precision: str):
    import torch

    from benchmarks.torch_models import MODELS

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    net = MODELS[model]().eval().to(dev, dtype)
    for p in net.parameters():
        p.requires_grad = False
    return torch_compiled(net), dev, dtype


def _torch_saliency(model: str):
    def setup(precision: str):
        import torch

        net, dev, dtype = _torch_model(model, precision)
        x = torch.from_numpy(_inputs(BATCH).transpose(0, 3, 1, 2).copy()).to(dev, dtype)
        y = torch.from_numpy(_targets(BATCH)).to(dev)

        def run():  # compute_saliency_maps of the practical
            X = x.clone().requires_grad_()
            scores = net(X).gather(1, y.view(-1, 1)).squeeze()
            scores.backward(torch.ones_like(scores))
            saliency = X.grad.abs().max(dim=1)[0]
            if dev == "cuda":
                torch.cuda.synchronize()
            return saliency
        return run
    return setup


def _torch_jitter(X, ox, oy):
    import torch

    if ox != 0:
        X = torch.cat([X[:, :, :, -ox:], X[:, :, :, :-ox]], dim=3)
    if oy != 0:
        X = torch.cat([X[:, :, -oy:], X[:, :, :-oy]], dim=2)
    return X


def _torch_blur(X, sigma=0.5):
    import torch
    from scipy.ndimage import gaussian_filter1d

    X_np = X.cpu().clone().numpy()
    X_np = gaussian_filter1d(X_np, sigma, axis=2)
    X_np = gaussian_filter1d(X_np, sigma, axis=3)
    X.copy_(torch.Tensor(X_np).type_as(X))
    return X


def _torch_classvis(model: str, iters: int):
    def setup(precision: str):
        import random

        import torch

        if precision != "float32":
            raise NotImplementedError("the class-visualization workload runs in float32 only")
        net, dev, dtype = _torch_model(model, precision)
        start = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)).to(dev)
        target_y, l2_reg, learning_rate, max_jitter, blur_every = 366, 1e-3, 5.0, 16, 10
        rng = random.Random(0)

        def run():  # create_class_visualization of the practical
            img = start.clone().requires_grad_()
            for t in range(iters):
                ox, oy = rng.randint(0, max_jitter), rng.randint(0, max_jitter)
                img.data.copy_(_torch_jitter(img.data, ox, oy))
                score = net(img)[0, target_y] - l2_reg * img.norm() ** 2
                score.backward()
                img.data += learning_rate * img.grad.data
                img.grad.data.zero_()
                img.data.copy_(_torch_jitter(img.data, -ox, -oy))
                for c in range(3):
                    lo = float(-MEAN[c] / STD[c])
                    hi = float((1.0 - MEAN[c]) / STD[c])
                    img.data[:, c].clamp_(min=lo, max=hi)
                if t % blur_every == 0:
                    _torch_blur(img.data, sigma=0.5)
            if dev == "cuda":
                torch.cuda.synchronize()
            return img
        return run
    return setup


# ----------------------------------------------------------------------------- Keras 3 (JAX backend)


def keras_saliency_fn(model):
    """A jitted ``(trainable, non_trainable, x, targets) -> (N, H, W)`` saliency of a Keras model."""
    import jax
    import jax.numpy as jnp

    def score(x, trainable, non_trainable, targets):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return jnp.sum(jnp.take_along_axis(logits, targets[:, None], axis=1))

    @jax.jit
    def saliency(trainable, non_trainable, x, targets):
        return jnp.max(jnp.abs(jax.grad(score)(x, trainable, non_trainable, targets)), axis=-1)

    return saliency


def _keras_saliency(model: str):
    def setup(precision: str):
        import jax
        import jax.numpy as jnp

        from benchmarks import keras_models
        from benchmarks.workloads_inference import keras_model

        net = keras_model(keras_models.MODELS[model], precision)
        fn = keras_saliency_fn(net)
        trainable = [v.value for v in net.trainable_variables]
        non_trainable = [v.value for v in net.non_trainable_variables]
        x = jnp.asarray(_inputs(BATCH), jnp.bfloat16 if precision == "bfloat16" else jnp.float32)
        t = jnp.asarray(_targets(BATCH), jnp.int32)
        return lambda: jax.block_until_ready(fn(trainable, non_trainable, x, t))
    return setup


def workloads() -> list[Workload]:
    out = []
    for model in ("squeezenet1_1", "vgg16"):
        name = f"saliency_{model}_b{BATCH}"
        out.append(Workload(name, "jax", _jax_saliency(model), BATCH, "maps", "2"))
        out.append(Workload(name, "torch", _torch_saliency(model), BATCH, "maps", "2"))
        out.append(Workload(name, "keras", _keras_saliency(model), BATCH, "maps", "2"))
        iters = CLASSVIS_ITERS[model]
        name = f"classvis_{model}_{iters}it"
        out.append(Workload(name, "jax", _jax_classvis(model, iters), iters, "iterations", "2"))
        out.append(Workload(name, "torch", _torch_classvis(model, iters), iters, "iterations", "2"))
    return out
