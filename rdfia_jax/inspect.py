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
      (rows, total parameter count). Layers without parameters show 0.
    """
    module = models.abstract(name)
    counts = _param_counts(module)
    graphdef, state = nnx.split(module)
    x = jax.ShapeDtypeStruct((batch, input_size, input_size, 3), jnp.float32)
    _, acts = jax.eval_shape(lambda s, x: models.forward(graphdef, s, x, "all"), state, x)
    rows = []
    for layer in module.activation_names:
        rows.append(LayerRow(layer, tuple(acts[layer].shape), counts.pop(layer, 0)))
    if counts:  # parameters not attached to a named activation would make the total lie
        raise AssertionError(f"parameters not shown in the summary: {sorted(counts)}")
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
      batch_size: images per jitted call; the last batch is padded so only one shape compiles.
    Returns:
      One :class:`Prediction` per image.
    """
    graphdef, prep = network.graphdef, network.preprocessing
    images_per_chunk = models.cpu_chunk(network.name)

    @xla.jit
    def top_k(state, batch):
        logits, _ = models.forward_chunked(graphdef, state, prep.normalize(batch), chunk=images_per_chunk)
        probs = jax.nn.softmax(logits, axis=-1)
        return jax.lax.top_k(probs, k)

    names = imagenet.class_names()
    n = len(images_uint8)
    out: list[Prediction] = []
    for start in range(0, n, batch_size):
        chunk = to_unit(images_uint8[start:start + batch_size])
        real = len(chunk)
        if real < batch_size and n > batch_size:  # pad the ragged last batch: no second compile
            chunk = np.concatenate([chunk, np.zeros((batch_size - real,) + chunk.shape[1:], chunk.dtype)])
        probs, idx = jax.device_get(top_k(network.state, chunk))
        for i in range(real):
            out.append(Prediction(sources[start + i],
                                  tuple((int(c), names[int(c)], float(p)) for p, c in zip(probs[i], idx[i]))))
    return out


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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rdfia_jax.fileio import atomic_path

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
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows))
    axes = np.atleast_1d(axes).ravel()
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
    plt.close(fig)
    return out_path
