"""Section 1.1: parameter summary, top-5 predictions and activation maps of the ImageNet models."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdfia_jax import imagenet, models
from rdfia_jax.data.batching import map_batches
from rdfia_jax.errors import RdfiaError
from rdfia_jax.data.transforms import to_unit
from rdfia_jax import xla


@dataclasses.dataclass(frozen=True)
class LayerRow:
    layer: str
    output_shape: tuple[int, ...]
    params: int


def _param_counts(module: nnx.Module) -> dict[str, int]:
    """Parameters per top-level attribute (conv1_1, fc6, fire2, ...)."""
    counts: dict[str, int] = {}
    for path, leaf in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        counts[str(path[0])] = counts.get(str(path[0]), 0) + int(np.prod(leaf.get_value().shape))
    return counts


def summary(name: str, input_size: int = 224, batch: int = 1) -> tuple[list[LayerRow], int]:
    """Per-layer output shapes and parameter counts, computed from the model without running it.

    Args:
      name: model name.
      input_size: square input side (any size the model accepts).
      batch: batch dimension shown in the shapes.
    Returns:
      (rows, total parameter count). Layers without parameters show 0; parameters of a submodule
      with no activation of its name come last, with an empty shape.
    Raises:
      RdfiaError: ``input_size`` too small for the model.
    """
    module = models.abstract(name)
    counts = _param_counts(module)
    graphdef, state = nnx.split(module)
    x = jax.ShapeDtypeStruct((batch, input_size, input_size, 3), jnp.float32)
    try:
        _, acts = jax.eval_shape(lambda s, x: models.forward(graphdef, s, x, "all"), state, x)
    except (TypeError, ValueError) as err:  # a pooling / convolution window larger than its input
        raise RdfiaError(f"{name} cannot take {input_size}x{input_size} inputs (a layer's output would be "
                         f"empty: {str(err).splitlines()[0]}); use a larger input size") from None
    rows = []
    for layer in module.activation_names:
        rows.append(LayerRow(layer, tuple(acts[layer].shape), counts.pop(layer, 0)))
    # Parameters of a submodule without a named activation still get a row (no shape), so the total
    # never lies; tests check that the shipped models have none.
    rows.extend(LayerRow(name, (), n) for name, n in sorted(counts.items()))
    return rows, sum(r.params for r in rows)


def format_summary(name: str, rows: Sequence[LayerRow], total: int) -> str:
    lines = [f"{name}", f"{'layer':<12} {'output shape':<22} {'params':>14}", "-" * 50]
    for r in rows:
        lines.append(f"{r.layer:<12} {str(r.output_shape):<22} {r.params:>14,}")
    lines += ["-" * 50, f"{'total':<35} {total:>14,}"]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Prediction:
    source: str
    top: tuple[tuple[int, str, float], ...]  # (class index, name, probability)


def predict(network: models.Network, images_uint8: np.ndarray, sources: Sequence[str], k: int = 5,
            batch_size: int = 16) -> list[Prediction]:
    """Top-k ImageNet classes with softmax probabilities, batched through one jitted function.

    Args:
      network: the model with its preprocessing.
      images_uint8: (N, H, W, 3) RGB uint8, already resized.
      sources: a label per image (file name, npz index).
      k: how many classes to return.
      batch_size: images per jitted call; the last batch is padded so only one shape compiles
        (:func:`rdfia_jax.data.batching.map_batches`).
    Returns:
      One :class:`Prediction` per image.
    """
    graphdef, prep = network.graphdef, network.preprocessing

    @xla.jit(tuned_kernels=models.cpu_tuned_kernels(network.name))
    def top_k(state, batch):
        logits, _ = models.forward(graphdef, state, prep.normalize(batch))
        probs = jax.nn.softmax(logits, axis=-1)
        return jax.lax.top_k(probs, k)

    if batch_size < 1:
        raise RdfiaError(f"batch size must be at least 1, got {batch_size}")
    if not 1 <= k <= 1000:
        raise RdfiaError(f"k must be between 1 and 1000 (the ImageNet classes), got {k}")
    names = imagenet.class_names()
    n = len(images_uint8)
    # A batch no larger than the images: a single small batch is not padded up to batch_size.
    probs, idx = map_batches(lambda batch: top_k(network.state, batch), to_unit(images_uint8), min(batch_size, n))
    return [Prediction(sources[i], tuple((int(c), names[int(c)], float(p)) for p, c in zip(probs[i], idx[i])))
            for i in range(n)]


def activation_grid(network: models.Network, image_uint8: np.ndarray, layer: str, out_path: str | os.PathLike,
                    max_maps: int = 64, title: str | None = None) -> Path:
    """Write a PNG grid of the channel maps of ``layer`` for one image (report Figures 6-10).

    Args:
      network: the model.
      image_uint8: (H, W, 3) RGB uint8.
      layer: a name from ``network.activation_names`` with a spatial (N, H, W, C) output.
      out_path: PNG file to write (atomically).
      max_maps: at most this many channels (the first ones) are shown.
      title: figure title (defaults to model, layer and weights).
    Returns:
      The written path.
    """
    from rdfia_jax.fileio import atomic_path
    from rdfia_jax.vis.figures import new_figure

    if layer not in network.activation_names:
        raise RdfiaError(f"unknown layer {layer!r} for model {network.name!r}; "
                         f"available layers: {', '.join(network.activation_names)}")
    x = network.preprocessing.normalize(to_unit(image_uint8[None]))
    act = np.asarray(network.activations(x, (layer,))[layer][0])
    if act.ndim != 3:
        raise RdfiaError(f"layer {layer!r} has no spatial maps (shape {act.shape}); pick a conv/pool layer")
    n = min(max_maps, act.shape[-1])
    cols = math.ceil(math.sqrt(n + 1))
    rows = math.ceil((n + 1) / cols)
    fig, axes = new_figure(rows, cols, (1.6 * cols, 1.6 * rows))
    axes = axes.ravel()
    axes[0].imshow(image_uint8)
    axes[0].set_title("input", fontsize=7)
    for c in range(n):
        axes[c + 1].imshow(act[..., c], cmap="viridis")
        axes[c + 1].set_title(f"ch {c}", fontsize=6)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title or f"{network.name} {layer} {tuple(act.shape)} - {network.weights_desc}", fontsize=9)
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out_path
