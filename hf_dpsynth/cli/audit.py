"""``hf-dpsynth audit RECIPE``: the one-run privacy audit of a recipe's DP training (its own run)."""

from __future__ import annotations

import argparse

from hf_dpsynth.cli.run import add_recipe_arguments, recipe_from_args

NAME = "audit"
HELP = "Audit a recipe's DP training with canaries (its own run at the release's hyper-parameters; owner-only)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    parser.add_argument("--num-canaries", type=int, default=None, help="Override audit.num_canaries (>= 200).")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_dpsynth.pipeline.audit_run import audit_recipe

    extra = {"audit": {"num_canaries": args.num_canaries}} if args.num_canaries else {}
    recipe = recipe_from_args(args, **extra)
    # Beside the run folder, never inside it: a run folder holds one run.
    out = Path(str(args.output_dir or recipe.output.dir).rstrip("/") + "-audit")
    report = audit_recipe(recipe, output_dir=out)
    return 3 if report.refuted else 0
