"""``hf-dpsynth generate RECIPE``: a recipe up to its synthetic dataset and cards, without evaluation."""

from __future__ import annotations

import argparse

from hf_dpsynth.cli.run import add_recipe_arguments, recipe_from_args

NAME = "generate"
HELP = "Run a recipe up to the synthetic dataset and its cards (no evaluation); reuses a trained adapter."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hf_dpsynth.pipeline import run_recipe

    run_recipe(recipe_from_args(args, evaluation={"enabled": False}), output_dir=args.output_dir)
    return 0
