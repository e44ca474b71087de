"""``hf-dpsynth run RECIPE``: the whole pipeline of a recipe, resumable."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "run"
HELP = "Run a recipe end to end (data → DP statistics → training/generation → evaluation → cards); resumable."


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe path and its command-line overrides (shared by run, train and generate)."""
    parser.add_argument("recipe", help="A recipe YAML file (see recipes/).")
    parser.add_argument("--output-dir", default=None, help="Where to write (default: the recipe's output.dir).")
    parser.add_argument("--model", default=None, help="Override model.name (default | tiny | a Hub id or path).")
    parser.add_argument("--data-source", default=None, help="Override data.source (e.g. the UCI Adult folder).")
    parser.add_argument("--max-records", type=int, default=None, help="Override data.max_records.")
    parser.add_argument("--max-steps", type=int, default=None, help="Override training.max_steps.")
    parser.add_argument("--num-records", type=int, default=None, help="Override generation.num_records.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Override any recipe key (value read as YAML, checked like the file and part of the "
                             "run's fingerprint), e.g. --set privacy.epsilon=1 --set data.source=my.csv; repeatable.")


def recipe_from_args(args: argparse.Namespace, **sections: dict[str, Any]) -> Any:
    """The recipe with the command line's overrides (and ``sections``) applied."""
    from hf_dpsynth.pipeline import load_recipe
    from hf_dpsynth.pipeline.recipe import parse_override

    recipe = load_recipe(args.recipe)
    overrides: dict[str, dict] = {}
    for text in getattr(args, "overrides", None) or ():
        section, key, value = parse_override(text)
        overrides.setdefault(section, {})[key] = value
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    for section, key, value in (
        ("model", "name", args.model), ("data", "source", args.data_source), ("data", "max_records", args.max_records),
        ("training", "max_steps", args.max_steps), ("generation", "num_records", args.num_records),
    ):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return recipe.with_overrides(**overrides) if overrides else recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hf_dpsynth.pipeline import run_recipe

    run_recipe(recipe_from_args(args), output_dir=args.output_dir)
    return 0
