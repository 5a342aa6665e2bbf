"""``saliency``, ``fool``, ``classvis`` and ``visualize`` (report section 2: visualizing a network).

Each of the first three loads a model (an ImageNet model with converted or random weights, or the
project's small CNN, ``mnist-small`` / ``digits-small``), runs one jitted batched method and writes a
PNG figure plus a JSON summary (and the raw arrays as .npz) into ``--out``. ``visualize`` runs the
whole section (:mod:`rdfia_jax.vis.section`). Arguments and paths are checked before any model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np

from rdfia_jax.commands import common
from rdfia_jax.commands.common import Inputs, non_negative_float, non_negative_int, positive_float, positive_int, \
    seed_int
from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import check_writable_dir

SMALL = "mnist-small"
# The project's small CNN, by the digits it is trained on ("digits": embedded, needs no download).
SMALL_MODELS = {SMALL: "mnist", "digits-small": "digits"}
MODEL_CHOICES = ("squeezenet1_1", "vgg16", "alexnet", *SMALL_MODELS)
METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam")  # = rdfia_jax.vis.saliency.METHODS
NO_DOWNLOAD_HINT = ("or try `--model digits-small`, the project's small CNN on the embedded digits, which "
                    "needs no download")


# ----------------------------------------------------------------------------- shared options


def _add_common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--model", default="squeezenet1_1",
                   help=f"network: one of {', '.join(MODEL_CHOICES)} (default squeezenet1_1; '{SMALL}' is the "
                        "project's small CNN trained on MNIST, 'digits-small' the same CNN trained on the "
                        "embedded scikit-learn digits (no download); both are trained and cached on first use)")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="converted weights file for an ImageNet model (default: the converted file in the "
                        "weights folder, $RDFIA_JAX_WEIGHTS; see `rdfia-jax weights --help`)")
    p.add_argument("--random-weights", action="store_true",
                   help="use randomly initialized weights (results are meaningless; figures say RANDOM)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="seed of the random weights, or which trained small network (default 0)")
    p.add_argument("--images", nargs="+", metavar="IMAGE", default=None,
                   help="image files, folders, or an .npz with X (N,H,W,3 or N,28,28[,1] uint8) and y; default: "
                        "imagenet_val_25.npz in --data-dir (ImageNet models) or the test set (small models)")
    p.add_argument("--indices", default=None,
                   help="comma-separated indices into the .npz / test set (default: 0,1,2,3,4)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the datasets (imagenet_val_25/, mnist/); default $RDFIA_JAX_DATA")
    p.add_argument("--resize", choices=("resize", "crop"), default="resize",
                   help="how image files become 224x224: 'resize' (the practical's) or 'crop' (resize 256, "
                        "center-crop 224)")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")


def _is_small(args) -> bool:
    return args.model in SMALL_MODELS


def preflight(args, *, targets=None, layer: str | None = None, need_inputs: bool = True) -> None:
    """Every check that needs no model or image: the model name, the output folder, the inputs' paths,
    the class names of ``targets`` and the ``layer`` name; run before anything is loaded."""
    if args.model not in MODEL_CHOICES:
        from rdfia_jax.models import canonical_name

        try:
            args.model = canonical_name(args.model)  # accepts aliases
        except RdfiaError as err:
            raise RdfiaError(f"{err}; the small CNNs are {', '.join(SMALL_MODELS)}") from None
    if _is_small(args) and args.weights:
        raise RdfiaError(f"--weights does not apply to {args.model} (it is trained and cached automatically)")
    check_writable_dir(args.out)
    common.check_indices_syntax(args.indices)
    if args.images:
        common.check_image_paths(args.images)
    elif need_inputs and not _is_small(args):
        from rdfia_jax.vis.section import find_val25

        find_val25(args.data_dir, hint=f"or give your own images with --images FILE|FOLDER|NPZ, {NO_DOWNLOAD_HINT}")
    if targets:
        from rdfia_jax.vis import core

        shape = types.SimpleNamespace(name=SMALL if _is_small(args) else args.model)  # resolve_class reads the name
        for spec in targets:
            core.resolve_class(shape, spec)
    if layer is not None:
        names = _layer_names(args)
        if layer not in names:
            raise RdfiaError(f"model {args.model!r} has no layer {layer!r}; available layers: {', '.join(names)}")


def _layer_names(args) -> tuple[str, ...]:
    from flax import nnx

    if _is_small(args):
        from rdfia_jax.models.small import SmallCNN

        return tuple(nnx.eval_shape(lambda: SmallCNN(rngs=nnx.Rngs(0))).activation_names)
    from rdfia_jax.models import activation_names

    return tuple(activation_names(args.model))


def load_model(args):
    """The Network named by --model/--weights/--random-weights/--seed."""
    if _is_small(args):
        from flax import nnx

        from rdfia_jax.classifier import UNIT_GRAY, get_classifier
        from rdfia_jax.models import Network
        from rdfia_jax.models.small import SmallCNN

        if args.random_weights:
            graphdef, state = nnx.split(SmallCNN(rngs=nnx.Rngs(args.seed)))
            return Network(SMALL, graphdef, state, UNIT_GRAY, f"RANDOM weights, seed {args.seed} (meaningless)")
        try:
            return get_classifier(SMALL_MODELS[args.model], seed=args.seed, data_dir=args.data_dir).network()
        except RdfiaError as err:
            raise RdfiaError(f"{err}; {NO_DOWNLOAD_HINT}" if args.model == SMALL else str(err)) from None
    from rdfia_jax.weights import load_network

    try:
        return load_network(args.model, args.weights, random_weights=args.random_weights, seed=args.seed)
    except RdfiaError as err:
        raise RdfiaError(f"{err}; {NO_DOWNLOAD_HINT}") from None


def load_inputs(args, default_indices=range(5)) -> Inputs:
    """The command's images (uint8 with labels when known; see :func:`common.read_inputs`)."""
    small = _is_small(args)
    if args.images:
        return common.read_inputs(args.images, size=28 if small else 224, gray=small, resize=args.resize,
                                  indices=args.indices)
    if small:
        from rdfia_jax import data

        dataset = SMALL_MODELS[args.model]
        try:
            test = data.load(dataset, "test", data_dir=args.data_dir)
        except RdfiaError as err:
            raise RdfiaError(f"{err}; {NO_DOWNLOAD_HINT}" if args.model == SMALL else str(err)) from None
        idx = common.parse_indices(args.indices, len(test), f"the {dataset} test set", default_indices)
        return Inputs(np.asarray(test.images[idx]), np.asarray(test.labels[idx], np.int64),
                      [f"{dataset} test[{i}]" for i in idx])
    from rdfia_jax.vis.section import find_val25

    return common.read_inputs([str(find_val25(args.data_dir))], indices=args.indices, default_indices=default_indices)


def _check_target_count(specs, inputs: Inputs, *, labels_needed: bool, what: str = "--target") -> None:
    """Before the model loads: one target or one per image, and labels when no target is given."""
    n = len(inputs.images)
    if specs and len(specs) not in (1, n):
        noun = "channel" if what == "--channel" else "class"
        raise RdfiaError(f"{what}: give one {noun} or one per image ({n}); got {len(specs)}")
    if not specs and labels_needed and (inputs.labels < 0).any():
        raise RdfiaError(f"{what} is required: the images have no labels")


def _targets(network, specs, labels: np.ndarray, n: int, what: str = "--target") -> np.ndarray:
    """Per-image class indices from --target (names or indices; one, or one per image) or the labels."""
    from rdfia_jax.vis import core

    if specs:
        ids = [core.resolve_class(network, s) for s in specs]
        if len(ids) == 1:
            ids = ids * n
        if len(ids) != n:
            raise RdfiaError(f"{what}: give one class or one per image ({n}); got {len(ids)}")
        return np.asarray(ids, np.int64)
    if (labels < 0).any():
        raise RdfiaError(f"{what} is required: the images have no labels")
    return labels


def _write_json(path: Path, data: dict) -> None:
    from rdfia_jax.fileio import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=2, default=lambda o: np.asarray(o).tolist()).encode())


def _write_npz(path: Path, **arrays) -> None:
    from rdfia_jax.fileio import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


# ----------------------------------------------------------------------------- saliency


def _saliency(args) -> int:
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis import saliency as S

    preflight(args, targets=args.target, layer=args.layer if args.layer and (
        "gradcam" in args.method or "all" in args.method) else None)
    inputs = load_inputs(args)
    _check_target_count(args.target, inputs, labels_needed=True)
    network = load_model(args)
    common.print_random_weights_banner(network)
    x = network.preprocessing.normalize(inputs.images01)
    targets = _targets(network, args.target, inputs.labels, len(x))
    methods = list(S.METHODS) if "all" in args.method else list(dict.fromkeys(args.method))
    options = {"smoothgrad": {"n_samples": args.samples, "noise_level": args.noise},
               "integrated_gradients": {"steps": args.steps, "baseline": args.baseline},
               "gradcam": {"layer": args.layer}}
    maps, summary = {}, {"model": network.name, "weights": network.weights_desc, "images": inputs.sources,
                         "targets": targets, "methods": {}}
    for m in methods:
        maps[m] = core.to_numpy(S.attribution(network, m, x, targets, **options.get(m, {})))
        summary["methods"][m] = {}
        if args.sanity_check:
            check = S.randomization_check(network, m, x, targets, seed=args.seed + 1, **options.get(m, {}))
            maps[f"{m} (random weights)"] = core.to_numpy(check["random_maps"])
            summary["methods"][m]["randomization_spearman"] = check["spearman"]
            summary["methods"][m]["randomization_mean_spearman"] = check["mean_spearman"]
    names = core.class_names(network)
    titles = [names[int(t)] for t in targets]
    out = Path(args.out)
    fig = figures.attribution_grid(figures.to_display(network, x), maps, titles, out / "saliency.png",
                                   suptitle=f"{network.name}: {core.weights_tag(network)}")
    _write_npz(out / "saliency_maps.npz", **{k.replace(" ", "_"): v for k, v in maps.items()}, targets=targets)
    _write_json(out / "saliency.json", summary)
    print(f"{network.name} ({core.weights_tag(network)}): {', '.join(maps)} for {len(x)} images -> {fig}")
    for m, s in summary["methods"].items():
        if "randomization_mean_spearman" in s:
            print(f"  sanity check {m}: mean Spearman(trained, randomized) = {s['randomization_mean_spearman']:.3f} "
                  "(low = the map depends on the learned weights)")
    return 0


# ----------------------------------------------------------------------------- fooling


def _fool(args) -> int:
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis.fooling import fool

    preflight(args, targets=args.target)
    if args.indices is None and not args.images and not _is_small(args):
        args.indices = "1"  # the practical's default: image 1 (quail)
    inputs = load_inputs(args)
    _check_target_count(args.target, inputs, labels_needed=False)
    network = load_model(args)
    common.print_random_weights_banner(network)
    x = network.preprocessing.normalize(inputs.images01)
    specs = args.target or (["stingray"] if core.is_imagenet(network) else None)
    if specs is None:
        targets = (np.where(inputs.labels >= 0, inputs.labels, 0) + 1) % 10
    else:
        targets = _targets(network, specs, inputs.labels, len(x))
    res = fool(network, x, targets, lr=args.lr, max_iters=args.max_iters, clamp=args.clamp)
    names = core.class_names(network)
    out = Path(args.out)
    fig = figures.fooling_figure(figures.to_display(network, x), figures.to_display(network, res.images),
                                 [names[int(p)] for p in res.original_predictions],
                                 [names[int(p)] for p in res.predictions], out / "fooling.png",
                                 magnify=args.magnify, suptitle=f"{network.name}: {core.weights_tag(network)}")
    rows = [{"image": s, "original_prediction": names[int(o)], "target": names[int(t)], "success": bool(ok),
             "iterations": int(it), "l2_pixels": float(l2), "linf_pixels": float(li)}
            for s, o, t, ok, it, l2, li in zip(inputs.sources, res.original_predictions, res.targets, res.success,
                                               res.iterations, res.l2, res.linf)]
    _write_json(out / "fooling.json", {"model": network.name, "weights": network.weights_desc, "lr": args.lr,
                                       "max_iters": args.max_iters, "clamp": args.clamp, "results": rows})
    _write_npz(out / "fooling.npz", original=x, fooled=res.images, targets=res.targets, iterations=res.iterations)
    print(f"{network.name} ({core.weights_tag(network)}) -> {fig}")
    for r in rows:
        print(f"  {r['image']}: {r['original_prediction']} -> {r['target']}: "
              f"{'fooled' if r['success'] else 'NOT fooled'} after {r['iterations']} steps, "
              f"L2 {r['l2_pixels']:.3f}, Linf {r['linf_pixels'] * 255:.1f}/255")
    return 0


# ----------------------------------------------------------------------------- class visualization


def _position(spec: str | None):
    if spec is None:
        return None
    try:
        r, c = (int(v) for v in spec.split(","))
    except ValueError:
        raise RdfiaError(f"--position must be ROW,COL, got {spec!r}") from None
    return (r, c)


def _classvis(args) -> int:
    from rdfia_jax.vis import classvis as C
    from rdfia_jax.vis import core, figures

    position = _position(args.position)
    if args.objective != "class" and args.channel is None:
        raise RdfiaError("--channel is required with --objective channel/neuron")
    preflight(args, targets=args.target if args.objective == "class" else None,
              layer=args.layer if args.objective != "class" else None, need_inputs=bool(args.images or args.indices))
    inputs = load_inputs(args) if args.images or args.indices else None  # start from images instead of noise
    if inputs is not None:
        _check_target_count(args.target if args.objective == "class" else args.channel, inputs,
                            labels_needed=False, what="--target" if args.objective == "class" else "--channel")
    network = load_model(args)
    common.print_random_weights_banner(network)
    objective = C.Objective(args.objective, args.layer, position)
    init = None
    if inputs is not None:
        init = network.preprocessing.normalize(inputs.images01)
        n = len(init)
    else:
        n = None
    if args.objective == "class":
        specs = args.target or (["gorilla"] if core.is_imagenet(network) else ["3"])
        ids = [core.resolve_class(network, s) for s in specs]
        label = core.class_names(network)
    else:
        ids = list(args.channel)
        label = None
    if n is not None and len(ids) == 1:
        ids = ids * n
    if n is not None and len(ids) != n:
        raise RdfiaError(f"give one target (or channel) or one per starting image ({n}); got {len(ids)}")
    res = C.class_visualization(network, np.asarray(ids, np.int64), init=init, objective=objective, lr=args.lr,
                                l2_reg=args.l2_reg, iters=args.iters, blur_every=args.blur_every,
                                blur_sigma=args.blur_sigma, max_jitter=args.jitter, clamp=not args.no_clamp,
                                snapshot_every=args.snapshot_every, normalize_grad=args.normalize_grad,
                                seed=args.seed)
    rows, titles, row_labels = figures.classvis_rows(
        network, res, ids, lambda t: label[int(t)] if label else f"{args.layer} ch {t}", final_iters=args.iters)
    out = Path(args.out)
    fig = figures.snapshots_figure(rows, titles, row_labels, out / "classvis.png",
                                   suptitle=f"{network.name}: {core.weights_tag(network)}")
    names = core.class_names(network)
    summary = {"model": network.name, "weights": network.weights_desc, "objective": dataclasses.asdict(objective),
               "targets": ids, "lr": args.lr, "l2_reg": args.l2_reg, "iters": args.iters,
               "blur_every": args.blur_every, "blur_sigma": args.blur_sigma, "jitter": args.jitter,
               "clamp": not args.no_clamp, "objective_values": res.objective_values,
               "predictions": [names[int(p)] for p in res.predictions],
               "target_probabilities": res.probabilities}
    _write_json(out / "classvis.json", summary)
    _write_npz(out / "classvis.npz", images=res.images, initial=res.initial, snapshots=res.snapshots,
               snapshot_iters=res.snapshot_iters)
    print(f"{network.name} ({core.weights_tag(network)}) -> {fig}")
    for i, t in enumerate(ids):
        prob = "" if res.probabilities is None else f", target probability {float(res.probabilities[i]):.3f}"
        print(f"  {row_labels[i]}: objective {float(res.objective_values[i]):.3f}, predicted "
              f"{names[int(res.predictions[i])]}{prob}")
    return 0


# ----------------------------------------------------------------------------- the whole section


def _experiment(text: str) -> str:
    from rdfia_jax.vis.section import EXPERIMENTS

    if text not in (*EXPERIMENTS, "all"):
        raise argparse.ArgumentTypeError(f"unknown experiment {text!r}; choose among {', '.join(EXPERIMENTS)}, all")
    return text


def _visualize(args) -> int:
    from rdfia_jax.vis import section

    experiments = [e for name in (args.experiments or ["all"])
                   for e in (section.EXPERIMENTS if name == "all" else [name])]
    settings = section.Settings(out=check_writable_dir(args.out), random_weights=args.random_weights,
                                seed=args.seed, data_dir=args.data_dir, models=tuple(dict.fromkeys(args.models)),
                                start_index=args.start_index, start_target=args.start_target, quick=args.quick,
                                proof_dataset=args.proof_dataset)
    section.check_settings(settings, experiments)
    models = section.imagenet_models(settings, experiments)
    if args.random_weights and models:
        print(common.random_weights_note(models), file=sys.stderr)
    path = section.run(settings, experiments)
    print(f"results: {path}")
    return 0


# ----------------------------------------------------------------------------- registration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("saliency", help="saliency maps (and SmoothGrad, Integrated Gradients, Grad-CAM)",
                       description="Attribution maps of the target class for a batch of images (report Figures "
                                   "12-17): the practical's saliency (|d score / d pixel|, max over channels), "
                                   "SmoothGrad, Integrated Gradients and Grad-CAM, with an optional "
                                   "model-randomization sanity check. Writes saliency.png, saliency.json and "
                                   "saliency_maps.npz.")
    _add_common(p, "outputs/saliency")
    p.add_argument("--target", nargs="+", default=None,
                   help="class name or index (one for all images, or one per image); default: the images' labels")
    p.add_argument("--method", nargs="+", default=["saliency"], choices=(*METHODS, "all"),
                   help="attribution method(s) (default saliency; 'all' = every method)")
    p.add_argument("--layer", default=None,
                   help="Grad-CAM layer (default: fire9 for squeezenet1_1, relu5_3 or conv5_3 for vgg16, relu2 "
                        "for mnist-small); `rdfia-jax summary MODEL` lists layer names")
    p.add_argument("--samples", type=positive_int, default=25, help="SmoothGrad: number of noisy copies (default 25)")
    p.add_argument("--noise", type=non_negative_float, default=0.15,
                   help="SmoothGrad: noise std as a fraction of the image's value range (default 0.15)")
    p.add_argument("--steps", type=positive_int, default=64, help="Integrated Gradients: path steps (default 64)")
    p.add_argument("--baseline", choices=("black", "zeros"), default="black",
                   help="Integrated Gradients baseline: black image or model-space zeros = mean image (default black)")
    p.add_argument("--sanity-check", action="store_true",
                   help="also compute each map with randomized weights and report the rank correlation "
                        "(Adebayo et al. 2018's model-randomization test)")
    p.set_defaults(func=_saliency)

    p = sub.add_parser("fool", help="the practical's fooling images (targeted, normalized gradient steps)",
                       description="Repeat x <- x + lr * g / ||g|| (g = gradient of the target class score) until "
                                   "the model predicts the target or --max-iters is reached; batched, each image "
                                   "stops on its own (report Figures 18-19). Default: image 1 of imagenet_val_25 "
                                   "(quail) -> stingray. Writes fooling.png, fooling.json and fooling.npz.")
    _add_common(p, "outputs/fooling")
    p.add_argument("--target", nargs="+", default=None,
                   help="target class name or index (one for all images, or one per image); default stingray "
                        "(ImageNet) or label+1 (mnist-small)")
    p.add_argument("--lr", type=positive_float, default=1.0, help="step length (default 1, the practical's)")
    p.add_argument("--max-iters", type=positive_int, default=100, help="iteration cap (default 100)")
    p.add_argument("--clamp", action="store_true",
                   help="clamp to the valid pixel range after each step (the practical does not)")
    p.add_argument("--magnify", type=positive_float, default=10.0, help="magnification of the shown difference (default 10)")
    p.set_defaults(func=_fool)

    p = sub.add_parser("classvis", help="class (or feature) visualization by regularized gradient ascent",
                       description="Maximize s_t(x) - l2_reg * ||x||^2 from noise (or from --images) with jitter, "
                                   "periodic Gaussian blur and per-channel clamping, the whole loop compiled "
                                   "(report Figures 21-31). --objective channel/neuron maximizes a channel or one "
                                   "unit of any named layer instead. Writes classvis.png, classvis.json and "
                                   "classvis.npz.")
    _add_common(p, "outputs/classvis")
    p.add_argument("--target", nargs="+", default=None,
                   help="class name(s) or index(es), one image each (default gorilla; 3 for mnist-small)")
    p.add_argument("--objective", choices=("class", "channel", "neuron"), default="class",
                   help="what to maximize: a class logit, the mean of a channel of --layer, or one neuron of it")
    p.add_argument("--layer", default=None, help="layer for --objective channel/neuron (e.g. fire6, relu4_3)")
    p.add_argument("--channel", type=non_negative_int, nargs="+", default=None, help="channel index(es) for channel/neuron")
    p.add_argument("--position", default=None, help="ROW,COL of the neuron in the layer's map (default centre)")
    p.add_argument("--lr", type=positive_float, default=5.0, help="learning rate (default 5)")
    p.add_argument("--l2-reg", type=non_negative_float, default=1e-3, help="weight of the L2 penalty ||x||^2 (default 1e-3)")
    p.add_argument("--iters", type=positive_int, default=200, help="iterations (default 200)")
    p.add_argument("--blur-every", type=non_negative_int, default=10, help="blur every N iterations (default 10; 0 = never)")
    p.add_argument("--blur-sigma", type=positive_float, default=0.5, help="Gaussian blur std in pixels (default 0.5)")
    p.add_argument("--jitter", type=non_negative_int, default=16, help="largest random circular shift in pixels (default 16)")
    p.add_argument("--no-clamp", action="store_true", help="do not clamp channels to the valid pixel range")
    p.add_argument("--snapshot-every", type=non_negative_int, default=25, help="save a snapshot every N iterations (default 25)")
    p.add_argument("--normalize-grad", action="store_true",
                   help="divide each step's gradient by its L2 norm (the practical uses the raw gradient)")
    p.set_defaults(func=_classvis)

    from rdfia_jax.vis.section import EXPERIMENTS, MODELS, PROOF_DATASETS

    p = sub.add_parser("visualize", help="the whole section 2: every figure of the report and a results table",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Report section 2 (visualizing a network) in one command: every figure and a "
                                   "results table (results.md / .csv / .json: section, item, value, note).\n\n"
                                   "experiments (default all):\n"
                                   "  saliency        Figures 12-17: saliency (+ SmoothGrad, Integrated Gradients, "
                                   "Grad-CAM, sanity check)\n"
                                   "  fooling         Figures 18-19: quail -> stingray, gorilla -> vase\n"
                                   "  classvis        Figures 21-25: gorilla, tarantula; lr 1, l2_reg 1, 400 "
                                   "iterations\n"
                                   "  classvis-image  Figures 26-28: from an ImageNet image to a class\n"
                                   "  compare         Figures 29-31: SqueezeNet vs VGG16, from noise and from an "
                                   "image\n"
                                   "  mnist-proof     each method measured on the small CNN trained on real digits\n\n"
                                   "ImageNet experiments use SqueezeNet 1.1 (and VGG16) with converted weights and "
                                   "imagenet_val_25.npz from --data-dir; with --random-weights they run end to end "
                                   "and every figure and row says RANDOM. Rows of earlier runs into the same --out "
                                   "are kept.\n\n"
                                   "examples:\n"
                                   "  rdfia-jax visualize --data-dir ../shared/data --out runs/section2\n"
                                   "  rdfia-jax visualize mnist-proof --proof-dataset digits --quick   "
                                   "# no download\n"
                                   "  rdfia-jax visualize fooling classvis --random-weights --quick")
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT", type=_experiment, default=None,
                   help=f"experiments to run, in order: {', '.join(EXPERIMENTS)} or all (default all)")
    p.add_argument("--out", default="outputs/section2", help="output folder (default outputs/section2)")
    p.add_argument("--random-weights", action="store_true",
                   help="random ImageNet weights (everything runs; results are meaningless and labelled RANDOM)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of random weights, noise and jitter (default 0)")
    p.add_argument("--data-dir", default=None,
                   help="datasets folder (imagenet_val_25/, mnist/); default $RDFIA_JAX_DATA")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help="ImageNet models of the saliency and comparison figures (default squeezenet1_1 vgg16)")
    p.add_argument("--start-index", type=common.int_at_least(0, 24), default=0,
                   help="imagenet_val_25 image the from-an-image figures start from (default 0, hay)")
    p.add_argument("--start-target", default="Tibetan mastiff",
                   help="class of the from-an-image figures (default 'Tibetan mastiff')")
    p.add_argument("--proof-dataset", choices=PROOF_DATASETS, default="mnist",
                   help="digits the small CNN of mnist-proof is trained on (default mnist; 'digits' = the "
                        "embedded scikit-learn digits, NOT MNIST, no download)")
    p.add_argument("--quick", action="store_true", help="few iterations and images: a smoke run")
    p.set_defaults(func=_visualize)
