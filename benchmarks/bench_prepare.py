"""Time to prepare the real datasets: load, check, bound, scrub PII, encode, tokenise.

    python benchmarks/bench_prepare.py [--data ../shared/data] [--repeats 3]

UCI Adult (32,561 rows, TabularCodec with the public Adult schema, shuffled column order) and the
SMS Spam Collection (5,574 messages, TextCodec with a label prefix, PII scrubbing on), tokenised
with the default model's tokenizer (SmolLM2). Prints each stage's best-of-R time and the total.
Target: each dataset under 10 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_dpsynth.data import (  # noqa: E402
    TabularCodec,
    TextCodec,
    adult_schema,
    load_sms_spam_collection,
    load_uci_adult,
    prepare_dataset,
)
from hf_dpsynth.models import load_model_and_tokenizer  # noqa: E402

TARGET_S = 10.0


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(name: str, load, codec, tokenizer, repeats: int) -> float:
    t_load, dataset = _best(load, repeats)
    t_prep, prepared = _best(lambda: prepare_dataset(dataset, codec), repeats)
    t_tok, examples = _best(lambda: prepared.tokenize(tokenizer, max_length=512), repeats)
    total = t_load + t_prep + t_tok
    tokens = sum(len(ids) for ids in examples.input_ids)
    print(
        f"{name:<24} rows {len(dataset):>6,}  load {t_load:5.2f} s  check+bound+scrub+encode {t_prep:5.2f} s  "
        f"tokenise {t_tok:5.2f} s  total {total:5.2f} s  ({tokens:,} tokens)  "
        f"{'OK' if total < TARGET_S else 'ABOVE'} target {TARGET_S:.0f} s"
    )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = Path(args.data)
    _, tokenizer = load_model_and_tokenizer()
    print(f"cores: {os.cpu_count()}; best of {args.repeats} runs per stage")
    adult = run(
        "UCI Adult (tabular)", lambda: load_uci_adult(data / "uci-adult"), TabularCodec(adult_schema()), tokenizer, args.repeats
    )
    sms = run(
        "SMS Spam (text + PII)",
        lambda: load_sms_spam_collection(data / "sms-spam-collection"),
        TextCodec(conditions={"label": ["ham", "spam"]}),
        tokenizer,
        args.repeats,
    )
    sys.exit(0 if max(adult, sms) < TARGET_S else 1)


if __name__ == "__main__":
    main()
