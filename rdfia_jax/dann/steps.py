"""Schedules, losses, the jitted training step and evaluation for DANN and its variants.

One pure function ``step(state, batch, step_index) -> (state, metrics)`` covers every run of the
practical; what differs between runs is a static :class:`StepConfig`:

* ``objective="dann"``: label loss on the source half + domain loss on both halves, the domain
  classifier behind a GRL whose strength is ``lam = grl_scale * lambda(p) + grl_offset``:
  DANN ``(1, 0)``, positive factor ``(-1, 0)``, no GRL ``(0, -1)`` (identity: the features *help*
  the domain classifier), constant -1 ``(0, 1)``, constant -0.1 ``(0, 0.1)``, and ``(0, 0)``: the
  domain classifier is a probe trained on frozen-by-GRL features (used by the baselines so every run
  reports a domain accuracy without the domain loss shaping the features).
* ``objective="pseudo"``: label loss on source + alpha(p) x cross-entropy of the target images on
  their own confident predictions (pseudo-labels, no gradient through the labels), plus the domain
  loss behind the GRL: a probe with ``(0, 0)``, DANN + pseudo-labels with ``(1, 0)``.
* ``labelled="target"`` (target-only upper bound): the label loss uses the target labels.

Source and target images go through the feature extractor in ONE forward pass (concatenated).
Images arrive as uint8 NHWC and are standardized inside the step with one scalar mean/std per domain:
by default both domains use the MNIST-train statistics (the practical); with ``target_mean`` /
``target_std`` set, target images use their own (unlabelled) train-set statistics. 1-channel images
are repeated to 3 channels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rdfia_jax import xla
from rdfia_jax.dann.models import DANN
from rdfia_jax.data.batching import map_batches

Batch = dict[str, Any]
TrainState = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static description of one training step (hashable; a new config = a new compilation).

    Attributes:
      objective: "dann" (label + domain loss) or "pseudo" (label + domain + alpha * pseudo-label loss).
      labelled: which half carries the label loss: "source" or "target" (target-only upper bound).
      total_steps: number of steps of the whole run; p = step / total_steps in [0, 1].
      steps_per_epoch: used when ``lr_per_epoch`` (the original notebook stepped p per epoch).
      gamma: lambda(p) = 2 / (1 + exp(-gamma p)) - 1 (2: the practical, 10: the paper).
      grl_scale, grl_offset: GRL strength lam = grl_scale * lambda(p) + grl_offset.
      lr0, lr_alpha, lr_beta: lr(p) = lr0 / (1 + lr_alpha p) ** lr_beta.
      lr_per_epoch: compute the lr's p from whole epochs instead of steps.
      momentum: SGD momentum.
      mean, std: scalar standardization (MNIST train statistics of images in [0, 1]).
      target_mean, target_std: the target domain's own statistics, or None (the practical: the target
        images are standardized with ``mean``/``std`` too).
      pseudo_threshold: softmax confidence above which a target prediction is used as a label.
      pseudo_alpha_max, pseudo_ramp: alpha(p) grows linearly from 0 at p = ramp[0] to alpha_max at
        p = ramp[1] (Lee 2013's schedule, in training progress instead of epochs).
      ema_decay: 0 (off) or d in (0, 1): the state also carries ``ema_params``, an exponential
        moving average of the parameters (``ema <- d ema + (1 - d) params`` after every step,
        starting from the initial parameters; Polyak averaging). It never feeds back into training.
      clip_norm: None (the practical) or c > 0: the gradient is rescaled to global norm <= c before
        the momentum (``optax.clip_by_global_norm``). Every step reports the unclipped norm as the
        metric ``grad_norm``.
    """

    objective: str = "dann"
    labelled: str = "source"
    total_steps: int = 1
    steps_per_epoch: int = 1
    gamma: float = 2.0
    grl_scale: float = 1.0
    grl_offset: float = 0.0
    lr0: float = 0.01
    lr_alpha: float = 10.0
    lr_beta: float = 0.75
    lr_per_epoch: bool = False
    momentum: float = 0.9
    mean: float = 0.1307
    std: float = 0.3081
    target_mean: float | None = None
    target_std: float | None = None
    pseudo_threshold: float = 0.9
    pseudo_alpha_max: float = 1.0
    pseudo_ramp: tuple[float, float] = (0.1, 0.5)
    ema_decay: float = 0.0
    clip_norm: float | None = None

    def __post_init__(self):
        if self.objective not in ("dann", "pseudo"):
            raise ValueError(f"StepConfig.objective must be 'dann' or 'pseudo', got {self.objective!r}")
        if self.labelled not in ("source", "target"):
            raise ValueError(f"StepConfig.labelled must be 'source' or 'target', got {self.labelled!r}")
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError("StepConfig.total_steps and steps_per_epoch must be >= 1")
        if (self.target_mean is None) != (self.target_std is None):
            raise ValueError("StepConfig.target_mean and target_std must be given together")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"StepConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"StepConfig.clip_norm must be None or > 0, got {self.clip_norm}")

    def input_stats(self, domain: str) -> tuple[float, float]:
        """The (mean, std) that standardize ``domain``'s ("source" or "target") images."""
        if domain not in ("source", "target"):
            raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
        if domain == "target" and self.target_mean is not None:
            return self.target_mean, self.target_std
        return self.mean, self.std


# ----------------------------------------------------------------------------------------------
# Schedules (pure, jnp; also accept Python numbers)

def dann_lambda(p, gamma: float = 2.0):
    """lambda(p) = 2 / (1 + exp(-gamma p)) - 1: 0 at p = 0, ~0.76 at p = 1 for gamma = 2."""
    return 2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0


def dann_lr(p, lr0: float = 0.01, alpha: float = 10.0, beta: float = 0.75):
    """lr(p) = lr0 / (1 + alpha p) ** beta (Ganin & Lempitsky's annealing)."""
    return lr0 / (1.0 + alpha * p) ** beta


def pseudo_alpha(p, alpha_max: float = 1.0, ramp: tuple[float, float] = (0.1, 0.5)):
    """Weight of the pseudo-label loss: 0 until ramp[0], linear up to alpha_max at ramp[1]."""
    start, end = ramp
    return alpha_max * jnp.clip((p - start) / max(end - start, 1e-9), 0.0, 1.0)


def schedules(cfg: StepConfig, step_index) -> dict[str, jax.Array]:
    """Progress p, lambda(p), the GRL strength, the lr and the pseudo-label weight at a step."""
    step = jnp.asarray(step_index, jnp.float32)
    p = step / cfg.total_steps
    if cfg.lr_per_epoch:
        epochs = math.ceil(cfg.total_steps / cfg.steps_per_epoch)
        p_lr = jnp.floor(step / cfg.steps_per_epoch) / epochs
    else:
        p_lr = p
    lam_p = dann_lambda(p, cfg.gamma)
    return {
        "p": p,
        "lambda": lam_p,
        "grl": cfg.grl_scale * lam_p + cfg.grl_offset,
        "lr": dann_lr(p_lr, cfg.lr0, cfg.lr_alpha, cfg.lr_beta),
        "alpha": pseudo_alpha(p, cfg.pseudo_alpha_max, cfg.pseudo_ramp),
    }


# ----------------------------------------------------------------------------------------------
# Model / optimizer state

def standardize(images_u8: jax.Array, mean: float, std: float, dtype=jnp.float32) -> jax.Array:
    """uint8 (N, H, W, 1|3) -> float (N, H, W, 3) standardized with one scalar mean/std."""
    x = (images_u8.astype(dtype) / 255.0 - mean) / std
    if x.shape[-1] == 1:
        x = jnp.broadcast_to(x, x.shape[:-1] + (3,))
    return x


def make_optimizer(momentum: float = 0.9, clip_norm: float | None = None) -> optax.GradientTransformation:
    """SGD momentum without the learning rate; the step scales by lr(p) itself (pure in the step).
    With ``clip_norm``, the gradient's global norm is first capped at that value."""
    momentum_tx = optax.trace(decay=momentum, nesterov=False)
    if clip_norm is None:
        return momentum_tx
    return optax.chain(optax.clip_by_global_norm(clip_norm), momentum_tx)


def init_state(seed: int, cfg: StepConfig, *, block1_impl: str = "s2d") -> tuple[nnx.GraphDef, TrainState]:
    """Builds the network from ``seed`` and returns ``(graphdef, {"params", "opt_state"})``, plus
    ``"ema_params"`` (a copy of the initial parameters) when ``cfg.ema_decay > 0``.

    ``params`` is the ``nnx.State`` of the network's ``nnx.Param`` variables (a pytree);
    ``block1_impl`` is the model's first-block implementation (:data:`rdfia_jax.dann.models.BLOCK1_IMPLS`),
    carried by the returned graphdef.
    """
    model = DANN(block1_impl=block1_impl, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    opt_state = make_optimizer(cfg.momentum, cfg.clip_norm).init(params)
    state = {"params": params, "opt_state": opt_state}
    if cfg.ema_decay > 0:
        state["ema_params"] = jax.tree.map(jnp.array, params)  # a copy, not an alias
    return graphdef, state


# ----------------------------------------------------------------------------------------------
# Loss and step

def loss_and_metrics(params, graphdef: nnx.GraphDef, batch: Batch, sched: dict, cfg: StepConfig):
    """Total loss of one step and its parts; pure in (params, batch, sched).

    Args:
      params: ``nnx.State`` of the network parameters.
      graphdef: the network's graph definition (static).
      batch: ``src_x`` uint8 (Bs, H, W, Cs), ``src_y`` int (Bs,), ``tgt_x`` uint8 (Bt, H, W, Ct),
        and ``tgt_y`` int (Bt,) only for ``labelled="target"``.
      sched: output of :func:`schedules` for this step.
      cfg: the static step configuration.
    Returns:
      ``(loss, metrics)`` with metrics a dict of scalars.
    """
    model = nnx.merge(graphdef, params)
    n_src = batch["src_x"].shape[0]
    n_tgt = batch["tgt_x"].shape[0]
    dtype = jax.tree.leaves(params)[0].dtype  # float32; float64 in gradient checks
    x = jnp.concatenate([standardize(batch["src_x"], *cfg.input_stats("source"), dtype),
                         standardize(batch["tgt_x"], *cfg.input_stats("target"), dtype)])
    feats = model.features(x)  # one forward pass over source + target

    if cfg.labelled == "source":
        lab_feats, lab_y = feats[:n_src], batch["src_y"]
    else:
        lab_feats, lab_y = feats[n_src:], batch["tgt_y"]
    if cfg.objective == "pseudo":
        logits_all = model.classifier(feats)
        lab_logits = logits_all[:n_src] if cfg.labelled == "source" else logits_all[n_src:]
        tgt_logits = logits_all[n_src:]
    else:
        lab_logits = model.classifier(lab_feats)
    label_loss = optax.softmax_cross_entropy_with_integer_labels(lab_logits, lab_y).mean()
    label_acc = jnp.mean((jnp.argmax(lab_logits, -1).astype(lab_y.dtype) == lab_y).astype(dtype))

    dom_logits = model.domain(feats, sched["grl"])
    dom_y = jnp.concatenate([jnp.ones((n_src,), dtype), jnp.zeros((n_tgt,), dtype)])
    domain_loss = optax.sigmoid_binary_cross_entropy(dom_logits, dom_y).mean()
    # sigmoid(logit) > 0.5  <=>  logit > 0 (the original notebook thresholded raw logits at 0.5).
    domain_acc = jnp.mean(((dom_logits > 0).astype(dtype) == dom_y).astype(dtype))

    loss = label_loss + domain_loss
    metrics = {"label_loss": label_loss, "label_acc": label_acc, "domain_loss": domain_loss,
               "domain_acc": domain_acc}
    if cfg.objective == "pseudo":
        probs = jax.nn.softmax(jax.lax.stop_gradient(tgt_logits), axis=-1)
        pseudo_y = jnp.argmax(probs, axis=-1)
        confident = (jnp.max(probs, axis=-1) >= cfg.pseudo_threshold).astype(dtype)
        per_example = optax.softmax_cross_entropy_with_integer_labels(tgt_logits, pseudo_y)
        pseudo_loss = jnp.sum(confident * per_example) / jnp.maximum(jnp.sum(confident), 1.0)
        loss = loss + sched["alpha"].astype(dtype) * pseudo_loss
        metrics.update(pseudo_loss=pseudo_loss, pseudo_fraction=jnp.mean(confident))
    metrics["loss"] = loss
    return loss, metrics


def make_train_step(graphdef: nnx.GraphDef, cfg: StepConfig, *, jit: bool = True,
                    traces: xla.TraceCounter | None = None) -> Callable:
    """The pure training step ``step(state, batch, step_index) -> (state, metrics)``, jitted
    unless ``jit=False`` (``rdfia_jax.train.loop.run`` jits it itself).

    ``step_index`` is a traced int32 scalar (the global step, from 0): the lr, lambda(p) and the
    pseudo-label weight are computed from it inside the step, so the whole run is one compilation;
    ``traces`` (optional) counts its traces under ``"train_step"``.
    """
    tx = make_optimizer(cfg.momentum, cfg.clip_norm)

    def step(state: TrainState, batch: Batch, step_index) -> tuple[TrainState, dict]:
        sched = schedules(cfg, step_index)
        grads, metrics = jax.grad(loss_and_metrics, has_aux=True)(
            state["params"], graphdef, batch, sched, cfg)
        metrics["grad_norm"] = optax.tree.norm(grads)  # before any clipping
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = jax.tree.map(lambda w, u: w - sched["lr"].astype(w.dtype) * u, state["params"], updates)
        metrics.update(lr=sched["lr"], **{"lambda": sched["lambda"]}, grl=sched["grl"], alpha=sched["alpha"])
        new_state = {"params": params, "opt_state": opt_state}
        if cfg.ema_decay > 0:
            d = cfg.ema_decay
            new_state["ema_params"] = jax.tree.map(lambda e, w: d * e + (1.0 - d) * w,
                                                   state["ema_params"], params)
        return new_state, metrics

    if traces is not None:
        step = traces.wrap(step, "train_step")
    return xla.jit(step) if jit else step


# ----------------------------------------------------------------------------------------------
# Evaluation

def make_eval_fn(graphdef: nnx.GraphDef, cfg: StepConfig, domain: str = "source", *,
                 traces: xla.TraceCounter | None = None) -> Callable:
    """Jitted ``(params, images_u8) -> (class_logits, domain_logits, features)`` for images of
    ``domain`` ("source" or "target": which standardization they get, see :meth:`StepConfig.input_stats`);
    ``traces`` (optional) counts its traces under ``"eval_<domain>"``."""
    mean, std = cfg.input_stats(domain)

    def forward(params, images_u8):
        model = nnx.merge(graphdef, params)
        return model(standardize(images_u8, mean, std), 0.0)

    if traces is not None:
        forward = traces.wrap(forward, f"eval_{domain}")
    return xla.jit(forward)


def make_eval_fns(graphdef: nnx.GraphDef, cfg: StepConfig, *,
                  traces: xla.TraceCounter | None = None) -> tuple[Callable, Callable]:
    """``(source_eval_fn, target_eval_fn)`` of :func:`make_eval_fn`; one shared function (one
    compilation) when both domains get the same standardization."""
    source_fn = make_eval_fn(graphdef, cfg, "source", traces=traces)
    if cfg.input_stats("target") == cfg.input_stats("source"):
        return source_fn, source_fn
    return source_fn, make_eval_fn(graphdef, cfg, "target", traces=traces)


def predict(eval_fn: Callable, params, images_u8: np.ndarray, *, batch_size: int = 500,
            want_features: bool = False):
    """Runs the network over a whole array in fixed-size batches (:func:`rdfia_jax.data.batching.map_batches`:
    the last one zero-padded, so a single compilation per image shape).

    Returns:
      ``(class_logits (N, 10), domain_logits (N,), features (N, 2352) or None)`` as numpy arrays.
    """
    if want_features:
        return tuple(map_batches(lambda x: eval_fn(params, x), np.asarray(images_u8), batch_size))
    cls, dom = map_batches(lambda x: tuple(eval_fn(params, x)[:2]), np.asarray(images_u8), batch_size)
    return cls, dom, None


def evaluate(eval_fn: Callable, params, source, target, *, batch_size: int = 500,
             target_eval_fn: Callable | None = None) -> dict[str, float]:
    """Accuracy on source and target test sets and domain accuracy over both.

    Args:
      eval_fn: from :func:`make_eval_fn` (the source domain's).
      params: network parameters.
      source, target: objects with ``.images`` uint8 NHWC and ``.labels`` int (N,).
      target_eval_fn: the target domain's :func:`make_eval_fn` when it is standardized differently
        (default: ``eval_fn``).
    Returns:
      ``{"source_acc", "target_acc", "domain_acc", "domain_acc_source", "domain_acc_target"}``;
      the domain classifier says "source" when sigmoid(logit) > 0.5, i.e. logit > 0.
    """
    s_cls, s_dom, _ = predict(eval_fn, params, source.images, batch_size=batch_size)
    t_cls, t_dom, _ = predict(target_eval_fn or eval_fn, params, target.images, batch_size=batch_size)
    s_dom_ok = s_dom > 0
    t_dom_ok = t_dom <= 0
    return {
        "source_acc": float(np.mean(s_cls.argmax(-1) == np.asarray(source.labels))),
        "target_acc": float(np.mean(t_cls.argmax(-1) == np.asarray(target.labels))),
        "domain_acc": float((s_dom_ok.sum() + t_dom_ok.sum()) / (len(s_dom) + len(t_dom))),
        "domain_acc_source": float(s_dom_ok.mean()),
        "domain_acc_target": float(t_dom_ok.mean()),
    }
