"""The project's small reference classifier for 28x28 digits, trained once and cached.

One network serves several sections: the GAN section scores samples with it (accuracy of a cGAN's
digits, Frechet distance on its :meth:`Classifier.features`), the attacks use it as a target, and the
visualization methods are checked on it when no ImageNet weights exist. Seeds give independent
networks (initialisation and data order), so a second network can judge what the first one produced.

Typical use::

    clf = get_classifier("mnist", seed=0)   # trains (~1 min on 2 CPU cores) the first time only
    logits = clf.logits(x)                   # x float32 (N, 28, 28, 1) in [0, 1]

Training runs through :func:`rdfia_jax.train.loop.run`. The cache is
``paths.cache_dir()/classifier/<dataset>-seed<k>/``, a :class:`~rdfia_jax.train.checkpoint.CheckpointStore`
holding the parameters (checksummed) and the training record as its metadata, written atomically;
concurrent callers wait on a lock file instead of training twice. A cache in the earlier format
(``params.npz`` + ``meta.json``, same recipe) is still read as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rdfia_jax import paths
from rdfia_jax.data.batching import map_batches
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_path
from rdfia_jax.models import forward
from rdfia_jax.models.small import SMALL_NAME, SmallCNN
from rdfia_jax.preprocess import Preprocessing
from rdfia_jax.train import checkpoint, loop
from rdfia_jax.train.optim import apply_optimizer, init_optimizer
from rdfia_jax import xla

# Bump when the architecture or training recipe changes: older caches are then retrained.
FORMAT_VERSION = 1
DATASETS = ("mnist", "digits", "fashion_mnist")


@dataclasses.dataclass(frozen=True)
class UnitPreprocessing(Preprocessing):
    """Identity preprocessing for models that take pixels in [0, 1] directly, any channel count
    (``len(mean)``); :meth:`bounds` is (0, 1) per channel."""

    def normalize(self, images01: Any) -> jnp.ndarray:
        return jnp.asarray(images01, jnp.float32)

    def denormalize(self, x: Any) -> jnp.ndarray:
        return jnp.asarray(x, jnp.float32)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        channels = len(self.mean)
        return np.zeros((channels,), np.float32), np.ones((channels,), np.float32)


# The digit classifier takes grayscale pixels in [0, 1]: identity preprocessing, one channel.
UNIT_GRAY = UnitPreprocessing("unit", (0.0,), (1.0,), 1.0, False)  # type: ignore[arg-type]
_EVAL_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training recipe: Adam with a warm-up + cosine schedule, batch 128."""

    epochs: int
    batch_size: int = 128
    peak_lr: float = 3e-3
    weight_decay: float = 1e-4


# MNIST: 3 epochs reach ~99.2 % test. The sklearn digits have 1,437 training images: more epochs.
DEFAULT_CONFIGS = {"mnist": TrainConfig(epochs=3), "fashion_mnist": TrainConfig(epochs=5),
                   "digits": TrainConfig(epochs=40, batch_size=64)}


def load_split(dataset: str, split: str, data_dir=None):
    """The ``split`` ("train" or "test") of a classifier dataset, as an ``rdfia_jax.data`` ArrayDataset."""
    from rdfia_jax.data import load

    return load(dataset, split, data_dir=data_dir)




@xla.jit(static_argnums=(0, 3))
def _apply_jit(graphdef, params, x, capture):
    return forward(graphdef, params, x, capture)


def to_unit_float(x: Any) -> jnp.ndarray:
    """uint8 images -> float32 / 255; float images pass through as float32."""
    arr = np.asarray(x) if not isinstance(x, jax.Array) else x
    if arr.dtype == np.uint8:
        return jnp.asarray(arr, jnp.float32) / jnp.float32(255.0)
    return jnp.asarray(arr, jnp.float32)


@dataclasses.dataclass
class Classifier:
    """A trained :class:`~rdfia_jax.models.small.SmallCNN` with jitted inference.

    Attributes:
      dataset: the dataset it was trained on.
      seed: its seed (initialisation and data order).
      graphdef: static NNX structure.
      params: parameters (an ``nnx.State`` pytree) for :meth:`apply`.
      test_accuracy: accuracy on the dataset's test split, measured after training.
      meta: everything recorded with the cache (recipe, data description, training time).
    """

    dataset: str
    seed: int
    graphdef: nnx.GraphDef
    params: nnx.State
    test_accuracy: float
    meta: dict

    def apply(self, params: nnx.State, x: jnp.ndarray, capture: tuple[str, ...] = ()):
        """Pure ``(params, x) -> (logits, acts)``; use inside ``jax.jit``/``jax.grad``."""
        return forward(self.graphdef, params, x, capture)

    def _batched(self, x: Any, layer: str | None) -> jnp.ndarray:
        x = to_unit_float(x)
        capture = () if layer is None else (layer,)

        def fn(xb):
            out = _apply_jit(self.graphdef, self.params, xb, capture)
            return out[0] if layer is None else out[1][layer]

        if x.shape[0] == 0:
            raise RdfiaError("the classifier got no images (an empty batch)")
        # Chunks of _EVAL_BATCH (the last one padded) so big inputs compile one shape only.
        return jnp.asarray(map_batches(fn, np.asarray(x), min(x.shape[0], _EVAL_BATCH)))

    def logits(self, x: Any) -> jnp.ndarray:
        """Logits (N, 10) of images (N, 28, 28, 1): float32 in [0, 1] (uint8 is divided by 255)."""
        return self._batched(x, None)

    def features(self, x: Any) -> jnp.ndarray:
        """Penultimate-layer features (N, 128) (after ReLU), e.g. for a Frechet distance."""
        return self._batched(x, "relu3")

    def predict(self, x: Any) -> np.ndarray:
        """Predicted labels (N,) int64."""
        return np.asarray(jnp.argmax(self.logits(x), axis=-1)).astype(np.int64)

    def network(self):
        """This classifier as a :class:`rdfia_jax.models.Network` (inputs in [0, 1], one channel)."""
        from rdfia_jax.models import Network

        return Network(SMALL_NAME, self.graphdef, self.params, UNIT_GRAY,
                       f"small CNN trained on {self.dataset} (seed {self.seed}, test acc {self.test_accuracy:.4f})")


def _cache_path(dataset: str, seed: int) -> Path:
    return paths.cache_dir() / "classifier" / f"{dataset}-seed{seed}"


def _new_model(seed: int) -> SmallCNN:
    return SmallCNN(rngs=nnx.Rngs(seed))


def _fingerprint(dataset: str, seed: int) -> dict:
    return {"model": SMALL_NAME, "dataset": dataset, "seed": int(seed), "recipe_version": FORMAT_VERSION}


def _store(path: Path, dataset: str, seed: int) -> checkpoint.CheckpointStore:
    return checkpoint.CheckpointStore(path, fingerprint=_fingerprint(dataset, seed), keep=1)


def _has_steps(path: Path) -> bool:
    return path.is_dir() and any(p.name.isdigit() and p.is_dir() for p in path.iterdir())


def _load_cached(path: Path, dataset: str, seed: int) -> tuple[nnx.GraphDef, nnx.State, dict] | None:
    """The cached network, or None when there is none (or one of an earlier recipe: retrained)."""
    graphdef, target = nnx.split(_new_model(seed))
    if not _has_steps(path):
        return _load_legacy(path, graphdef, target)
    with _store(path, dataset, seed) as store:
        saved = store.read_metadata()
        if saved["fingerprint"] != store.fingerprint:
            return None  # another recipe version: retrain
        params, meta = store.restore(target)
    return graphdef, params, meta


def _load_legacy(path: Path, graphdef: nnx.GraphDef, target: nnx.State):
    """A cache of the earlier format (``params.npz`` + ``meta.json``, recipe version 1), read in place."""
    meta_file, params_file = path / "meta.json", path / "params.npz"
    if not (meta_file.is_file() and params_file.is_file()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
        with np.load(params_file) as stored:
            stored = dict(stored)
    except (OSError, ValueError) as err:
        raise RdfiaError(f"classifier cache {path} cannot be read ({err}); delete it to retrain") from err
    if meta.get("format_version") != FORMAT_VERSION:
        return None

    def fill(p, v):
        key = jax.tree_util.keystr(p)
        if key not in stored or stored[key].shape != v.shape:
            raise RdfiaError(f"{params_file}: parameter {key} missing or of the wrong shape; delete {path} to retrain")
        return jnp.asarray(stored[key], v.dtype)

    return graphdef, jax.tree_util.tree_map_with_path(fill, target), meta


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def accuracy(graphdef: nnx.GraphDef, params: nnx.State, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (graphdef, params) on uint8 images."""
    clf = Classifier("?", 0, graphdef, params, float("nan"), {})
    return float(np.mean(clf.predict(images) == np.asarray(labels)))


def train_classifier(dataset: str = "mnist", seed: int = 0, *, data_dir=None, config: TrainConfig | None = None,
                     progress: bool = True) -> tuple[nnx.GraphDef, nnx.State, dict]:
    """Train a :class:`SmallCNN` (no caching).

    Args:
      dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"digits"`` (embedded, not MNIST).
      seed: initialisation and data-order seed.
      data_dir: where the raw data is (see :func:`rdfia_jax.data.load`).
      config: training recipe (default :data:`DEFAULT_CONFIGS` of the dataset).
      progress: report progress (a bar on a terminal, plain lines in a log).
    Returns:
      ``(graphdef, params, meta)``; ``meta["test_accuracy"]`` is measured on the test split.
    """
    config = config or DEFAULT_CONFIGS[dataset]
    train, test = load_split(dataset, "train", data_dir), load_split(dataset, "test", data_dir)
    if train.images.shape[1:] != (28, 28, 1):
        raise RdfiaError(f"the small classifier needs 28x28 grayscale data; {dataset} has shape {train.images.shape[1:]}")
    n = len(train)
    steps_per_epoch = n // config.batch_size
    total = steps_per_epoch * config.epochs
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.peak_lr, min(200, total // 10), total)
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    graphdef, params = nnx.split(_new_model(seed))
    images, labels = np.asarray(train.images), np.asarray(train.labels)
    orders: dict[int, np.ndarray] = {}

    def get_batch(epoch: int, index: int):
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        idx = orders[epoch][index * config.batch_size:(index + 1) * config.batch_size]
        return images[idx], labels[idx]

    def step(state, batch, step_index):
        params, opt_state = state
        images_u8, labels = batch

        def loss_fn(p):
            logits, _ = forward(graphdef, p, images_u8.astype(jnp.float32) / jnp.float32(255.0))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return apply_optimizer(tx, grads, opt_state, params), {"loss": loss}

    result = loop.run(step, (params, init_optimizer(tx, params)), get_batch, steps_per_epoch=steps_per_epoch,
                      epochs=config.epochs, progress=progress, data_parallel=False,
                      desc=f"training small classifier ({dataset}, seed {seed})")
    params = result.state[0]
    acc = accuracy(graphdef, params, test.images, test.labels)
    meta = {"format_version": FORMAT_VERSION, "model": SMALL_NAME, "dataset": dataset, "seed": seed,
            "data": train.description, "is_real_mnist": bool(getattr(train, "is_real_mnist", dataset == "mnist")),
            "config": dataclasses.asdict(config), "train_steps": result.steps_done,
            "train_seconds": round(result.seconds, 1),
            "final_loss": float(result.history["loss"][-1]), "test_accuracy": acc, "test_size": len(test)}
    return graphdef, params, meta


def get_classifier(dataset: str = "mnist", seed: int = 0, *, data_dir=None, train_if_missing: bool = True,
                   config: TrainConfig | None = None, progress: bool = True) -> Classifier:
    """The cached small classifier of ``dataset`` and ``seed``, training it on first use.

    Args:
      dataset: ``"mnist"`` (real MNIST files needed once, for training), ``"fashion_mnist"``, or
        ``"digits"`` (scikit-learn digits, always available, NOT MNIST).
      seed: 0, 1, ... give independently trained networks.
      data_dir: folder holding the raw dataset (default ``$RDFIA_JAX_DATA``); only read when training.
      train_if_missing: if False, a missing cache raises :class:`RdfiaError` instead of training.
      config: non-default training recipe (cached under the same name: for tests with a temporary cache).
      progress: show a progress bar while training.
    Returns:
      A :class:`Classifier`.
    """
    if dataset not in DATASETS:
        raise RdfiaError(f"unknown classifier dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    seed = int(seed)
    path = _cache_path(dataset, seed)
    loaded = _load_cached(path, dataset, seed)
    if loaded is None:
        if not train_if_missing:
            raise RdfiaError(f"no trained {dataset} classifier (seed {seed}) in {path}; call get_classifier("
                             f"{dataset!r}, seed={seed}) with train_if_missing=True to train it (about a minute)")
        with _lock(path):
            loaded = _load_cached(path, dataset, seed)  # another process may have trained it while we waited
            if loaded is None:
                graphdef, params, meta = train_classifier(dataset, seed, data_dir=data_dir, config=config,
                                                          progress=progress)
                with atomic_path(path, is_dir=True) as tmp:
                    with _store(tmp, dataset, seed) as store:
                        store.save(meta["train_steps"], params, meta)
                loaded = graphdef, params, meta
    graphdef, params, meta = loaded
    return Classifier(dataset, seed, graphdef, params, float(meta["test_accuracy"]), meta)


__all__ = ["Classifier", "get_classifier", "train_classifier", "TrainConfig", "DEFAULT_CONFIGS", "UNIT_GRAY",
           "accuracy", "to_unit_float", "UnitPreprocessing", "load_split"]
