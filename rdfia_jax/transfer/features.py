"""Deep features of VGG16 / AlexNet for transfer learning, sharded over devices and cached on disk.

* Any named activation of a model (``Network.activation_names``) can be extracted, or a layer chosen
  the way the practical does it, by cutting N layers off torchvision's ``classifier`` ``Sequential``
  (where ReLU and Dropout count as layers; see :func:`layer_for_cut`).
* Images go through torchvision's evaluation transforms (``resize`` 224x224, or ``crop`` = resize the
  short side to 256 then center-crop 224); grayscale images are replicated to 3 channels.
* One jitted function per (network, layers) maps a uint8 batch to features. Each batch is split over
  all local devices with a ``NamedSharding`` on the batch axis (parameters replicated), so one code path
  serves one CPU, several GPUs or a TPU host. The ragged last batch is padded to the full batch size
  (one compiled shape) and the padded rows are dropped afterwards.
* :func:`cached_features` stores features on disk keyed by everything that determines them (model,
  weights fingerprint, layer, preprocessing, image size, the images' bytes); the key is stored inside
  the file and compared on load, so a changed key never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rdfia_jax import paths
from rdfia_jax import parallel
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_path
from rdfia_jax.data.transforms import RESIZE_MODES, prepare_images
from rdfia_jax.models import Network, cpu_tuned_kernels, forward
from rdfia_jax.progress import Progress
from rdfia_jax import xla

CACHE_FORMAT = 1

# torchvision's classifier Sequentials, in order (ReLU and Dropout count as layers; in eval mode a
# Dropout passes its input through, so its output is the activation before it).
CLASSIFIER_LAYERS = {
    "vgg16": ("fc6", "relu6", "dropout", "fc7", "relu7", "dropout", "fc8"),
    "alexnet": ("dropout", "fc6", "relu6", "dropout", "fc7", "relu7", "fc8"),
}


def layer_for_cut(model: str, cut: int) -> str:
    """The activation that ``classifier[:-cut]`` of torchvision's model outputs (eval mode).

    VGG16: cut 1/2 -> relu7 (``[:-2]`` is the practical's default), 3 -> fc7, 4/5 -> relu6 (the
    report's "3 layers before"), 6 -> fc6, 7 -> avgpool (flattened). AlexNet: 1 -> relu7, 2 -> fc7
    (before its ReLU), 3/4 -> relu6, 5 -> fc6, 6/7 -> avgpool. Cut 0 is the full network (fc8).

    Args:
      model: "vgg16" or "alexnet".
      cut: number of classifier layers removed from the end, 0..7.
    Returns:
      The activation name, usable as a ``capture`` name.
    """
    if model not in CLASSIFIER_LAYERS:
        raise RdfiaError(f"'cut N layers' is defined for {', '.join(CLASSIFIER_LAYERS)}; got model {model!r}")
    seq = CLASSIFIER_LAYERS[model]
    if not 0 <= cut <= len(seq):
        raise RdfiaError(f"cut must be between 0 and {len(seq)} for {model}; got {cut}")
    kept = seq[: len(seq) - cut]
    # the output is the last kept layer that is not a Dropout (identity in eval mode)
    for name in reversed(kept):
        if name != "dropout":
            return name
    return "avgpool"  # empty classifier: torchvision returns the flattened adaptive-pool output


def resolve_layer(network: Network, layer: str) -> str:
    """A layer name or ``"cutN"`` / ``"cut:N"`` -> an activation name of ``network`` (checked)."""
    spec = layer.strip().lower()
    if spec.startswith("cut"):
        digits = spec[3:].lstrip(":=-_ ")
        if not digits.isdigit():
            raise RdfiaError(f"bad layer {layer!r}: write a layer name or 'cutN' (e.g. cut2)")
        spec = layer_for_cut(network.name, int(digits))
    if spec not in network.activation_names:
        raise RdfiaError(f"unknown layer {layer!r} for model {network.name!r}; available layers: "
                         f"{', '.join(network.activation_names)}, or cut0..cut7")
    return spec


class FeatureExtractor:
    """Jitted, device-sharded extraction of one or more activations of a network.

    Args:
      network: the model (parameters are replicated on every device).
      layers: activation names (see :func:`resolve_layer`), extracted in one forward pass.
      batch_size: images per step; rounded up to a multiple of the number of devices.
      devices: devices to shard over (default: all local devices).
    """

    def __init__(self, network: Network, layers: Sequence[str], *, batch_size: int = 32,
                 devices: Sequence[jax.Device] | None = None):
        self.network = network
        self.layers = tuple(resolve_layer(network, l) for l in layers)
        self.devices = list(devices) if devices is not None else jax.local_devices()
        n_dev = len(self.devices)
        if batch_size < 1:
            raise RdfiaError(f"--batch-size must be at least 1; got {batch_size}")
        self.batch_size = int(math.ceil(batch_size / n_dev) * n_dev)
        mesh = Mesh(np.asarray(self.devices), ("batch",))
        self.batch_sharding = parallel.batch_sharding(mesh)
        self.state = parallel.replicate(network.state, mesh)
        self.traces = xla.TraceCounter()  # counts compilations: tests assert one per shape
        graphdef, prep, layers_ = network.graphdef, network.preprocessing, self.layers

        def features(state, images_u8):
            x = images_u8.astype(jnp.float32) / jnp.float32(255.0)
            if x.shape[-1] == 1:  # grayscale -> the 3 channels ImageNet models expect
                x = jnp.broadcast_to(x, x.shape[:-1] + (3,))
            _, acts = forward(graphdef, state, prep.normalize(x), layers_)
            return tuple(acts[l].reshape(acts[l].shape[0], -1).astype(jnp.float32) for l in layers_)

        self._fn = xla.jit(self.traces.wrap(features, "features"), tuned_kernels=cpu_tuned_kernels(network.name),
                           in_shardings=(parallel.replicated(mesh), self.batch_sharding),
                           out_shardings=self.batch_sharding)

    @property
    def trace_count(self) -> int:
        """How many times the feature function was traced (compiled)."""
        return self.traces["features"]

    def __call__(self, batches: Iterable[np.ndarray], total: int, *, progress: bool = True) -> dict[str, np.ndarray]:
        """Features of a stream of uint8 NHWC batches (any batch lengths <= ``batch_size``).

        Args:
          batches: uint8 arrays (n_i, H, W, 3 or 1).
          total: number of images in all batches (for the progress bar and the output arrays).
          progress: report progress (a bar on a terminal, plain lines in a log).
        Returns:
          ``{layer: float32 (total, D)}``.
        """
        outs: dict[str, list[np.ndarray]] = {l: [] for l in self.layers}
        pending = None  # results of the previous batch, fetched after the next one is dispatched

        def collect(item):
            arrays, n_valid = item
            for l, a in zip(self.layers, arrays):
                outs[l].append(np.asarray(a)[:n_valid])  # drop the padded rows

        with Progress(total, f"{self.network.name} {'+'.join(self.layers)}", unit="img",
                      enabled=progress, leave=False) as bar:
            for batch in batches:
                n_valid = batch.shape[0]
                if n_valid > self.batch_size:
                    raise ValueError(f"batch of {n_valid} > batch_size {self.batch_size}")
                if n_valid < self.batch_size:  # ragged last batch: pad so the compiled shape is reused
                    pad = np.zeros((self.batch_size - n_valid,) + batch.shape[1:], batch.dtype)
                    batch = np.concatenate([batch, pad])
                result = self._fn(self.state, jax.device_put(batch, self.batch_sharding))
                if pending is not None:
                    collect(pending)
                    bar.update(pending[1])
                pending = (result, n_valid)
            if pending is not None:
                collect(pending)
                bar.update(pending[1])
        got = {l: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for l, v in outs.items()}
        for l, v in got.items():
            if v.shape[0] != total:
                raise ValueError(f"expected {total} feature rows for {l}, got {v.shape[0]}")
        return got

    def from_images(self, images: Sequence[np.ndarray], mode: str = "resize", size: int = 224, *,
                    progress: bool = True) -> dict[str, np.ndarray]:
        """Preprocess raw uint8 images batch by batch (host work overlaps device work) and extract."""
        def batches():
            for start in range(0, len(images), self.batch_size):
                yield prepare_images(images[start:start + self.batch_size], mode, size)
        return self(batches(), len(images), progress=progress)


# ----------------------------------------------------------------------------------------------
# Fingerprints and the on-disk cache
# ----------------------------------------------------------------------------------------------

def images_fingerprint(images: Sequence[np.ndarray]) -> str:
    """A content hash of a list of images (shapes, dtypes and bytes), order-sensitive."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(len(images)).encode())
    for img in images:
        a = np.ascontiguousarray(img)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike, *, cache_root: Path | None = None) -> str:
    """sha256 of a file, computed once and remembered by (path, size, mtime) in the cache folder."""
    path = Path(path).resolve()
    if not path.is_file():
        raise RdfiaError(f"weights file not found: {path}")
    st = path.stat()
    memo_file = (cache_root or paths.cache_dir()) / "transfer" / "file-hashes.json"
    memo_key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo: dict[str, str] = {}
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    memo[memo_key] = digest
    with atomic_path(memo_file) as tmp:
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
    return digest


def params_fingerprint(network: Network) -> str:
    """A content hash of a network's parameter values (used when no weight-file hash is known)."""
    h = hashlib.blake2b(digest_size=16)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(network.state)
    h.update(str(treedef).encode())
    for key_path, leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(key_path)}{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def weights_fingerprint(network: Network, *, seed: int | None = None, weights_file: str | os.PathLike | None = None,
                        cache_root: Path | None = None) -> str:
    """The weights part of a cache key.

    Random weights -> ``"random-seed<k>"``; a hash the weights loader recorded on the network
    (``sha256`` / ``weights_sha256`` attribute) if any; else the sha256 of ``weights_file``; else a
    hash of the parameter values themselves.
    """
    if network.is_random:
        if seed is None:
            return "random-params-" + params_fingerprint(network)
        return f"random-seed{int(seed)}"
    for attr in ("weights_sha256", "sha256", "weights_hash"):
        value = getattr(network, attr, None)
        if value:
            return f"sha256-{value}"
    if weights_file is not None:
        return "sha256-" + file_fingerprint(weights_file, cache_root=cache_root)
    return "params-" + params_fingerprint(network)


def cache_key(*, model: str, weights_id: str, layer: str, mode: str, size: int, preprocessing: dict,
              data_id: str) -> dict:
    """Everything that determines a feature matrix (stored in the cache file and compared on load)."""
    return {"format": CACHE_FORMAT, "model": model, "weights": weights_id, "layer": layer, "mode": mode,
            "size": int(size), "preprocessing": preprocessing, "data": data_id}


def cache_file(key: dict, cache_root: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = (cache_root or paths.cache_dir()) / "transfer"
    return root / f"{key['model']}-{key['layer']}-{key['mode']}-{digest}.npz"


def load_cached(key: dict, cache_root: Path | None = None) -> np.ndarray | None:
    """The cached features for ``key``, or None (missing, unreadable, or stored under another key)."""
    path = cache_file(key, cache_root)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["key"]))
            if stored != json.loads(json.dumps(key, sort_keys=True)):
                return None
            return np.asarray(z["features"])
    except (OSError, ValueError, KeyError):
        return None  # a corrupt cache is recomputed and overwritten


def save_cached(key: dict, features: np.ndarray, cache_root: Path | None = None) -> Path:
    """Write features + key atomically."""
    path = cache_file(key, cache_root)
    buf = io.BytesIO()
    np.savez(buf, features=np.asarray(features, np.float32), key=np.asarray(json.dumps(key, sort_keys=True)))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    return path


def cached_features(network: Network, images: Sequence[np.ndarray], layers: Sequence[str], *, weights_id: str,
                    mode: str = "resize", size: int = 224, batch_size: int = 32, cache_root: Path | None = None,
                    use_cache: bool = True, data_id: str | None = None, progress: bool = True,
                    devices: Sequence[jax.Device] | None = None,
                    extractors: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Features of ``images`` at ``layers``, from the disk cache when the full key matches.

    Missing layers are computed together in one forward pass and cached.

    Args:
      network: the model.
      images: uint8 images (any sizes, gray or RGB).
      layers: layer names or "cutN" specs.
      weights_id: the weights part of the key (see :func:`weights_fingerprint`).
      mode: "resize" or "crop".
      size: network input side.
      batch_size: images per step.
      cache_root: cache folder (default ``paths.cache_dir()``).
      use_cache: read and write the cache.
      data_id: precomputed :func:`images_fingerprint` of ``images``.
      progress: show progress.
      devices: devices to shard over.
      extractors: a dict the caller keeps across calls (e.g. the train and the test split): a
        :class:`FeatureExtractor` made for the same network and layers is reused from it, so the
        second call does not compile the network again.
    Returns:
      ``({layer: float32 (N, D)}, info)`` with info keys ``seconds`` (extraction wall time, 0 when all
      cached), ``cached`` (layers read from the cache), ``computed``, ``images_per_s``.
    """
    if mode not in RESIZE_MODES:
        raise RdfiaError(f"unknown preprocessing {mode!r}; choose one of {RESIZE_MODES}")
    resolved = list(dict.fromkeys(resolve_layer(network, l) for l in layers))
    data_id = data_id or images_fingerprint(images)
    keys = {l: cache_key(model=network.name, weights_id=weights_id, layer=l, mode=mode, size=size,
                         preprocessing=network.preprocessing.to_dict(), data_id=data_id) for l in resolved}
    result: dict[str, np.ndarray] = {}
    if use_cache:
        for l in resolved:
            hit = load_cached(keys[l], cache_root)
            if hit is not None and hit.shape[0] == len(images):
                result[l] = hit
    missing = [l for l in resolved if l not in result]
    info = {"seconds": 0.0, "cached": [l for l in resolved if l in result], "computed": missing,
            "images_per_s": None}
    if missing:
        reuse_key = (id(network), tuple(missing), batch_size, tuple(devices) if devices is not None else None)
        extractor = (extractors or {}).get(reuse_key)
        if extractor is None or extractor.network is not network:
            extractor = FeatureExtractor(network, missing, batch_size=batch_size, devices=devices)
            if extractors is not None:
                extractors[reuse_key] = extractor
        t0 = time.perf_counter()
        computed = extractor.from_images(images, mode, size, progress=progress)
        info["seconds"] = time.perf_counter() - t0
        info["images_per_s"] = len(images) / info["seconds"] if info["seconds"] > 0 else None
        for l in missing:
            result[l] = computed[l]
            if use_cache:
                save_cached(keys[l], computed[l], cache_root)
    return {l: result[l] for l in resolved}, info


__all__ = ["CLASSIFIER_LAYERS", "layer_for_cut", "resolve_layer", "prepare_images", "FeatureExtractor",
           "images_fingerprint", "file_fingerprint", "params_fingerprint", "weights_fingerprint", "cache_key",
           "cache_file", "load_cached", "save_cached", "cached_features"]
