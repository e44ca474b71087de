"""``hf-dpsynth demo``: the whole pipeline, CPU-sized, on the embedded default model and the SMS data.

It runs an SMS recipe at demo size through the same runner as ``hf-dpsynth run``. By default
(``--method keywords``, recipes/sms_spam_keywords.yaml): PII scrubbing, DP keywords per label (the
whole ε), the base model prompted with the public label descriptions and a few DP keywords per
message, evaluation against held-out real messages and against the public-only baseline (the same
prompts without keywords), and the DP dataset card. ``--method finetune`` runs the DP LoRA
fine-tuning recipe at demo size instead (a DP label histogram and DP-SGD on one ledger). It prints
the TSTR accuracy and spam F1 of both, and a few messages of each label.
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
    parser.add_argument("--method", choices=["keywords", "finetune"], default="keywords",
                        help="keywords (default): DP keywords in the base model's prompts, no training; finetune: a DP "
                             "label histogram (5%% of ε) and DP LoRA fine-tuning (95%%).")
    parser.add_argument("--epsilon", type=float, default=4.0, help="Total ε of the run (default 4).")
    parser.add_argument("--records", type=int, default=None,
                        help="SMS messages to use (default: all 4,459 training messages for keywords, 512 for finetune).")
    parser.add_argument("--steps", type=int, default=8, help="finetune: DP-SGD steps (default 8).")
    parser.add_argument("--samples", type=int, default=None,
                        help="Synthetic messages to generate (default 200 for keywords, 64 for finetune).")
    parser.add_argument("--model", choices=["default", "tiny"], default="default",
                        help="'tiny': a random tiny model, for a seconds-long smoke run (tests).")


# The default model's chat format (public; {label} is filled in): with a bare "label: ham" prefix the
# instruct model writes code. recipes/sms_spam_text.yaml uses the same prompt.
SMS_PROMPT = "<|im_start|>user\nWrite one {label} SMS text message.<|im_end|>\n<|im_start|>assistant\n"


def demo_recipe(args: argparse.Namespace) -> dict:
    """The demo as a recipe (the same format as recipes/*.yaml)."""
    evaluation = {"enabled": True, "test_split": "test", "max_test_records": 500, "public_only_baseline": True}
    if args.method == "keywords":
        return {
            "name": "demo",
            "data": {"source": "sms_spam", "split": "train", "modality": "text", "text_column": "text",
                     "label_column": "label", "labels": ["ham", "spam"], "max_records": args.records,
                     "prompt_template": "<|im_start|>user\nWrite {label_description}.{keywords}<|im_end|>\n"
                                        "<|im_start|>assistant\n",
                     "label_descriptions": {"ham": "an everyday personal text message",
                                            "spam": "an unsolicited advertising or scam text message"}},
            "privacy": {"epsilon": args.epsilon, "unit": "example", "shares": {"keywords": 1.0}},
            "model": {"name": args.model},
            # The tiny test model's tokenizer has ten whole words: none is skipped as most common.
            "keywords": {"k": 8, "per_record": 5, "bias": 4.0, "weighting": "contrast",
                         "skip_most_common": 0 if args.model == "tiny" else 100},
            "generation": {"method": "prompted", "label_distribution": "uniform", "num_records": args.samples or 200,
                           "batch_size": 64, "max_new_tokens": 40},
            "evaluation": evaluation,
            "output": {"dir": args.output_dir},
        }
    records = args.records or 512
    return {
        "name": "demo",
        "data": {"source": "sms_spam", "split": "train", "modality": "text", "text_column": "text",
                 "label_column": "label", "labels": ["ham", "spam"], "prompt_template": SMS_PROMPT,
                 "max_records": records},
        "privacy": {"epsilon": args.epsilon, "unit": "example", "shares": {"label_histogram": 0.05, "training": 0.95}},
        "model": {"name": args.model},
        "lora": {"r": 8, "alpha": 16, "top_layers": 4},  # top layers only: a short backward pass
        "training": {"logical_batch_size": min(64, records), "per_device_train_batch_size": 16,
                     "max_steps": args.steps, "learning_rate": 2e-3, "max_length": 80},
        "generation": {"method": "adapter_sampler", "num_records": args.samples or 64, "max_new_tokens": 48},
        "evaluation": evaluation,
        "output": {"dir": args.output_dir},
    }


def _utility_table(out: Path) -> list[str]:
    """TSTR accuracy and spam F1 (TF-IDF) of each setting, from the run's saved metrics (owner-only)."""
    path = out / "metrics.json"
    if not path.is_file():
        return []
    metrics = json.loads(path.read_text(encoding="utf-8"))["metrics"]
    wanted = {"TSTR accuracy (TF-IDF + logistic regression)": "accuracy",
              "TSTR F1 of 'spam' (TF-IDF + logistic regression)": "spam F1"}
    table: dict[str, dict[str, float]] = {}
    for m in metrics:
        if m["name"] in wanted and isinstance(m["value"], (int, float)):
            table.setdefault(m["setting"], {})[wanted[m["name"]]] = m["value"]
    width = max((len(s) for s in table), default=0)
    return [f"    {setting:<{width}}  accuracy {v.get('accuracy', float('nan')):.3f}  spam F1 {v.get('spam F1', float('nan')):.3f}"
            for setting, v in table.items()]


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
    method = "DP keywords in the base model's prompts" if args.method == "keywords" else "DP LoRA fine-tuning"
    used = f"{args.records} messages" if args.records else ("all training messages" if args.method == "keywords"
                                                             else "512 messages")
    print(f"hf_dpsynth demo: {method}, {used} of the SMS Spam Collection, {model}, ε = {args.epsilon:g}")
    print(f"Source: {SMS_SPAM_CITATION}")
    summary = run_recipe(load_recipe(demo_recipe(args)), output_dir=out)

    synthetic = load_synthetic(out / "synthetic")
    if len(synthetic):
        print("\nA few synthetic messages of each label (post-processing of the DP release):")
        for label in ("ham", "spam"):
            rows = [r for r in synthetic.select(range(min(200, len(synthetic)))) if r["label"] == label][:3]
            for row in rows:
                print(f"    {label:>4}: {' '.join(row['text'].split())[:110]!r}")
    table = _utility_table(out)
    if table:
        print("\nA classifier trained on each set, tested on held-out real messages (owner-only: not DP):")
        print("\n".join(table))
    print("\nNot run by this demo:")
    for stage in NOT_IN_DEMO:
        print(f"    - {stage}")
    print(f"\nDone in {time.perf_counter() - start:.0f} s (ε spent {summary.epsilon_spent:.3g}). Outputs in {out}:")
    for name, what in (
        ("synthetic/", "the synthetic dataset (data.parquet)"),
        ("README.md", "its DP dataset card"),
        ("keywords.json", "the DP keywords per label"),
        ("adapter/", "the DP LoRA adapter, with its card"),
        ("report/report.md", "the evaluation report (report_owner/: owner-only metrics on private data)"),
        ("privacy_ledger.json", "every privacy charge of the run"),
    ):
        if (out / name.rstrip("/")).exists():
            print(f"    {name:<21} {what}")
    return 0
