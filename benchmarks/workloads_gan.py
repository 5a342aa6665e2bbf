"""GAN training steps (report 4): one D step then one G step on a batch of 128 32x32 MNIST images.

* ``dcgan_step_b128`` / ``cdcgan_step_b128`` (jax): :func:`rdfia_jax.gan.steps.make_train_step`, the
  jitted pure step of ``rdfia-jax gan`` / ``rdfia-jax cgan`` (uint8 batch scaled inside, z drawn
  from the step index, transposed convolutions in their stride-1 phase form).
* the same names (torch): the PyTorch practical's step, rewritten here (:func:`torch_dcgan`,
  :func:`torch_cdcgan`, :func:`torch_step`): ``ConvTranspose2d``/``Conv2d`` networks with
  BatchNorm, N(0, 0.02) init, Sigmoid + ``BCELoss``, ``errD_real.backward()`` then
  ``errD_fake.backward()`` on ``fake.detach()``, ``optimizerD.step()``, then the G step on the same
  ``fake``; Adam(lr_d 2e-4 / lr_g 5e-4, betas (0.5, 0.999)); inputs a float NCHW batch in [-1, 1]
  that the practical's DataLoader would already have prepared.

* the same names (keras): ``benchmarks.keras_models.GAN``, Keras 3 on JAX in the documented
  custom-train-step style (``stateless_call``, ``jax.value_and_grad``, ``optimizer.stateless_apply``),
  same networks, init, BCE losses and optimizers, z drawn inside the step from a Keras
  ``SeedGenerator``; compiled as Keras compiles ``train_step`` (``jax.jit``, state donated) and
  called on a float NHWC batch in [-1, 1] (and one-hot labels) prepared outside the timed region.

Inputs are random arrays of the real shapes (a step's cost does not depend on pixel values).
Only float32 is meaningful here; other precisions run float32 too.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Workload, torch_compiled

BATCH = 128
NZ = 100


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(0, 256, (BATCH, 32, 32, 1), dtype=np.uint8),
            "y": rng.integers(0, 10, BATCH).astype(np.int32)}


def _jax_setup(kind: str):
    def setup(precision: str):
        import jax
        import jax.numpy as jnp

        from rdfia_jax import xla
        from rdfia_jax.gan import steps

        parts, state = steps.build(steps.GanConfig(kind=kind))
        step = xla.jit(steps.make_train_step(parts))
        batch = jax.device_put(_batch() if kind == "cgan" else {"x": _batch()["x"]})
        box = {"state": state, "i": 0}

        def run_once():
            box["state"], metrics = step(box["state"], batch, jnp.asarray(box["i"], jnp.int32))
            box["i"] += 1
            jax.block_until_ready(metrics)

        return run_once

    return setup


# ----------------------------------------------------------------------------- the PyTorch practical
def torch_dcgan(nz: int = NZ, ngf: int = 32, ndf: int = 32):
    """The practical's DCGAN (G, D) in PyTorch, weights initialized as in its ``weights_init``."""
    import torch.nn as nn

    g = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )
    g.apply(_weights_init)
    d.apply(_weights_init)
    return _Uncond(g), _Uncond(d)


def _weights_init(m):
    import torch.nn as nn

    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _Uncond(seq):
    import torch.nn as nn

    class Uncond(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = seq

        def forward(self, x, y=None):
            return self.net(x)

    return Uncond()


def torch_cdcgan(nz: int = NZ):
    """The practical's conditional DCGAN (G, D) in PyTorch; ``forward(x, y_onehot)``."""
    import torch
    import torch.nn as nn

    class CondG(nn.Module):
        def __init__(self):
            super().__init__()
            self.z_branch = nn.Sequential(nn.ConvTranspose2d(nz, 256, 4, 1, 0, bias=False), nn.BatchNorm2d(256), nn.ReLU(True))
            self.y_branch = nn.Sequential(nn.ConvTranspose2d(10, 256, 4, 1, 0, bias=False), nn.BatchNorm2d(256), nn.ReLU(True))
            self.main = nn.Sequential(
                nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(True),
                nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
                nn.ConvTranspose2d(128, 1, 4, 2, 1, bias=False), nn.Tanh(),
            )

        def forward(self, z, y):
            return self.main(torch.cat([self.z_branch(z), self.y_branch(y[:, :, None, None])], 1))

    class CondD(nn.Module):
        def __init__(self):
            super().__init__()
            self.x_branch = nn.Sequential(nn.Conv2d(1, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))
            self.y_branch = nn.Sequential(nn.Conv2d(10, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))
            self.main = nn.Sequential(
                nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, True),
                nn.Conv2d(256, 512, 4, 2, 1, bias=False), nn.BatchNorm2d(512), nn.LeakyReLU(0.2, True),
                nn.Conv2d(512, 1, 4, 1, 0), nn.Sigmoid(),
            )

        def forward(self, x, y):
            y_fill = y[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
            return self.main(torch.cat([self.x_branch(x), self.y_branch(y_fill)], 1))

    g, d = CondG(), CondD()
    g.apply(_weights_init)
    d.apply(_weights_init)
    return g, d


def torch_step(g, d, opt_g, opt_d, real, y_onehot, nz: int = NZ) -> dict:
    """One practical step (D then G) in PyTorch; returns the losses and D scores."""
    import torch

    criterion = torch.nn.BCELoss()
    b = real.shape[0]
    ones, zeros = torch.ones(b), torch.zeros(b)
    d.zero_grad()
    out_real = d(real, y_onehot).view(-1)
    err_real = criterion(out_real, ones)
    err_real.backward()
    z = torch.randn(b, nz, 1, 1)
    fake = g(z, y_onehot)
    out_fake = d(fake.detach(), y_onehot).view(-1)
    err_fake = criterion(out_fake, zeros)
    err_fake.backward()
    opt_d.step()
    g.zero_grad()
    out = d(fake, y_onehot).view(-1)
    err_g = criterion(out, ones)
    err_g.backward()
    opt_g.step()
    return {"loss_d": float((err_real + err_fake).detach()), "loss_g": float(err_g.detach()),
            "d_real": float(out_real.detach().mean()), "d_fake": float(out_fake.detach().mean()),
            "d_fake_g": float(out.detach().mean())}


def _torch_setup(kind: str):
    def setup(precision: str):
        import torch

        torch.manual_seed(0)
        g, d = torch_dcgan() if kind == "gan" else torch_cdcgan()
        g_fwd, d_fwd = torch_compiled(g), torch_compiled(d)  # eager unless the torch-compile worker
        opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(g.parameters(), lr=5e-4, betas=(0.5, 0.999))
        b = _batch()
        real = torch.from_numpy(b["x"].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
        y = torch.nn.functional.one_hot(torch.from_numpy(b["y"]).long(), 10).float() if kind == "cgan" else None

        def run_once():
            torch_step(g_fwd, d_fwd, opt_g, opt_d, real, y)

        return run_once

    return setup


def _keras_setup(kind: str):
    def setup(precision: str):
        import jax

        from benchmarks import keras_models

        gan = keras_models.gan_model(kind, NZ)
        step = jax.jit(gan.train_step, donate_argnums=0)  # as Keras' JAX trainer compiles train_step
        b = _batch()
        real = b["x"].astype(np.float32) / 127.5 - 1.0
        data = (real, np.eye(10, dtype=np.float32)[b["y"]]) if kind == "cgan" else real
        box = {"state": gan.initial_state()}

        def run_once():
            logs, box["state"] = step(box["state"], data)
            return jax.block_until_ready(logs)

        return run_once

    return setup


def workloads() -> list[Workload]:
    out = []
    for kind, name in (("gan", "dcgan_step_b128"), ("cgan", "cdcgan_step_b128")):
        out.append(Workload(name, "jax", _jax_setup(kind), items=1, unit="steps", section="4 GAN"))
        out.append(Workload(name, "torch", _torch_setup(kind), items=1, unit="steps", section="4 GAN"))
        out.append(Workload(name, "keras", _keras_setup(kind), items=1, unit="steps", section="4 GAN"))
    return out
