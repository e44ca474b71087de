"""Example-gradients per CPU-second: today's DP trainer against the fast path, on a recipe's own work.

    python benchmarks/bench_training.py --throughput [--recipe recipes/sms_spam_text.yaml] [--steps 3]

Both modes are ``DPSynthTrainer`` on the recipe's prepared data, LoRA placement, physical chunk and
Poisson rate q = logical batch / N, with the same draws and noise (``dp_seed=0``):

  plain  ``activation_cache='off'``, chunks packed in draw order: the trainer before issue 14;
  fast   the frozen layers below the lowest LoRA layer cached (in memory), logits only on target
         tokens, chunks packed longest first (``train_sampling_strategy='group_by_length'``).

The fast mode runs twice: *cold* (empty cache: every example drawn is a miss, as on a run's first
draws) and *warm* (the rows of the timed draws cached beforehand, timed apart as the cost of a
miss). Per step: examples drawn / CPU seconds of this process (``time.process_time``: both cores'
work, unlike wall time on a shared machine). The first step of each mode is a warm-up and is not
timed. A whole schedule of T steps then costs T·(warm step) + (expected distinct examples drawn,
N·(1 − (1 − q)^T))·(cost of one miss): printed for the recipe's T and for 10 T. The final adapters
of the plain and the warm fast mode are compared (same draws, same noise): a check that both did
the same work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "training_throughput.json"


def _trainer(recipe, prepared, model, tok, out: str, steps: int, fast: bool):
    import dataclasses

    from hf_dpsynth import DPSynthTrainer
    from hf_dpsynth.pipeline.build import recipe_lora, recipe_training_config

    recipe = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, max_steps=steps))
    args = recipe_training_config(
        recipe, output_dir=out, logical_batch_size=min(recipe.training.logical_batch_size, prepared.num_units),
        noise_multiplier=1.0, target_delta=1e-5, dp_seed=0, save_strategy="no", disable_tqdm=True, logging_steps=10**6,
        activation_cache="memory" if fast else "off", train_sampling_strategy="group_by_length" if fast else "random",
        **prepared.training_kwargs(),
    )
    return DPSynthTrainer(model=model, args=args, train_dataset=prepared, processing_class=tok,
                          peft_config=recipe_lora(recipe, model))


def _run(recipe, prepared, steps: int, mode: str) -> dict:
    """One mode in this process: per-step CPU seconds and draw sizes (step 0 excluded), the prefill cost."""
    import torch
    from transformers import TrainerCallback

    from hf_dpsynth.pipeline.build import load_recipe_model
    from hf_dpsynth.training.batching import collate
    from hf_dpsynth.training.sampler import PoissonSampler

    model, tok = load_recipe_model(recipe)
    result: dict = {"mode": mode, "cpu": [], "examples": [], "prefill_cpu": 0.0, "prefilled": 0}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            fast = trainer._fast
            if mode == "warm" and fast is not None and fast.caches:
                p = trainer.plan
                sampler = PoissonSampler(num_units=p.num_units, sampling_probability=p.sampling_probability,
                                         seed=trainer._seeds.sampling)
                rows = sorted({int(r) for s in range(1, steps) for u in sampler.draw(s)
                               for r in trainer._units.examples_of(int(u))})
                rows.sort(key=lambda r: len(trainer._examples.input_ids[r]))
                start = time.process_time()
                for i in range(0, len(rows), 64):
                    batch = collate(trainer._examples, rows[i:i + 64], pad_token_id=trainer._pad_token_id)
                    fast._prefix_hidden(rows[i:i + 64], batch)
                result["prefill_cpu"] = time.process_time() - start
                result["prefilled"] = len(rows)
                fast.cache_misses = fast.cache_hits = 0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step > 1:  # step 1 (index 0) is the warm-up
                result["cpu"].append(time.process_time() - self.start)
                p = trainer.plan
                draw = PoissonSampler(num_units=p.num_units, sampling_probability=p.sampling_probability,
                                      seed=trainer._seeds.sampling).draw(state.global_step - 1)
                result["examples"].append(int(trainer._units.sizes()[draw].sum()))

    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(recipe, prepared, model, tok, out, steps, fast=mode != "plain")
        trainer.add_callback(Clock())
        trainer.train()
        result["adapter"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        result["threads"] = torch.get_num_threads()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "sms_spam_text.yaml"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (one warm-up step more is run)")
    parser.add_argument("--json", default=str(RESULT))
    args = parser.parse_args(argv)

    from hf_dpsynth.pipeline.data import prepare_recipe_data
    from hf_dpsynth.pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    _, _, prepared = prepare_recipe_data(recipe)
    n, batch = prepared.num_units, min(recipe.training.logical_batch_size, prepared.num_units)
    q, T = batch / n, recipe.training.max_steps
    print(f"{recipe.name}: N = {n}, q = {batch}/{n}, chunk {recipe.training.per_device_train_batch_size}, "
          f"LoRA r = {recipe.lora.r} on the top {recipe.lora.top_layers} layers, max_length {recipe.training.max_length}; "
          f"{args.steps} timed steps per mode after 1 warm-up")
    runs = {mode: _run(recipe, prepared, args.steps + 1, mode) for mode in ("plain", "cold", "warm")}

    def rate(run):  # example-gradients per CPU-second over the timed steps
        return sum(run["examples"]) / sum(run["cpu"])

    plain, cold, warm = runs["plain"], runs["cold"], runs["warm"]
    per_example = {m: sum(r["cpu"]) / sum(r["examples"]) for m, r in runs.items()}
    miss = warm["prefill_cpu"] / max(1, warm["prefilled"])  # CPU-s to compute one example's cached states

    def schedule(steps: int) -> tuple[float, float]:
        grads = steps * batch
        distinct = n * (1 - (1 - q) ** steps)
        return grads * per_example["plain"], grads * per_example["warm"] + distinct * miss

    rows = [("plain (today's trainer)", plain), ("fast, cold cache", cold), ("fast, warm cache", warm)]
    print("\n| mode | examples | CPU s | example-gradients / CPU-s | × plain |\n|---|---|---|---|---|")
    for name, run in rows:
        print(f"| {name} | {sum(run['examples'])} | {sum(run['cpu']):.1f} | {rate(run):.2f} | {rate(run) / rate(plain):.2f} |")
    print(f"\ncache fill: {warm['prefilled']} examples in {warm['prefill_cpu']:.1f} CPU-s ({1000 * miss:.1f} CPU-ms each)")
    summary = {"recipe": recipe.name, "N": n, "batch": batch, "timed_steps": args.steps,
               "rates": {m: rate(r) for m, r in runs.items()}, "miss_cpu_s": miss,
               "steps_cpu": {m: r["cpu"] for m, r in runs.items()}, "examples": {m: r["examples"] for m, r in runs.items()}}
    for steps in (T, 10 * T):
        slow, fast = schedule(steps)
        print(f"schedule of {steps} steps ({steps * batch} example-gradients): plain {slow / 3600:.2f} CPU-h, "
              f"fast {fast / 3600:.2f} CPU-h including the cache fill: {slow / fast:.2f}×")
        summary[f"schedule_{steps}"] = {"plain_cpu_s": slow, "fast_cpu_s": fast, "speedup": slow / fast}
    import torch

    diff = max(float((warm["adapter"][k] - v).abs().max()) for k, v in plain["adapter"].items())
    print(f"largest difference between the plain and the fast adapter after {args.steps + 1} steps: {diff:.2g}")
    summary["adapter_max_abs_difference"] = diff
    summary["median_step_cpu"] = {m: statistics.median(r["cpu"]) for m, r in runs.items()}
    summary["torch_threads"] = torch.get_num_threads()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
