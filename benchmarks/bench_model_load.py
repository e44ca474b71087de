"""Time to load the embedded default model (SmolLM2-135M-Instruct) from the cache.

Each load runs in a fresh subprocess, so nothing is shared with an earlier load in this process
(imports are timed apart from the load itself). With ``--fresh`` the one-off GGUF conversion into a
temporary cache is timed too.

    python benchmarks/bench_model_load.py [--repeats 3] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

_WORKER = r"""
import json, time
t0 = time.perf_counter()
import torch  # noqa: F401
# transformers imports its model and tokenizer modules lazily: import them here, so that the load
# below times reading the cache, not Python imports (which any use of transformers pays once).
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401
from hf_dpsynth.models import load_model_and_tokenizer
t1 = time.perf_counter()
model, tokenizer = load_model_and_tokenizer()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def _run(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="Also time the one-off conversion into an empty cache.")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.fresh:
        with tempfile.TemporaryDirectory() as cache:
            first = _run({**env, "HF_DPSYNTH_CACHE": cache})
            print(f"first load (GGUF dequantisation + conversion into the cache): {first['load_s']:.1f} s")
    _run(env)  # make sure the real cache is populated
    loads = [_run(env) for _ in range(args.repeats)]
    load_s = [r["load_s"] for r in loads]
    print(f"default model: {loads[0]['params'] / 1e6:.1f}M parameters")
    print(f"load from cache (model + tokenizer), {args.repeats} fresh processes: "
          f"median {statistics.median(load_s):.2f} s (min {min(load_s):.2f}, max {max(load_s):.2f}); target < 2 s")
    print(f"(importing torch + transformers' Llama and tokenizer modules, once per process, not counted: "
          f"median {statistics.median(r['import_s'] for r in loads):.1f} s)")


if __name__ == "__main__":
    main()
