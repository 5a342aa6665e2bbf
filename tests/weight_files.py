"""Write small weight files in the published on-disk layouts (test helper; no torch or Keras needed).

:func:`random_source_tensors` makes random weights with the *source* names and shapes of a
(model, source) pair at a reduced width; :func:`write_source_file` writes them as a torchvision
``.pth`` (legacy or zip), a timm ``model.safetensors``, a Keras 2 ``.h5`` or a Keras 3 ``.weights.h5``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from flax import nnx

from pth_writer import save_pth
from rdfia_jax.weights.sources import _FC6_GRID, LAYOUTS

# Layer order of Keras' VGG16 (weightless layers included, as in the published file).
KERAS_VGG16_LAYERS = (
    ["input_1"]
    + [f"block{b}_{kind}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3))
       for kind in [f"conv{i}" for i in range(1, n + 1)] + ["pool"]]
    + ["flatten", "fc1", "fc2", "predictions"])


def _source_shape(kind: str, kernel_shape: tuple[int, ...], model: str) -> tuple[int, ...]:
    if kind == "conv":
        kh, kw, cin, cout = kernel_shape
        return (cout, cin, kh, kw)
    if kind in ("linear", "fc_chw"):
        return (kernel_shape[1], kernel_shape[0])
    if kind == "conv_fc":
        grid = _FC6_GRID[model]
        return (kernel_shape[1], kernel_shape[0] // (grid * grid), grid, grid)
    if kind == "conv1x1_fc":
        return (kernel_shape[1], kernel_shape[0], 1, 1)
    return tuple(kernel_shape)  # keras


def random_source_tensors(model: str, source: str, *, width: float = 1.0 / 16,
                          num_classes: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights named and shaped as in the published (model, source) file.

    He-scaled weights keep activations O(1) through the network; biases are random too so that a
    mis-mapped bias shows up.
    """
    from rdfia_jax import models

    module = models.abstract(model, width=width, num_classes=num_classes)
    shapes = {tuple(str(k) for k in p): v.get_value().shape
              for p, v in nnx.to_flat_state(nnx.split(module)[1])}
    rng = np.random.default_rng(seed)
    sep, weight = ("/", "kernel") if source == "keras" else (".", "weight")
    out: dict[str, np.ndarray] = {}
    for our, prefix, kind in LAYOUTS[(model, source)]:
        kshape = shapes[our + ("kernel",)]
        fan_in = int(np.prod(kshape[:-1]))
        shape = _source_shape(kind, kshape, model)
        out[f"{prefix}{sep}{weight}"] = (rng.standard_normal(shape)
                                          * np.sqrt(2.0 / fan_in)).astype(np.float32)
        out[f"{prefix}{sep}bias"] = (0.1 * rng.standard_normal(kshape[-1])).astype(np.float32)
    return out


def write_keras_h5(path: str | os.PathLike, tensors: dict[str, np.ndarray], *,
                   layer_names: list[str] | None = None) -> None:
    """Keras 2 ``model.save_weights`` layout: root attr ``layer_names``; each layer group has attr
    ``weight_names`` and datasets ``<layer>/<layer>/kernel:0`` and ``.../bias:0``."""
    import h5py

    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in tensors.items():
        layer, what = key.split("/")
        layers.setdefault(layer, {})[what] = arr
    names = layer_names or (KERAS_VGG16_LAYERS if set(layers) <= set(KERAS_VGG16_LAYERS) else list(layers))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.2"
        for name in names:
            g = f.create_group(name)
            weights = layers.get(name, {})
            wnames = [f"{name}/{w}:0" for w in ("kernel", "bias") if w in weights]
            g.attrs["weight_names"] = np.array([w.encode() for w in wnames], dtype="S")
            for w in ("kernel", "bias"):
                if w in weights:
                    g.create_dataset(f"{name}/{w}:0", data=weights[w])


# The Keras class of each layer of KERAS_VGG16_LAYERS, as keras.src.utils.naming.to_snake_case spells it.
def _keras_class(layer: str) -> str:
    if layer.startswith("input"):
        return "input_layer"
    if "_conv" in layer:
        return "conv2d"
    if layer.endswith("_pool"):
        return "max_pooling2d"
    return "flatten" if layer == "flatten" else "dense"


def write_keras3_weights_h5(path: str | os.PathLike, tensors: dict[str, np.ndarray], *,
                            model: str = "sequential", group: str = "layers",
                            optimizer: bool = True) -> None:
    """Keras 3 ``model.save_weights("x.weights.h5")`` layout (keras/src/saving/saving_lib.py,
    ``H5IOStore`` and ``_save_container_state``), for a VGG16 given by published-named ``tensors``.

    Each layer's group is named after its *class* and its rank among the layers of that class
    (``conv2d``, ``conv2d_1``, ..., ``max_pooling2d``, ``flatten``, ``dense_2``), its variables are
    datasets ``<group>/<name>/vars/0`` (kernel) and ``/1`` (bias), and ``vars`` carries the layer's
    name as an attribute (Keras >= 3.6); weightless layers get an empty ``vars``. The model's own
    ``vars`` and, when compiled, ``optimizer/vars/<i>`` sit beside ``layers``.

    Args:
      model: "sequential" (``model.layers`` has no InputLayer; layers named ``conv2d``, ...) or
        "functional" (keras.applications.VGG16: an ``input_layer`` first, layers named
        ``block1_conv1``, ...).
      group: "layers" (Keras 3) or "_layer_checkpoint_dependencies" (Keras 2.13-2.15 ``.weights.h5``).
      optimizer: add the variables an SGD-with-momentum optimizer saves (not weights of the model).
    """
    import h5py

    layers = KERAS_VGG16_LAYERS if model == "functional" else KERAS_VGG16_LAYERS[1:]
    rank: dict[str, int] = {}
    momenta = []
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = model
        for layer in layers:
            cls = _keras_class(layer)  # saving_lib._get_unique_name: conv2d, conv2d_1, conv2d_2, ...
            rank[cls] = rank[cls] + 1 if cls in rank else 0
            name = f"{cls}_{rank[cls]}" if rank[cls] else cls
            v = f.create_group(f"{group}/{name}/vars")
            v.attrs["name"] = layer if model == "functional" else name
            for i, what in enumerate(("kernel", "bias")):
                if f"{layer}/{what}" in tensors:
                    v.create_dataset(str(i), data=tensors[f"{layer}/{what}"])
                    momenta.append(np.zeros_like(tensors[f"{layer}/{what}"]))
        if optimizer:
            o = f.create_group("optimizer/vars")
            o.attrs["name"] = "SGD"
            o.create_dataset("0", data=np.int64(1000))  # iterations
            o.create_dataset("1", data=np.float32(0.01))  # learning rate
            for i, m in enumerate(momenta, start=2):
                o.create_dataset(str(i), data=m)


def write_keras3_archive(path: str | os.PathLike, tensors: dict[str, np.ndarray], **kwargs) -> None:
    """Keras 3 ``model.save("x.keras")``: a stored (uncompressed) zip of ``metadata.json``,
    ``config.json`` and ``model.weights.h5`` in :func:`write_keras3_weights_h5`'s layout."""
    import json
    import zipfile

    path = Path(path)
    h5 = path.with_name(path.name + ".weights.h5")
    write_keras3_weights_h5(h5, tensors, **kwargs)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2026-11-30@00:00:00"}))
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"name": "sequential"}}))
        zf.writestr("model.weights.h5", h5.read_bytes())
    h5.unlink()


def write_source_file(path: str | os.PathLike, source: str, tensors: dict[str, np.ndarray], *,
                      layout: str = "legacy") -> Path:
    """Write ``tensors`` as the published file of ``source`` would be laid out.

    Args:
      path: output file.
      source: "torchvision" (``.pth``), "timm" (safetensors) or "keras" (HDF5).
      tensors: source-named arrays (see :func:`random_source_tensors`).
      layout: for torchvision: "legacy" (2017 files: pre-zip, ``_rebuild_tensor``) or "zip"; for
        keras: "keras3-sequential", "keras3-functional" or "keras2.13" (:func:`write_keras3_weights_h5`),
        "keras3-archive" (:func:`write_keras3_archive`), anything else the published Keras 2 layout.
    """
    path = Path(path)
    if source == "torchvision":
        save_pth(path, tensors, legacy=(layout == "legacy"), old_rebuild=(layout == "legacy"))
    elif source == "timm":
        from safetensors.numpy import save_file

        save_file(tensors, str(path), metadata={"format": "pt"})
    elif source == "keras" and layout == "keras3-archive":
        write_keras3_archive(path, tensors)
    elif source == "keras" and layout in ("keras3-sequential", "keras3-functional", "keras2.13"):
        write_keras3_weights_h5(
            path, tensors, model="functional" if layout == "keras3-functional" else "sequential",
            group="_layer_checkpoint_dependencies" if layout == "keras2.13" else "layers")
    elif source == "keras":
        write_keras_h5(path, tensors)
    else:
        raise ValueError(source)
    return path
