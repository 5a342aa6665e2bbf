"""The whole transfer-learning section (report 1.2) as one function: features, classifiers, table, figures.

Rows (ids in :data:`ROWS`), each beside the report's number:

* ``relu7-resize``   VGG16 relu7 (``classifier[:-2]``), Resize(224, 224), L2 + LinearSVC(C=1)
* ``relu7-crop``     same, Resize(256) + CenterCrop(224)
* ``relu6``          VGG16 relu6 ("3 layers before" relu7, ``classifier[:-5]``), crop
* ``alexnet-cut1``   AlexNet ``classifier[:-1]`` = relu7, crop
* ``alexnet-cut2``   AlexNet ``classifier[:-2]`` = fc7 before its ReLU, crop
* ``c-sweep``        relu6 crop, C in (1, 5, 10, 20), C chosen by cross-validation on train
* ``pca``            relu6 crop, PCA keeping 90 % of the variance, then LinearSVC(C=1)
* ``fc-head``        a new FC layer (15 outputs) replacing fc8, trained on frozen relu7 crop features

Each (model, preprocessing) pass extracts all the layers its rows need in one forward pass.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_write_bytes
from rdfia_jax.data.decode import IMAGE_EXTENSIONS
from rdfia_jax.transfer import classifiers, report
from rdfia_jax.transfer.features import cached_features, images_fingerprint, layer_for_cut, weights_fingerprint

ROWS = ("relu7-resize", "relu7-crop", "relu6", "alexnet-cut1", "alexnet-cut2", "c-sweep", "pca", "fc-head")

# row id -> (model, layer spec, preprocessing, description)
_FEATURES = {
    "relu7-resize": ("vgg16", "cut2", "resize", "VGG16 relu7 (classifier[:-2]), resize 224"),
    "relu7-crop": ("vgg16", "cut2", "crop", "VGG16 relu7, resize 256 + center crop 224"),
    "relu6": ("vgg16", "cut5", "crop", "VGG16 relu6 (3 layers before relu7, classifier[:-5]), crop"),
    "alexnet-cut1": ("alexnet", "cut1", "crop", "AlexNet cut 1 layer (relu7), crop"),
    "alexnet-cut2": ("alexnet", "cut2", "crop", "AlexNet cut 2 layers (fc7 before ReLU), crop"),
    "c-sweep": ("vgg16", "cut5", "crop", "VGG16 relu6, crop: LinearSVC C"),
    "pca": ("vgg16", "cut5", "crop", "VGG16 relu6, crop: PCA then LinearSVC"),
    "fc-head": ("vgg16", "cut2", "crop", "New FC layer on frozen VGG16 relu7, crop"),
}
# the frozen activation feeding the fine-tuned layers, when fine-tuning the last k pretrained layers
_FINETUNE_INPUT = {0: "relu7", 1: "relu6", 2: "avgpool"}
_FINETUNE_LAYERS = {0: (), 1: ("fc7",), 2: ("fc6", "fc7")}

RANDOM_HEADER = ("**RANDOM WEIGHTS: these accuracies mean nothing.** The networks were initialized at random "
                 "(no ImageNet weights were loaded); this run only proves that the pipeline works end to end. "
                 "The `report` column gives the report's numbers, obtained with torchvision's pretrained weights.")


@dataclasses.dataclass
class Settings:
    """Options of :func:`run_section` (the ``transfer`` command's flags).

    Attributes:
      data: 15SceneData folder (or a folder containing it, or the zip).
      out: output folder for the table and figures.
      rows: row ids to run (default all of :data:`ROWS`).
      weights: {model: None | source name | file} passed to ``load_network``.
      random_weights: use random weights (the table says its accuracies are meaningless).
      seed: random-weight and training seed.
      batch_size: images per extraction step.
      image_size: network input side (224 in the practical).
      per_class: keep only the first N images of each class in each split (None: all).
      Cs: the C sweep.
      cv_folds: folds of the C cross-validation.
      pca_variance: share of variance PCA keeps.
      head_epochs, head_lr, head_optimizer, head_batch_size, finetune: the FC-head training.
      cache: use the on-disk feature cache.
      cache_root: cache folder (default ``paths.cache_dir()``).
      progress: report progress (bars on a terminal, plain lines in a log).
    """

    data: str | Path | None
    out: str | Path
    rows: Sequence[str] = ROWS
    weights: dict = dataclasses.field(default_factory=dict)
    random_weights: bool = False
    seed: int = 0
    batch_size: int = 32
    image_size: int = 224
    per_class: int | None = None
    Cs: Sequence[float] = (1.0, 5.0, 10.0, 20.0)
    cv_folds: int = 5
    pca_variance: float = 0.90
    head_epochs: int = 5
    head_lr: float = 1e-3
    head_optimizer: str = "adam"
    head_batch_size: int = 32
    finetune: int = 0
    cache: bool = True
    cache_root: Path | None = None
    progress: bool = True


def check_class_folders(root: str | Path | None) -> None:
    """Refuse a 15 Scene folder with a class folder holding no image (a silent drop would shift labels)."""
    if root is None:
        return
    root = Path(root).expanduser()
    base = root / "15SceneData" if (root / "15SceneData").is_dir() else root
    for split in ("train", "test"):
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if not any(f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file() for f in class_dir.iterdir()):
                raise RdfiaError(f"{class_dir}: class folder with no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                 "add its images or remove the folder")


def _subset(images: list, labels: np.ndarray, per_class: int | None) -> tuple[list, np.ndarray]:
    if per_class is None:
        return images, labels
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    keep.sort()
    return [images[i] for i in keep], labels[keep]


def load_data(settings: Settings):
    """(train_images, train_labels, test_images, test_labels, class_names), subset per ``per_class``."""
    try:  # the data package's public name (contract), else its module
        from rdfia_jax.data import load_scene15
    except ImportError:
        from rdfia_jax.data.datasets.scene15 import load_scene15

    check_class_folders(settings.data)
    tr_x, tr_y, names = load_scene15(settings.data, "train", progress=settings.progress)
    te_x, te_y, _ = load_scene15(settings.data, "test", progress=settings.progress)
    tr_x, tr_y = _subset(tr_x, tr_y, settings.per_class)
    te_x, te_y = _subset(te_x, te_y, settings.per_class)
    return tr_x, tr_y, te_x, te_y, names


def _weights_file(model: str, weights) -> Path | None:
    """The converted/published file ``load_network`` reads for ``weights`` (None if unknown)."""
    from rdfia_jax import weights as W

    if weights is None:
        found = W.find_converted(model)
        return found[0][1] if found else None
    if str(weights) in W.SOURCES:
        return W.converted_path(model, str(weights))
    return Path(weights)


def default_loader(settings: Settings) -> Callable:
    """``model -> (Network, weights_id)`` using ``rdfia_jax.weights.load_network``."""
    from rdfia_jax.weights import load_network

    def load(model: str):
        if settings.random_weights:
            net = load_network(model, random_weights=True, seed=settings.seed)
            return net, f"random-seed{settings.seed}"
        w = settings.weights.get(model)
        net = load_network(model, w)
        path = _weights_file(model, w)
        return net, weights_fingerprint(net, weights_file=path if path is not None and path.is_file() else None,
                                        cache_root=settings.cache_root)

    return load


def run_section(settings: Settings, *, loader: Callable | None = None, data=None) -> dict:
    """Run the selected rows; write ``results.md``, ``results.csv``, ``results.json`` (the table), ``details.json``
    (per-row records: C sweep, PCA, head curves, feature passes) and figures.

    Args:
      settings: see :class:`Settings`.
      loader: ``model -> (Network, weights_id)`` (default: :func:`default_loader`; tests pass small nets).
      data: preloaded ``(train_x, train_y, test_x, test_y, class_names)`` instead of reading ``settings.data``.
    Returns:
      dict with ``rows`` (list of :class:`report.Row`), ``files`` (paths written), ``passes`` (timings).
    """
    rows_wanted = list(dict.fromkeys(settings.rows))
    unknown = [r for r in rows_wanted if r not in ROWS]
    if unknown:
        raise RdfiaError(f"unknown row {unknown[0]!r}; choose from: {', '.join(ROWS)}")
    if settings.finetune not in _FINETUNE_INPUT:
        raise RdfiaError(f"--finetune must be 0, 1 or 2 (pretrained layers trained with the head); got {settings.finetune}")
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    loader = loader or default_loader(settings)
    tr_x, tr_y, te_x, te_y, class_names = data if data is not None else load_data(settings)
    n_classes = len(class_names)
    ids = {"train": images_fingerprint(tr_x), "test": images_fingerprint(te_x)}

    # which layers each (model, preprocessing) pass must produce
    passes: dict[tuple[str, str], list[str]] = {}
    for r in rows_wanted:
        model, spec, mode, _ = _FEATURES[r]
        layer = layer_for_cut(model, int(spec[3:]))
        if r == "fc-head":
            layer = _FINETUNE_INPUT[settings.finetune]
        passes.setdefault((model, mode), [])
        if layer not in passes[(model, mode)]:
            passes[(model, mode)].append(layer)

    networks: dict[str, tuple] = {}
    feats: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    pass_info: dict[tuple[str, str], dict] = {}
    for (model, mode), layers in passes.items():
        if model not in networks:
            networks[model] = loader(model)
        net, wid = networks[model]
        common = dict(weights_id=wid, mode=mode, size=settings.image_size, batch_size=settings.batch_size,
                      cache_root=settings.cache_root, use_cache=settings.cache, progress=settings.progress,
                      extractors={})  # the test split reuses the train split's compiled network
        f_tr, i_tr = cached_features(net, tr_x, layers, data_id=ids["train"], **common)
        f_te, i_te = cached_features(net, te_x, layers, data_id=ids["test"], **common)
        for l in layers:
            feats[(model, mode, l)] = (f_tr[l], f_te[l])
        computed = sorted(set(i_tr["computed"]) | set(i_te["computed"]))
        n_imgs = (len(tr_x) if i_tr["computed"] else 0) + (len(te_x) if i_te["computed"] else 0)
        secs = i_tr["seconds"] + i_te["seconds"]
        pass_info[(model, mode)] = {"layers": layers, "seconds": secs, "computed": computed,
                                    "images": n_imgs, "images_per_s": n_imgs / secs if secs > 0 else None,
                                    "weights": net.weights_desc}

    def pass_note(model, mode):
        p = pass_info[(model, mode)]
        if not p["computed"]:
            return "features from cache"
        shared = "+".join(p["layers"])
        return f"features: one pass for {shared}" + (f" ({p['images_per_s']:.2f} img/s)" if p["images_per_s"] else "")

    rows: list[report.Row] = []
    figures: list[Path] = []
    random_tag = " - RANDOM weights" if settings.random_weights or any(n.is_random for n, _ in networks.values()) else ""
    results_json: dict = {"class_names": list(class_names), "n_train": len(tr_x), "n_test": len(te_x),
                          "random_weights": settings.random_weights, "rows": {}}
    for r in rows_wanted:
        model, spec, mode, desc = _FEATURES[r]
        layer = layer_for_cut(model, int(spec[3:]))
        if r == "fc-head":
            layer = _FINETUNE_INPUT[settings.finetune]
        f_tr, f_te = feats[(model, mode, layer)]
        feat_s = pass_info[(model, mode)]["seconds"]
        note = pass_note(model, mode)
        if r in ("relu7-resize", "relu7-crop", "relu6", "alexnet-cut1", "alexnet-cut2"):
            res = classifiers.svm_accuracy(f_tr, tr_y, f_te, te_y, C=1.0, seed=settings.seed)
            rows.append(report.Row(r, desc, model, layer, mode, res["dims"], res["accuracy"], feat_s, res["fit_s"],
                                   note + ("" if res["converged"] else "; LinearSVC did not converge")))
            results_json["rows"][r] = res
        elif r == "c-sweep":
            sweep = classifiers.c_sweep(f_tr, tr_y, f_te, te_y, settings.Cs, folds=settings.cv_folds, seed=settings.seed)
            for C in settings.Cs:
                t = sweep["test"][float(C)]
                chosen = " (chosen by CV)" if float(C) == sweep["best_C"] else ""
                rows.append(report.Row(f"c-sweep-{C:g}", f"{desc} = {C:g}{chosen}", model, layer, mode, t["dims"],
                                       t["accuracy"], feat_s, t["fit_s"],
                                       f"{sweep['folds']}-fold CV accuracy on train {sweep['cv'][float(C)]:.4f}"))
            figures.append(report.plot_c_sweep(sweep["cv"], {c: v["accuracy"] for c, v in sweep["test"].items()},
                                               out / "c_sweep.png", best_C=sweep["best_C"],
                                               title="LinearSVC C sweep (VGG16 relu6)" + random_tag))
            results_json["rows"][r] = {"best_C": sweep["best_C"], "cv": sweep["cv"],
                                       "test": {str(c): v for c, v in sweep["test"].items()}, "folds": sweep["folds"]}
        elif r == "pca":
            res = classifiers.pca_svm(f_tr, tr_y, f_te, te_y, variance=settings.pca_variance, seed=settings.seed)
            base = res["baseline"]
            rows.append(report.Row(
                "pca", f"{desc} ({settings.pca_variance:.0%} variance)", model, layer, mode, res["dims_kept"],
                res["accuracy"], feat_s, res["pca_fit_s"] + res["fit_s"],
                f"{res['dims_kept']} of {res['dims_in']} dims keep {res['variance_kept']:.1%}; without PCA: accuracy "
                f"{base['accuracy']:.4f}, fit {base['fit_s']:.2f}s, predict {base['predict_s']:.3f}s; with PCA: "
                f"PCA fit {res['pca_fit_s']:.2f}s + SVM fit {res['fit_s']:.2f}s, predict {res['predict_s']:.3f}s"))
            figures.append(report.plot_pca_variance(res["explained_variance_ratio"], out / "pca_variance.png",
                                                    target=settings.pca_variance, dims_in=res["dims_in"]))
            results_json["rows"][r] = {k: v for k, v in res.items() if k != "explained_variance_ratio"}
        elif r == "fc-head":
            from flax import nnx

            net = networks[model][0]
            pure = nnx.to_pure_dict(net.state)
            hidden = [{"kernel": np.asarray(pure[n]["kernel"]), "bias": np.asarray(pure[n]["bias"])}
                      for n in _FINETUNE_LAYERS[settings.finetune]]
            res = classifiers.train_head(f_tr, tr_y, f_te, te_y, num_classes=n_classes, epochs=settings.head_epochs,
                                         batch_size=settings.head_batch_size, learning_rate=settings.head_lr,
                                         optimizer=settings.head_optimizer, seed=settings.seed, hidden=hidden)
            tuned = "+".join(_FINETUNE_LAYERS[settings.finetune]) or "none"
            rows.append(report.Row(
                "fc-head", f"{desc}, {settings.head_epochs} epochs", model, layer, mode, int(f_tr.shape[1]),
                res["accuracy"], feat_s, res["fit_s"],
                f"fine-tuned pretrained layers: {tuned}; {settings.head_optimizer} lr {settings.head_lr:g}; "
                "test accuracy per epoch " + ", ".join(f"{a:.3f}" for a in res["test_accuracy"])))
            figures.append(report.plot_head_curve({f"new FC head (fine-tuned: {tuned})": res["test_accuracy"]},
                                                  out / "fc_head_curve.png",
                                                  title="New FC layer on frozen VGG16 features" + random_tag))
            results_json["rows"][r] = {k: v for k, v in res.items() if k != "params"}
    any_random = settings.random_weights or any(n.is_random for n, _ in networks.values())
    header = RANDOM_HEADER if any_random else (
        "Weights: " + "; ".join(f"{m}: {n.weights_desc}" for m, (n, _) in networks.items()))
    header += (f"\n\nData: {len(tr_x)} train / {len(te_x)} test images, {n_classes} classes"
               + (f" (first {settings.per_class} per class per split)" if settings.per_class else "") + ".")
    md, csv_path = report.write_table(rows, out, header=header)
    results_json["passes"] = {f"{m}/{mode}": p for (m, mode), p in pass_info.items()}
    results_json["header"] = header
    js = out / "details.json"  # results.json is the shared results table (rdfia_jax.results)
    atomic_write_bytes(js, json.dumps(results_json, indent=1, default=float).encode())
    return {"rows": rows, "files": [md, csv_path, js, *figures], "passes": pass_info, "header": header}


__all__ = ["ROWS", "Settings", "run_section", "load_data", "default_loader", "check_class_folders"]
