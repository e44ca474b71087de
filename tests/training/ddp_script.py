"""Run by test_multiprocess.py under torchrun: the same DP run on 1 or 2 processes."""

import json
import os
import sys

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig

from hf_dpsynth import DPSynthConfig, DPSynthTrainer
from hf_dpsynth.models import tiny_causal_lm


def main(output_dir: str, privacy_unit: str) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    words = "hi call me later free prize win now text stop ok see you soon".split()
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(48)]
    data = {"text": texts, "user": [f"u{i % 12}" for i in range(48)]}
    model, tok = tiny_causal_lm(seed=0)
    args = DPSynthConfig(
        output_dir=output_dir, target_epsilon=8.0, target_delta=1e-3, logical_batch_size=10,
        per_device_train_batch_size=3, max_steps=3, learning_rate=1e-2, dp_seed=99, use_cpu=True,
        report_to="none", save_strategy="no", disable_tqdm=True, privacy_unit=privacy_unit,
        optim="sgd",  # plain SGD: a gradient-scale error (e.g. averaging instead of summing) would show
        user_id_column="user" if privacy_unit == "user" else None,
        max_examples_per_user=3 if privacy_unit == "user" else None,
    )
    trainer = DPSynthTrainer(model=model, args=args, train_dataset=Dataset.from_dict(data), processing_class=tok,
                             peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    trainer.train()
    if args.process_index == 0:
        state = {n: p.detach().tolist() for n, p in trainer.model.named_parameters() if p.requires_grad}
        with open(f"{output_dir}/adapter.json", "w") as fh:
            json.dump({"world_size": args.world_size, "state": state,
                       "epsilon": trainer.privacy_report().epsilon}, fh)
    # Every rank must hold the same adapter (the noisy sum was reduced once and applied everywhere).
    if args.world_size > 1:
        flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters() if p.requires_grad])
        gathered = [torch.zeros_like(flat) for _ in range(args.world_size)]
        torch.distributed.all_gather(gathered, flat)
        assert all(torch.equal(gathered[0], g) for g in gathered), "ranks diverged"
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # Gloo's worker threads can outlive destroy_process_group() (accelerate keeps a reference to the
    # group) and abort the interpreter's teardown with "terminate called without an active exception"
    # (pytorch/pytorch#190489); CI saw it once in ~10 runs, after every result above was written and
    # checked. Everything this script must do is done: leave without running C++ destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
