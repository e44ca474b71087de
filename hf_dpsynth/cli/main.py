"""Entry point of the ``hf-dpsynth`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hf_dpsynth import __version__
from hf_dpsynth.cli import audit, card, demo, evaluate, generate, info, push, run, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dpsynth",
        description="Differentially private synthetic data for the Hugging Face ecosystem.",
    )
    parser.add_argument("--version", action="version", version=f"hf-dpsynth {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (info, run, train, generate, evaluate, audit, card, push, demo):
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
