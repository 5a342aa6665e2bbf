"""GAN / cGAN training state, the jitted training step (D then G) and inference-mode sampling.

The training state is a plain dict pytree (what :mod:`rdfia_jax.train.loop` runs and
:mod:`rdfia_jax.train.checkpoint` saves)::

    {"g": {"params", "stats"}, "d": {"params", "stats"}, "opt_g", "opt_d", "key"}

``params`` / ``stats`` are the ``nnx.Param`` / ``nnx.BatchStat`` parts of ``nnx.split``; ``key`` is
a typed PRNG key from which step ``s`` draws its z with ``fold_in(key, s)`` (so a resumed run draws
the same z).

One step, as in the practical (PyTorch DCGAN tutorial order):

1. ``fake = G(z)`` in training mode, once; its VJP is kept for step 3.
2. D step: ``BCE(D(real), 1) + BCE(D(fake.detach()), 0)``, D(real) and D(fake) as two separate
   training-mode passes (each updates D's BatchNorm running statistics); Adam on D.
3. G step with the *same* z and fake batch: ``BCE(D'(fake), 1)`` through the updated D' (training
   mode again), gradient pulled back through step 1's VJP; Adam on G.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rdfia_jax.gan import models
from rdfia_jax.gan.config import KINDS, GanConfig  # noqa: F401 (the config lives beside the run options)
from rdfia_jax.train.loop import apply_optimizer
from rdfia_jax import xla

@dataclasses.dataclass(frozen=True)
class GanParts:
    """The static parts of a GAN run: graph definitions and optimizers (hashable closure data)."""

    config: GanConfig
    g_def: Any
    d_def: Any
    tx_g: Any
    tx_d: Any


def _adam(lr: float, cfg: GanConfig):
    return optax.adam(lr, b1=cfg.beta1, b2=cfg.beta2, eps=1e-8)


def build(cfg: GanConfig, *, smooth: bool = False, conv_t_impl: str = "auto",
          conv_impl: str = "auto") -> tuple[GanParts, dict]:
    """Create the networks and the initial training state.

    Args:
      cfg: the run's configuration.
      smooth: smooth activations (gradient checks only).
      conv_t_impl, conv_impl: the generator's / discriminator's convolution formulations
        (:data:`rdfia_jax.gan.ops.CONV_T_IMPLS` / :data:`~rdfia_jax.gan.ops.CONV_IMPLS`; tests and
        benchmarks), held by the networks' graph definitions.
    Returns:
      ``(parts, state)``.
    """
    rngs = nnx.Rngs(params=jax.random.fold_in(jax.random.key(cfg.seed), 0))
    if cfg.kind == "gan":
        g = models.Generator(cfg.nz, cfg.ngf, rngs=rngs, smooth=smooth, conv_t_impl=conv_t_impl)
        d = models.Discriminator(cfg.ndf, rngs=rngs, smooth=smooth, conv_impl=conv_impl)
    else:
        g = models.CondGenerator(cfg.nz, rngs=rngs, smooth=smooth, conv_t_impl=conv_t_impl)
        d = models.CondDiscriminator(rngs=rngs, smooth=smooth, conv_impl=conv_impl)
    g_def, g_params, g_stats = nnx.split(g, nnx.Param, nnx.BatchStat)
    d_def, d_params, d_stats = nnx.split(d, nnx.Param, nnx.BatchStat)
    tx_g, tx_d = _adam(cfg.lr_g, cfg), _adam(cfg.lr_d, cfg)
    state = {
        "g": {"params": g_params, "stats": g_stats},
        "d": {"params": d_params, "stats": d_stats},
        "opt_g": tx_g.init(g_params),
        "opt_d": tx_d.init(d_params),
        "key": jax.random.fold_in(jax.random.key(cfg.seed), 1),
    }
    return GanParts(cfg, g_def, d_def, tx_g, tx_d), state


def generate(parts: GanParts, g: dict, z: jax.Array, y: jax.Array | None, *, train: bool) -> tuple[jax.Array, Any]:
    """G forward: ``(images, new_stats)`` (new_stats == old ones when ``train`` is False)."""
    module = nnx.merge(parts.g_def, g["params"], g["stats"], copy=True)
    out = module(z, train=train) if y is None else module(z, y, train=train)
    return out, nnx.state(module, nnx.BatchStat)


def discriminate(parts: GanParts, d: dict, x: jax.Array, y: jax.Array | None, *, train: bool) -> tuple[jax.Array, Any]:
    """D forward: ``(logits (N,), new_stats)``."""
    module = nnx.merge(parts.d_def, d["params"], d["stats"], copy=True)
    out = module(x, train=train) if y is None else module(x, y, train=train)
    return out, nnx.state(module, nnx.BatchStat)


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against a constant target 0 or 1."""
    return jnp.mean(jax.nn.softplus(-logits) if target == 1.0 else jax.nn.softplus(logits))


def images_from_uint8(images: jax.Array) -> jax.Array:
    """uint8 (N, 32, 32, 1) -> float32 in [-1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    return (images.astype(jnp.float32) / jnp.float32(255.0) - jnp.float32(0.5)) / jnp.float32(0.5)


def one_hot(labels: jax.Array) -> jax.Array:
    """int labels -> float32 one-hot over the fixed 10 classes (never inferred from the batch)."""
    return jax.nn.one_hot(labels, models.NUM_CLASSES, dtype=jnp.float32)


TRACE_NAME = "gan_train_step"


def make_train_step(parts: GanParts, traces: xla.TraceCounter | None = None) -> Callable:
    """The pure training step ``step(state, batch, step_index) -> (state, metrics)``.

    Args:
      parts: from :func:`build`.
      traces: if given, counts the step's traces under :data:`TRACE_NAME` (retrace checks).
    Returns:
      The (un-jitted) step; ``batch`` is ``{"x": uint8 (B, 32, 32, 1)}`` plus ``"y"`` int labels
      for the cGAN. Metrics: ``loss_d``, ``loss_g``, ``d_real`` (mean D(x)), ``d_fake`` (mean
      D(G(z)) in the D step), ``d_fake_g`` (same after D's update, in the G step).
    """
    cfg = parts.config
    conditional = cfg.kind == "cgan"

    def step(state, batch, step_index):
        x = images_from_uint8(batch["x"])
        y = one_hot(batch["y"]) if conditional else None
        z = jax.random.normal(jax.random.fold_in(state["key"], step_index), (x.shape[0], cfg.nz), jnp.float32)

        def g_forward(g_params):
            return generate(parts, {"params": g_params, "stats": state["g"]["stats"]}, z, y, train=True)

        fake, g_vjp, g_stats = jax.vjp(g_forward, state["g"]["params"], has_aux=True)

        def d_loss_fn(d_params):
            d = {"params": d_params, "stats": state["d"]["stats"]}
            logit_real, stats = discriminate(parts, d, x, y, train=True)
            d = {"params": d_params, "stats": stats}
            logit_fake, stats = discriminate(parts, d, jax.lax.stop_gradient(fake), y, train=True)
            loss = bce_with_logits(logit_real, 1.0) + bce_with_logits(logit_fake, 0.0)
            return loss, (stats, logit_real, logit_fake)

        (loss_d, (d_stats, logit_real, logit_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state["d"]["params"]
        )
        d_params, opt_d = apply_optimizer(parts.tx_d, d_grads, state["opt_d"], state["d"]["params"])

        def g_loss_fn(fake_images):
            d = {"params": d_params, "stats": d_stats}
            logits, stats = discriminate(parts, d, fake_images, y, train=True)
            return bce_with_logits(logits, 1.0), (stats, logits)  # non-saturating: max log D(G(z))

        (loss_g, (d_stats, logit_fake_g)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
        (g_grads,) = g_vjp(fake_grad)
        g_params, opt_g = apply_optimizer(parts.tx_g, g_grads, state["opt_g"], state["g"]["params"])

        new_state = {
            "g": {"params": g_params, "stats": g_stats},
            "d": {"params": d_params, "stats": d_stats},
            "opt_g": opt_g,
            "opt_d": opt_d,
            "key": state["key"],
        }
        metrics = {
            "loss_d": loss_d,
            "loss_g": loss_g,
            "d_real": jnp.mean(jax.nn.sigmoid(logit_real)),
            "d_fake": jnp.mean(jax.nn.sigmoid(logit_fake)),
            "d_fake_g": jnp.mean(jax.nn.sigmoid(logit_fake_g)),
        }
        return new_state, metrics

    return step if traces is None else traces.wrap(step, TRACE_NAME)


def make_sampler(parts: GanParts) -> Callable:
    """A jitted ``sample(g, z, y) -> images float32 in [-1, 1]`` in inference mode (running stats).

    ``g`` is ``state["g"]``; nothing in the training state changes. ``y`` is int labels (cGAN) or
    None.
    """
    conditional = parts.config.kind == "cgan"

    @xla.jit
    def sample(g, z, y=None):
        images, _ = generate(parts, g, z, one_hot(y) if conditional else None, train=False)
        return images

    return sample


def make_d_scorer(parts: GanParts) -> Callable:
    """A jitted ``score(d, images, y) -> D probabilities`` in inference mode."""
    conditional = parts.config.kind == "cgan"

    @xla.jit
    def score(d, images, y=None):
        logits, _ = discriminate(parts, d, images, one_hot(y) if conditional else None, train=False)
        return jax.nn.sigmoid(logits)

    return score
