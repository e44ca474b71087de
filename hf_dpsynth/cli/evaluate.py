"""``hf-dpsynth evaluate RUN_DIR``: evaluate a finished run (no privacy stage is re-run or re-charged)."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "Evaluate a run's synthetic data against held-out real data (and a public-only baseline)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="The output folder of `hf-dpsynth run` / `generate`.")
    parser.add_argument("--public-only-baseline", action="store_true",
                        help="Also generate and evaluate the public-only baseline (base model, no private data).")
    parser.add_argument("--max-test-records", type=int, default=None, help="Held-out real records to test on.")


def run(args: argparse.Namespace) -> int:
    from hf_dpsynth.pipeline.folder import load_run_recipe
    from hf_dpsynth.pipeline.runner import evaluate_run

    recipe = load_run_recipe(args.run_dir)
    evaluation = {"enabled": True, "public_only_baseline": args.public_only_baseline}
    if args.max_test_records is not None:
        evaluation["max_test_records"] = args.max_test_records
    # Never charges: a stage that has not finished is refused (run `hf-dpsynth run` first).
    evaluate_run(args.run_dir, recipe.with_overrides(evaluation=evaluation))
    return 0
