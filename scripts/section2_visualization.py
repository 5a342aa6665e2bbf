#!/usr/bin/env python
"""Report section 2 (visualizing a network): every figure and a results table, one subcommand per
sub-section.

    python scripts/section2_visualization.py --out runs/section2 saliency      # Figures 12-17
    python scripts/section2_visualization.py --out runs/section2 fooling       # Figures 18-19
    python scripts/section2_visualization.py --out runs/section2 classvis      # Figures 21-25
    python scripts/section2_visualization.py --out runs/section2 classvis-image  # Figures 26-28
    python scripts/section2_visualization.py --out runs/section2 compare       # Figures 29-31
    python scripts/section2_visualization.py --out runs/section2 mnist-proof   # the methods on a trained net
    python scripts/section2_visualization.py --out runs/section2 all

ImageNet figures use SqueezeNet 1.1 (and VGG16) with converted weights from the weights folder; with
``--random-weights`` they still run end to end and every figure and table row says RANDOM. The
``mnist-proof`` subcommand checks each method on the project's small CNN trained on real MNIST:
saliency mass on digit pixels, fooling success rate / iterations / norms, and class visualizations
judged by a second, independently trained network. ``--quick`` shrinks iteration counts for a smoke run.
Results are appended to ``OUT/results.md`` (a Markdown table) and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_write_bytes

VAL25_NAMES = "hay quail Tibetan-mastiff Border-terrier brown-bear".split()


class Results:
    """Rows of (section, item, value, note), rewritten atomically after each addition."""

    def __init__(self, out: Path):
        self.out = out
        self.file = out / "results.json"
        self.rows = json.loads(self.file.read_text()) if self.file.is_file() else []

    def add(self, section: str, item: str, value, note: str = "") -> None:
        value = value if isinstance(value, str) else float(value)
        self.rows = [r for r in self.rows if (r["section"], r["item"]) != (section, item)]
        self.rows.append({"section": section, "item": item, "value": value, "note": note})
        print(f"  [{section}] {item}: {value if isinstance(value, str) else f'{value:.4g}'} {note}", flush=True)
        atomic_write_bytes(self.file, json.dumps(self.rows, indent=1).encode())
        lines = ["| section | item | value | note |", "| --- | --- | --- | --- |"]
        for r in self.rows:
            v = r["value"] if isinstance(r["value"], str) else f"{r['value']:.4g}"
            lines.append(f"| {r['section']} | {r['item']} | {v} | {r['note']} |")
        atomic_write_bytes(self.out / "results.md", ("\n".join(lines) + "\n").encode())


# ----------------------------------------------------------------------------- helpers


def _network(args, name: str):
    from rdfia_jax.weights import load_network

    try:
        return load_network(name, None, random_weights=args.random_weights, seed=args.seed)
    except RdfiaError as err:
        raise RdfiaError(f"{err} (or run this script with --random-weights)") from None


def _val25(args):
    from rdfia_jax import paths
    from rdfia_jax.data import load_imagenet_val25

    root = Path(args.data_dir) / "imagenet_val_25" if args.data_dir else paths.data_dir() / "imagenet_val_25"
    images, labels, names = load_imagenet_val25(root)
    return images.astype(np.float32) / 255.0, labels, names


def _tag(network) -> str:
    return "RANDOM WEIGHTS (meaningless)" if network.is_random else network.weights_desc


def _iters(args, n: int) -> int:
    return max(2, n // 20) if args.quick else n


# ----------------------------------------------------------------------------- 2.1 saliency


def saliency(args, results: Results) -> None:
    """Figures 12-14 (SqueezeNet) and 15-17 (VGG16): saliency for groups of 5 images."""
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis import saliency as S

    images01, labels, names = _val25(args)
    groups = [range(0, 5), range(5, 10), range(10, 15)]
    for model, first_fig in (("squeezenet1_1", 12), ("vgg16", 15)):
        if model not in args.models:
            continue
        net = _network(args, model)
        for g, idx in enumerate(groups):
            idx = list(idx)[: (2 if args.quick else 5)]
            x = net.preprocessing.normalize(images01[idx])
            t0 = time.time()
            rows = {"saliency": core.to_numpy(S.saliency(net, x, labels[idx]))}
            if g == 0:  # the extra attribution methods, once per model
                rows["SmoothGrad"] = core.to_numpy(S.smoothgrad(net, x, labels[idx], n_samples=4 if args.quick else 25))
                rows["Integrated Gradients"] = core.to_numpy(S.channel_max_abs(
                    S.integrated_gradients(net, x, labels[idx], steps=4 if args.quick else 64)))
                rows["Grad-CAM"] = core.to_numpy(S.gradcam(net, x, labels[idx]))
                check = S.randomization_check(net, "saliency", x, labels[idx], seed=args.seed + 1)
                results.add("2.1", f"{model} saliency sanity check: mean Spearman vs randomized weights",
                            check["mean_spearman"], _tag(net))
            path = figures.attribution_grid(figures.to_display(net, x), rows, [names[int(labels[i])] for i in idx],
                                            args.out / f"figure{first_fig + g}_saliency_{model}.png",
                                            suptitle=f"{model}: {_tag(net)}")
            results.add("2.1", f"figure {first_fig + g}", str(path.name), f"{model}, {time.time() - t0:.1f} s, {_tag(net)}")


# ----------------------------------------------------------------------------- 2.2 fooling


def fooling(args, results: Results) -> None:
    """Figures 18 (quail -> stingray) and 19 (gorilla -> vase) with SqueezeNet."""
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis.fooling import fool

    images01, labels, names = _val25(args)
    net = _network(args, "squeezenet1_1")
    for fig, (idx, target) in ((18, (1, "stingray")), (19, (7, "vase"))):
        x = net.preprocessing.normalize(images01[[idx]])
        t = core.resolve_class(net, target)
        res = fool(net, x, [t], lr=1.0, max_iters=_iters(args, 100))
        figures.fooling_figure(figures.to_display(net, x), figures.to_display(net, res.images),
                               [names[int(res.original_predictions[0])]], [names[int(res.predictions[0])]],
                               args.out / f"figure{fig}_fooling_{names[int(labels[idx])]}_to_{target}.png",
                               suptitle=f"squeezenet1_1: {_tag(net)}")
        results.add("2.2", f"figure {fig}: {names[int(labels[idx])]} -> {target}",
                    "fooled" if res.success[0] else "NOT fooled",
                    f"{int(res.iterations[0])} iterations, L2 {res.l2[0]:.3f}, Linf {res.linf[0] * 255:.2f}/255; {_tag(net)}")


# ----------------------------------------------------------------------------- 2.3 class visualization


def classvis(args, results: Results) -> None:
    """Figures 21 (gorilla), 22 (tarantula) with the defaults; 23 lr 1; 24 l2_reg 1; 25 400 iterations."""
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures

    net = _network(args, "squeezenet1_1")
    names = core.class_names(net)
    runs = [(21, "gorilla", {}), (22, "tarantula", {}), (23, "tarantula", {"lr": 1.0}),
            (24, "tarantula", {"l2_reg": 1.0}), (25, "tarantula", {"iters": 400})]
    for fig, target, change in runs:
        kw = {"lr": 5.0, "l2_reg": 1e-3, "iters": 200} | change
        kw["iters"] = _iters(args, kw["iters"])
        t = core.resolve_class(net, target)
        t0 = time.time()
        res = C.class_visualization(net, [t], seed=args.seed, snapshot_every=max(1, kw["iters"] // 4), **kw)
        rows, titles, labels = figures.classvis_rows(net, res, [t], lambda c: names[int(c)])
        desc = ", ".join(f"{k} {v:g}" for k, v in kw.items())
        figures.snapshots_figure(rows, titles, labels, args.out / f"figure{fig}_classvis_{target}.png",
                                 suptitle=f"squeezenet1_1 {target} ({desc}): {_tag(net)}")
        results.add("2.3", f"figure {fig}: {target} ({desc})", float(res.probabilities[0]),
                    f"target probability; {time.time() - t0:.1f} s; {_tag(net)}")


def classvis_image(args, results: Results) -> None:
    """Figures 26-28: start from an ImageNet image (hay) towards a dog class (Tibetan mastiff)."""
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures

    images01, labels, names = _val25(args)
    net = _network(args, "squeezenet1_1")
    x = net.preprocessing.normalize(images01[[args.start_index]])
    t = core.resolve_class(net, args.start_target)
    iters = _iters(args, 200)
    res = C.class_visualization(net, [t], init=x, seed=args.seed, snapshot_every=max(1, iters // 4), iters=iters)
    start = figures.to_display(net, x)[0]
    first = figures.to_display(net, res.snapshots[0])[0]
    final = figures.to_display(net, res.images)[0]
    figures.image_grid([start, first], ["start image", f"iteration {int(res.snapshot_iters[0])}"],
                       args.out / "figure26_classvis_from_image_first.png", cols=2, suptitle=_tag(net))
    figures.image_grid([final], [f"final: {names[t]} p={float(res.probabilities[0]):.3f}"],
                       args.out / "figure27_classvis_from_image_final.png", cols=1, suptitle=_tag(net))
    rows, titles, lab = figures.classvis_rows(net, res, [t], lambda c: names[int(c)])
    figures.snapshots_figure(rows, titles, lab, args.out / "figure28_classvis_from_image.png",
                             suptitle=f"from {names[int(labels[args.start_index])]} to {names[t]}: {_tag(net)}")
    results.add("2.3", f"figures 26-28: {names[int(labels[args.start_index])]} -> {names[t]}",
                float(res.probabilities[0]), f"target probability; {_tag(net)}")


def compare(args, results: Results) -> None:
    """Figures 29 (SqueezeNet), 30 (VGG16): from noise and from an image; 31: VGG16 with more iterations."""
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures

    images01, labels, names = _val25(args)
    t_name = args.start_target
    for model, fig, iters in (("squeezenet1_1", 29, 200), ("vgg16", 30, 200), ("vgg16", 31, 1000)):
        if model not in args.models:
            continue
        net = _network(args, model)
        t = core.resolve_class(net, t_name)
        iters = _iters(args, iters)
        x_img = net.preprocessing.normalize(images01[[args.start_index]])
        t0 = time.time()
        noise = C.class_visualization(net, [t], seed=args.seed, iters=iters, snapshot_every=0)
        from_img = C.class_visualization(net, [t], init=x_img, seed=args.seed, iters=iters, snapshot_every=0)
        seconds = time.time() - t0
        figures.image_grid([figures.to_display(net, noise.images)[0], figures.to_display(net, from_img.images)[0]],
                           [f"(a) noise, final (p={float(noise.probabilities[0]):.2f})",
                            f"(b) ImageNet image, final (p={float(from_img.probabilities[0]):.2f})"],
                           args.out / f"figure{fig}_{model}_{iters}iters.png", cols=2,
                           suptitle=f"{model}, {names[t]}, {iters} iterations: {_tag(net)}")
        results.add("2.3", f"figure {fig}: {model} {iters} iterations, noise / image",
                    f"{float(noise.probabilities[0]):.3f} / {float(from_img.probabilities[0]):.3f}",
                    f"target probabilities; {seconds:.1f} s for both; {_tag(net)}")


# ----------------------------------------------------------------------------- proof on MNIST


def mnist_proof(args, results: Results) -> None:
    """Each method on the small CNN trained on real MNIST, with measured numbers."""
    import jax.numpy as jnp
    from scipy.ndimage import binary_dilation

    from rdfia_jax.classifier import _load, get_classifier
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis import saliency as S
    from rdfia_jax.vis.fooling import fool

    clf = get_classifier("mnist", seed=0, data_dir=args.data_dir)
    judge = get_classifier("mnist", seed=1, data_dir=args.data_dir)
    net = clf.network()
    results.add("mnist", "classifier seed 0 test accuracy", clf.test_accuracy, "MNIST test, 10000 images")
    results.add("mnist", "classifier seed 1 (judge) test accuracy", judge.test_accuracy, "independently trained")
    test = _load("mnist", "test", args.data_dir)
    n = 100 if args.quick else 1000
    x = jnp.asarray(test.images[:n], jnp.float32) / 255.0
    y = test.labels[:n]

    # --- saliency mass on the digit
    digit = test.images[:n, ..., 0] > 0
    dilated = np.stack([binary_dilation(m, iterations=1) for m in digit])
    for name, maps in (("saliency", S.saliency(net, x, y)),
                       ("SmoothGrad", S.smoothgrad(net, x, y, n_samples=8 if args.quick else 25)),
                       ("Grad-CAM relu2", S.gradcam(net, x, y, layer="relu2"))):
        m = core.to_numpy(maps)
        share = (m * digit).sum((1, 2)) / np.maximum(m.sum((1, 2)), 1e-12)
        share_d = (m * dilated).sum((1, 2)) / np.maximum(m.sum((1, 2)), 1e-12)
        results.add("mnist", f"{name}: share of map mass on digit pixels (x>0)", share.mean(),
                    f"digit pixels are {digit.mean():.1%} of the image; {n} test images, true class")
        results.add("mnist", f"{name}: share on digit dilated by 1 px", share_d.mean(),
                    f"dilated digit covers {dilated.mean():.1%} of the image")
    check = S.randomization_check(net, "saliency", x[:100], y[:100], seed=1)
    results.add("mnist", "saliency sanity check: mean Spearman trained vs randomized", check["mean_spearman"],
                "100 images; 1 = unchanged by randomizing the weights")
    figures.attribution_grid(figures.to_display(net, x[:8]),
                             {"saliency": core.to_numpy(S.saliency(net, x[:8], y[:8])),
                              "SmoothGrad": core.to_numpy(S.smoothgrad(net, x[:8], y[:8])),
                              "Integrated Gradients": core.to_numpy(S.channel_max_abs(
                                  S.integrated_gradients(net, x[:8], y[:8]))),
                              "Grad-CAM": core.to_numpy(S.gradcam(net, x[:8], y[:8]))},
                             [str(int(v)) for v in y[:8]], args.out / "mnist_saliency.png",
                             suptitle=net.weights_desc)

    # --- fooling: every (image, other class) pair of a fixed set
    m_img = 20 if args.quick else 200
    xs = np.repeat(np.asarray(x[:m_img]), 9, axis=0)
    targets = np.concatenate([[c for c in range(10) if c != int(lab)] for lab in y[:m_img]])
    for lr, clamp, count in ((1.0, False, m_img), (0.1, True, m_img // 4)):
        # the small-step run is ~10x longer: a quarter of the pairs
        xs, targets = xs[:9 * count], targets[:9 * count]
        t0 = time.time()
        res = fool(net, xs, targets, lr=lr, max_iters=100, clamp=clamp)
        ok = res.success
        note = f"{len(xs)} pairs ({count} test images x 9 targets), lr {lr}, cap 100, clamp {clamp}"
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: success rate", ok.mean(), note)
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: mean iterations (successes)", res.iterations[ok].mean(), "")
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: mean L2 of perturbation", res.l2[ok].mean(), "pixels in [0,1]")
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: mean Linf of perturbation", res.linf[ok].mean(),
                    f"pixels in [0,1]; {time.time() - t0:.1f} s")
        transfer = (judge.predict(res.images[ok]) == targets[ok]).mean()
        results.add("mnist", f"fooling lr={lr} clamp={clamp}: also fools the seed-1 network", transfer, "transfer rate")
    figures.fooling_figure(figures.to_display(net, xs[:9:3]), figures.to_display(net, res.images[:9:3]),
                           [str(int(v)) for v in clf.predict(xs[:9:3])],
                           [str(int(v)) for v in res.predictions[:9:3]], args.out / "mnist_fooling.png",
                           suptitle=f"lr 0.1, clamped; {net.weights_desc}")

    # --- class visualization judged by an independent network
    seeds = 2 if args.quick else 10
    t_all = np.tile(np.arange(10), seeds)
    iters = _iters(args, 200)
    settings = {"lr": 1.0, "l2_reg": 1e-3, "iters": iters, "blur_every": 10, "blur_sigma": 0.5, "max_jitter": 2}
    res = C.class_visualization(net, t_all, seed=args.seed, snapshot_every=0, **settings)
    self_acc = (res.predictions == t_all).mean()
    judged = judge.predict(res.images)
    results.add("mnist", "class visualization: classified as target by the optimized net", self_acc,
                f"{len(t_all)} images ({seeds} noise seeds x 10 digits); {settings}")
    results.add("mnist", "class visualization: classified as target by the seed-1 net", (judged == t_all).mean(),
                "the independent judge")
    starts = np.clip(np.asarray(res.initial), 0.0, 1.0)
    results.add("mnist", "control: judge's accuracy on the (clamped) noise starts",
                (judge.predict(starts) == t_all).mean(), "chance is 0.1")
    figures.image_grid(list(figures.to_display(net, res.images[:10])),
                       [f"target {t}, judge says {j}" for t, j in zip(t_all[:10], judged[:10])],
                       args.out / "mnist_classvis.png", cols=5, suptitle=net.weights_desc)


# ----------------------------------------------------------------------------- main

SUBCOMMANDS = {"saliency": saliency, "fooling": fooling, "classvis": classvis, "classvis-image": classvis_image,
               "compare": compare, "mnist-proof": mnist_proof}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=(*SUBCOMMANDS, "all"), help="which sub-section to reproduce")
    p.add_argument("--out", type=Path, default=Path("runs/section2"), help="output folder (default runs/section2)")
    p.add_argument("--random-weights", action="store_true",
                   help="random ImageNet weights (everything runs; results are meaningless and labelled RANDOM)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights, noise and jitter (default 0)")
    p.add_argument("--data-dir", default=None, help="datasets folder (imagenet_val_25/, mnist/); default $RDFIA_JAX_DATA")
    p.add_argument("--models", nargs="+", default=["squeezenet1_1", "vgg16"],
                   help="ImageNet models for the saliency and comparison figures (default squeezenet1_1 vgg16)")
    p.add_argument("--start-index", type=int, default=0, help="imagenet_val_25 image to start from (default 0, hay)")
    p.add_argument("--start-target", default="Tibetan mastiff", help="class for the from-an-image figures")
    p.add_argument("--quick", action="store_true", help="few iterations and images: a smoke run")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out)
    todo = list(SUBCOMMANDS) if args.what == "all" else [args.what]
    try:
        for name in todo:
            print(f"== {name}", flush=True)
            SUBCOMMANDS[name](args, results)
    except RdfiaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"results: {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
