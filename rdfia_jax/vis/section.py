"""Report section 2 (visualizing a network) as one experiment set: every figure and a results table.

Experiments (:data:`EXPERIMENTS`): ``saliency`` (Figures 12-17), ``fooling`` (18-19), ``classvis``
(21-25), ``classvis-image`` (26-28), ``compare`` (29-31) on ImageNet models, and ``mnist-proof``: each
method checked with numbers on the project's small CNN trained on real digits (saliency mass on digit
pixels, fooling success / iterations / norms, class visualizations judged by a second, independently
trained network). The CLI front end is ``rdfia-jax visualize``.

The table (``results.md`` / ``.csv`` / ``.json``, columns section, item, value, note) is rewritten
after each row, so a killed run keeps what it measured; rows of earlier runs into the same folder are
kept unless an experiment measures them again.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rdfia_jax.errors import RdfiaError

EXPERIMENTS = ("saliency", "fooling", "classvis", "classvis-image", "compare", "mnist-proof")
IMAGENET_EXPERIMENTS = EXPERIMENTS[:-1]
NEEDS_VAL25 = ("saliency", "fooling", "classvis-image", "compare")
MODELS = ("squeezenet1_1", "vgg16")
PROOF_DATASETS = ("mnist", "fashion_mnist", "digits")
COLUMNS = ("section", "item", "value", "note")
NOTE = ("Report section 2 (visualizing a network). Rows marked RANDOM WEIGHTS were computed with randomly "
        "initialized networks: they only show that the pipeline runs.")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What :func:`run` does.

    Attributes:
      out: output folder (figures and the results table).
      random_weights: random ImageNet weights (everything runs; rows and figures say RANDOM).
      seed: seed of random weights, noise and jitter.
      data_dir: datasets folder (``imagenet_val_25/``, ``mnist/``); None = ``$RDFIA_JAX_DATA``.
      models: ImageNet models of the saliency and comparison figures.
      start_index: imagenet_val_25 image the from-an-image figures start from (0 = hay).
      start_target: class of the from-an-image figures.
      quick: few iterations and images (a smoke run).
      proof_dataset: the small CNN's training data for ``mnist-proof`` ("digits" needs no download).
    """

    out: Path
    random_weights: bool = False
    seed: int = 0
    data_dir: str | None = None
    models: tuple[str, ...] = MODELS
    start_index: int = 0
    start_target: str = "Tibetan mastiff"
    quick: bool = False
    proof_dataset: str = "mnist"


class Results:
    """Rows of (section, item, value, note), written with :func:`rdfia_jax.results.write_results`
    after each addition (JSON keeps the raw values)."""

    def __init__(self, out: str | Path, *, log: Callable[[str], None] | None = print):
        from rdfia_jax.results import read_results

        self.out = Path(out)
        self.log = log
        self.rows: list[dict] = [r for r in read_results(self.out) if set(r) >= {"section", "item"}]

    def add(self, section: str, item: str, value, note: str = "") -> None:
        from rdfia_jax.results import format_value, write_results

        value = value if isinstance(value, str) else float(value)
        self.rows = [r for r in self.rows if (r["section"], r["item"]) != (section, item)]
        self.rows.append({"section": section, "item": item, "value": value, "note": note})
        if self.log is not None:
            self.log(f"  [{section}] {item}: {format_value(value)} {note}")
        write_results(self.rows, self.out, columns=COLUMNS, note=NOTE)


# ----------------------------------------------------------------------------- inputs and checks


def val25_candidates(data_dir: str | Path | None = None) -> list[Path]:
    """Where imagenet_val_25.npz is looked for: ``DATA/imagenet_val_25/`` then ``DATA/`` itself."""
    from rdfia_jax import paths

    base = Path(data_dir).expanduser() if data_dir else paths.data_dir()
    return [base / "imagenet_val_25" / "imagenet_val_25.npz", base / "imagenet_val_25.npz"]


def find_val25(data_dir: str | Path | None = None, *, hint: str = "") -> Path:
    """The practical's imagenet_val_25.npz in the data folder.

    Args:
      data_dir: the datasets folder (default ``$RDFIA_JAX_DATA``).
      hint: what the caller's user can do instead (appended to the error).
    Raises:
      RdfiaError: not found; names every path looked at, and ``hint``.
    """
    candidates = val25_candidates(data_dir)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise RdfiaError(f"imagenet_val_25.npz not found (looked at {', '.join(map(str, candidates))}); it is "
                         "the file distributed with the practical (X uint8 (25, 224, 224, 3), y int64 (25,)). "
                         "Point --data-dir at the folder holding imagenet_val_25/" + (f"; {hint}" if hint else ""))
    return found


def imagenet_models(settings: Settings, experiments: Sequence[str]) -> list[str]:
    """The ImageNet models the chosen experiments load, sorted."""
    needed = set()
    if set(experiments) & {"fooling", "classvis", "classvis-image"}:
        needed.add("squeezenet1_1")
    if set(experiments) & {"saliency", "compare"}:
        needed.update(settings.models)
    return sorted(needed)


def check_settings(settings: Settings, experiments: Sequence[str]) -> None:
    """Refuse bad settings before any model is loaded or any image decoded.

    Raises:
      RdfiaError: unknown experiment / model / dataset / class, missing data or weights.
    """
    from rdfia_jax.imagenet import class_id

    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise RdfiaError(f"unknown experiment(s) {', '.join(unknown)}; choose among {', '.join(EXPERIMENTS)}")
    bad = [m for m in settings.models if m not in MODELS]
    if bad:
        raise RdfiaError(f"--models {bad[0]!r}: choose among {', '.join(MODELS)}")
    if settings.proof_dataset not in PROOF_DATASETS:
        raise RdfiaError(f"unknown proof dataset {settings.proof_dataset!r}; choose among {', '.join(PROOF_DATASETS)}")
    if not 0 <= settings.start_index < 25:
        raise RdfiaError(f"--start-index must be an imagenet_val_25 index 0..24, got {settings.start_index}")
    if set(experiments) & {"classvis-image", "compare"}:
        class_id(settings.start_target)
    if set(experiments) & set(NEEDS_VAL25):
        find_val25(settings.data_dir, hint="or run only `visualize mnist-proof --proof-dataset digits`, which "
                                           "needs no download")
    if "mnist-proof" in experiments and settings.proof_dataset != "digits":
        from rdfia_jax import data

        try:
            data.load(settings.proof_dataset, "test", data_dir=settings.data_dir)
        except RdfiaError as err:
            raise RdfiaError(f"{err} (mnist-proof: or --proof-dataset digits, which needs no download)") from None
    if not settings.random_weights:
        from rdfia_jax.weights import find_converted, load_network

        for model in imagenet_models(settings, experiments):
            if not find_converted(model):
                try:
                    load_network(model)  # raises the message that says how to get the weights
                except RdfiaError as err:
                    raise RdfiaError(f"{err} (for `visualize`: --random-weights)") from None


def _val25(settings: Settings):
    from rdfia_jax.data import load_imagenet_val25

    images, labels, names = load_imagenet_val25(find_val25(settings.data_dir))
    return images.astype(np.float32) / 255.0, labels, names


def _network(settings: Settings, name: str):
    from rdfia_jax.weights import load_network

    return load_network(name, None, random_weights=settings.random_weights, seed=settings.seed)


def _tag(network) -> str:
    from rdfia_jax.vis.core import weights_tag

    return weights_tag(network)


def _iters(settings: Settings, n: int) -> int:
    return max(2, n // 20) if settings.quick else n


# ----------------------------------------------------------------------------- 2.1 saliency


def saliency(settings: Settings, results: Results) -> None:
    """Figures 12-14 (SqueezeNet) and 15-17 (VGG16): saliency for groups of 5 images."""
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis import saliency as S

    out = settings.out
    images01, labels, names = _val25(settings)
    groups = [range(0, 5), range(5, 10), range(10, 15)]
    for model, first_fig in (("squeezenet1_1", 12), ("vgg16", 15)):
        if model not in settings.models:
            continue
        net = _network(settings, model)
        for g, idx in enumerate(groups):
            idx = list(idx)[: (2 if settings.quick else 5)]
            x = net.preprocessing.normalize(images01[idx])
            t0 = time.time()
            rows = {"saliency": core.to_numpy(S.saliency(net, x, labels[idx]))}
            if g == 0:  # the extra attribution methods, once per model
                rows["SmoothGrad"] = core.to_numpy(S.smoothgrad(net, x, labels[idx],
                                                                n_samples=4 if settings.quick else 25))
                rows["Integrated Gradients"] = core.to_numpy(S.channel_max_abs(
                    S.integrated_gradients(net, x, labels[idx], steps=4 if settings.quick else 64)))
                rows["Grad-CAM"] = core.to_numpy(S.gradcam(net, x, labels[idx]))
                check = S.randomization_check(net, "saliency", x, labels[idx], seed=settings.seed + 1)
                results.add("2.1", f"{model} saliency sanity check: mean Spearman vs randomized weights",
                            check["mean_spearman"], _tag(net))
            path = figures.attribution_grid(figures.to_display(net, x), rows, [names[int(labels[i])] for i in idx],
                                            out / f"figure{first_fig + g}_saliency_{model}.png",
                                            suptitle=f"{model}: {_tag(net)}")
            results.add("2.1", f"figure {first_fig + g}", str(path.name),
                        f"{model}, {time.time() - t0:.1f} s, {_tag(net)}")


# ----------------------------------------------------------------------------- 2.2 fooling


def fooling(settings: Settings, results: Results) -> None:
    """Figures 18 (quail -> stingray) and 19 (gorilla -> vase) with SqueezeNet."""
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis.fooling import fool

    images01, labels, names = _val25(settings)
    net = _network(settings, "squeezenet1_1")
    for fig, (idx, target) in ((18, (1, "stingray")), (19, (7, "vase"))):
        x = net.preprocessing.normalize(images01[[idx]])
        t = core.resolve_class(net, target)
        res = fool(net, x, [t], lr=1.0, max_iters=_iters(settings, 100))
        figures.fooling_figure(figures.to_display(net, x), figures.to_display(net, res.images),
                               [names[int(res.original_predictions[0])]], [names[int(res.predictions[0])]],
                               settings.out / f"figure{fig}_fooling_{names[int(labels[idx])]}_to_{target}.png",
                               suptitle=f"squeezenet1_1: {_tag(net)}")
        results.add("2.2", f"figure {fig}: {names[int(labels[idx])]} -> {target}",
                    "fooled" if res.success[0] else "NOT fooled",
                    f"{int(res.iterations[0])} iterations, L2 {res.l2[0]:.3f}, Linf {res.linf[0] * 255:.2f}/255; "
                    f"{_tag(net)}")


# ----------------------------------------------------------------------------- 2.3 class visualization


def classvis(settings: Settings, results: Results) -> None:
    """Figures 21 (gorilla), 22 (tarantula) with the defaults; 23 lr 1; 24 l2_reg 1; 25 400 iterations."""
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures

    net = _network(settings, "squeezenet1_1")
    names = core.class_names(net)
    runs = [(21, "gorilla", {}), (22, "tarantula", {}), (23, "tarantula", {"lr": 1.0}),
            (24, "tarantula", {"l2_reg": 1.0}), (25, "tarantula", {"iters": 400})]
    for fig, target, change in runs:
        kw = {"lr": 5.0, "l2_reg": 1e-3, "iters": 200} | change
        kw["iters"] = _iters(settings, kw["iters"])
        t = core.resolve_class(net, target)
        t0 = time.time()
        res = C.class_visualization(net, [t], seed=settings.seed, snapshot_every=max(1, kw["iters"] // 4), **kw)
        rows, titles, labels = figures.classvis_rows(net, res, [t], lambda c: names[int(c)])
        desc = ", ".join(f"{k} {v:g}" for k, v in kw.items())
        figures.snapshots_figure(rows, titles, labels, settings.out / f"figure{fig}_classvis_{target}.png",
                                 suptitle=f"squeezenet1_1 {target} ({desc}): {_tag(net)}")
        results.add("2.3", f"figure {fig}: {target} ({desc})", float(res.probabilities[0]),
                    f"target probability; {time.time() - t0:.1f} s; {_tag(net)}")


def classvis_image(settings: Settings, results: Results) -> None:
    """Figures 26-28: start from an ImageNet image (hay) towards a dog class (Tibetan mastiff)."""
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures

    out, start = settings.out, settings.start_index
    images01, labels, names = _val25(settings)
    net = _network(settings, "squeezenet1_1")
    x = net.preprocessing.normalize(images01[[start]])
    t = core.resolve_class(net, settings.start_target)
    iters = _iters(settings, 200)
    res = C.class_visualization(net, [t], init=x, seed=settings.seed, snapshot_every=max(1, iters // 4), iters=iters)
    first_image = figures.to_display(net, x)[0]
    first = figures.to_display(net, res.snapshots[0])[0]
    final = figures.to_display(net, res.images)[0]
    figures.image_grid([first_image, first], ["start image", f"iteration {int(res.snapshot_iters[0])}"],
                       out / "figure26_classvis_from_image_first.png", cols=2, suptitle=_tag(net))
    figures.image_grid([final], [f"final: {names[t]} p={float(res.probabilities[0]):.3f}"],
                       out / "figure27_classvis_from_image_final.png", cols=1, suptitle=_tag(net))
    rows, titles, lab = figures.classvis_rows(net, res, [t], lambda c: names[int(c)])
    figures.snapshots_figure(rows, titles, lab, out / "figure28_classvis_from_image.png",
                             suptitle=f"from {names[int(labels[start])]} to {names[t]}: {_tag(net)}")
    results.add("2.3", f"figures 26-28: {names[int(labels[start])]} -> {names[t]}",
                float(res.probabilities[0]), f"target probability; {_tag(net)}")


def compare(settings: Settings, results: Results) -> None:
    """Figures 29 (SqueezeNet), 30 (VGG16): from noise and from an image; 31: VGG16 with more iterations."""
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures

    images01, labels, names = _val25(settings)
    for model, fig, iters in (("squeezenet1_1", 29, 200), ("vgg16", 30, 200), ("vgg16", 31, 1000)):
        if model not in settings.models:
            continue
        net = _network(settings, model)
        t = core.resolve_class(net, settings.start_target)
        iters = _iters(settings, iters)
        x_img = net.preprocessing.normalize(images01[[settings.start_index]])
        t0 = time.time()
        noise = C.class_visualization(net, [t], seed=settings.seed, iters=iters, snapshot_every=0)
        from_img = C.class_visualization(net, [t], init=x_img, seed=settings.seed, iters=iters, snapshot_every=0)
        seconds = time.time() - t0
        figures.image_grid([figures.to_display(net, noise.images)[0], figures.to_display(net, from_img.images)[0]],
                           [f"(a) noise, final (p={float(noise.probabilities[0]):.2f})",
                            f"(b) ImageNet image, final (p={float(from_img.probabilities[0]):.2f})"],
                           settings.out / f"figure{fig}_{model}_{iters}iters.png", cols=2,
                           suptitle=f"{model}, {names[t]}, {iters} iterations: {_tag(net)}")
        results.add("2.3", f"figure {fig}: {model} {iters} iterations, noise / image",
                    f"{float(noise.probabilities[0]):.3f} / {float(from_img.probabilities[0]):.3f}",
                    f"target probabilities; {seconds:.1f} s for both; {_tag(net)}")


# ----------------------------------------------------------------------------- proof on the small CNN
# The measurements below are shared with ``rdfia-jax reproduce`` (reproduce/sections/s2.py).


def mass_share(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image, the share of an attribution map's mass (N, H, W) that lies on ``mask`` (N, H, W)."""
    return (maps * mask).sum((1, 2)) / np.maximum(maps.sum((1, 2)), 1e-12)


def fooling_pairs(x, labels, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Every image paired with each class other than its own: images repeated, and their targets."""
    xs = np.repeat(np.asarray(x), n_classes - 1, axis=0)
    targets = np.concatenate([[c for c in range(n_classes) if c != int(lab)] for lab in labels])
    return xs, targets


def judged_class_visualization(net, judge, *, n_seeds: int, iters: int, seed: int):
    """Class visualizations from noise, one per digit and noise seed, with the proof's settings, and
    what the independently trained ``judge`` classifies each as.

    Returns:
      (class-visualization result, targets, the judge's predictions, the settings used).
    """
    from rdfia_jax.vis import classvis as C

    targets = np.tile(np.arange(10), n_seeds)
    cv_settings = {"lr": 1.0, "l2_reg": 1e-3, "iters": iters, "blur_every": 10, "blur_sigma": 0.5, "max_jitter": 2}
    res = C.class_visualization(net, targets, seed=seed, snapshot_every=0, **cv_settings)
    return res, targets, judge.predict(res.images), cv_settings


def mnist_proof(settings: Settings, results: Results) -> None:
    """Each method on the small CNN trained on real digits, with measured numbers."""
    import jax.numpy as jnp
    from scipy.ndimage import binary_dilation

    from rdfia_jax import data
    from rdfia_jax.classifier import get_classifier
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis import saliency as S
    from rdfia_jax.vis.fooling import fool

    out, quick, ds = settings.out, settings.quick, settings.proof_dataset
    what = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "digits": "embedded digits (NOT MNIST)"}[ds]
    clf = get_classifier(ds, seed=0, data_dir=settings.data_dir)
    judge = get_classifier(ds, seed=1, data_dir=settings.data_dir)
    net = clf.network()
    test = data.load(ds, "test", data_dir=settings.data_dir)
    results.add("mnist", "classifier seed 0 test accuracy", clf.test_accuracy, f"{what} test, {len(test)} images")
    results.add("mnist", "classifier seed 1 (judge) test accuracy", judge.test_accuracy, "independently trained")
    n = min(100 if quick else 1000, len(test))
    x = jnp.asarray(test.images[:n], jnp.float32) / 255.0
    y = test.labels[:n]

    # --- saliency mass on the digit
    digit = test.images[:n, ..., 0] > 0
    dilated = np.stack([binary_dilation(m, iterations=1) for m in digit])
    for name, maps in (("saliency", S.saliency(net, x, y)),
                       ("SmoothGrad", S.smoothgrad(net, x, y, n_samples=8 if quick else 25)),
                       ("Grad-CAM relu2", S.gradcam(net, x, y, layer="relu2"))):
        m = core.to_numpy(maps)
        share, share_d = mass_share(m, digit), mass_share(m, dilated)
        results.add("mnist", f"{name}: share of map mass on digit pixels (x>0)", share.mean(),
                    f"digit pixels are {digit.mean():.1%} of the image; {n} test images, true class")
        results.add("mnist", f"{name}: share on digit dilated by 1 px", share_d.mean(),
                    f"dilated digit covers {dilated.mean():.1%} of the image")
    check = S.randomization_check(net, "saliency", x[:100], y[:100], seed=1)
    results.add("mnist", "saliency sanity check: mean Spearman trained vs randomized", check["mean_spearman"],
                f"{min(n, 100)} images; 1 = unchanged by randomizing the weights")
    figures.attribution_grid(figures.to_display(net, x[:8]),
                             {"saliency": core.to_numpy(S.saliency(net, x[:8], y[:8])),
                              "SmoothGrad": core.to_numpy(S.smoothgrad(net, x[:8], y[:8])),
                              "Integrated Gradients": core.to_numpy(S.channel_max_abs(
                                  S.integrated_gradients(net, x[:8], y[:8]))),
                              "Grad-CAM": core.to_numpy(S.gradcam(net, x[:8], y[:8]))},
                             [str(int(v)) for v in y[:8]], out / "mnist_saliency.png",
                             suptitle=net.weights_desc)

    # --- fooling: every (image, other class) pair of a fixed set
    m_img = min(20 if quick else 200, n)
    xs, targets = fooling_pairs(x[:m_img], y[:m_img])
    for lr, clamp, count in ((1.0, False, m_img), (0.1, True, m_img // 4)):
        # the small-step run is ~10x longer: a quarter of the pairs
        xs, targets = xs[:9 * count], targets[:9 * count]
        t0 = time.time()
        res = fool(net, xs, targets, lr=lr, max_iters=100, clamp=clamp)
        ok = res.success
        note = f"{len(xs)} pairs ({count} test images x 9 targets), lr {lr}, cap 100, clamp {clamp}"
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: success rate", ok.mean(), note)
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: mean iterations (successes)",
                    res.iterations[ok].mean() if ok.any() else float("nan"), "")
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: mean L2 of perturbation",
                    res.l2[ok].mean() if ok.any() else float("nan"), "pixels in [0,1]")
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: mean Linf of perturbation",
                    res.linf[ok].mean() if ok.any() else float("nan"), f"pixels in [0,1]; {time.time() - t0:.1f} s")
        transfer = (judge.predict(res.images[ok]) == targets[ok]).mean() if ok.any() else float("nan")
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: also fools the seed-1 network", transfer, "transfer rate")
    figures.fooling_figure(figures.to_display(net, xs[:9:3]), figures.to_display(net, res.images[:9:3]),
                           [str(int(v)) for v in clf.predict(xs[:9:3])],
                           [str(int(v)) for v in res.predictions[:9:3]], out / "mnist_fooling.png",
                           suptitle=f"lr 0.1, clamped; {net.weights_desc}")

    # --- class visualization judged by an independent network
    seeds = 2 if quick else 10
    res, t_all, judged, cv_settings = judged_class_visualization(net, judge, n_seeds=seeds,
                                                                 iters=_iters(settings, 200), seed=settings.seed)
    self_acc = (res.predictions == t_all).mean()
    results.add("mnist", "class visualization: classified as target by the optimized net", self_acc,
                f"{len(t_all)} images ({seeds} noise seeds x 10 digits); {cv_settings}")
    results.add("mnist", "class visualization: classified as target by the seed-1 net", (judged == t_all).mean(),
                "the independent judge")
    starts = np.clip(np.asarray(res.initial), 0.0, 1.0)
    results.add("mnist", "control: judge's accuracy on the (clamped) noise starts",
                (judge.predict(starts) == t_all).mean(), "chance is 0.1")
    figures.image_grid(list(figures.to_display(net, res.images[:10])),
                       [f"target {t}, judge says {j}" for t, j in zip(t_all[:10], judged[:10])],
                       out / "mnist_classvis.png", cols=5, suptitle=net.weights_desc)


RUNNERS: dict[str, Callable[[Settings, Results], None]] = {
    "saliency": saliency, "fooling": fooling, "classvis": classvis, "classvis-image": classvis_image,
    "compare": compare, "mnist-proof": mnist_proof}


def run(settings: Settings, experiments: Sequence[str] = EXPERIMENTS, *,
        log: Callable[[str], None] | None = print) -> Path:
    """Run the chosen experiments in order (settings checked first); returns the results.md path.

    Raises:
      RdfiaError: bad settings (before any work), or missing data / weights.
    """
    experiments = list(dict.fromkeys(experiments))
    check_settings(settings, experiments)
    results = Results(settings.out, log=log)
    for name in experiments:
        if log is not None:
            log(f"== {name}")
        RUNNERS[name](settings, results)
    return settings.out / "results.md"


__all__ = ["EXPERIMENTS", "Settings", "Results", "run", "check_settings", "imagenet_models", "find_val25", "val25_candidates",
           "saliency", "fooling", "classvis", "classvis_image", "compare", "mnist_proof", "mass_share", "fooling_pairs",
           "judged_class_visualization"]
