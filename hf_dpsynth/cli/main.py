"""Entry point of the ``hf-dpsynth`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hf_dpsynth._version import __version__
from hf_dpsynth.cli import audit, card, demo, evaluate, generate, info, push, run, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dpsynth",
        description="Differentially private synthetic data for the Hugging Face ecosystem.",
    )
    parser.add_argument("--version", action="version", version=f"hf-dpsynth {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="Show the Python traceback of an error instead of one message.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (info, run, train, generate, evaluate, audit, card, push, demo):
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
    return parser


#: The exit status of an error hf_dpsynth raised on purpose (bad input, a refused setting).
USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. An error the library raises on purpose (``hf_dpsynth.errors``) prints
    one message — what was wrong, where, how to fix it — and exits with status 2; ``--debug``
    shows the traceback instead."""
    from hf_dpsynth.errors import DPSynthError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return USAGE_ERROR
    try:
        return int(args.func(args) or 0)
    except DPSynthError as exc:
        if args.debug:
            raise
        print(f"hf-dpsynth {args.command}: error: {exc}\n(run with --debug for the traceback)", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
