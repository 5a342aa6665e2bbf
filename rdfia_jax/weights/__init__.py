"""Pretrained ImageNet weights: convert the published files once, then load them into a Network.

* :func:`load_network` -- the one entry point every section uses: a :class:`~rdfia_jax.models.Network`
  with converted weights (and their preprocessing), or random weights on request.
* :func:`convert_file` -- read a published file (torchvision ``.pth`` legacy/zip, timm safetensors,
  Keras 2 ``.h5`` or Keras 3 ``.weights.h5``) without torch, map it onto our parameter tree, write
  the converted safetensors.
* Converted files live in ``paths.weights_dir()`` as ``<model>.safetensors`` (torchvision, the
  default) or ``<model>-<source>.safetensors`` (timm, keras); see ``store`` for the format.

Loading never allocates random weights first: the module structure comes from ``nnx.eval_shape``
and its abstract leaves are replaced by the file's arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdfia_jax import paths
from rdfia_jax.errors import RdfiaError
from rdfia_jax.preprocess import TORCHVISION, Preprocessing
from rdfia_jax.weights.published import (PUBLISHED, SOURCES, PublishedFile, converted_filename,
                                         published)
from rdfia_jax.weights.sources import (PREPROCESSING, SourceWeights, convert, detect_format,
                                       infer_config, read_source, resolve_source,
                                       source_names, with_published_names)
from rdfia_jax.weights.store import (ConvertedInfo, read_converted, read_info, sha256_file,
                                     write_converted)

ParamPath = tuple[str, ...]

__all__ = ["load_network", "convert_file", "build_network", "converted_path", "find_converted",
           "PUBLISHED", "SOURCES", "PublishedFile", "published", "read_source", "convert",
           "read_converted", "read_info"]


def _models():
    from rdfia_jax import models  # late import: models import flax modules, keep this light

    return models


def converted_path(model: str, source: str = "torchvision") -> Path:
    """Where the converted weights of (model, source) live (whether or not they exist)."""
    return paths.weights_dir() / converted_filename(model, source)


def find_converted(model: str) -> list[tuple[str, Path]]:
    """Existing converted files for ``model``, as (source, path), in preference order."""
    out = []
    for source in SOURCES:
        p = converted_path(model, source)
        if p.is_file():
            out.append((source, p))
    return out


def _missing_weights_message(model: str) -> str:
    entries = [e for e in PUBLISHED if e.model == model]
    default = converted_path(model)
    lines = [f"no converted weights for {model} in {default.parent} (looked for {default.name}). "
             f"Get them with `rdfia-jax weights fetch {model}` (downloads {entries[0].url}), or "
             f"download {entries[0].filename} yourself and run "
             f"`rdfia-jax weights convert {model} PATH/TO/{entries[0].filename}`"]
    if len(entries) > 1:
        lines.append("other published files: " + ", ".join(
            f"--source {e.source} ({e.filename})" for e in entries[1:]))
    lines.append("set RDFIA_JAX_WEIGHTS to use another folder; or pass --random-weights to run "
                 "with random (meaningless) weights")
    return "; ".join(lines)


def build_network(model: str, params: dict[ParamPath, np.ndarray], *, preprocessing: Preprocessing,
                  weights_desc: str, model_config: dict | None = None, where: str = "weights"):
    """A Network whose parameters are exactly ``params`` (no random initialization happens).

    Args:
      model: model name.
      params: ``{state path: array}`` in our layouts; must match the architecture exactly.
      preprocessing: the input normalization these weights expect.
      weights_desc: human description of the weights' origin.
      model_config: ``create`` kwargs (``width``, ``num_classes``).
      where: the file the params came from, for error messages.
    Returns:
      A :class:`rdfia_jax.models.Network`.
    Raises:
      RdfiaError: missing/extra parameters or wrong shapes/dtypes.
    """
    models = _models()
    model = models.canonical_name(model)
    module = models.abstract(model, **(model_config or {}))  # ShapeDtypeStruct leaves only
    graphdef, state = nnx.split(module)
    expected = {tuple(str(k) for k in p): v.get_value() for p, v in nnx.to_flat_state(state)}
    missing = sorted(".".join(p) for p in expected.keys() - params.keys())
    extra = sorted(".".join(p) for p in params.keys() - expected.keys())
    if missing or extra:
        raise RdfiaError(f"{where}: parameters do not match {model}: missing {missing[:4]}, "
                         f"unexpected {extra[:4]}")
    pure: dict = {}
    for p, spec in expected.items():
        arr = params[p]
        if tuple(arr.shape) != tuple(spec.shape):
            raise RdfiaError(f"{where}: parameter {'.'.join(p)} has shape {tuple(arr.shape)}; "
                             f"{model} {model_config or ''} expects {tuple(spec.shape)}")
        if np.dtype(arr.dtype) != np.dtype(spec.dtype):
            raise RdfiaError(f"{where}: parameter {'.'.join(p)} has dtype {arr.dtype}; expected "
                             f"{np.dtype(spec.dtype)}")
        node = pure
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = jnp.asarray(arr)
    nnx.replace_by_pure_dict(state, pure)
    return models.Network(model, graphdef, state, preprocessing, weights_desc)


def _check_model_shapes(model: str, params: dict[ParamPath, np.ndarray], config: dict,
                        src: SourceWeights, source: str) -> None:
    """Shapes of converted params vs the architecture, named by the *source* tensor."""
    models = _models()
    module = models.abstract(model, **config)
    _, state = nnx.split(module)
    names = source_names(model, source)
    for p, v in nnx.to_flat_state(state):
        p = tuple(str(k) for k in p)
        spec = v.get_value()
        got = params[p].shape
        if tuple(got) != tuple(spec.shape):
            name = src.label(names[p]) if p in names else ".".join(p)
            raise RdfiaError(
                f"{src.path}: tensor {name!r} converts to shape {tuple(got)} "
                f"but {model} (width {config['width']}, {config['num_classes']} classes) needs "
                f"{tuple(spec.shape)} for {'.'.join(p)}: wrong shapes or wrong model for this file")


def convert_source(model: str, file: str | os.PathLike, *, source: str | None = None,
                   sha256: str | None = None) -> tuple[dict[ParamPath, np.ndarray], ConvertedInfo]:
    """Read and convert a published file in memory: (params, metadata). See :func:`convert_file`."""
    model = _models().canonical_name(model)
    src = read_source(file)
    used = resolve_source(src, model, source)
    src = with_published_names(src, model)
    params = convert(src, model, used)
    config = infer_config(model, params)
    _check_model_shapes(model, params, config, src, used)
    info = ConvertedInfo(model=model, model_config=config, source=used,
                         source_format=src.file_format, source_file=Path(file).name,
                         source_sha256=sha256 or sha256_file(file),
                         preprocessing=PREPROCESSING[used])
    return params, info


def convert_file(model: str, file: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 source: str | None = None, sha256: str | None = None) -> Path:
    """Convert a published weight file to our format (atomic write).

    Args:
      model: "vgg16", "alexnet" or "squeezenet1_1".
      file: the published file (format detected from its content, not its name).
      out: output path (default ``paths.weights_dir()/<model>[-<source>].safetensors``).
      source: force the naming convention ("torchvision", "timm", "keras"); detected by default.
      sha256: the file's sha256 if already computed (e.g. by ``fetch``).
    Returns:
      The path written.
    Raises:
      RdfiaError: unreadable/corrupt/hostile file, wrong model, missing/extra keys, bad shapes.
    """
    params, info = convert_source(model, file, source=source, sha256=sha256)
    out = Path(out) if out is not None else converted_path(info.model, info.source)
    return write_converted(out, params, info)


def load_network(name: str, weights: str | os.PathLike | None = None, *,
                 random_weights: bool = False, seed: int = 0):
    """The Network for ``name`` with pretrained (or, on request, random) weights.

    Args:
      name: "vgg16", "alexnet" or "squeezenet1_1" (aliases accepted).
      weights: None -- the converted file in ``paths.weights_dir()`` (torchvision variant first,
        then timm, then keras); a source name ("torchvision", "timm", "keras") -- that variant;
        or a path -- a converted ``.safetensors`` file, or a published file converted in memory.
      random_weights: ignore files and initialize randomly (``weights_desc`` says RANDOM).
      seed: RNG seed of the random initialization.
    Returns:
      A :class:`rdfia_jax.models.Network` whose ``preprocessing`` matches the weights.
    Raises:
      RdfiaError: no converted weights (the message says how to get them), or a bad file.
    """
    models = _models()
    name = models.canonical_name(name)
    if random_weights:
        module = models.create(name, seed=seed)
        return models.Network.from_module(
            name, module, TORCHVISION, f"RANDOM weights, seed {seed} (outputs are meaningless)")
    if weights is None:
        found = find_converted(name)
        if not found:
            raise RdfiaError(_missing_weights_message(name))
        path = found[0][1]
    elif str(weights) in SOURCES:
        path = converted_path(name, str(weights))
        if not path.is_file():
            entry = published(name, str(weights))
            raise RdfiaError(f"no converted {weights} weights for {name} at {path}; run "
                             f"`rdfia-jax weights fetch {name} --source {weights}` or download "
                             f"{entry.url} and run `rdfia-jax weights convert {name} FILE`")
    else:
        path = Path(weights)
        if not path.is_file():
            raise RdfiaError(f"weights file not found: {path}")
        if detect_format(path) != "safetensors" or not _is_converted(path):
            params, info = convert_source(name, path)
            return build_network(name, params, preprocessing=info.preprocessing,
                                 weights_desc=f"{info.describe()} (converted in memory)",
                                 model_config=info.model_config, where=str(path))
    info, params = read_converted(path)
    if info.model != name:
        raise RdfiaError(f"{path}: holds {info.model} weights, not {name}")
    return build_network(name, params, preprocessing=info.preprocessing,
                         weights_desc=f"{info.describe()} from {path}",
                         model_config=info.model_config, where=str(path))


def _is_converted(path: Path) -> bool:
    try:
        read_info(path)
    except RdfiaError:
        return False
    return True
