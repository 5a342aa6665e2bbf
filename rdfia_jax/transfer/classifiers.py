"""Classifiers on frozen deep features: linear SVM (with a cross-validated C), PCA + SVM, a new FC head.

The practical's recipe: L2-normalize each feature vector, fit ``sklearn.svm.LinearSVC(C=1)`` on the
train split, report accuracy on the test split. C is chosen by cross-validation on the train split
only; test accuracies of every C are reported beside it but never used to choose.
"""

from __future__ import annotations

import time
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rdfia_jax.data.batching import epoch_order, map_batches
from rdfia_jax.errors import RdfiaError
from rdfia_jax.train import loop
from rdfia_jax.train.optim import apply_optimizer, init_optimizer
from rdfia_jax import xla

_EVAL_BATCH = 4096  # test features per prediction call


def l2_normalize(features: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row divided by its Euclidean norm (rows of zeros stay zero)."""
    x = np.asarray(features, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(eps))


def _check_xy(x: np.ndarray, y: np.ndarray, what: str) -> None:
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise RdfiaError(f"{what}: features {x.shape} and labels {y.shape} disagree")
    if x.shape[0] == 0:
        raise RdfiaError(f"{what}: no examples")


def _linear_svc(C: float, seed: int):
    from sklearn.svm import LinearSVC
    return LinearSVC(C=C, random_state=seed)


def svm_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 C: float = 1.0, normalize: bool = True, seed: int = 0) -> dict:
    """Fit a LinearSVC on train, score on test.

    Args:
      train_x, train_y, test_x, test_y: features (N, D) and int labels (N,).
      C: SVM regularization.
      normalize: L2-normalize features first (the practical does).
      seed: LinearSVC's random_state.
    Returns:
      dict with ``accuracy``, ``fit_s``, ``predict_s``, ``dims``, ``converged``.
    """
    from sklearn.exceptions import ConvergenceWarning

    _check_xy(train_x, train_y, "train")
    _check_xy(test_x, test_y, "test")
    if normalize:
        train_x, test_x = l2_normalize(train_x), l2_normalize(test_x)
    clf = _linear_svc(C, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(train_x, train_y)
        fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = clf.predict(test_x)
    predict_s = time.perf_counter() - t0
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {"accuracy": float(np.mean(pred == test_y)), "fit_s": fit_s, "predict_s": predict_s,
            "dims": int(train_x.shape[1]), "converged": converged, "C": float(C)}


def c_sweep(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
            Cs: Sequence[float] = (1.0, 5.0, 10.0, 20.0), *, folds: int = 5, normalize: bool = True,
            seed: int = 0) -> dict:
    """Choose C by stratified k-fold cross-validation on the train split; report test accuracy of all.

    Returns:
      dict with ``best_C`` (highest mean CV accuracy; ties -> smallest C), ``cv`` {C: mean CV accuracy},
      ``test`` {C: svm_accuracy(...) dict}, ``folds``.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    _check_xy(train_x, train_y, "train")
    if normalize:
        train_x, test_x = l2_normalize(train_x), l2_normalize(test_x)
    present = np.bincount(train_y)
    min_count = int(present[present > 0].min())
    folds = max(2, min(folds, min_count))
    if min_count < 2:
        raise RdfiaError("C sweep needs at least 2 train images per class for cross-validation")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv_scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings are reported by svm_accuracy below
        for C in Cs:
            cv_scores[float(C)] = float(np.mean(cross_val_score(_linear_svc(C, seed), train_x, train_y, cv=cv)))
    best = max(cv_scores, key=lambda c: (cv_scores[c], -c))
    tests = {float(C): svm_accuracy(train_x, train_y, test_x, test_y, C=C, normalize=False, seed=seed) for C in Cs}
    return {"best_C": best, "cv": cv_scores, "test": tests, "folds": folds}


def pca_svm(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
            variance: float = 0.90, C: float = 1.0, normalize: bool = True, seed: int = 0) -> dict:
    """PCA fitted on train keeping ``variance`` of the variance, then LinearSVC; timed against no PCA.

    Features are L2-normalized before PCA (the practical's features), and the reduced features are
    L2-normalized again before the SVM.

    Returns:
      dict with ``dims_in``, ``dims_kept``, ``variance_kept`` (actual share), ``accuracy``,
      ``pca_fit_s``, ``fit_s`` (SVM on reduced), ``predict_s`` (projection + SVM), and ``baseline``
      (svm_accuracy without PCA).
    """
    from sklearn.decomposition import PCA

    if not 0.0 < variance <= 1.0:
        raise RdfiaError(f"PCA variance share must be in (0, 1]; got {variance}")
    _check_xy(train_x, train_y, "train")
    if normalize:
        train_x, test_x = l2_normalize(train_x), l2_normalize(test_x)
    baseline = svm_accuracy(train_x, train_y, test_x, test_y, C=C, normalize=False, seed=seed)
    pca = PCA(n_components=variance if variance < 1.0 else None, svd_solver="full", random_state=seed)
    t0 = time.perf_counter()
    train_r = pca.fit_transform(train_x)
    pca_fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_r = pca.transform(test_x)
    project_s = time.perf_counter() - t0
    reduced = svm_accuracy(train_r, train_y, test_r, test_y, C=C, normalize=normalize, seed=seed)
    return {"dims_in": int(train_x.shape[1]), "dims_kept": int(pca.n_components_),
            "variance_kept": float(np.sum(pca.explained_variance_ratio_)), "variance_target": float(variance),
            "accuracy": reduced["accuracy"], "pca_fit_s": pca_fit_s, "fit_s": reduced["fit_s"],
            "predict_s": project_s + reduced["predict_s"], "converged": reduced["converged"],
            "explained_variance_ratio": pca.explained_variance_ratio_.astype(float).tolist(),
            "baseline": baseline}


# ----------------------------------------------------------------------------------------------
# A new fully-connected head (optionally with the last layers fine-tuned), trained with optax
# through the shared loop (rdfia_jax.train.loop.run)
# ----------------------------------------------------------------------------------------------

def _dense_init(key: jax.Array, d_in: int, d_out: int) -> dict:
    # torch.nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
    bound = float(1.0 / np.sqrt(d_in))
    kw, kb = jax.random.split(key)
    return {"kernel": jax.random.uniform(kw, (d_in, d_out), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(kb, (d_out,), jnp.float32, -bound, bound)}


def head_apply(params: dict, x: jnp.ndarray) -> jnp.ndarray:
    """Logits of the head: optional fine-tuned layers (``hidden``: list of dense, ReLU) then ``out``."""
    for layer in params.get("hidden", []):
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"][None, :])
    return x @ params["out"]["kernel"] + params["out"]["bias"][None, :]


def train_head(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
               num_classes: int, epochs: int = 5, batch_size: int = 32, learning_rate: float = 1e-3,
               momentum: float = 0.9, optimizer: str = "sgd", seed: int = 0,
               hidden: Sequence[dict] | None = None) -> dict:
    """Train a new FC layer on frozen features with optax, measuring test accuracy after every epoch.

    With ``hidden`` (dense layers ``{"kernel": (in, out), "bias": (out,)}`` initialized from the network,
    e.g. fc7, or fc6 and fc7) those layers are fine-tuned too, on the frozen activation that feeds them.

    Args:
      train_x, train_y, test_x, test_y: frozen features (N, D) and labels.
      num_classes: outputs of the new layer.
      epochs: passes over the train split.
      batch_size: examples per step (the last partial batch of an epoch is masked, not dropped).
      learning_rate: step size.
      momentum: SGD momentum (the practical's optimizer is SGD with momentum).
      optimizer: "sgd" or "adam".
      seed: initialization and shuffling seed.
      hidden: layers to fine-tune before the new head.
    Returns:
      dict with ``test_accuracy`` (per epoch, list), ``train_loss`` (per epoch), ``accuracy`` (last),
      ``fit_s``, ``steps``, ``trace_count``, ``params``.
    Raises:
      RdfiaError: bad inputs; :class:`~rdfia_jax.train.loop.TrainingDiverged` when the loss becomes
        NaN/inf (e.g. a learning rate far too high).
    """
    _check_xy(train_x, train_y, "train")
    _check_xy(test_x, test_y, "test")
    if epochs < 1:
        raise RdfiaError(f"epochs must be at least 1; got {epochs}")
    key = jax.random.PRNGKey(seed)
    hidden_params = [{"kernel": jnp.asarray(h["kernel"], jnp.float32), "bias": jnp.asarray(h["bias"], jnp.float32)}
                     for h in (hidden or [])]
    d_out_prev = hidden_params[-1]["kernel"].shape[1] if hidden_params else train_x.shape[1]
    params = {"hidden": hidden_params, "out": _dense_init(key, d_out_prev, num_classes)}
    if optimizer == "sgd":
        tx = optax.sgd(learning_rate, momentum=momentum)
    elif optimizer == "adam":
        tx = optax.adam(learning_rate)
    else:
        raise RdfiaError(f"unknown optimizer {optimizer!r}; choose sgd or adam")
    traces = xla.TraceCounter()

    def loss_fn(p, x, y, mask):
        logits = head_apply(p, x)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), jnp.float32(1.0))

    def step(state, batch, step_index):
        p, s = state
        loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
        return apply_optimizer(tx, grads, s, p), {"loss": loss}

    @xla.jit
    def predict(p, x):
        return jnp.argmax(head_apply(p, x), axis=-1)

    train_x = np.asarray(train_x, np.float32)
    test_x = np.asarray(test_x, np.float32)
    n = train_x.shape[0]
    bs = min(batch_size, n)
    steps_per_epoch = -(-n // bs)
    # examples in each step of an epoch: the last batch is partial, padded to one shape and masked
    counts = [min(bs, n - i * bs) for i in range(steps_per_epoch)]
    orders: dict[int, np.ndarray] = {}

    def get_batch(epoch: int, index: int):
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.asarray(epoch_order(n, seed, epoch))
        idx = orders[epoch][index * bs:(index + 1) * bs]
        mask = np.zeros(bs, np.float32)
        mask[: idx.size] = 1.0
        idx = np.concatenate([idx, np.zeros(bs - idx.size, np.int64)])
        return train_x[idx], np.asarray(train_y[idx], np.int32), mask

    curve: list[float] = []

    def evaluate(steps_done: int, state, history) -> None:
        pred = map_batches(lambda x: predict(state[0], x), test_x, min(len(test_x), _EVAL_BATCH))
        curve.append(float(np.mean(pred == test_y)))

    t0 = time.perf_counter()
    result = loop.run(traces.wrap(step, "head_step"), (params, init_optimizer(tx, params)), get_batch,
                      steps_per_epoch=steps_per_epoch, epochs=epochs, progress=False, data_parallel=False,
                      hooks=[loop.Hook(every=steps_per_epoch, fn=evaluate)])
    fit_s = time.perf_counter() - t0
    step_losses = result.history["loss"]
    losses = []
    for epoch in range(epochs):
        epoch_loss = 0.0
        for i, count in enumerate(counts):
            epoch_loss += float(step_losses[epoch * steps_per_epoch + i]) * count
        losses.append(epoch_loss / n)
    return {"test_accuracy": curve, "train_loss": losses, "accuracy": curve[-1], "fit_s": fit_s,
            "steps": result.steps_done, "trace_count": traces["head_step"], "params": result.state[0]}


__all__ = ["l2_normalize", "svm_accuracy", "c_sweep", "pca_svm", "train_head", "head_apply"]
