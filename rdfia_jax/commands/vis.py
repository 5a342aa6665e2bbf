"""``saliency``, ``fool`` and ``classvis`` (report section 2: visualizing a network).

Each command loads a model (an ImageNet model with converted or random weights, or the small MNIST
classifier ``mnist-small``), runs one jitted batched method and writes a PNG figure plus a JSON
summary (and the raw arrays as .npz) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from rdfia_jax.commands.common import parse_indices
from rdfia_jax.errors import RdfiaError

SMALL = "mnist-small"
MODEL_CHOICES = ("squeezenet1_1", "vgg16", "alexnet", SMALL)
METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam")  # = rdfia_jax.vis.saliency.METHODS


# ----------------------------------------------------------------------------- shared options


def _add_common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--model", default="squeezenet1_1",
                   help=f"network: one of {', '.join(MODEL_CHOICES)} (default squeezenet1_1; '{SMALL}' is the "
                        "project's small CNN trained on MNIST, trained and cached on first use)")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="converted weights file for an ImageNet model (default: the converted file in the "
                        "weights folder, $RDFIA_JAX_WEIGHTS; see `rdfia-jax weights --help`)")
    p.add_argument("--random-weights", action="store_true",
                   help="use randomly initialized weights (results are meaningless; figures say RANDOM)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random weights, or which trained mnist-small network (default 0)")
    p.add_argument("--images", nargs="+", metavar="IMAGE", default=None,
                   help="image files, folders, or an .npz with X (N,H,W,3 or N,28,28[,1] uint8) and y; default: "
                        "imagenet_val_25.npz in $RDFIA_JAX_DATA (ImageNet models) or the MNIST test set (mnist-small)")
    p.add_argument("--indices", default=None,
                   help="comma-separated indices into the .npz / MNIST test set (default: 0,1,2,3,4)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the datasets (imagenet_val_25/, mnist/); default $RDFIA_JAX_DATA")
    p.add_argument("--resize", choices=("resize", "crop"), default="resize",
                   help="how image files become 224x224: 'resize' (the practical's) or 'crop' (resize 256, "
                        "center-crop 224)")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")


@dataclasses.dataclass
class Inputs:
    images01: np.ndarray          # float32 (N, H, W, C) in [0, 1]
    labels: np.ndarray            # int64 (N,), -1 where unknown
    sources: list[str]


def load_model(args):
    """The Network named by --model/--weights/--random-weights/--seed."""
    if args.model == SMALL:
        from flax import nnx

        from rdfia_jax.classifier import UNIT_GRAY, get_classifier
        from rdfia_jax.models import Network
        from rdfia_jax.models.small import SmallCNN

        if args.weights:
            raise RdfiaError("--weights does not apply to mnist-small (it is trained and cached automatically)")
        if args.random_weights:
            graphdef, state = nnx.split(SmallCNN(rngs=nnx.Rngs(args.seed)))
            return Network(SMALL, graphdef, state, UNIT_GRAY, f"RANDOM weights, seed {args.seed} (meaningless)")
        return get_classifier("mnist", seed=args.seed, data_dir=args.data_dir).network()
    if args.model not in MODEL_CHOICES:
        from rdfia_jax.models import canonical_name

        canonical_name(args.model)  # accepts aliases, raises a clear error otherwise
    from rdfia_jax.weights import load_network

    return load_network(args.model, args.weights, random_weights=args.random_weights, seed=args.seed)


def _indices(spec: str | None, n: int, source: str, default=range(5)) -> list[int]:
    return parse_indices(spec, n, source, default)


def load_inputs(args, network) -> Inputs:
    """Images for the command, as [0, 1] floats with their labels when known."""
    from rdfia_jax.data.decode import expand_inputs
    from rdfia_jax.data.transforms import load_images
    from rdfia_jax.vis import core

    small = not core.is_imagenet(network)
    if not args.images:
        if small:
            from rdfia_jax.classifier import _load

            test = _load("mnist", "test", args.data_dir)
            idx = _indices(args.indices, len(test), "the MNIST test set")
            return Inputs(test.images[idx].astype(np.float32) / 255.0, test.labels[idx],
                          [f"MNIST test[{i}]" for i in idx])
        from rdfia_jax import paths
        from rdfia_jax.data import load_imagenet_val25

        root = Path(args.data_dir) / "imagenet_val_25" if args.data_dir else paths.data_dir() / "imagenet_val_25"
        images, labels, _ = load_imagenet_val25(root)
        idx = _indices(args.indices, len(images), "imagenet_val_25")
        return Inputs(images[idx].astype(np.float32) / 255.0, labels[idx], [f"imagenet_val_25[{i}]" for i in idx])
    arrays, labels, sources, files = [], [], [], []
    for item in args.images:
        if item.lower().endswith(".npz"):
            x, y = _read_npz(item, small)
            idx = _indices(args.indices, len(x), item, default=range(len(x)))
            arrays.extend(x[idx])
            labels.extend(y[idx])
            sources.extend(f"{Path(item).name}[{i}]" for i in idx)
        else:
            files.append(item)
    if files:
        paths_ = expand_inputs(files)
        size = 28 if small else 224
        batch = load_images(paths_, args.resize, size)
        if small:  # grayscale digits: luminance of the RGB decode
            batch = np.rint(batch.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
            batch = np.clip(batch, 0, 255).astype(np.uint8)[..., None]
        arrays.extend(batch)
        labels.extend([-1] * len(batch))
        sources.extend(str(p) for p in paths_)
    x = np.stack(arrays).astype(np.float32) / 255.0
    return Inputs(x, np.asarray(labels, np.int64), sources)


def _read_npz(path: str, small: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise RdfiaError(f"{path}: expected an array 'X' of uint8 images, found {', '.join(npz.files)}")
            x = npz["X"]
            y = npz["y"].astype(np.int64) if "y" in npz.files else np.full((len(x),), -1, np.int64)
    except (OSError, ValueError) as err:
        raise RdfiaError(f"{path}: not a readable .npz ({err})") from None
    if x.dtype != np.uint8:
        raise RdfiaError(f"{path}: 'X' must be uint8 images, got {x.dtype}")
    if small:
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != (28, 28, 1):
            raise RdfiaError(f"{path}: mnist-small needs 28x28 grayscale images (N, 28, 28[, 1]); got {x.shape}")
    elif x.ndim != 4 or x.shape[-1] != 3:
        raise RdfiaError(f"{path}: ImageNet models need RGB images (N, H, W, 3); got {x.shape}")
    return x, y


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


def _banner(network) -> str:
    return "RANDOM WEIGHTS (meaningless)" if network.is_random else network.weights_desc


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

    network = load_model(args)
    inputs = load_inputs(args, network)
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
                                   suptitle=f"{network.name}: {_banner(network)}")
    _write_npz(out / "saliency_maps.npz", **{k.replace(" ", "_"): v for k, v in maps.items()}, targets=targets)
    _write_json(out / "saliency.json", summary)
    print(f"{network.name} ({_banner(network)}): {', '.join(maps)} for {len(x)} images -> {fig}")
    for m, s in summary["methods"].items():
        if "randomization_mean_spearman" in s:
            print(f"  sanity check {m}: mean Spearman(trained, randomized) = {s['randomization_mean_spearman']:.3f} "
                  "(low = the map depends on the learned weights)")
    return 0


# ----------------------------------------------------------------------------- fooling


def _fool(args) -> int:
    from rdfia_jax.vis import core, figures
    from rdfia_jax.vis.fooling import fool

    network = load_model(args)
    if args.indices is None and not args.images and core.is_imagenet(network):
        args.indices = "1"  # the practical's default: image 1 (quail)
    inputs = load_inputs(args, network)
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
                                 magnify=args.magnify, suptitle=f"{network.name}: {_banner(network)}")
    rows = [{"image": s, "original_prediction": names[int(o)], "target": names[int(t)], "success": bool(ok),
             "iterations": int(it), "l2_pixels": float(l2), "linf_pixels": float(li)}
            for s, o, t, ok, it, l2, li in zip(inputs.sources, res.original_predictions, res.targets, res.success,
                                               res.iterations, res.l2, res.linf)]
    _write_json(out / "fooling.json", {"model": network.name, "weights": network.weights_desc, "lr": args.lr,
                                       "max_iters": args.max_iters, "clamp": args.clamp, "results": rows})
    _write_npz(out / "fooling.npz", original=x, fooled=res.images, targets=res.targets, iterations=res.iterations)
    print(f"{network.name} ({_banner(network)}) -> {fig}")
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

    network = load_model(args)
    objective = C.Objective(args.objective, args.layer, _position(args.position))
    init = None
    if args.images or args.indices:  # start from images instead of noise
        inputs = load_inputs(args, network)
        init = network.preprocessing.normalize(inputs.images01)
        n = len(init)
    else:
        n = None
    if args.objective == "class":
        specs = args.target or (["gorilla"] if core.is_imagenet(network) else ["3"])
        ids = [core.resolve_class(network, s) for s in specs]
        label = core.class_names(network)
    else:
        if args.channel is None:
            raise RdfiaError("--channel is required with --objective channel/neuron")
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
                                   suptitle=f"{network.name}: {_banner(network)}")
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
    print(f"{network.name} ({_banner(network)}) -> {fig}")
    for i, t in enumerate(ids):
        prob = "" if res.probabilities is None else f", target probability {float(res.probabilities[i]):.3f}"
        print(f"  {row_labels[i]}: objective {float(res.objective_values[i]):.3f}, predicted "
              f"{names[int(res.predictions[i])]}{prob}")
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
    p.add_argument("--samples", type=int, default=25, help="SmoothGrad: number of noisy copies (default 25)")
    p.add_argument("--noise", type=float, default=0.15,
                   help="SmoothGrad: noise std as a fraction of the image's value range (default 0.15)")
    p.add_argument("--steps", type=int, default=64, help="Integrated Gradients: path steps (default 64)")
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
    p.add_argument("--lr", type=float, default=1.0, help="step length (default 1, the practical's)")
    p.add_argument("--max-iters", type=int, default=100, help="iteration cap (default 100)")
    p.add_argument("--clamp", action="store_true",
                   help="clamp to the valid pixel range after each step (the practical does not)")
    p.add_argument("--magnify", type=float, default=10.0, help="magnification of the shown difference (default 10)")
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
    p.add_argument("--channel", type=int, nargs="+", default=None, help="channel index(es) for channel/neuron")
    p.add_argument("--position", default=None, help="ROW,COL of the neuron in the layer's map (default centre)")
    p.add_argument("--lr", type=float, default=5.0, help="learning rate (default 5)")
    p.add_argument("--l2-reg", type=float, default=1e-3, help="weight of the L2 penalty ||x||^2 (default 1e-3)")
    p.add_argument("--iters", type=int, default=200, help="iterations (default 200)")
    p.add_argument("--blur-every", type=int, default=10, help="blur every N iterations (default 10; 0 = never)")
    p.add_argument("--blur-sigma", type=float, default=0.5, help="Gaussian blur std in pixels (default 0.5)")
    p.add_argument("--jitter", type=int, default=16, help="largest random circular shift in pixels (default 16)")
    p.add_argument("--no-clamp", action="store_true", help="do not clamp channels to the valid pixel range")
    p.add_argument("--snapshot-every", type=int, default=25, help="save a snapshot every N iterations (default 25)")
    p.add_argument("--normalize-grad", action="store_true",
                   help="divide each step's gradient by its L2 norm (the practical uses the raw gradient)")
    p.set_defaults(func=_classvis)
