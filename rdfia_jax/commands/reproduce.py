"""``rdfia-jax reproduce``: every section of the report in one command, with a report beside the original."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from rdfia_jax.reproduce.budget import BUDGETS, PUBLIC_BUDGETS

    p = subparsers.add_parser(
        "reproduce", help="run the report's four sections and write OUT/report.md and OUT/index.html",
        description="Run the practical's sections at a budget and write a report (report.md, and index.html "
        "with the figures embedded) where every number stands beside the student report's and the PyTorch "
        "practical's, with a status per row. Budgets: " + "; ".join(f"'{k}': {BUDGETS[k].description}"
                                                                     for k in PUBLIC_BUDGETS)
        + ". Running the same command again reuses the finished sections and rebuilds the report; "
        "--resume continues an interrupted section from its checkpoints.")
    p.add_argument("--budget", choices=PUBLIC_BUDGETS, default="demo", help="how much to run (default demo)")
    p.add_argument("--sections", default="1,2,3,4", help="comma-separated sections to run (default 1,2,3,4)")
    p.add_argument("--data-dir", default=None,
                   help="raw-data folder (MNIST, BSDS500, 15SceneData, imagenet_val_25) for quick/full "
                   "(default $RDFIA_JAX_DATA); demo uses embedded data only")
    p.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted section from its checkpoints instead of restarting it")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rdfia_jax.reproduce.runner import parse_sections, reproduce

    sections = parse_sections(args.sections)
    result = reproduce(args.budget, sections, out=args.out, data_dir=args.data_dir, resume=args.resume)
    failed = [s for s, r in result["records"].items() if r.get("status") == "failed"]
    return 1 if failed else 0
