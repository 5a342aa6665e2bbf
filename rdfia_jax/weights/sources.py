"""Read published weight files and map them onto our NNX parameter tree.

Every (model, source) pair has a table saying which source tensor becomes which of our parameters
and how its layout changes:

* conv weights: torch OIHW -> our HWIO (``transpose(2, 3, 1, 0)``); Keras kernels are HWIO already;
* linear weights: torch ``[out, in]`` -> our ``[in, out]``;
* fc6: torch flattens the last feature map in C,H,W order and we flatten NHWC in H,W,C order, so the
  input axis is re-ordered (``reshape(out, C, H, W).transpose(2, 3, 1, 0).reshape(H*W*C, out)``);
  timm stores fc6 as a 7x7 conv ``[out, C, 7, 7]``, which is the same re-order; Keras already
  flattens H,W,C. A plain transpose would give silently wrong outputs.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.preprocess import CAFFE, TORCHVISION, Preprocessing
from rdfia_jax.weights.pth import read_pth

ParamPath = tuple[str, ...]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"  # the weights inside a Keras 3 ``model.save("x.keras")``


@dataclasses.dataclass
class SourceWeights:
    """Tensors read from a published file, in the file's own names and layouts.

    Attributes:
      path: the file read.
      source: "torchvision", "timm" or "keras" (the naming/layout convention).
      file_format: e.g. "pth-legacy", "pth-zip", "safetensors", "h5", "h5-keras3".
      tensors: name -> array (Keras names are "layer/kernel" and "layer/bias").
      stored_as: tensor name -> where the file holds it, for tensors renamed after reading (Keras 3).
    """

    path: Path
    source: str
    file_format: str
    tensors: dict[str, np.ndarray]
    stored_as: dict[str, str] = dataclasses.field(default_factory=dict)

    def label(self, name: str) -> str:
        """``name`` for messages, with the file's own name for it when they differ."""
        return f"{name} (stored as {self.stored_as[name]})" if name in self.stored_as else name


def detect_format(path: str | os.PathLike) -> str:
    """"pth-zip", "pth-legacy", "safetensors", "h5" or "keras" (a Keras 3 ``.keras`` archive), from
    the file's content (not its name)."""
    path = Path(path)
    if not path.is_file():
        raise RdfiaError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise RdfiaError(f"{path}: file is empty or truncated ({len(head)} bytes)")
    if head.startswith(_HDF5_SIGNATURE):
        return "h5"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                if _KERAS_ARCHIVE_WEIGHTS in zf.namelist():
                    return "keras"
        except (zipfile.BadZipFile, OSError):
            pass  # the .pth reader says what is wrong with it
        return "pth-zip"
    if head.startswith(b"\x80") or head.startswith(b"\x8a"):  # a pickle (PROTO opcode / raw LONG1)
        return "pth-legacy"
    header_len = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < header_len < 100_000_000:
        return "safetensors"
    raise RdfiaError(f"{path}: unrecognized file format (not a PyTorch .pth, safetensors or Keras "
                     ".h5 file)")


def read_source(path: str | os.PathLike) -> SourceWeights:
    """Read any supported published weight file into a :class:`SourceWeights`.

    Args:
      path: a torchvision ``.pth`` (legacy or zip), timm ``model.safetensors``, Keras ``.h5``, Keras 3
        ``.weights.h5`` or ``.keras``.
    Returns:
      The file's tensors with their own names (``source`` is guessed from the format; for
      safetensors it is "timm").
    Raises:
      RdfiaError: unreadable, truncated or corrupt file, or non-tensor content.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt.startswith("pth"):
        obj = read_pth(path)
        tensors = _state_dict_from(obj, path)
        return SourceWeights(path, "torchvision", fmt, tensors)
    if fmt == "safetensors":
        return SourceWeights(path, "timm", fmt, _read_safetensors(path))
    if fmt == "keras":
        try:
            with zipfile.ZipFile(path) as zf:
                h5 = io.BytesIO(zf.read(_KERAS_ARCHIVE_WEIGHTS))
        except (zipfile.BadZipFile, OSError, zlib.error, ValueError) as err:
            raise RdfiaError(f"{path}: truncated or corrupt .keras archive ({err})") from None
        return SourceWeights(path, "keras", fmt, *_read_keras_h5(path, h5))
    tensors, stored_as = _read_keras_h5(path)
    return SourceWeights(path, "keras", "h5-keras3" if stored_as else fmt, tensors, stored_as)


def _state_dict_from(obj, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # a training checkpoint wrapping the state dict
    if not isinstance(obj, dict) or not obj:
        raise RdfiaError(f"{path}: expected a state dict (name -> tensor), found "
                         f"{type(obj).__name__}")
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}  # saved from nn.DataParallel
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise RdfiaError(f"{path}: entries {bad[:3]} are not tensors; expected a state dict")
    return dict(obj)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise RdfiaError(f"{path}: truncated or corrupt safetensors file ({err})") from None


def _read_keras_h5(path: Path, fileobj=None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, their dataset paths if Keras 3) from the Keras 2 ``save_weights`` layout (also
    inside a full-model ``model_weights`` group) or the Keras 3 ``.weights.h5`` layout
    (``layers/<group>/vars/<i>``; ``_layer_checkpoint_dependencies/...`` in Keras 2.13-2.15), whose
    group names :func:`with_published_names` maps."""
    import h5py

    out: dict[str, np.ndarray] = {}
    stored_as: dict[str, str] = {}
    keras3 = False
    try:
        with h5py.File(fileobj or path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            layers = next((root[k] for k in ("layers", "_layer_checkpoint_dependencies")
                           if isinstance(root.get(k), h5py.Group)), None)
            if "layer_names" in root.attrs:
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs["layer_names"]]
                groups = [(n, root[n]) for n in names]
            elif layers is not None:  # Keras 3; optimizer/, vars/ (the model's own) are not weights
                keras3 = True
                groups = [(n, g) for n, g in layers.items()]
            else:
                groups = [(n, g) for n, g in root.items() if isinstance(g, h5py.Group)]
            for name, group in groups:
                datasets = _layer_datasets(group, h5py)
                if not datasets:
                    continue  # input, pooling, flatten layers hold no weights
                kernels = [d for d in datasets if d.ndim >= 2]
                biases = [d for d in datasets if d.ndim == 1]
                if len(kernels) != 1 or len(biases) != 1 or len(datasets) != 2:
                    raise RdfiaError(f"{path}: layer {name!r} holds {len(datasets)} weight arrays "
                                     f"with shapes {[d.shape for d in datasets]}; expected one "
                                     "kernel and one bias")
                out[f"{name}/kernel"] = np.asarray(kernels[0][()])
                out[f"{name}/bias"] = np.asarray(biases[0][()])
                if keras3:
                    stored_as[f"{name}/kernel"], stored_as[f"{name}/bias"] = kernels[0].name, biases[0].name
    except RdfiaError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise RdfiaError(f"{path}: truncated or corrupt HDF5 file ({err})") from None
    if not out:
        raise RdfiaError(f"{path}: no Keras layer weights found in this HDF5 file")
    return out, stored_as


def _layer_datasets(group, h5py) -> list:
    if "weight_names" in group.attrs:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
        return [group[n] for n in names]
    if "vars" in group and isinstance(group["vars"], h5py.Group):  # Keras 3: vars/0, vars/1
        items = sorted(group["vars"].items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0])
        return [d for _, d in items if isinstance(d, h5py.Dataset)]
    found: list = []
    group.visititems(lambda _n, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


# --------------------------------------------------------------------------------------------
# Layout tables: (our module path, source tensor prefix, transform kind)
# --------------------------------------------------------------------------------------------

_VGG_CONV_NAMES = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                   "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
_VGG_TV_FEATURE_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
_SQUEEZE_FIRE_INDEX = {2: 3, 3: 4, 4: 6, 5: 7, 6: 9, 7: 10, 8: 11, 9: 12}

# kind: "conv" torch OIHW conv; "linear" torch [out,in]; "fc_chw" torch linear after a C,H,W flatten;
# "conv_fc" timm conv [out,C,kh,kw] used as fc6; "conv1x1_fc" timm 1x1 conv used as a linear;
# "keras_conv" / "keras_dense" kernels already in our layout.
LAYOUTS: dict[tuple[str, str], list[tuple[ParamPath, str, str]]] = {
    ("vgg16", "torchvision"): (
        [((n,), f"features.{i}", "conv") for n, i in zip(_VGG_CONV_NAMES, _VGG_TV_FEATURE_INDEX)]
        + [(("fc6",), "classifier.0", "fc_chw"), (("fc7",), "classifier.3", "linear"),
           (("fc8",), "classifier.6", "linear")]),
    ("vgg16", "timm"): (
        [((n,), f"features.{i}", "conv") for n, i in zip(_VGG_CONV_NAMES, _VGG_TV_FEATURE_INDEX)]
        + [(("fc6",), "pre_logits.fc1", "conv_fc"), (("fc7",), "pre_logits.fc2", "conv1x1_fc"),
           (("fc8",), "head.fc", "linear")]),
    ("vgg16", "keras"): (
        [((n,), f"block{n[4]}_conv{n[6]}", "keras_conv") for n in _VGG_CONV_NAMES]
        + [(("fc6",), "fc1", "keras_dense"), (("fc7",), "fc2", "keras_dense"),
           (("fc8",), "predictions", "keras_dense")]),
    ("alexnet", "torchvision"): (
        [((f"conv{k + 1}",), f"features.{i}", "conv") for k, i in enumerate([0, 3, 6, 8, 10])]
        + [(("fc6",), "classifier.1", "fc_chw"), (("fc7",), "classifier.4", "linear"),
           (("fc8",), "classifier.6", "linear")]),
    ("squeezenet1_1", "torchvision"): (
        [(("conv1",), "features.0", "conv")]
        + [((f"fire{f}", part), f"features.{i}.{part}", "conv")
           for f, i in _SQUEEZE_FIRE_INDEX.items() for part in ("squeeze", "expand1x1", "expand3x3")]
        + [(("conv10",), "classifier.1", "conv")]),
}

# spatial size of the map flattened into fc6 (the adaptive pool's output)
_FC6_GRID = {"vgg16": 7, "alexnet": 6}

PREPROCESSING: dict[str, Preprocessing] = {"torchvision": TORCHVISION, "timm": TORCHVISION,
                                           "keras": CAFFE}


# Keras 3 saving_lib (``_save_container_state``) names a layer's group after its class and its rank
# among the model's layers of that class (``conv2d``, ``conv2d_1``, ..., ``dense_2``), never after
# the layer's name; Keras itself loads by these positions, so the mapping does too.
_KERAS3_CLASS = {"keras_conv": "conv2d", "keras_dense": "dense"}


def keras3_group_names(model: str) -> dict[str, str]:
    """Keras 3 ``.weights.h5`` group name -> published Keras layer name, for ``model``'s layout."""
    rank: collections.Counter = collections.Counter()
    out = {}
    for _, prefix, kind in LAYOUTS[(model, "keras")]:
        cls = _KERAS3_CLASS[kind]
        out[f"{cls}_{rank[cls]}" if rank[cls] else cls] = prefix
        rank[cls] += 1
    return out


def with_published_names(src: SourceWeights, model: str) -> SourceWeights:
    """``src`` with Keras 3 group names (``conv2d/kernel``) renamed to the published Keras names
    (``block1_conv1/kernel``); ``src`` itself for other files. RdfiaError: groups not ``model``'s."""
    if src.source != "keras" or not src.stored_as or (model, "keras") not in LAYOUTS:
        return src
    names = keras3_group_names(model)
    groups = {k.split("/")[0] for k in src.tensors}
    if groups <= set(names.values()):
        return src  # renamed already
    if not groups <= names.keys():
        raise RdfiaError(f"{src.path}: a Keras 3 weights file whose weighted layers {sorted(groups)} "
                         f"are not those of a Keras {model} ({', '.join(names)}; Keras names "
                         "them by class and position): wrong model for this file")
    renamed = {key: f"{names[key.split('/')[0]]}/{key.split('/')[1]}" for key in src.tensors}
    return dataclasses.replace(
        src, tensors={renamed[k]: v for k, v in src.tensors.items()},
        stored_as={renamed[k]: v for k, v in src.stored_as.items()})


def expected_keys(model: str, source: str) -> set[str]:
    """The exact tensor names a (model, source) file holds."""
    sep = "/" if source == "keras" else "."
    weight = "kernel" if source == "keras" else "weight"
    return {f"{prefix}{sep}{suffix}" for _, prefix, _ in LAYOUTS[(model, source)]
            for suffix in (weight, "bias")}


def _identify(keys: set[str]) -> tuple[str, str] | None:
    for pair in LAYOUTS:
        if expected_keys(*pair) == keys:
            return pair
    return None


def _check_keys(src: SourceWeights, model: str, source: str) -> None:
    keys = set(src.tensors)
    want = expected_keys(model, source)
    if keys == want:
        return
    found = _identify(keys)
    if found is not None:
        other_model, other_source = found
        raise RdfiaError(
            f"{src.path}: this file holds {other_model} weights ({other_source} layout), not "
            f"{model} ({source} layout); run `rdfia-jax weights convert {other_model} {src.path}`")
    missing = sorted(want - keys)
    extra = sorted(keys - want)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {', '.join(extra[:4])})")
    raise RdfiaError(f"{src.path}: not a {source} {model} weights file: tensor names do not match: "
                     f"{'; '.join(parts)}")


def _float32(arr: np.ndarray, name: str, path: Path) -> np.ndarray:
    if arr.dtype.kind != "f":
        raise RdfiaError(f"{path}: tensor {name!r} has dtype {arr.dtype}; expected floating-point "
                         "weights")
    return np.asarray(arr, dtype=np.float32)


def _transform(kind: str, w: np.ndarray, name: str, path: Path, model: str,
               last_channels: int | None) -> np.ndarray:
    def need(ndim: int):
        if w.ndim != ndim:
            raise RdfiaError(f"{path}: tensor {name!r} has shape {tuple(w.shape)}; expected a "
                             f"{ndim}-D {kind} weight")

    if kind == "conv":
        need(4)
        return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if kind == "linear":
        need(2)
        return w.T
    if kind == "fc_chw":
        need(2)
        grid = _FC6_GRID[model]
        out, inp = w.shape
        if last_channels is None or inp != last_channels * grid * grid:
            raise RdfiaError(f"{path}: tensor {name!r} has shape {tuple(w.shape)}; its input size "
                             f"{inp} should be {last_channels} channels x {grid} x {grid}")
        return w.reshape(out, last_channels, grid, grid).transpose(2, 3, 1, 0).reshape(-1, out)
    if kind == "conv_fc":
        need(4)
        out = w.shape[0]
        return w.transpose(2, 3, 1, 0).reshape(-1, out)  # [out,C,H,W] -> [(H,W,C), out]
    if kind == "conv1x1_fc":
        need(4)
        if w.shape[2:] != (1, 1):
            raise RdfiaError(f"{path}: tensor {name!r} has shape {tuple(w.shape)}; expected a 1x1 conv")
        return w[:, :, 0, 0].T
    if kind == "keras_conv":
        need(4)
        return w
    if kind == "keras_dense":
        need(2)
        return w
    raise ValueError(f"unknown layout transform {kind!r}")


def resolve_source(src: SourceWeights, model: str, source: str | None = None) -> str:
    """The naming convention of ``src``: ``source`` if given, else the one whose tensor names match
    (the names decide, not the container: e.g. torchvision names inside a safetensors file)."""
    if source is not None:
        return source
    keys = set(with_published_names(src, model).tensors)
    matching = [s for (m, s) in LAYOUTS if m == model and expected_keys(m, s) == keys]
    return matching[0] if matching else src.source


def convert(src: SourceWeights, model: str, source: str | None = None) -> dict[ParamPath, np.ndarray]:
    """Map a published file's tensors onto our parameter paths and layouts.

    Args:
      src: tensors read by :func:`read_source`.
      model: our model name.
      source: naming convention ("torchvision" / "timm" / "keras"); defaults to ``src.source``.
    Returns:
      ``{("conv1_1", "kernel"): HWIO array, ...}``, float32, C-contiguous.
    Raises:
      RdfiaError: wrong model for the file, missing/extra tensors, wrong ranks/dtypes.
    """
    source = resolve_source(src, model, source)
    src = with_published_names(src, model)
    if (model, source) not in LAYOUTS:
        pairs = ", ".join(f"{m}/{s}" for m, s in LAYOUTS)
        raise RdfiaError(f"{src.path}: no {source} layout is known for {model} (published pairs: {pairs})")
    _check_keys(src, model, source)
    sep, weight = ("/", "kernel") if source == "keras" else (".", "weight")
    out: dict[ParamPath, np.ndarray] = {}
    last_channels = None
    for our, prefix, kind in LAYOUTS[(model, source)]:
        wname, bname = f"{prefix}{sep}{weight}", f"{prefix}{sep}bias"
        w = _float32(src.tensors[wname], src.label(wname), src.path)
        b = _float32(src.tensors[bname], src.label(bname), src.path)
        kernel = _transform(kind, w, src.label(wname), src.path, model, last_channels)
        if b.ndim != 1 or b.shape[0] != kernel.shape[-1]:
            raise RdfiaError(f"{src.path}: tensor {src.label(bname)!r} has shape {tuple(b.shape)}; "
                             f"expected ({kernel.shape[-1]},) to match {src.label(wname)!r}")
        if kind in ("conv", "keras_conv"):
            last_channels = kernel.shape[-1]
        out[our + ("kernel",)] = np.ascontiguousarray(kernel)
        out[our + ("bias",)] = np.ascontiguousarray(b)
    return out


def source_names(model: str, source: str) -> dict[ParamPath, str]:
    """Our parameter path -> the source tensor it comes from (for error messages)."""
    sep, weight = ("/", "kernel") if source == "keras" else (".", "weight")
    names = {}
    for our, prefix, _ in LAYOUTS[(model, source)]:
        names[our + ("kernel",)] = f"{prefix}{sep}{weight}"
        names[our + ("bias",)] = f"{prefix}{sep}bias"
    return names


def infer_config(model: str, params: dict[ParamPath, np.ndarray]) -> dict:
    """``create`` keyword arguments matching converted params: ``num_classes`` from the last layer
    and ``width`` (channel multiplier; 1.0 for published files) from the first conv."""
    first = params[("conv1_1", "kernel") if model == "vgg16" else ("conv1", "kernel")]
    last_bias = params[("conv10", "bias") if model == "squeezenet1_1" else ("fc8", "bias")]
    width = first.shape[-1] / 64.0
    if math.isclose(width, 1.0):
        width = 1.0
    return {"width": width, "num_classes": int(last_bias.shape[0])}

