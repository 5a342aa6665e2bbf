"""Attribution maps: saliency (Simonyan et al. 2014), SmoothGrad, Integrated Gradients, Grad-CAM,
and the model-randomization sanity check (Adebayo et al. 2018).

Every method is batched (one image and one class per row) and jitted once per input shape; inputs
are model-space images (``network.preprocessing.normalize(images01)``) and int class indices.

References:
  Simonyan, Vedaldi & Zisserman 2014, arXiv:1312.6034 (saliency);
  Smilkov et al. 2017, arXiv:1706.03825 (SmoothGrad);
  Sundararajan, Taly & Yan 2017, arXiv:1703.01365 (Integrated Gradients);
  Selvaraju et al. 2017, arXiv:1610.02391 (Grad-CAM);
  Adebayo et al. 2018, arXiv:1810.03292 (sanity checks).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.models import Network, forward
from rdfia_jax.vis import core
from rdfia_jax import xla

METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam")


def _score_sum(graphdef, state, x, targets):
    """Sum over the batch of each image's target logit: its gradient is each image's own gradient
    (the models have no batch-coupling layers)."""
    logits, _ = forward(graphdef, state, x)
    return jnp.sum(core.class_scores(logits, targets)), logits


def input_gradient(graphdef, state, x: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """d s_t(x) / dx for each image (same shape as ``x``); pure, traceable."""
    return jax.grad(lambda xx: _score_sum(graphdef, state, xx, targets)[0])(x)


def channel_max_abs(g: jnp.ndarray) -> jnp.ndarray:
    """The practical's map: |g| maximized over channels, (N, H, W, C) -> (N, H, W)."""
    return jnp.max(jnp.abs(g), axis=-1)


@xla.jit(static_argnums=0)
@core.traced("saliency")
def _saliency(graphdef, state, x, targets):
    return channel_max_abs(input_gradient(graphdef, state, x, targets))


@xla.jit(static_argnums=(0, 5))
@core.traced("smoothgrad")
def _smoothgrad(graphdef, state, x, targets, key, n_samples, noise_level):
    # Noise scaled to each image's value range, as in the SmoothGrad paper (sigma / (max - min)).
    span = (jnp.max(x, axis=(1, 2, 3), keepdims=True) - jnp.min(x, axis=(1, 2, 3), keepdims=True))
    sigma = noise_level * span

    def body(total, k):
        noisy = x + sigma * jax.random.normal(k, x.shape, x.dtype)
        return total + channel_max_abs(input_gradient(graphdef, state, noisy, targets)), None

    total, _ = jax.lax.scan(body, jnp.zeros(x.shape[:3], x.dtype), jax.random.split(key, n_samples))
    return total / jnp.asarray(n_samples, x.dtype)


@xla.jit(static_argnums=(0, 5))
@core.traced("integrated_gradients")
def _integrated_gradients(graphdef, state, x, targets, baseline, steps):
    # Midpoint Riemann sum of the gradient along the straight path baseline -> x.
    alphas = (jnp.arange(steps, dtype=x.dtype) + jnp.asarray(0.5, x.dtype)) / jnp.asarray(steps, x.dtype)

    def body(total, a):
        return total + input_gradient(graphdef, state, baseline + a * (x - baseline), targets), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), alphas)
    return (x - baseline) * total / jnp.asarray(steps, x.dtype)


@xla.jit(static_argnums=(0, 4))
@core.traced("gradcam")
def _gradcam(graphdef, state, x, targets, layer):
    shape = jax.eval_shape(lambda: forward(graphdef, state, x, (layer,))[1][layer])
    if len(shape.shape) != 4:
        raise RdfiaError(f"Grad-CAM needs a convolutional layer (activation N x h x w x K); layer {layer!r} "
                         f"has shape {shape.shape}")

    def score(delta):
        logits, act = core.forward_perturbed(graphdef, state, x, layer, delta)
        return jnp.sum(core.class_scores(logits, targets)), act

    grads, acts = jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
    weights = jnp.mean(grads, axis=(1, 2), keepdims=True)           # alpha_k: pooled gradients
    cam = jax.nn.relu(jnp.sum(weights * acts, axis=-1))             # (N, h, w)
    cam = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    peak = jnp.max(cam, axis=(1, 2), keepdims=True)
    return cam / jnp.maximum(peak, jnp.asarray(1e-12, cam.dtype))


def _prepare(network: Network, x: Any, targets: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
    x = core.check_images(network, x)
    return x, core.check_targets(network, targets, x.shape[0], x.shape[1:])


def saliency(network: Network, x: Any, targets: Any) -> jnp.ndarray:
    """Saliency maps: max over channels of |d s_t / dx| (the practical's definition).

    Args:
      network: the model.
      x: model-space images (N, H, W, C).
      targets: class index per image (N,) (or one int for all).
    Returns:
      (N, H, W) non-negative maps.
    """
    x, t = _prepare(network, x, targets)
    return _saliency(network.graphdef, network.state, x, t)


def smoothgrad(network: Network, x: Any, targets: Any, *, n_samples: int = 25, noise_level: float = 0.15,
               seed: int = 0) -> jnp.ndarray:
    """SmoothGrad: the saliency map averaged over ``n_samples`` noisy copies of each image.

    Args:
      network, x, targets: as :func:`saliency`.
      n_samples: number of noisy copies.
      noise_level: noise standard deviation as a fraction of each image's value range.
      seed: noise seed.
    Returns:
      (N, H, W) maps.
    """
    if n_samples < 1:
        raise RdfiaError(f"n_samples must be >= 1, got {n_samples}")
    x, t = _prepare(network, x, targets)
    return _smoothgrad(network.graphdef, network.state, x, t, jax.random.key(seed), int(n_samples),
                       jnp.asarray(noise_level, jnp.float32))


def baseline_image(network: Network, x: jnp.ndarray, kind: str | Any = "black") -> jnp.ndarray:
    """Integrated-Gradients baseline: "black" (pixels 0), "zeros" (model-space 0 = mean image) or an array."""
    if isinstance(kind, str):
        if kind == "black":
            lo, _ = network.preprocessing.bounds()
            return jnp.broadcast_to(jnp.asarray(lo, x.dtype), x.shape)
        if kind == "zeros":
            return jnp.zeros_like(x)
        raise RdfiaError(f"unknown baseline {kind!r}; use 'black', 'zeros' or an image array")
    b = jnp.asarray(kind, x.dtype)
    if b.shape != x.shape:
        b = jnp.broadcast_to(b, x.shape)
    return b


def integrated_gradients(network: Network, x: Any, targets: Any, *, steps: int = 64,
                         baseline: str | Any = "black") -> jnp.ndarray:
    """Integrated Gradients: (x - x') * mean of gradients along the path x' -> x (midpoint rule).

    Completeness: the attributions of an image sum to s_t(x) - s_t(x') up to the quadrature error,
    which shrinks as ``steps`` grows.

    Args:
      network, x, targets: as :func:`saliency`.
      steps: number of path points.
      baseline: "black", "zeros" or a model-space image/batch.
    Returns:
      Attributions, same shape as ``x`` (use :func:`channel_max_abs` or a channel sum for a map).
    """
    if steps < 1:
        raise RdfiaError(f"steps must be >= 1, got {steps}")
    x, t = _prepare(network, x, targets)
    return _integrated_gradients(network.graphdef, network.state, x, t, baseline_image(network, x, baseline),
                                 int(steps))


def gradcam(network: Network, x: Any, targets: Any, layer: str | None = None) -> jnp.ndarray:
    """Grad-CAM at a named convolutional layer, upsampled (bilinear) to the input size, max-normalized.

    Args:
      network, x, targets: as :func:`saliency`.
      layer: activation name (default: the model's usual choice, e.g. ``fire9`` / ``relu5_3`` / ``relu2``).
    Returns:
      (N, H, W) maps in [0, 1].
    """
    layer = layer or default_gradcam_layer(network)
    core.check_layer(network, layer)
    if layer not in core.perturbable_layers(network):
        raise RdfiaError(f"Grad-CAM at {layer!r} needs the model's 'perturb' hook; layers available here: "
                         f"{', '.join(core.perturbable_layers(network))}")
    x, t = _prepare(network, x, targets)
    return _gradcam(network.graphdef, network.state, x, t, layer)


def default_gradcam_layer(network: Network) -> str:
    """The last convolutional feature map: fire9 (SqueezeNet), relu5_3 / conv5_3 (VGG16), relu5 / conv5 (AlexNet)."""
    names = network.activation_names
    available = core.perturbable_layers(network)
    for cand in ("fire9", "relu5_3", "conv5_3", "relu5", "conv5", "relu2", "conv2"):
        if cand in names and cand in available:
            return cand
    raise RdfiaError(f"no default Grad-CAM layer for {network.name}; pass one of {', '.join(available)}")


def attribution(network: Network, method: str, x: Any, targets: Any, **options) -> jnp.ndarray:
    """Any method of :data:`METHODS` as an (N, H, W) map (Integrated Gradients: |.| max over channels)."""
    if method == "saliency":
        return saliency(network, x, targets)
    if method == "smoothgrad":
        return smoothgrad(network, x, targets, **options)
    if method == "integrated_gradients":
        return channel_max_abs(integrated_gradients(network, x, targets, **options))
    if method == "gradcam":
        return gradcam(network, x, targets, **options)
    raise RdfiaError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")


def randomize_state(state, seed: int = 0):
    """Model-randomization: every weight tensor (ndim >= 2) replaced by Gaussian noise with its own
    standard deviation, every bias set to zero. The architecture is kept, what was learned is gone."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(seed), max(1, len(leaves)))
    out = []
    for k, leaf in zip(keys, leaves):
        leaf = jnp.asarray(leaf)
        if leaf.ndim >= 2:
            out.append(jax.random.normal(k, leaf.shape, leaf.dtype) * jnp.std(leaf))
        else:
            out.append(jnp.zeros_like(leaf))
    return jax.tree_util.tree_unflatten(treedef, out)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between paired maps (N, ...) -> (N,)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)

    def ranks(v):
        r = np.empty_like(v)
        order = np.argsort(v, axis=1, kind="stable")
        np.put_along_axis(r, order, np.arange(v.shape[1], dtype=np.float64)[None, :].repeat(len(v), 0), axis=1)
        return r

    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    return (ra * rb).sum(1) / np.maximum(denom, 1e-12)


def randomization_check(network: Network, method: str, x: Any, targets: Any, *, seed: int = 0,
                        **options) -> dict:
    """Sanity check: compare a method's maps with trained and with randomized weights.

    A method that explains the *model* must give different maps once the weights are random; a high
    rank correlation means the map mostly reflects the input (an edge detector), not the network.

    Returns:
      ``{"method", "spearman" (per image), "mean_spearman", "maps", "random_maps"}``.
    """
    import dataclasses

    maps = attribution(network, method, x, targets, **options)
    random_net = dataclasses.replace(network, state=randomize_state(network.state, seed),
                                     weights_desc="RANDOM (model-randomization check)")
    random_maps = attribution(random_net, method, x, targets, **options)
    rho = spearman(core.to_numpy(maps), core.to_numpy(random_maps))
    return {"method": method, "spearman": rho, "mean_spearman": float(np.mean(rho)),
            "maps": maps, "random_maps": random_maps}


__all__ = ["METHODS", "saliency", "smoothgrad", "integrated_gradients", "gradcam", "attribution",
           "input_gradient", "channel_max_abs", "default_gradcam_layer", "randomize_state", "spearman",
           "randomization_check", "baseline_image"]
