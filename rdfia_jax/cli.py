"""The ``rdfia-jax`` command line: one entry point, one subcommand module per section.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)`` that adds its subcommands
and sets ``func`` on their parsers; ``func(args)`` returns an exit status (or None for 0).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rdfia_jax.errors import RdfiaError

COMMAND_MODULES = (
    "rdfia_jax.commands.inspect",   # summary, predict, activations
    "rdfia_jax.commands.weights",   # weights convert|fetch|list, eval
    "rdfia_jax.commands.data",      # data prepare|list
    "rdfia_jax.commands.transfer",  # transfer
    "rdfia_jax.commands.vis",       # saliency, fool, classvis, visualize
    "rdfia_jax.commands.attack",    # attack
    "rdfia_jax.commands.dann",      # dann
    "rdfia_jax.commands.gan",       # gan, cgan
    "rdfia_jax.commands.reproduce",  # reproduce
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdfia-jax",
        description="The RDFIA deep-learning practical in JAX: VGG16 & transfer learning, "
        "visualization, domain adaptation (DANN), GANs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rdfia_jax import xla

    xla.retain_host_memory()  # before JAX starts its threads (see rdfia_jax.xla)
    try:
        status = args.func(args)
    except RdfiaError as err:
        print(f"rdfia-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rdfia-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
