"""``rdfia-jax dann RUN``: domain adaptation MNIST -> MNIST-M (report section 3)."""

from __future__ import annotations

import argparse

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import check_writable_dir


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise RdfiaError(f"--seeds {text!r}: expected comma-separated non-negative integers, e.g. 0,1,2") from None
    if not seeds:
        raise RdfiaError("--seeds: give at least one seed, e.g. 0 or 0,1,2")
    if any(s < 0 for s in seeds):
        raise RdfiaError(f"--seeds {text!r}: seeds must be non-negative integers, e.g. 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise RdfiaError(f"--seeds {text!r}: repeated seed")
    return seeds


def register(subparsers) -> None:
    from rdfia_jax.dann.catalogue import DATASET_PAIRS, INPUT_NORMS, RUN_NAMES

    p = subparsers.add_parser(
        "dann",
        help="domain adaptation MNIST -> MNIST-M: DANN, its variants, baselines, pseudo-labelling",
        description="Train and evaluate one of the section's runs (or all of them) and write the "
        "results table (results.md, results.csv, results.json), t-SNE figures and training curves to --out. "
        "Runs: " + ", ".join(RUN_NAMES) + ". The default data is MNIST -> MNIST-M (--dataset-pair mnist: "
        "the MNIST files and BSDS500 are needed); --dataset-pair digits needs no download. "
        "Killed runs continue with --resume and the same flags.",
    )
    p.add_argument("run", metavar="RUN", help=f"one of {', '.join(RUN_NAMES)}, or 'all'")
    p.add_argument("--seeds", default="0", help="comma-separated non-negative seeds (network init and data "
                   "order), e.g. 0,1,2 for mean ± sd (default 0)")
    p.add_argument("--epochs", type=int, default=None,
                   help="number of epochs (default: the run's own: 10 for the baselines, 20 otherwise; 1 with --smoke)")
    p.add_argument("--gamma", type=float, default=2.0,
                   help="steepness of lambda(p) = 2/(1+exp(-gamma p)) - 1: 2 = the practical (default), 10 = the paper")
    p.add_argument("--lr-per-epoch", action="store_true",
                   help="anneal the learning rate per epoch like the original notebook (default: per step)")
    p.add_argument("--input-norm", choices=tuple(INPUT_NORMS), default="source",
                   help="input standardization: " + "; ".join(f"'{k}': {v}" for k, v in INPUT_NORMS.items())
                   + " (default 'source'; the target's statistics use no labels)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="also keep an exponential moving average of the parameters with this decay "
                   "(e.g. 0.999) and report the averaged network (the last iterate's numbers stay in "
                   "result.json); 0 = off, the practical (default); 0.999 is recommended, with --clip-norm 3")
    p.add_argument("--clip-norm", type=float, default=None,
                   help="cap the gradient's global norm at this value before the momentum (default: no "
                   "clipping, the practical); every run logs the unclipped norm as grad_norm. "
                   "Recommended: --lr-per-epoch --clip-norm 3 --ema-decay 0.999 (chosen by source- "
                   "and domain-side rules fixed before their runs; benchmarks/RESULTS.md, section 3)")
    p.add_argument("--smoke", action="store_true",
                   help="quick pipeline check: small subsets, 1 epoch, small t-SNE (numbers meaningless)")
    p.add_argument("--out", default="runs/dann", help="output folder (default runs/dann); each run writes OUT/RUN[-settings]/seedN/, e.g. "
                   "dann-lr-per-epoch/seed0, and OUT/results.md covers all of them")
    p.add_argument("--resume", action="store_true",
                   help="continue runs from their last checkpoint in --out (exactly as if never interrupted); "
                   "pass the same flags as the interrupted run: the folder name encodes them, and a run "
                   "without a checkpoint for these flags starts fresh (with a message naming the runs found)")
    p.add_argument("--dataset-pair", choices=tuple(DATASET_PAIRS), default="mnist",
                   help="'mnist' (the default): MNIST -> MNIST-M (needs the MNIST files and BSDS500, see "
                   "`rdfia-jax data --help`); 'digits': the embedded sklearn digits -> digits_m "
                   "(NOT MNIST; no download)")
    p.add_argument("--data-dir", default=None, help="raw-data folder (default $RDFIA_JAX_DATA), holding "
                   "mnist/ and bsds500/train/")
    p.add_argument("--bsds-dir", default=None, help="folder of the BSDS500 train JPEGs that MNIST-M is built "
                   "from (default DATA_DIR/bsds500/train)")
    p.add_argument("--no-figures", action="store_true", help="skip the t-SNE and curve figures")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rdfia_jax.dann import catalogue, runs
    from rdfia_jax.dann.config import DannConfig

    # Every argument is checked before any data is loaded or any folder written.
    names = list(catalogue.RUN_NAMES) if args.run == "all" else [args.run]
    for name in names:
        catalogue.get_spec(name)
    seeds = _parse_seeds(args.seeds)
    config = DannConfig(epochs=args.epochs, gamma=args.gamma, lr_per_epoch=args.lr_per_epoch,
                        input_norm=args.input_norm, ema_decay=args.ema_decay, clip_norm=args.clip_norm,
                        smoke=args.smoke, dataset_pair=args.dataset_pair, data_dir=args.data_dir,
                        bsds_dir=args.bsds_dir)
    if args.bsds_dir is not None and args.dataset_pair != "mnist":
        raise RdfiaError(f"--bsds-dir is for MNIST-M (--dataset-pair mnist), not --dataset-pair {args.dataset_pair}")
    check_writable_dir(args.out)
    records = runs.run_many(names, seeds, config, out=args.out, resume=args.resume, figures=not args.no_figures)
    for r in records:
        print(f"{r['run']:>15} seed {r['seed']}: {r['source']} {r['source_acc']:.4f}  "
              f"{r['target']} {r['target_acc']:.4f}  domain {r['domain_acc']:.4f}  PAD {r['pad']:.3f}  "
              f"({r['steps']} steps, {r['wall_s']:.0f} s, {r['steps_per_s']:.2f} steps/s)")
    print(f"results: {args.out}/results.md, {args.out}/results.csv")
    return 0
