"""Section 1 (VGG16, transfer learning on 15 Scene) through ``rdfia_jax.inspect`` and ``rdfia-jax transfer``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.reproduce.sections.common import SectionResult, cli, figure_label, read_json

_TRANSFER_KEYS = {"relu7-resize": "s1.relu7_resize", "relu7-crop": "s1.relu7_crop", "relu6": "s1.relu6"}


def _photos(b, ctx) -> tuple[np.ndarray, list[str]]:
    """(N, 224, 224, 3) uint8 photos and their names: scikit-learn's two, or imagenet_val_25's first five."""
    from rdfia_jax.data.decode import array_to_image
    from rdfia_jax.data.transforms import resize_image

    if b.photos == "val25":
        from rdfia_jax import paths
        from rdfia_jax.data import load_imagenet_val25

        root = (Path(ctx.data_dir) if ctx.data_dir else paths.data_dir()) / "imagenet_val_25"
        try:
            images, labels, names = load_imagenet_val25(root)
            return images[:5], [f"imagenet_val_25[{i}] ({names[int(labels[i])]})" for i in range(5)]
        except RdfiaError:
            pass  # fall back to the offline photos below
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    names = [Path(f).name for f in sample.filenames]
    return np.stack([resize_image(array_to_image(im), "resize", 224) for im in sample.images]), \
        [f"scikit-learn sample photo {n}" for n in names]


def _prediction_figure(images, preds, path: Path, tag: str) -> Path:
    from matplotlib.figure import Figure

    from rdfia_jax.fileio import atomic_path

    fig = Figure(figsize=(4.2 * len(images), 5.2))
    for i, (img, p) in enumerate(zip(images, preds)):
        ax = fig.add_subplot(1, len(images), i + 1)
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title("\n".join(f"{n[:28]} {100 * pr:.2f} %" for _, n, pr in p.top), fontsize=8)
    fig.suptitle(tag, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # keep the top-5 titles clear of the suptitle
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path


def run(budget, ctx) -> dict:
    from rdfia_jax.inspect import activation_grid, format_summary, predict, summary
    from rdfia_jax.weights import load_network

    b = budget.s1
    out: Path = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    res = SectionResult(seeds=[0])
    rows, total = summary("vgg16", 224)
    by_layer = {r.layer: r.params for r in rows}
    res.measure("s1.params_total", total, note="rdfia_jax.inspect.summary")
    res.measure("s1.params_conv", sum(v for k, v in by_layer.items() if k.startswith("conv")))
    res.measure("s1.params_fc6", by_layer.get("fc6"))
    res.measure("s1.params_fc8", by_layer.get("fc8"))
    from rdfia_jax.fileio import atomic_write_bytes

    atomic_write_bytes(out / "vgg16_summary.txt", format_summary("vgg16", rows, total).encode())
    res.figure("Figure 1", "VGG16 parameters layer by layer (`rdfia-jax summary vgg16`)", out / "vgg16_summary.txt",
               out, kind="text")
    if not b.predict:
        res.notes.append("predictions and activation maps (Figures 2-10) not run at this budget")
        return res.to_dict()
    try:
        net, rnd = load_network("vgg16"), False
    except RdfiaError as err:
        net, rnd = load_network("vgg16", random_weights=True, seed=0), True
        res.notes.append(f"RANDOM WEIGHTS: predictions and activation maps are meaningless "
                         f"({str(err).split('. ')[0]}; `rdfia-jax weights fetch vgg16` gets them)")
    tag = "RANDOM WEIGHTS (meaningless)" if rnd else net.weights_desc
    label = figure_label(net, rnd)
    images, sources = _photos(b, ctx)
    res.notes.append(f"photos: {', '.join(sources)} (the authors' own photos are not available)")
    preds = predict(net, images, sources, k=5)
    res.measure("s1.photo_top1", preds[0].top[0][2], random_weights=rnd,
                note=f"{sources[0]}: {preds[0].top[0][1]}")
    for p in preds:
        res.add(f"top-1 on {p.source}", f"{p.top[0][1]} {100 * p.top[0][2]:.2f} %", tag)
    res.figure("Figures 2-5", f"top-5 predictions ({tag})",
               _prediction_figure(images, preds, out / "predictions.png", label), out)
    for layer, fig in (("relu1_1", "Figures 6-8"), ("relu5_3", "Figures 9-10")):
        path = activation_grid(net, images[0], layer, out / f"activations_{layer}.png", max_maps=32,
                               title=f"vgg16 {layer}: {label}")
        res.figure(fig, f"activation maps after {layer} for {sources[0]} ({tag})", path, out)
    if not b.transfer:
        res.notes.append("15 Scene transfer (section 1.2) not run at this budget")
    else:
        argv = ["transfer", "--out", out / "transfer", "--rows", *b.settings]
        if "c-sweep" not in b.settings:
            argv += ["--C", "1"]  # the practical's C; the sweep row needs the command's four values
        if rnd:  # the pipeline still runs end to end; every row is marked as meaningless
            argv.append("--random-weights")
        if ctx.data_dir:
            argv += ["--data", ctx.data_dir]
        if b.per_class:
            argv += ["--per-class", b.per_class]
        cli(argv)
        rows_json = read_json(out / "transfer" / "details.json").get("rows", {})
        n = f"{b.per_class} images per class per split" if b.per_class else "all images"
        for row, key in _TRANSFER_KEYS.items():
            if row in rows_json and rows_json[row].get("accuracy") is not None:
                res.measure(key, rows_json[row]["accuracy"], random_weights=rnd, note=n)
        res.notes.append(f"15 Scene transfer rows {', '.join(b.settings)} on {n}" + (f" ({tag})" if rnd else ""))
        for png in sorted((out / "transfer").glob("*.png")):
            res.figure("Figure 11" if "head" in png.stem else "(extra)", f"transfer: {png.stem}", png, out)
    return res.to_dict()
