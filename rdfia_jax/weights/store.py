"""The converted-weights format: one safetensors file per (model, source), written atomically.

Tensors are named by their NNX state path joined with dots (``conv1_1.kernel``,
``fire2.squeeze.bias``), in our layouts (conv HWIO, linear ``[in, out]``, fc6 rows in H,W,C order),
float32. The safetensors header metadata (string -> string) records:

* ``rdfia_jax_format``: ``"converted-weights/1"``;
* ``model``: our model name; ``model_config``: JSON ``create`` kwargs (``width``, ``num_classes``);
* ``source``, ``source_format``, ``source_file``, ``source_sha256``: where the weights came from;
* ``preprocessing``: JSON of :meth:`rdfia_jax.preprocess.Preprocessing.to_dict`, applied on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_path, give_default_mode
from rdfia_jax.preprocess import Preprocessing

FORMAT_TAG = "converted-weights/1"
ParamPath = tuple[str, ...]


@dataclasses.dataclass
class ConvertedInfo:
    """The metadata of a converted file."""

    model: str
    model_config: dict
    source: str
    source_format: str
    source_file: str
    source_sha256: str
    preprocessing: Preprocessing

    def describe(self) -> str:
        extra = ""
        if self.model_config.get("width", 1.0) != 1.0 or self.model_config.get("num_classes", 1000) != 1000:
            extra = f", config {self.model_config}"
        return (f"{self.source} {self.source_file} (sha256 {self.source_sha256[:12]}..., "
                f"{self.preprocessing.name} preprocessing{extra})")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_converted(path: str | os.PathLike, params: dict[ParamPath, np.ndarray],
                    info: ConvertedInfo) -> Path:
    """Atomically write converted parameters and their metadata to ``path`` (mode from the umask)."""
    from safetensors.numpy import save_file

    path = Path(path)
    tensors = {".".join(p): np.ascontiguousarray(v, dtype=np.float32) for p, v in params.items()}
    metadata = {
        "rdfia_jax_format": FORMAT_TAG,
        "model": info.model,
        "model_config": json.dumps(info.model_config, sort_keys=True),
        "source": info.source,
        "source_format": info.source_format,
        "source_file": info.source_file,
        "source_sha256": info.source_sha256,
        "preprocessing": json.dumps(info.preprocessing.to_dict(), sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        give_default_mode(tmp)  # safetensors re-creates the file 0600: unreadable in a shared folder
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    return path


def read_info(path: str | os.PathLike) -> ConvertedInfo:
    """Metadata of a converted file (reads only the header)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise RdfiaError(f"{path}: truncated or corrupt converted-weights file ({err}); "
                         "convert it again with `rdfia-jax weights convert`") from None
    return _info_from_meta(meta, path)


def _info_from_meta(meta: dict, path: Path) -> ConvertedInfo:
    if meta.get("rdfia_jax_format") != FORMAT_TAG:
        raise RdfiaError(f"{path}: not a converted rdfia-jax weights file (no "
                         f"'rdfia_jax_format: {FORMAT_TAG}' metadata); convert the published file "
                         "with `rdfia-jax weights convert MODEL FILE`")
    try:
        return ConvertedInfo(
            model=meta["model"], model_config=json.loads(meta["model_config"]),
            source=meta["source"], source_format=meta["source_format"],
            source_file=meta["source_file"], source_sha256=meta["source_sha256"],
            preprocessing=Preprocessing.from_dict(json.loads(meta["preprocessing"])))
    except (KeyError, ValueError, TypeError) as err:
        raise RdfiaError(f"{path}: converted-weights metadata is damaged ({err}); convert again") from None


def read_converted(path: str | os.PathLike) -> tuple[ConvertedInfo, dict[ParamPath, np.ndarray]]:
    """Read a converted file: (metadata, ``{state path: float32 array}``)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise RdfiaError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            info = _info_from_meta(f.metadata() or {}, path)
            params = {tuple(k.split(".")): f.get_tensor(k) for k in f.keys()}
    except RdfiaError:
        raise
    except (SafetensorError, OSError, ValueError) as err:
        raise RdfiaError(f"{path}: truncated or corrupt converted-weights file ({err}); "
                         "convert it again with `rdfia-jax weights convert`") from None
    return info, params
