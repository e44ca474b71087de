"""``hf-dpsynth demo``: the whole pipeline, CPU-sized, on the embedded default model and the SMS data.

It runs the SMS recipe at demo size through the same runner as ``hf-dpsynth run``: PII scrubbing,
a DP label histogram and DP LoRA fine-tuning on one ledger, label-conditioned sampling, evaluation
against held-out real messages and a public-only baseline (the base model prompted without any
private data), and the DP dataset and adapter cards. The demo makes no utility claim.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

NAME = "demo"
HELP = "Run a CPU-sized SMS spam demo on the embedded default model (no arguments needed)."

# Delivered by the library but not run by the CPU demo.
NOT_IN_DEMO = (
    "the privacy audit (hf_dpsynth.audit: canaries, one-run ε lower bound) — a second training run",
    "publishing (hf-dpsynth push, behind the safety gates) — needs a Hub account",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="hf_dpsynth_demo", help="Where the demo writes its outputs.")
    parser.add_argument("--epsilon", type=float, default=4.0,
                        help="Total ε of the run: 5%% for the DP label histogram, 95%% for DP fine-tuning (default 4).")
    parser.add_argument("--records", type=int, default=512, help="SMS messages to fine-tune on (default 512).")
    parser.add_argument("--steps", type=int, default=8, help="DP-SGD steps (default 8).")
    parser.add_argument("--samples", type=int, default=64, help="Synthetic messages to generate (default 64).")
    parser.add_argument("--model", choices=["default", "tiny"], default="default",
                        help="'tiny': a random tiny model, for a seconds-long smoke run (tests).")


# The default model's chat format (public; {label} is filled in): with a bare "label: ham" prefix the
# instruct model writes code. recipes/sms_spam_text.yaml uses the same prompt.
SMS_PROMPT = "<|im_start|>user\nWrite one {label} SMS text message.<|im_end|>\n<|im_start|>assistant\n"


def demo_recipe(args: argparse.Namespace) -> dict:
    """The demo as a recipe (the same format as recipes/*.yaml)."""
    return {
        "name": "demo",
        "data": {"source": "sms_spam", "split": "train", "modality": "text", "text_column": "text",
                 "label_column": "label", "labels": ["ham", "spam"], "prompt_template": SMS_PROMPT,
                 "max_records": args.records},
        "privacy": {"epsilon": args.epsilon, "unit": "example", "shares": {"label_histogram": 0.05, "training": 0.95}},
        "model": {"name": args.model},
        "lora": {"r": 8, "alpha": 16, "top_layers": 4},  # top layers only: a short backward pass
        "training": {"logical_batch_size": min(64, args.records), "per_device_train_batch_size": 16,
                     "max_steps": args.steps, "learning_rate": 2e-3, "max_length": 80},
        "generation": {"method": "adapter_sampler", "num_records": args.samples, "max_new_tokens": 48},
        "evaluation": {"enabled": True, "test_split": "test", "max_test_records": 500, "public_only_baseline": True},
        "output": {"dir": args.output_dir},
    }


def run(args: argparse.Namespace) -> int:
    from hf_dpsynth.models import DEFAULT_MODEL_NAME
    from hf_dpsynth.pipeline import load_recipe, run_recipe
    from hf_dpsynth.generation.io import load_synthetic
    from hf_dpsynth.pipeline.folder import STATE_FILE
    from hf_dpsynth.resources import SMS_SPAM_CITATION

    start = time.perf_counter()
    out = Path(args.output_dir).resolve()
    state = out / STATE_FILE
    if state.is_file() and json.loads(state.read_text(encoding="utf-8")).get("name") == "demo":
        # The demo's data is a published corpus and each demo run is a release of its own: start
        # afresh rather than resume. (For private data, `hf-dpsynth run` never forgets a spend.)
        print(f"Removing the previous demo outputs in {out}: each demo run is a new release.")
        shutil.rmtree(out)
    model = DEFAULT_MODEL_NAME if args.model == "default" else "a random tiny model (smoke run)"
    print(f"hf_dpsynth demo: {args.records} messages of the SMS Spam Collection, {model}, ε = {args.epsilon:g}")
    print(f"Source: {SMS_SPAM_CITATION}")
    summary = run_recipe(load_recipe(demo_recipe(args)), output_dir=out)

    synthetic = load_synthetic(out / "synthetic")
    if len(synthetic):
        print("\nA few synthetic messages (post-processing of the DP adapter):")
        for row in synthetic.select(range(min(6, len(synthetic)))):
            print(f"    {row['label']:>4}: {row['text'][:100]!r}")
    print("\nNot run by this demo:")
    for stage in NOT_IN_DEMO:
        print(f"    - {stage}")
    print(f"\nDone in {time.perf_counter() - start:.0f} s (ε spent {summary.epsilon_spent:.3g}). Outputs in {out}:")
    for name, what in (
        ("synthetic/", "the synthetic dataset (data.parquet)"),
        ("README.md", "its DP dataset card"),
        ("adapter/", "the DP LoRA adapter, with its card"),
        ("report/report.md", "the evaluation report (report_owner/: owner-only metrics on private data)"),
        ("privacy_ledger.json", "every privacy charge of the run"),
    ):
        if (out / name.rstrip("/")).exists():
            print(f"    {name:<21} {what}")
    print("The demo makes no utility claim: eight DP steps on 512 messages teach a 135M model little.")
    return 0
