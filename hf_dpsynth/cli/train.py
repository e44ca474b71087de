"""``hf-dpsynth train RECIPE``: a recipe up to its DP adapter (preparation, DP statistics, training)."""

from __future__ import annotations

import argparse

from hf_dpsynth.cli.run import add_recipe_arguments, recipe_from_args

NAME = "train"
HELP = "Run a recipe up to its DP adapter (resumable; `run` or `generate` later reuse it)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hf_dpsynth.pipeline import run_recipe

    run_recipe(recipe_from_args(args), output_dir=args.output_dir, stop_after="training")
    return 0
