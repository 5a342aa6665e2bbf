"""Section 2 (saliency, fooling, class visualization) through ``rdfia_jax.vis``.

On the project's small digit classifier (trained and cached by :func:`rdfia_jax.classifier.get_classifier`;
"digits" needs no download) every method gives a real, checkable result; with ``imagenet`` the report's
own figures are made on SqueezeNet 1.1 (converted weights, else random weights, marked as such).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.reproduce.sections.common import SectionResult, figure_label


def _small(b, ctx, res: SectionResult, out: Path) -> None:
    import jax.numpy as jnp

    from rdfia_jax import data
    from rdfia_jax.classifier import get_classifier
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis import saliency as S
    from rdfia_jax.vis.fooling import fool
    from rdfia_jax.vis.section import fooling_pairs, judged_class_visualization, mass_share

    clf = get_classifier(b.dataset, seed=0, data_dir=ctx.data_dir)
    judge = get_classifier(b.dataset, seed=1, data_dir=ctx.data_dir)
    net = clf.network()
    what = "MNIST" if b.dataset == "mnist" else "the embedded digits (NOT MNIST)"
    res.notes.append(f"small classifier: {net.weights_desc}; an independently trained seed-1 network judges")
    res.add("small classifier seed 0: test accuracy", clf.test_accuracy, what)
    res.add("small classifier seed 1 (judge): test accuracy", judge.test_accuracy, what)
    test = data.load(b.dataset, "test", data_dir=ctx.data_dir)
    n = min(b.n_images, len(test.images))
    x = jnp.asarray(test.images[:n], jnp.float32) / 255.0
    y = np.asarray(test.labels[:n])
    sal = core.to_numpy(S.saliency(net, x, y))
    digit = np.asarray(test.images[:n])[..., 0] > 0
    share = mass_share(sal, digit).mean()
    res.add("saliency: share of the map's mass on digit pixels", share,
            f"{n} test images; digit pixels are {digit.mean():.1%} of the image")
    k = min(8, n)
    path = figures.attribution_grid(
        figures.to_display(net, x[:k]),
        {"saliency": sal[:k], "SmoothGrad": core.to_numpy(S.smoothgrad(net, x[:k], y[:k], n_samples=8)),
         "Grad-CAM": core.to_numpy(S.gradcam(net, x[:k], y[:k]))},
        [str(int(v)) for v in y[:k]], out / "small_saliency.png", suptitle=f"saliency: {net.weights_desc}")
    res.figure("Figures 12-17", f"saliency maps of the true class on {what}", path, out)

    m = min(b.fool_images, n)
    xs, targets = fooling_pairs(x[:m], y[:m])
    fr = fool(net, xs, targets, lr=1.0, max_iters=100)
    ok = np.asarray(fr.success)
    res.measure("s2.small_fool_rate", ok.mean(), note=f"{len(xs)} pairs ({m} images x 9 targets), lr 1, cap 100")
    if ok.any():
        res.add("fooling: mean iterations / mean L2 (successes)",
                f"{np.asarray(fr.iterations)[ok].mean():.1f} / {np.asarray(fr.l2)[ok].mean():.3f}", "pixels in [0, 1]")
        res.add("fooling: also fools the independent network", (judge.predict(fr.images[ok]) == targets[ok]).mean(),
                "transfer rate")
    sel = slice(0, min(27, len(xs)), 3)
    path = figures.fooling_figure(figures.to_display(net, xs[sel]), figures.to_display(net, fr.images[sel]),
                                  [str(int(v)) for v in clf.predict(xs[sel])],
                                  [str(int(v)) for v in np.asarray(fr.predictions)[sel]], out / "small_fooling.png",
                                  suptitle=f"fooling (lr 1): {net.weights_desc}")
    res.figure("Figures 18-19", "fooling images: original, fooled, difference, magnified difference", path, out)

    cv, t_all, judged, _ = judged_class_visualization(net, judge, n_seeds=b.classvis_seeds, iters=b.classvis_iters,
                                                      seed=0)
    res.measure("s2.small_classvis_judge", (judged == t_all).mean(),
                note=f"{len(t_all)} images, {b.classvis_iters} iterations, lr 1, l2_reg 1e-3, jitter 2")
    res.add("class visualization: classified as target by the optimized network", (cv.predictions == t_all).mean())
    path = figures.image_grid(list(figures.to_display(net, cv.images[:10])),
                              [f"target {t}, judge: {j}" for t, j in zip(t_all[:10], judged[:10])],
                              out / "small_classvis.png", cols=5, suptitle=f"class visualization: {net.weights_desc}")
    res.figure("Figures 21-22", "class visualization from noise, one image per digit", path, out)


def _imagenet(b, ctx, res: SectionResult, out: Path) -> None:
    from rdfia_jax import paths
    from rdfia_jax.data import load_imagenet_val25
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis import saliency as S
    from rdfia_jax.vis.fooling import fool
    from rdfia_jax.weights import load_network

    root = (Path(ctx.data_dir) if ctx.data_dir else paths.data_dir()) / "imagenet_val_25"
    try:
        images, labels, names = load_imagenet_val25(root)
    except RdfiaError as err:
        res.notes.append(f"ImageNet figures skipped: {err}")
        return
    why = ""
    try:
        net, rnd = load_network("squeezenet1_1"), False
    except RdfiaError as err:  # no (or an unreadable) converted file: say which, as section 1 does
        net, rnd = load_network("squeezenet1_1", random_weights=True, seed=0), True
        why = f" ({str(err).split('. ')[0]}; `rdfia-jax weights fetch squeezenet1_1` gets them)"
    tag = "RANDOM WEIGHTS (meaningless)" if rnd else net.weights_desc
    label = figure_label(net, rnd)
    res.notes.append(f"ImageNet figures: SqueezeNet 1.1, {tag}{why}")
    x01 = images.astype(np.float32) / 255.0
    x = net.preprocessing.normalize(x01[:5])
    path = figures.attribution_grid(figures.to_display(net, x), {"saliency": core.to_numpy(S.saliency(net, x, labels[:5]))},
                                    [names[int(v)] for v in labels[:5]], out / "imagenet_saliency.png",
                                    suptitle=f"squeezenet1_1: {label}")
    res.figure("Figure 12", f"saliency, imagenet_val_25 images 0-4 ({tag})", path, out)
    xq = net.preprocessing.normalize(x01[[1]])
    t = core.resolve_class(net, "stingray")
    fr = fool(net, xq, [t], lr=1.0, max_iters=100)
    fooled = bool(fr.success[0])
    res.measure("s2.fool_iters", int(fr.iterations[0]) if fooled else None, random_weights=rnd,
                note="fooled" if fooled else "NOT fooled within 100 iterations",
                failed=None if fooled else "not fooled within 100 iterations")
    path = figures.fooling_figure(figures.to_display(net, xq), figures.to_display(net, fr.images),
                                  [names[int(fr.original_predictions[0])]], [names[int(fr.predictions[0])]],
                                  out / "imagenet_fooling.png", suptitle=f"squeezenet1_1: {label}")
    res.figure("Figure 18", f"fooling: quail -> stingray ({tag})", path, out)
    g = core.resolve_class(net, "gorilla")
    cv = C.class_visualization(net, [g], seed=0, iters=b.imagenet_iters, snapshot_every=max(1, b.imagenet_iters // 4))
    rows, titles, lab = figures.classvis_rows(net, cv, [g], lambda c: names[int(c)])
    path = figures.snapshots_figure(rows, titles, lab, out / "imagenet_classvis_gorilla.png",
                                    suptitle=f"squeezenet1_1 gorilla, {b.imagenet_iters} iterations: {label}")
    res.figure("Figure 21", f"class visualization: gorilla ({tag})", path, out)
    res.add("class visualization gorilla: target probability", float(cv.probabilities[0]),
            f"{b.imagenet_iters} iterations; {tag}")


def run(budget, ctx) -> dict:
    b = budget.s2
    out: Path = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    res = SectionResult(seeds=[0, 1])
    _small(b, ctx, res, out)
    if b.imagenet:
        _imagenet(b, ctx, res, out)
    else:
        res.notes.append("ImageNet figures (SqueezeNet on imagenet_val_25) not run at this budget")
    return res.to_dict()
