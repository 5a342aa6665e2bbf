"""DANN training step (report 3): one SGD step on 64 MNIST + 64 MNIST-M images in one forward pass.

* ``dann_step_b64x2`` (jax): :func:`rdfia_jax.dann.steps.make_train_step` -- the jitted pure step of
  ``rdfia-jax dann dann`` (uint8 batch standardized inside, lr and lambda(p) from the step index).
* ``dann_step_b64x2`` (torch): the PyTorch practical's step, rewritten here: the same networks
  (Conv2d 3->32 5x5 p2, ReLU, MaxPool 2, Conv2d 32->48 5x5 p2, ReLU, MaxPool 2; Linear 2352-100-100-10;
  GRL -> Linear 2352-100-1), ``torch.autograd.Function`` GRL, cross-entropy on the source half +
  BCE-with-logits on all, SGD momentum 0.9 with the lr set per step, on a float NCHW batch that the
  practical's DataLoader would already have standardized.

* ``dann_step_b64x2`` (keras): ``benchmarks.keras_models.DANN``, the same network in Keras 3 on
  JAX, the GRL a ``keras.ops.custom_gradient`` layer whose factor (a non-trainable weight) is
  assigned before each step, SGD momentum 0.9 with the annealed rate as a Keras
  ``LearningRateSchedule``, the documented custom ``train_step``, called through
  ``model.train_on_batch`` on the standardized float NHWC batch.

Inputs are random arrays of the real shapes (a step's cost does not depend on pixel values).
Only float32 is meaningful here; other precisions run float32 too.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.harness import Workload, torch_compiled

BATCH = 64
TOTAL_STEPS = 18_740  # 20 epochs of 937 steps


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"src_x": rng.integers(0, 256, (BATCH, 28, 28, 1), dtype=np.uint8),
            "src_y": rng.integers(0, 10, BATCH).astype(np.int32),
            "tgt_x": rng.integers(0, 256, (BATCH, 28, 28, 3), dtype=np.uint8)}


def torch_dann():
    """The practical's DANN in PyTorch (default PyTorch init): ``forward(x NCHW, grl_factor)`` ->
    ``(class logits (N, 10), domain logits (N,))``; the GRL is a ``torch.autograd.Function``."""
    import torch
    import torch.nn as nn

    class GradientReversal(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, factor):
            ctx.factor = factor
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return -ctx.factor * grad, None

    class DANN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 48, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Linear(2352, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                                            nn.Linear(100, 10))
            self.domain = nn.Sequential(nn.Linear(2352, 100), nn.ReLU(), nn.Linear(100, 1))

        def forward(self, x, factor):
            h = self.features(x).flatten(1)
            return self.classifier(h), self.domain(GradientReversal.apply(h, factor)).squeeze(1)

    return DANN()


def _jax_setup(precision: str):
    import jax

    from rdfia_jax.dann import steps

    cfg = steps.StepConfig(total_steps=TOTAL_STEPS)
    graphdef, state = steps.init_state(0, cfg)
    step = steps.make_train_step(graphdef, cfg)
    batch = jax.device_put(_batch())
    box = {"state": state, "i": 0}

    def run_once():
        box["state"], metrics = step(box["state"], batch, np.int32(box["i"] % TOTAL_STEPS))  # as rdfia_jax.train.loop passes it
        box["i"] += 1
        jax.block_until_ready(metrics["loss"])
        return metrics

    return run_once


def _torch_setup(precision: str):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)

    model = torch_dann()
    forward = torch_compiled(model)  # eager unless the torch-compile worker
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    b = _batch()
    mean, std = 0.1307, 0.3081
    xs = torch.from_numpy(b["src_x"]).float().div(255).sub(mean).div(std).permute(0, 3, 1, 2).repeat(1, 3, 1, 1)
    xt = torch.from_numpy(b["tgt_x"]).float().div(255).sub(mean).div(std).permute(0, 3, 1, 2).contiguous()
    ys = torch.from_numpy(b["src_y"]).long()
    domain_y = torch.cat([torch.ones(BATCH), torch.zeros(BATCH)])
    box = {"i": 0}

    def run_once():
        p = (box["i"] % TOTAL_STEPS) / TOTAL_STEPS
        factor = 2.0 / (1.0 + math.exp(-2.0 * p)) - 1.0
        for group in opt.param_groups:
            group["lr"] = 0.01 / (1.0 + 10 * p) ** 0.75
        x = torch.cat([xs, xt])  # the practical concatenates both domains: one forward pass
        cls, dom = forward(x, factor)
        loss = F.cross_entropy(cls[:BATCH], ys) + F.binary_cross_entropy_with_logits(dom, domain_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        box["i"] += 1
        return loss.item()

    return run_once


def _keras_setup(precision: str):
    from benchmarks import keras_models

    model = keras_models.dann_model(TOTAL_STEPS)
    grl = model.get_layer("grl")
    b = _batch()
    mean, std = np.float32(0.1307), np.float32(0.3081)
    xs = np.repeat((b["src_x"] / np.float32(255) - mean) / std, 3, axis=-1)
    xt = (b["tgt_x"] / np.float32(255) - mean) / std
    x = np.concatenate([xs, xt]).astype(np.float32)  # one forward pass over both domains
    y = (b["src_y"], np.concatenate([np.ones(BATCH), np.zeros(BATCH)]).astype(np.float32)[:, None])
    box = {"i": 0}

    def run_once():
        p = (box["i"] % TOTAL_STEPS) / TOTAL_STEPS
        grl.factor.assign(2.0 / (1.0 + math.exp(-2.0 * p)) - 1.0)
        loss = model.train_on_batch(x, y)  # returns a Python float: blocks
        box["i"] += 1
        return loss

    return run_once


def workloads() -> list[Workload]:
    return [
        Workload("dann_step_b64x2", "jax", _jax_setup, items=1, unit="steps", section="3 DANN"),
        Workload("dann_step_b64x2", "torch", _torch_setup, items=1, unit="steps", section="3 DANN"),
        Workload("dann_step_b64x2", "keras", _keras_setup, items=1, unit="steps", section="3 DANN"),
    ]


if __name__ == "__main__":  # quick check without the harness: python -m benchmarks.workloads_dann
    import time

    for w in workloads():
        if w.framework == "keras":  # needs the harness's keras worker (KERAS_BACKEND=jax set first)
            continue
        run = w.setup("float32")
        run()
        run()
        t0 = time.perf_counter()
        n = 20
        for _ in range(n):
            run()
        print(f"{w.name} {w.framework}: {n / (time.perf_counter() - t0):.2f} steps/s")
