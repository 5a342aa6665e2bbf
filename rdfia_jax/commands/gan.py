"""``rdfia-jax gan`` / ``rdfia-jax cgan``: DCGAN and conditional DCGAN (report section 4).

Every argument and output path is checked (:mod:`rdfia_jax.gan.config`) before any data is loaded
or anything is compiled.
"""

from __future__ import annotations

import argparse

from rdfia_jax.errors import RdfiaError


def _add_common(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (default 5 = 2,345 iterations on MNIST)")
    p.add_argument("--nz", type=int, default=100, help="latent size (default 100)")
    if kind == "gan":
        p.add_argument("--ngf", type=int, default=32, help="generator width (default 32)")
        p.add_argument("--ndf", type=int, default=32, help="discriminator width (default 32)")
    p.add_argument("--lr-d", type=float, default=2e-4, help="discriminator Adam learning rate (default 2e-4)")
    p.add_argument("--lr-g", type=float, default=5e-4, help="generator Adam learning rate (default 5e-4)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization, z and data order (default 0)")
    p.add_argument("--out", default=f"runs/{kind}", help=f"output folder (default runs/{kind})")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--allow-lr-change", action="store_true",
                   help="with --resume: continue a run whose --lr-d/--lr-g were different (e.g. lower after a "
                   "divergence); the change and its step are recorded in the checkpoints and summary.json")
    p.add_argument("--smoke", action="store_true",
                   help="quick pipeline check: 256 images, batch 32, 1 epoch, 500 scored samples; its samples look "
                   "like noise and its numbers are meaningless")
    p.add_argument("--sweep", default=None, metavar="NAME",
                   help="run one of the report's experiments instead of a single run: nz (10/100/1000), epochs (30), "
                   "lr (x100, /100), ngf (256), report (all of them plus the default), or variants (report without the "
                   "default); writes results.md/csv to --out")
    p.add_argument("--samples", type=int, default=0, metavar="N", help="write N generated images to --samples-out")
    p.add_argument("--samples-out", default=None, metavar="FILE.npz",
                   help="npz for --samples: 'images' uint8 (N,32,32,1)" + (", 'labels'" if kind == "cgan" else ""))
    p.add_argument("--dataset", choices=("mnist", "digits"), default="digits",
                   help="'mnist': the MNIST files in --data-dir; 'digits' (default): the embedded scikit-learn "
                   "digits, NOT MNIST, always available")
    p.add_argument("--data-dir", default=None, help="raw-data folder holding mnist/ (default $RDFIA_JAX_DATA)")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N iterations (default 500)")
    p.add_argument("--sample-every", type=int, default=250,
                   help="sample grid from the fixed z every N iterations (default 250; 0 = only at the end)")
    p.add_argument("--no-score", action="store_true", help="skip the classifier score at the end")
    p.add_argument("--score-samples", type=int, default=10_000,
                   help="generated images scored, >= 1 (default 10000; --no-score skips the score)")
    p.set_defaults(func=lambda args: main(args, kind))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gan", help="train a DCGAN (embedded digits by default, or MNIST): loss curves, sample grids, "
        "interpolation, classifier score",
        description="Train the practical's DCGAN (Adam, BCE, non-saturating G loss) and write figures, "
        "checkpoints, history.csv and summary.json to --out. --sweep runs the report's experiments. "
        "Rerunning a finished run with the same settings only shows where its outputs are.")
    _add_common(p, "gan")
    p = subparsers.add_parser(
        "cgan", help="train a conditional DCGAN (embedded digits by default, or MNIST): class grid (fixed z x "
        "10 classes), label accuracy",
        description="Train the practical's conditional DCGAN and write figures (including the grid of fixed z "
        "columns x 10 class rows), checkpoints and summary.json to --out. Rerunning a finished run with the "
        "same settings only shows where its outputs are.")
    _add_common(p, "cgan")


def options(args: argparse.Namespace, kind: str):
    """``(GanConfig, RunOptions)`` from the parsed arguments, every value and output path checked.

    Imports no JAX: a bad argument is refused in milliseconds, before any data loading or compilation.
    """
    from rdfia_jax.gan import config

    if args.sweep is not None:
        config.sweep_runs(args.sweep)  # unknown sweep -> RdfiaError
        if args.samples:
            raise RdfiaError("--samples is for single runs, not with --sweep")
    cfg = config.GanConfig(
        kind=kind, nz=args.nz, ngf=getattr(args, "ngf", 32), ndf=getattr(args, "ndf", 32),
        lr_d=args.lr_d, lr_g=args.lr_g, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed)
    opts = config.RunOptions(
        out=args.out, dataset=args.dataset, data_dir=args.data_dir, resume=args.resume,
        allow_lr_change=args.allow_lr_change, smoke=args.smoke, save_every=args.save_every,
        sample_every=args.sample_every, score=not args.no_score, score_samples=args.score_samples,
        samples=args.samples, samples_out=args.samples_out)
    opts.check_paths()
    return cfg, opts


def main(args: argparse.Namespace, kind: str) -> int:
    cfg, opts = options(args, kind)
    from rdfia_jax.gan import run, sweeps

    if args.sweep is not None:
        summaries = sweeps.run_sweep(args.sweep, cfg, opts)
        for s in summaries:
            print(_line(s))
        print(f"results: {args.out}/results.md, {args.out}/results.csv, {args.out}/results.json")
        if args.smoke:
            print("note: " + run.smoke_note(kind))
        return 0
    summary = run.train(cfg, opts)
    print(_line(summary))
    if summary.get("score_real"):
        r = summary["score_real"]
        print(f"  real digits (ceiling): confidence {r['confidence']:.3f}, coverage {r['coverage']:.3f}, "
              f"Frechet {r['frechet']:.3f}" + (f", label accuracy {r['label_accuracy']:.3f}" if kind == "cgan" else ""))
    print(f"outputs: {args.out} (summary.json, losses.png, samples_final.png, ...)")
    if summary.get("smoke"):
        print("note: " + run.smoke_note(kind))
    return 0


def _line(s: dict) -> str:
    sc = s.get("score") or {}
    parts = [f"{s['name']}: {s['status']}, {s['steps']}/{s['total_steps']} iterations"]
    if s.get("steps_per_s"):
        parts.append(f"{s['steps_per_s']:.2f} it/s")
    if sc:
        parts.append(f"confidence {sc['confidence']:.3f}, coverage {sc['coverage']:.3f}, Frechet {sc['frechet']:.3f}"
                     + (f", label accuracy {sc['label_accuracy']:.3f}" if "label_accuracy" in sc else ""))
    if not s.get("is_real_mnist"):
        parts.append("data NOT MNIST: " + s["data_description"])
    return "; ".join(parts)
