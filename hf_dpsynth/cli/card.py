"""``hf-dpsynth card RUN_DIR``: (re)render a run's DP dataset and adapter cards from its ledger."""

from __future__ import annotations

import argparse

NAME = "card"
HELP = "Render a run's DP dataset card (README.md) and adapter card from its ledger."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="The output folder of `hf-dpsynth run`.")
    parser.add_argument("--include-owner-only", action="store_true",
                        help="Also render owner-only cards (metrics on private data, labelled as not covered by the "
                             "DP guarantee) to README.owner.md and adapter.README.owner.md; README.md stays shareable. "
                             "Owner-only cards are never published.")


def run(args: argparse.Namespace) -> int:
    from hf_dpsynth.pipeline.folder import load_run_recipe
    from hf_dpsynth.pipeline.runner import render_run_cards

    recipe = load_run_recipe(args.run_dir)
    # Never charges: a stage that has not finished is refused (run `hf-dpsynth run` first).
    render_run_cards(args.run_dir, recipe, include_owner_only=args.include_owner_only)
    return 0
