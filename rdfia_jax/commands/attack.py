"""``attack METHOD``: FGSM, PGD or ADef over a set of images, with figures, a table and curves."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import check_writable_dir

SMALL_MODEL = "mnist-small"
MODEL_CHOICES = (SMALL_MODEL, "squeezenet1_1", "vgg16", "alexnet")
# Default budgets (pixel units, images in [0, 1]): the usual MNIST budget, and small ImageNet ones.
DEFAULT_EPS = {(True, "linf"): 0.3, (True, "l2"): 2.0, (False, "linf"): 2.0 / 255.0, (False, "l2"): 0.5}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="adversarial attacks (FGSM, PGD, ADef): figures, table, robustness curve",
                       description="Attack a set of images with FGSM, PGD (L-inf or L2, targeted or not) or ADef "
                                   "(adversarial deformations). Writes example figures (original, adversarial, "
                                   "difference or displacement field, predicted classes), a table (success rate, "
                                   "median norms, iterations, time) and optionally a robust-accuracy curve. Budgets "
                                   "are in pixel units (images in [0, 1]) whatever the model's normalization.")
    p.add_argument("method", metavar="METHOD", choices=("fgsm", "pgd", "adef"), help="fgsm, pgd or adef")
    p.add_argument("--model", default=SMALL_MODEL,
                   help=f"{SMALL_MODEL} (the small MNIST classifier, trained once and cached; MNIST test digits) "
                        "or an ImageNet model: squeezenet1_1, vgg16, alexnet (default mnist-small)")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="ImageNet models: converted weights file (default: the weights folder)")
    p.add_argument("--random-weights", action="store_true",
                   help="ImageNet models: random weights (meaningless; for trying the pipeline)")
    p.add_argument("--seed", type=int, default=0, help="classifier / random-weights seed, and PGD random start (default 0)")
    p.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                   help="ImageNet models: image files, folders or imagenet_val_25.npz (default: imagenet_val_25.npz "
                        "in the data folder)")
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and imagenet_val_25/ (default $RDFIA_JAX_DATA)")
    p.add_argument("--eps", type=float, default=None,
                   help="FGSM/PGD budget in pixel units (default 0.3 L-inf / 2.0 L2 on MNIST, 2/255 L-inf / 0.5 L2 "
                        "on ImageNet); ADef: optional bound on the largest pixel displacement")
    p.add_argument("--norm", default="linf", help="linf or l2 (FGSM/PGD; default linf)")
    p.add_argument("--steps", type=int, default=None,
                   help="PGD steps (default 40) / ADef maximum iterations (default 50)")
    p.add_argument("--step-size", type=float, default=None, help="PGD step in pixel units (default 2.5 eps / steps)")
    p.add_argument("--no-random-start", action="store_true", help="PGD: start from the image itself")
    p.add_argument("--targeted", action="store_true", help="targeted attack: reach --target")
    p.add_argument("--target", default=None,
                   help="target class: 0-9 on MNIST; an index or a name (e.g. stingray) on ImageNet")
    p.add_argument("--sigma", type=float, default=1.0, help="ADef: Gaussian smoothing of the field, pixels (default 1)")
    p.add_argument("--overshoot", type=float, default=1.2, help="ADef: overshoot factor (default 1.2)")
    p.add_argument("--candidates", type=int, default=None,
                   help="ADef untargeted: how many of the best other labels to aim at, one backward pass each "
                        "(default 9 on MNIST, 1 on ImageNet as in the reference code)")
    p.add_argument("--n-images", type=int, default=100,
                   help="MNIST: number of correctly classified test digits to attack; ImageNet: at most this many "
                        "images (default 100)")
    p.add_argument("--batch-size", type=int, default=None, help="images per jitted call (default 250 MNIST, 8 ImageNet)")
    p.add_argument("--n-examples", type=int, default=6, help="images shown in the example figure (default 6)")
    p.add_argument("--out", default="outputs/attack", help="output folder (default outputs/attack)")
    p.add_argument("--curve", action="store_true",
                   help="also plot accuracy under the attack against the budget (robust_accuracy.png)")
    p.add_argument("--curve-eps", default=None,
                   help="comma-separated budgets for --curve (default: 10 values up to --eps; ADef: displacements "
                        "up to 3 pixels)")
    p.set_defaults(func=_attack)


def _to_model(pre, images01: np.ndarray) -> np.ndarray:
    """[0, 1] RGB images -> model space with the network's own :class:`~rdfia_jax.preprocess.Preprocessing`."""
    return np.asarray(pre.normalize(images01), np.float32)


def _to_pixels(pre, x: np.ndarray) -> np.ndarray:
    """Model space -> [0, 1] RGB images (not clipped), through the same :class:`Preprocessing`."""
    return np.asarray(pre.denormalize(x), np.float32)


def _check_finite(value, option: str, *, low: float, strict: bool) -> None:
    if value is None:
        return
    if not math.isfinite(value) or (value <= low if strict else value < low):
        rule = f"> {low:g}" if strict else f">= {low:g}"
        raise RdfiaError(f"{option} must be a finite number {rule}, got {value}")


def _parse_curve_eps(spec: str | None) -> list[float] | None:
    if not spec:
        return None
    try:
        grid = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise RdfiaError(f"--curve-eps must be comma-separated numbers, got {spec!r}") from None
    if not grid or any(not math.isfinite(v) or v <= 0 for v in grid):
        raise RdfiaError(f"--curve-eps must be positive finite budgets, got {spec!r}")
    return grid


def _check_args(args) -> None:
    """Every option and the output folder, before any (slow) model or data loading."""
    if args.seed < 0:
        raise RdfiaError(f"--seed must be >= 0, got {args.seed}")
    for name in ("n_images", "n_examples", "steps", "batch_size", "candidates"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RdfiaError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    _check_finite(args.step_size, "--step-size", low=0.0, strict=True)
    _check_finite(args.sigma, "--sigma", low=0.0, strict=False)
    _check_finite(args.overshoot, "--overshoot", low=1.0, strict=False)
    if args.curve_eps and not args.curve:
        raise RdfiaError("--curve-eps given without --curve; add --curve (or drop --curve-eps)")
    _parse_curve_eps(args.curve_eps)
    if args.model == SMALL_MODEL and (args.images or args.weights or args.random_weights):
        raise RdfiaError(f"--images, --weights and --random-weights apply to ImageNet models, not {SMALL_MODEL}")
    for item in args.images or ():
        if not Path(item).exists():
            raise RdfiaError(f"--images {item}: no such file or folder")
    if args.weights is not None and not Path(args.weights).is_file():
        raise RdfiaError(f"--weights {args.weights}: no such file")
    check_writable_dir(args.out)


def _load_setup(args):
    """(apply, params, x model-space, labels, class names, preprocessing, box, description, is_small)."""
    from rdfia_jax.attacks import PixelBox, evaluate
    from rdfia_jax.data.transforms import to_unit

    if args.model == SMALL_MODEL:
        from rdfia_jax.classifier import UNIT_GRAY, get_classifier
        from rdfia_jax.data import load

        clf = get_classifier("mnist", seed=args.seed, data_dir=args.data_dir)
        test = load("mnist", "test", data_dir=args.data_dir)
        x_all = to_unit(test.images)
        idx = evaluate.correctly_classified(clf.apply, clf.params, x_all, test.labels, args.n_images)
        desc = (f"small MNIST classifier (seed {args.seed}, test accuracy {clf.test_accuracy:.4f}); "
                f"{len(idx)} correctly classified MNIST test digits")
        return (clf.apply, clf.params, x_all[idx], np.asarray(test.labels)[idx], [str(i) for i in range(10)],
                UNIT_GRAY, PixelBox.unit_interval(1), desc, True)

    from rdfia_jax.imagenet import class_names
    from rdfia_jax.models import canonical_name
    from rdfia_jax.weights import load_network

    network = load_network(canonical_name(args.model), args.weights, random_weights=args.random_weights, seed=args.seed)
    images, sources = _imagenet_images(args)
    images, sources = images[:args.n_images], sources[:args.n_images]
    pre = network.preprocessing
    x = _to_model(pre, to_unit(images))
    apply = network.apply
    # The label to change is the model's own prediction (images may come without labels).
    labels = evaluate.predict(apply, network.state, x, batch_size=8)
    desc = f"{network.name} ({network.weights_desc}); {len(x)} images"
    if network.is_random:
        from rdfia_jax.commands.common import random_weights_banner

        print(random_weights_banner(network), file=sys.stderr)
    return apply, network.state, x, labels, list(class_names()), pre, PixelBox.from_preprocessing(pre), desc, False


def _imagenet_images(args):
    from rdfia_jax.commands.common import load_inputs

    items = args.images
    if items is None:
        from rdfia_jax import paths

        base = Path(args.data_dir) if args.data_dir else paths.data_dir()
        items = [str(base / "imagenet_val_25" / "imagenet_val_25.npz")]
    ns = argparse.Namespace(images=items, resize="resize", indices=None)
    return load_inputs(ns)


def _parse_target(args, names, is_small):
    if not args.targeted:
        if args.target is not None:
            raise RdfiaError("--target given without --targeted; add --targeted (or drop --target)")
        return None
    if args.target is None:
        raise RdfiaError("--targeted needs --target CLASS")
    if is_small:
        if not str(args.target).isdigit() or not 0 <= int(args.target) <= 9:
            raise RdfiaError(f"--target must be a digit 0-9 for {SMALL_MODEL}, got {args.target!r}")
        return int(args.target)
    from rdfia_jax.imagenet import class_id

    return class_id(args.target)


def _attack(args) -> int:
    from rdfia_jax.attacks import evaluate, figures
    from rdfia_jax.attacks.base import check_eps, check_norm
    from rdfia_jax.fileio import atomic_write_bytes

    # Validate the options before any (slow) model or data loading.
    norm = check_norm(args.norm)
    is_small = args.model == SMALL_MODEL
    if not is_small:
        from rdfia_jax.models import canonical_name

        try:
            args.model = canonical_name(args.model)
        except RdfiaError:
            raise RdfiaError(f"unknown --model {args.model!r}; choose one of: {', '.join(MODEL_CHOICES)}") from None
    if args.eps is not None:
        check_eps(args.eps, "--eps")
    _check_args(args)
    target = _parse_target(args, None, is_small)
    apply, params, x, labels, names, pre, box, desc, is_small = _load_setup(args)
    if len(x) == 0:
        raise RdfiaError("no image to attack (none correctly classified?)")
    keep = np.ones(len(x), bool)
    if target is not None:
        keep = labels != target
        if not keep.any():
            raise RdfiaError(f"every image is already classified as the target {names[target]}")
        if not keep.all():
            print(f"skipping {int((~keep).sum())} image(s) already classified as the target", file=sys.stderr)
        x, labels = x[keep], labels[keep]
    batch_size = args.batch_size or (250 if is_small else 8)
    kwargs: dict = {"box": box}
    if target is not None:
        kwargs.update(targeted=True, target=target)
    if args.method == "adef":
        kwargs.update(max_iter=args.steps or 50, sigma=args.sigma, overshoot=args.overshoot,
                      candidates=args.candidates or (9 if is_small else 1))
        if args.eps is not None:
            kwargs["max_norm"] = check_eps(args.eps, "--eps")
        budget = f"max displacement {args.eps} px" if args.eps else "no displacement bound"
    else:
        eps = check_eps(args.eps if args.eps is not None else DEFAULT_EPS[(is_small, norm)], "--eps")
        kwargs.update(eps=eps, norm=norm)
        if args.method == "pgd":
            import jax

            kwargs.update(steps=args.steps or 40, step_size=args.step_size, random_start=not args.no_random_start,
                          key=jax.random.PRNGKey(args.seed))
        budget = f"{norm} eps={eps:.4g}"
    print(f"{args.method} ({budget}) on {desc}", file=sys.stderr)
    res, seconds = evaluate.run_attack(args.method, apply, params, x, labels, batch_size=batch_size, progress=True,
                                       **kwargs)
    row = evaluate.summarize(res, seconds, f"{args.method} {budget}" + (f" -> {names[target]}" if target is not None else ""))
    table = evaluate.format_table([row])
    print(table)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "table.md", (f"{desc}\n\n{table}\n").encode())
    atomic_write_bytes(out / "results.json", json.dumps({"model": args.model, "description": desc, "row": row,
                                                         "labels": labels.tolist(), "pred": res["pred"].tolist(),
                                                         "success": res["success"].tolist()}, indent=1).encode())
    k = min(args.n_examples, len(x))
    figures.plot_examples(out / "examples.png", _to_pixels(pre, x[:k]), _to_pixels(pre, res["adversarial"][:k]),
                          labels[:k], res["pred"][:k], names, fields=res.get("field", None)[:k] if "field" in res else None,
                          title=f"{args.method}: {budget}", label_caption="true" if is_small else "attacked label:")
    if args.curve:
        grid = _parse_curve_eps(args.curve_eps)
        if grid is None and args.method == "adef":
            grid = list(np.linspace(0.25, 3.0, 12))
        elif grid is None:
            grid = list(np.linspace(kwargs["eps"] / 10, kwargs["eps"], 10))
        curve_kwargs = {k: v for k, v in kwargs.items() if k not in ("eps", "max_norm")}
        eps_arr, acc = evaluate.robust_accuracy_curve(args.method, apply, params, x, labels, grid,
                                                      batch_size=batch_size, **curve_kwargs)
        xlabel = "largest pixel displacement (pixels)" if args.method == "adef" else f"{norm} budget (pixel units)"
        figures.plot_robust_accuracy(out / "robust_accuracy.png", {xlabel: {args.method: (eps_arr, acc)}}, title=desc)
        atomic_write_bytes(out / "curve.json", json.dumps({"eps": eps_arr.tolist(), "accuracy": acc.tolist()}).encode())
    print(f"wrote {out}/ (examples.png, table.md, results.json{', robust_accuracy.png' if args.curve else ''})",
          file=sys.stderr)
    return 0
