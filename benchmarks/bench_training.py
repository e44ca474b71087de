"""Step time and peak memory of DP-SGD vs non-DP LoRA fine-tuning, on exactly the same work.

    python benchmarks/bench_training.py [--model default|tiny] [--steps 4] [--logical-batch 8]
        [--chunk 8] [--seq-len 128] [--lora-r 16] [--layers all|top-4] [--device cpu|cuda]
        [--dtype fp32|bf16] [--repeats 1] [--modes nondp dp_loop ...] [--breakdown] [--profile]

Every mode trains the same LoRA adapter (r, alpha = 2r, dropout 0, all linear layers or those of
the top k blocks) of a freshly loaded model on the same fixed-length token sequences (SMS Spam
Collection texts, or random tokens when absent), with the same sequence of Poisson draws
(``PoissonSampler``, the seed ``DPSynthTrainer`` derives from ``dp_seed=0``; N = 10 × logical
batch, q = logical batch / N, so the batch size varies from step to step as in real DP-SGD), each
draw split into the same physical chunks (``plan_chunks``, ``collate``) and the same AdamW step:

  nondp          plain loop: per chunk, forward and backward of Σ per-example loss / (q·N); step.
  dp_loop        plain loop with our hooks: ``PerExampleGradients`` + ``ClippedSum`` (clip each
                 example, sum, noise N(0, σ²C²) once, divide by q·N), as ``DPSynthTrainer`` does.
  opacus         plain loop with Opacus' ``GradSampleModule`` wrapper and per-sample clipping done
                 as Opacus' ``DPOptimizer.clip_and_accumulate`` does it (per-parameter norms →
                 per-sample norm → clip factor → weighted sum per chunk), then the same noise.
  nondp_trainer  a plain ``transformers.Trainer`` subclass that makes the same draws and chunks
                 and runs the Trainer's own training_step per chunk (no hooks, clipping, noise).
  dp             ``DPSynthTrainer`` itself (σ fixed, ``dp_seed=0``), timed by a callback.

Ratios are reported loop vs loop (dp_loop and opacus vs nondp) and Trainer vs Trainer (dp vs
nondp_trainer). Step time is the mean over the timed steps; the first step (warm-up: lazy
optimizer state, allocator growth, first-call overheads) is excluded. With ``--repeats R`` every
step counts with its best of R rounds (the least disturbed: on a shared 2-core machine other
processes, the host and the allocator move single steps by 10-40%); each step's CPU time and
the CPU used by other processes meanwhile (/proc/stat) are reported too, and before each mode the
driver waits for the CPU to be idle. ``--breakdown`` times the DP-specific code itself (hooks,
clipping, noise) inside the DP workers, which splits the DP overhead far more precisely than the
ratio of two noisy step times. All DP modes add the same noise (same generator per step, same
parameter order), so their final adapters agree up to float rounding, and so do the two non-DP
modes: the table shows the largest difference, a check that the modes did the same work.

Each mode runs in its own subprocess, one after the other: a process's peak RSS (``ru_maxrss``)
only grows, so several modes in one process would all report the largest peak, and a fresh
process gives every mode the same cold start. With glibc's default allocator freed memory stays
in the process and is reused unevenly, so the peak RSS of identical runs differs by up to 15%;
on the CPU the memory figures therefore come from one extra round run with
``MALLOC_MMAP_THRESHOLD_`` fixed (every large tensor mmapped and returned when freed, so RSS
follows the live tensors and repeats to within a few MiB): the process peak (model load included)
and the peak after set-up (the kernel's counter reset through /proc/self/clear_refs). The default
allocator's peak is shown for information. On CUDA the peak is ``torch.cuda.max_memory_allocated``
(weights included).

Acceptance (issue): DP / non-DP ≤ 1.10 in step time and peak memory.

``--throughput [--recipe R] [--steps S]``: example-gradients per CPU-second of today's trainer and of
the fast path (frozen-prefix activation cache, loss on target tokens, length-grouped chunks) side by
side on a recipe's own data and LoRA placement (``benchmarks/training_throughput.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("nondp", "dp_loop", "opacus", "nondp_trainer", "dp")
REFERENCE = {"dp_loop": "nondp", "opacus": "nondp", "nondp_trainer": "nondp", "dp": "nondp_trainer"}
# Modes that must produce the same final adapter (same draws, same noise); the first one present is the reference.
SAME_WORK = (("dp_loop", "dp", "opacus"), ("nondp", "nondp_trainer"))
DATA_FILE = Path("/work/shared/data/sms-spam-collection/SMSSpamCollection")
DP_SEED = 0  # the test seed DPSynthTrainer turns into its sampling and noise seeds
ADAPTER_SEED = 42  # TrainingArguments' default seed: DPSynthTrainer initialises LoRA with it
LEARNING_RATE = 1e-3
UNITS_PER_BATCH = 10  # N = 10 × logical batch
RESULT_TAG = "BENCH_RESULT "
MMAP_THRESHOLD = 131072  # memory round: glibc serves every allocation ≥ 128 KiB by mmap and unmaps it on free


@dataclass(frozen=True)
class BenchConfig:
    model: str
    steps: int
    logical_batch: int
    chunk: int
    seq_len: int
    lora_r: int
    layers: str
    device: str
    dtype: str
    noise_multiplier: float
    clip: float
    threads: int

    @property
    def num_units(self) -> int:
        return UNITS_PER_BATCH * self.logical_batch

    @property
    def sampling_probability(self) -> float:
        return self.logical_batch / self.num_units

    @property
    def total_steps(self) -> int:
        return self.steps + 1  # + the warm-up step


# ---------------------------------------------------------------- shared set-up (worker side)
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_model(cfg: BenchConfig):
    import torch

    if cfg.model == "tiny":
        from hf_dpsynth.models import tiny_causal_lm

        model, tokenizer = tiny_causal_lm(num_hidden_layers=4, hidden_size=128)
    else:
        from hf_dpsynth.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(None if cfg.model == "default" else cfg.model)
    return model.to(torch.float32), tokenizer


def lora_config(cfg: BenchConfig, model):
    """LoRA r / alpha 2r / dropout 0 on every linear layer of the blocks (all, or the top k)."""
    from peft import LoraConfig

    common = dict(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, bias="none")
    if cfg.layers == "all":
        return LoraConfig(target_modules="all-linear", **common)
    import torch

    k = int(cfg.layers.split("-", 1)[1])
    n = model.config.num_hidden_layers
    names = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in name
        }
    )
    # peft refuses layers_to_transform with target_modules="all-linear": name the linear layers instead.
    return LoraConfig(target_modules=names, layers_to_transform=list(range(n - k, n)), **common)


def make_examples(cfg: BenchConfig, tokenizer) -> list[list[int]]:
    """N sequences of exactly seq_len tokens (no padding: every mode sees the same token count)."""
    import numpy as np

    need = cfg.num_units * cfg.seq_len
    stream: list[int] = []
    if DATA_FILE.is_file():
        texts = [line.split("\t", 1)[1] for line in DATA_FILE.read_text(encoding="utf-8").splitlines() if "\t" in line]
        eos = tokenizer.eos_token_id
        for start in range(0, len(texts), 256):
            for ids in tokenizer(texts[start : start + 256], add_special_tokens=False)["input_ids"]:
                stream.extend(ids + ([eos] if eos is not None else []))
            if len(stream) >= need:
                break
        stream = (stream * math.ceil(need / max(1, len(stream))))[:need]
    else:
        stream = np.random.default_rng(0).integers(0, len(tokenizer), size=need).tolist()
    return [stream[i * cfg.seq_len : (i + 1) * cfg.seq_len] for i in range(cfg.num_units)]


def apply_lora(cfg: BenchConfig, model):
    """The adapter exactly as DPSynthTrainer creates it (same public seed for the LoRA init)."""
    import torch
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ADAPTER_SEED)
        return get_peft_model(model, lora_config(cfg, model))


class Draws:
    """The step's Poisson draw and its physical chunks: identical in every mode."""

    def __init__(self, cfg: BenchConfig, examples: list[list[int]], pad_token_id: int):
        from hf_dpsynth.data.tokenize import TokenizedExamples
        from hf_dpsynth.data.units import PrivacyUnits
        from hf_dpsynth.training.sampler import PoissonSampler, SecretSeeds

        self.seeds = SecretSeeds.fresh(DP_SEED)
        self.sampler = PoissonSampler(
            num_units=cfg.num_units, sampling_probability=cfg.sampling_probability, seed=self.seeds.sampling
        )
        self.units = PrivacyUnits.one_per_example(cfg.num_units)
        self.examples = TokenizedExamples(input_ids=examples, labels=[list(x) for x in examples])
        self.chunk = cfg.chunk
        self.pad_token_id = pad_token_id
        self.expected_batch_size = cfg.sampling_probability * cfg.num_units

    def chunks(self, step: int):
        from hf_dpsynth.training.batching import plan_chunks

        return plan_chunks(self.sampler.draw(step), self.units, self.chunk)

    def batch(self, chunk, device) -> dict:
        from hf_dpsynth.training.batching import collate

        batch = collate(self.examples, chunk.examples.tolist(), pad_token_id=self.pad_token_id)
        return {k: v.to(device) for k, v in batch.items()}


def _rss_mib() -> float:
    with contextlib.suppress(OSError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ≥ 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _peak_rss_mib() <= _rss_mib() * 1.05 + 1


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(cfg: BenchConfig):
    import torch

    if cfg.dtype == "bf16":
        return torch.autocast(device_type=cfg.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class StepClock:
    """Per step: wall time, this process's CPU time, and CPU time used by *other* processes.

    The last one (system busy time from /proc/stat minus ours) flags steps disturbed by other work
    on a shared machine; on 2 cores even a little of it shows in the wall time.
    """

    def __init__(self, device: str, counters: dict[str, float]):
        self.device = device
        self.counters = counters  # running totals of the instrumented DP code (see _instrument)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.other_cpu: list[float] = []
        self.parts: list[dict[str, float]] = []

    @staticmethod
    def _system_busy_s() -> float:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        _sync(self.device)
        self._counted = dict(self.counters)
        self._marks = (time.perf_counter(), time.process_time(), self._system_busy_s())

    def stop(self) -> None:
        _sync(self.device)
        wall, cpu, busy = self._marks
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        self.other_cpu.append(max(0.0, self._system_busy_s() - busy - self.cpu[-1]))
        self.parts.append({k: v - self._counted.get(k, 0.0) for k, v in self.counters.items()})


def _instrument(mode: str, device: str) -> dict[str, float]:
    """``--breakdown``: wall-clock timers around the DP-specific code of ``mode`` (this process only).

    Wraps hf_dpsynth's hook and clipping methods (dp, dp_loop), or Opacus' hooks and the clipping
    and noise of the opacus loop; returns the dict of running totals in seconds. The wrappers add
    ~1 µs per call; on CUDA they synchronise, so the totals are device time too.
    """
    totals: dict[str, float] = {}
    if mode in ("dp", "dp_loop"):
        from hf_dpsynth.training import grad_sample as gs

        targets = [
            (gs.PerExampleGradients, "_on_forward", "forward hook"),
            (gs.PerExampleGradients, "_on_grad", "per-example grads (backward hook)"),
            (gs.ClippedSum, "accumulate", "clip + sum"),
            (gs.ClippedSum, "add_noise", "noise"),
            (gs.ClippedSum, "finish", "scale"),
        ]
    elif mode == "opacus":
        from opacus.grad_sample.grad_sample_module import GradSampleHooks

        module = sys.modules[__name__]
        targets = [
            (GradSampleHooks, "capture_activations_hook", "forward hook"),
            (GradSampleHooks, "capture_backprops_hook", "per-example grads (backward hook)"),
            (module, "_opacus_clip_accumulate", "clip + sum"),
            (module, "_opacus_noise_and_scale", "noise + scale"),
        ]
    else:
        return totals

    def timed(fn, label):
        def wrapper(*args, **kwargs):
            _sync(device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync(device)
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

        return wrapper

    for owner, name, label in targets:
        totals[label] = 0.0
        setattr(owner, name, timed(getattr(owner, name), label))
    return totals


def _chunk_loss(model, batch: dict, cfg: BenchConfig):
    """Per-example losses of one chunk (the logits are not kept alive through the backward pass)."""
    from hf_dpsynth.training.loss import per_example_causal_lm_loss

    labels = batch.pop("labels")
    with _autocast(cfg):
        return per_example_causal_lm_loss(model(**batch).logits, labels)


# ---------------------------------------------------------------- the plain loops
def _loop_nondp(cfg, model, draws, params, optimizer):
    def step(index: int) -> int:
        chunks = draws.chunks(index)
        for chunk in chunks:
            loss = _chunk_loss(model, draws.batch(chunk, cfg.device), cfg).sum() / draws.expected_batch_size
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sum(len(c.examples) for c in chunks)

    return step


def _loop_dp(cfg, model, draws, params, optimizer):
    import torch

    from hf_dpsynth.training.grad_sample import ClippedSum, PerExampleGradients, validate_model
    from hf_dpsynth.training.sampler import noise_generator

    engine = PerExampleGradients(validate_model(model))
    engine.attach()
    ours = [t.param for t in engine.trainable]
    assert ours == params, "parameter order differs from the other modes"

    def step(index: int) -> int:
        chunks = draws.chunks(index)
        clipped = ClippedSum(params, per_example_max_grad_norm=cfg.clip)
        clipped.reset()
        for chunk in chunks:
            with engine.capture(batch_size=len(chunk.examples)):
                _chunk_loss(model, draws.batch(chunk, cfg.device), cfg).sum().backward()
            clipped.accumulate(
                engine.pop(),
                unit_slots=torch.as_tensor(chunk.unit_slots),
                units=chunk.units.tolist(),
                completes=chunk.completes.tolist(),
            )
        generator = noise_generator(draws.seeds.noise, index, device=params[0].device)
        clipped.add_noise(noise_multiplier=cfg.noise_multiplier, generator=generator)
        for p, g in zip(params, clipped.finish(expected_batch_size=draws.expected_batch_size)):
            p.grad = g.to(p.dtype)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sum(len(c.examples) for c in chunks)

    return step


def _loop_opacus(cfg, model, draws, params, optimizer):
    """Opacus' standard recipe: GradSampleModule + DPOptimizer-style clip-and-accumulate per chunk."""
    import torch
    from opacus import GradSampleModule

    from hf_dpsynth.training.sampler import noise_generator

    gsm = GradSampleModule(model, loss_reduction="sum")

    def step(index: int) -> int:
        chunks = draws.chunks(index)
        summed = [torch.zeros_like(p) for p in params]
        for chunk in chunks:
            _chunk_loss(gsm, draws.batch(chunk, cfg.device), cfg).sum().backward()
            _opacus_clip_accumulate(params, summed, cfg.clip)
        generator = noise_generator(draws.seeds.noise, index, device=params[0].device)
        _opacus_noise_and_scale(params, summed, cfg.noise_multiplier * cfg.clip, generator, draws.expected_batch_size)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sum(len(c.examples) for c in chunks)

    return step


def _opacus_clip_accumulate(params, summed, clip: float) -> None:
    """As Opacus' DPOptimizer.clip_and_accumulate: per-parameter norms → per-sample norm → factor → sum."""
    import torch

    samples = [p.grad_sample for p in params]
    norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in samples], dim=1).norm(2, dim=1)
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    for total, p, g in zip(summed, params, samples):
        total += torch.einsum("i,i...", factor.to(p.dtype), g.to(p.dtype))
        p.grad_sample = None  # GradSampleModule would otherwise stack the next chunk onto it


def _opacus_noise_and_scale(params, summed, std: float, generator, expected_batch_size: float) -> None:
    """The same noise stream as ClippedSum.add_noise (same generator, same parameter order), then / q·N."""
    import torch

    for p, total in zip(params, summed):
        noise = torch.randn(total.shape, generator=generator, dtype=torch.float32, device=generator.device)
        p.grad = ((total + std * noise.to(total.device)) / expected_batch_size).to(p.dtype)


LOOPS = {"nondp": _loop_nondp, "dp_loop": _loop_dp, "opacus": _loop_opacus}


# ---------------------------------------------------------------- the Trainer paths
def _trainer_args(cfg: BenchConfig, output_dir: str, dp: bool):
    from transformers import TrainingArguments

    from hf_dpsynth.training.config import DPSynthConfig

    common = dict(
        output_dir=output_dir,
        max_steps=cfg.total_steps,
        per_device_train_batch_size=cfg.chunk,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",  # as the loops: no schedule
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=0.0,
        seed=ADAPTER_SEED,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10**6,
        use_cpu=cfg.device == "cpu",
        bf16=cfg.dtype == "bf16",
    )
    if not dp:
        return TrainingArguments(**common)
    return DPSynthConfig(
        **common,
        noise_multiplier=cfg.noise_multiplier,
        target_epsilon=None,
        per_example_max_grad_norm=cfg.clip,
        logical_batch_size=cfg.logical_batch,
        max_length=cfg.seq_len,
        dp_seed=DP_SEED,
    )


def _step_timer(clock: StepClock):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Times one logical step: from the Trainer's on_step_begin to its on_step_end."""

        def on_step_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_step_end(self, args, state, control, **kwargs):
            clock.stop()

    return StepTimer()


def _nondp_trainer_class():
    import torch
    from torch.utils.data import DataLoader
    from transformers import Trainer

    from hf_dpsynth.training.loss import per_example_causal_lm_loss

    class NonDPChunkTrainer(Trainer):
        """The same draws and chunks as DPSynthTrainer, with the Trainer's plain training_step per chunk."""

        def __init__(self, *args, draws: Draws, steps: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.draws, self.bench_steps = draws, steps

        def get_train_dataloader(self) -> DataLoader:
            # One tick per step, exactly as DPSynthTrainer (the draw is made in training_step).
            loader = DataLoader(
                list(range(self.bench_steps)), batch_size=1, collate_fn=lambda b: {"tick": torch.tensor(b[0])}
            )
            loader._is_accelerate_prepared = True
            return loader

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = per_example_causal_lm_loss(outputs.logits, labels).sum() / self.draws.expected_batch_size
            return (loss, outputs) if return_outputs else loss

        def training_step(self, model, inputs, num_items_in_batch=None):
            chunks = self.draws.chunks(self.state.global_step)
            loss = torch.zeros((), device=self.args.device)
            for chunk in chunks:
                loss += super().training_step(model, self.draws.batch(chunk, "cpu"))
            return loss

    return NonDPChunkTrainer


# ---------------------------------------------------------------- one worker = one mode
def run_worker(mode: str, cfg: BenchConfig, out_dir: str, profile: bool, breakdown: bool = False) -> dict:
    import torch

    torch.set_num_threads(cfg.threads)
    counters = _instrument(mode, cfg.device) if breakdown else {}
    torch.manual_seed(0)
    model, tokenizer = load_model(cfg)
    examples = make_examples(cfg, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    draws = Draws(cfg, examples, pad)
    clock = StepClock(cfg.device, counters)
    sizes: list[int] = []
    profiler = None

    if mode in LOOPS:
        model = apply_lora(cfg, model).to(cfg.device)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0)
        step = LOOPS[mode](cfg, model, draws, params, optimizer)
        before = [p.detach().clone() for p in params]
        named = [n for n, p in model.named_parameters() if p.requires_grad]

        def train() -> None:
            nonlocal profiler
            for index in range(cfg.total_steps):
                if index == 1 and profile:
                    profiler = _start_profiler(cfg)
                clock.start()
                sizes.append(step(index))
                clock.stop()
    else:
        import datasets

        # A fresh folder per process: each run is a new release (the trainer refuses to overwrite
        # the ledger of an earlier run).
        output_dir = tempfile.mkdtemp(prefix=f"trainer_{mode}_", dir=out_dir)
        dataset = datasets.Dataset.from_dict({"input_ids": examples})
        timer = _step_timer(clock)
        if mode == "dp":
            from hf_dpsynth.training.trainer import DPSynthTrainer

            trainer = DPSynthTrainer(
                model=model,
                args=_trainer_args(cfg, output_dir, dp=True),
                train_dataset=dataset,
                processing_class=tokenizer,
                peft_config=lora_config(cfg, model),
                callbacks=[timer],
            )
            assert math.isclose(trainer.plan.expected_batch_size, draws.expected_batch_size)
        else:
            trainer = _nondp_trainer_class()(
                model=apply_lora(cfg, model),
                args=_trainer_args(cfg, output_dir, dp=False),
                train_dataset=dataset,
                processing_class=tokenizer,
                callbacks=[timer],
                draws=draws,
                steps=cfg.total_steps,
            )
        model = trainer.model
        params = [p for p in model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params]
        named = [n for n, p in model.named_parameters() if p.requires_grad]
        if profile:
            from transformers import TrainerCallback

            class StartProfiler(TrainerCallback):
                def on_step_end(self, args, state, control, **kwargs):
                    nonlocal profiler
                    if state.global_step == 1:
                        profiler = _start_profiler(cfg)

            trainer.add_callback(StartProfiler())

        def train() -> None:
            trainer.train()
            sizes.extend(len(draws.sampler.draw(i)) for i in range(cfg.total_steps))

    gc.collect()
    setup_peak = _peak_rss_mib()
    setup_rss = _rss_mib()
    reset_ok = cfg.device == "cpu" and _reset_peak_rss()
    if cfg.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    train()
    if profiler is not None:
        profiler.__exit__(None, None, None)
    train_peak = _peak_rss_mib() if reset_ok else float("nan")
    result = {
        "mode": mode,
        "times": clock.wall,
        "cpu_times": clock.cpu,
        "other_cpu": clock.other_cpu,
        "parts": clock.parts,
        "sizes": sizes,
        "setup_rss_mib": setup_rss,
        "peak_rss_mib": max(setup_peak, _peak_rss_mib()),
        "train_peak_rss_mib": train_peak,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cfg.device == "cuda" else None,
        "trainable_params": sum(p.numel() for p in params),
        "max_update": max(float((p.detach() - b).abs().max()) for p, b in zip(params, before)),
    }
    torch.save({n: p.detach().float().cpu() for n, p in zip(named, params)}, os.path.join(out_dir, f"{mode}.pt"))
    if profiler is not None:
        key = "self_cuda_time_total" if cfg.device == "cuda" else "self_cpu_time_total"
        result["profile"] = profiler.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60)
    return result


def _start_profiler(cfg: BenchConfig):
    import torch.profiler as tp

    activities = [tp.ProfilerActivity.CPU] + ([tp.ProfilerActivity.CUDA] if cfg.device == "cuda" else [])
    profiler = tp.profile(activities=activities)
    profiler.__enter__()
    return profiler


# ---------------------------------------------------------------- the driver
def _worker_argv(mode: str, cfg: BenchConfig, out_dir: str, profile: bool, breakdown: bool) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--out-dir", out_dir]
    for key, value in asdict(cfg).items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + (["--profile"] if profile else []) + (["--breakdown"] if breakdown else [])


def _machine(cfg: BenchConfig) -> str:
    import torch

    versions = []
    for name in ("torch", "transformers", "peft", "opacus"):
        with contextlib.suppress(Exception):
            versions.append(f"{name} {__import__(name).__version__}")
    if cfg.device == "cuda":
        where = f"CUDA {torch.cuda.get_device_name(0)}"
    else:
        where = f"CPU {_cpu_name()}, {os.cpu_count()} logical cores"
    return f"{where}; torch threads per worker {cfg.threads}; {', '.join(versions)}; Python {platform.python_version()}"


def _diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _wait_until_idle(max_wait_s: float) -> float:
    """Wait (up to max_wait_s) until other processes use < 10% of one core over 2 s; return the share seen."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = StepClock._system_busy_s()
        time.sleep(2.0)
        busy = (StepClock._system_busy_s() - before) / 2.0
        if busy < 0.1 or time.monotonic() >= deadline or math.isnan(busy):
            return busy
        print(f"    (waiting: other processes use {busy:.0%} of a core)", flush=True)


def _run_mode(
    mode: str,
    cfg: BenchConfig,
    out_dir: str,
    *,
    profile: bool,
    breakdown: bool,
    wait_idle_s: float,
    env: dict[str, str],
) -> dict | None:
    if cfg.device == "cpu" and wait_idle_s > 0:
        _wait_until_idle(wait_idle_s)
    start = time.perf_counter()
    proc = subprocess.run(
        _worker_argv(mode, cfg, out_dir, profile, breakdown),
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **env},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        print(f"  {mode}: FAILED (exit {proc.returncode})\n{proc.stderr[-4000:]}", file=sys.stderr)
        return None
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    other = sum(result["other_cpu"][1:]) / sum(result["times"][1:])
    print(
        f"  {mode}: {time.perf_counter() - start:.0f} s in all; steps "
        f"{', '.join(f'{t:.2f}' for t in result['times'])} s (first = warm-up); other processes used {other:.2f} "
        f"cores; peak RSS {result['peak_rss_mib']:.0f} MiB (after set-up {result['train_peak_rss_mib']:.0f})",
        flush=True,
    )
    return result


def _combine(timing: list[dict], memory: dict | None) -> dict:
    """One figure per mode: each step's best (least disturbed) round; memory from the memory run."""
    steps = range(1, len(timing[0]["times"]))  # step 0 is the warm-up
    chosen = [min(timing, key=lambda r: r["times"][i]) for i in steps]
    best = [r["times"][i] for r, i in zip(chosen, steps)]
    mem = memory or {}
    return {
        "sizes": timing[0]["sizes"],
        "trainable_params": timing[0]["trainable_params"],
        "max_update": timing[0]["max_update"],
        "step_times": best,
        "mean": statistics.fmean(best),
        "sd": statistics.stdev(best) if len(best) > 1 else 0.0,
        "cpu_mean": statistics.fmean(r["cpu_times"][i] for r, i in zip(chosen, steps)),
        "parts": {k: sum(r["parts"][i].get(k, 0.0) for r, i in zip(chosen, steps)) for k in timing[0]["parts"][0]},
        "other_cores": sum(r["other_cpu"][i] for r, i in zip(chosen, steps)) / sum(best),
        "rss_default_mib": statistics.median(r["peak_rss_mib"] for r in timing),
        "peak_mib": mem.get("peak_rss_mib", float("nan")),
        "train_peak_mib": mem.get("train_peak_rss_mib", float("nan")),
        "cuda_peak_mib": timing[0]["cuda_peak_mib"],
    }


def run_driver(
    cfg: BenchConfig,
    modes: list[str],
    *,
    profile: bool,
    breakdown: bool,
    repeats: int,
    wait_idle_s: float,
    memory_round: bool,
) -> None:
    import torch

    memory_round = memory_round and cfg.device == "cpu"
    print(f"hf_dpsynth training benchmark — {_machine(cfg)}")
    print(
        f"model {cfg.model}, LoRA r={cfg.lora_r} alpha={2 * cfg.lora_r} dropout 0 on {cfg.layers} linear layers, "
        f"{cfg.dtype} on {cfg.device}; logical batch {cfg.logical_batch} (Poisson, N={cfg.num_units}, "
        f"q={cfg.sampling_probability:g}) in chunks of {cfg.chunk} × {cfg.seq_len} tokens; AdamW lr {LEARNING_RATE:g}; "
        f"DP: σ={cfg.noise_multiplier:g}, C={cfg.clip:g}; {cfg.steps} timed steps after 1 warm-up step; "
        f"{repeats} timing round(s){' + 1 memory round' if memory_round else ''} of {', '.join(modes)}, "
        "one process each"
    )
    timing: dict[str, list[dict]] = {m: [] for m in modes}
    memory: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_training_") as out_dir:
        for round_index in range(repeats):
            print(f"timing round {round_index + 1}/{repeats} (default allocator)")
            for mode in modes:
                result = _run_mode(
                    mode, cfg, out_dir, profile=profile and round_index == 0, breakdown=breakdown,
                    wait_idle_s=wait_idle_s, env={},
                )
                if result is not None:
                    timing[mode].append(result)
        if memory_round:
            print(f"memory round (MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}: RSS follows the live tensors)")
            for mode in modes:
                env = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
                result = _run_mode(mode, cfg, out_dir, profile=False, breakdown=False, wait_idle_s=0, env=env)
                if result is not None:
                    memory[mode] = result
        adapters = {m: torch.load(os.path.join(out_dir, f"{m}.pt")) for m in modes if timing[m] or m in memory}

    results = {m: _combine(r, memory.get(m)) for m, r in timing.items() if r}
    if not results:
        sys.exit("every mode failed")
    first = next(iter(results.values()))
    print(f"draw sizes per step (warm-up first): {first['sizes']}; trainable parameters {first['trainable_params']:,}")
    if any(r["sizes"] != first["sizes"] for r in results.values()):
        print("WARNING: the modes did not process the same draws", {m: r["sizes"] for m, r in results.items()})

    if cfg.device == "cuda":
        mem_key, train_key, mem_name = "cuda_peak_mib", "cuda_peak_mib", "CUDA peak"
    elif not memory:  # --no-memory-round: fall back on the default allocator's (noisy) peak
        mem_key, train_key, mem_name = "rss_default_mib", "rss_default_mib", "RSS dflt"
    else:
        mem_key, train_key, mem_name = "peak_mib", "train_peak_mib", "peak MiB"
    header = (
        f"{'mode':<14} {'step s':>7} {'± sd':>6} {'cpu s':>6} {'tok/s':>6} {'other':>5} {mem_name:>9} {'train pk':>8} "
        f"{'RSS dflt':>8} | {'vs':<14} {'time×':>6} {'mem×':>6} {'train×':>6} {'RSS×':>6} | {'max|Δw| vs same work':>22}"
    )
    print(header)
    print("-" * len(header))
    summary = {}
    for mode in modes:
        if mode not in results:
            continue
        r = results[mode]
        tok_s = sum(r["sizes"][1:]) * cfg.seq_len / sum(r["step_times"])
        ref = REFERENCE.get(mode)
        cells = [
            f"{mode:<14} {r['mean']:7.3f} {r['sd']:6.3f} {r['cpu_mean']:6.2f} {tok_s:6.0f} {r['other_cores']:5.2f} "
            f"{r[mem_key]:9.0f} {r[train_key]:8.0f} {r['rss_default_mib']:8.0f} |"
        ]
        if ref in results:
            rr = results[ref]
            ratios = tuple(r[k] / rr[k] for k in ("mean", mem_key, train_key, "rss_default_mib"))
            summary[mode] = ratios
            cells.append(f"{ref:<14} {ratios[0]:6.3f} {ratios[1]:6.3f} {ratios[2]:6.3f} {ratios[3]:6.3f} |")
        else:
            note = "(reference)" if ref is None else f"({ref} not run)"
            cells.append(f"{note:<14} {'':>6} {'':>6} {'':>6} {'':>6} |")
        family = next(f for f in SAME_WORK if mode in f)
        same = next((m for m in family if m in adapters), mode)
        diff = f"{_diff(adapters[mode], adapters[same]):.2e} ({same})" if same != mode else "-"
        cells.append(f"{diff:>22}")
        print(" ".join(cells))
    print(
        "step s: mean wall time of a logical step, warm-up excluded (with several rounds, each step's best round); "
        "cpu s: this process's CPU time per step; tok/s: tokens of the timed steps / their wall time; other: cores "
        "used by other processes during them (should be ~0); "
        + (
            "CUDA peak: torch.cuda.max_memory_allocated (MiB). "
            if cfg.device == "cuda"
            else "peak: the process's peak RSS in the memory round (model load included), train pk: its peak after "
            "set-up; RSS dflt: peak RSS of the timing rounds (default allocator: freed memory is kept and reused "
            "unevenly, ±15% between identical runs). "
        )
        + f"×: ratio to the 'vs' mode; max|Δw|: largest difference of the final adapter from the mode that must "
        f"compute the same update (0 or float rounding; updates are ~{first['max_update']:.0e})."
    )
    for mode, label in (
        ("dp_loop", "DP (our hooks) / non-DP, plain loops"),
        ("dp", "DP (DPSynthTrainer) / non-DP Trainer"),
        ("opacus", "Opacus-style DP / non-DP, plain loops"),
    ):
        if mode in summary:
            t, m, tm, _ = summary[mode]
            verdict = "PASS" if t <= 1.10 and m <= 1.10 else "FAIL"
            print(f"{label}: time {t:.3f}×, peak memory {m:.3f}× (after set-up {tm:.3f}×) → {verdict} (both ≤ 1.10)")
    for mode, r in results.items():
        if r["parts"]:
            total = sum(r["step_times"])
            shares = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in r["parts"].items())
            dp_share = sum(r["parts"].values()) / total
            print(f"breakdown, {mode}: {shares} → DP-specific code {100 * dp_share:.1f}% of its step time "
                  f"(were the rest unchanged: DP / non-DP = {1 / (1 - dp_share):.3f})")
    if any(r["other_cores"] > 0.1 for r in results.values()):
        print("WARNING: other processes used the CPU during some timed steps; times are not reliable.")
    for mode in modes:
        for r in timing.get(mode, []):
            if "profile" in r:
                print(f"\n=== torch.profiler, {mode} (timed steps; times under the profiler are not the benchmark's) ===")
                print(r["profile"])


def main() -> None:
    if "--throughput" in sys.argv[1:]:  # the fast path against today's trainer, on a recipe's own work
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from training_throughput import main as throughput

        raise SystemExit(throughput([a for a in sys.argv[1:] if a != "--throughput"]))
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), 'tiny', or a Hub id / path")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (one warm-up step more is run)")
    parser.add_argument("--logical-batch", type=int, default=8, help="expected examples per step (Poisson)")
    parser.add_argument("--chunk", type=int, default=8, help="physical chunk (per_device_train_batch_size)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per example")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--layers", default="all", help="'all' or 'top-K': LoRA on the linear layers of all / the top K blocks")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast, fp32 LoRA weights")
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--clip", type=float, default=1.0, help="per-example max grad norm")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads per worker")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all modes; each step's best round counts")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait, before each mode, for other processes to leave the CPU (0: don't)")
    parser.add_argument("--no-memory-round", action="store_true",
                        help="skip the extra CPU round that measures peak RSS with a fixed mmap threshold")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table per mode (first round)")
    parser.add_argument("--breakdown", action="store_true",
                        help="time the DP-specific code (hooks, clipping, noise) inside the DP modes")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.layers != "all" and not (args.layers.startswith("top-") and args.layers[4:].isdigit()):
        parser.error(f"--layers must be 'all' or 'top-K'; got {args.layers!r}")
    if args.steps < 1:
        parser.error("--steps must be at least 1 (plus the warm-up step)")
    cfg = BenchConfig(
        model=args.model, steps=args.steps, logical_batch=args.logical_batch, chunk=args.chunk, seq_len=args.seq_len,
        lora_r=args.lora_r, layers=args.layers, device=args.device, dtype=args.dtype,
        noise_multiplier=args.noise_multiplier, clip=args.clip, threads=args.threads,
    )
    if args.worker:
        result = run_worker(args.worker, cfg, args.out_dir, args.profile, args.breakdown)
        print(RESULT_TAG + json.dumps(result), flush=True)
    else:
        run_driver(
            cfg, args.modes, profile=args.profile, breakdown=args.breakdown, repeats=args.repeats,
            wait_idle_s=args.wait_idle, memory_round=not args.no_memory_round,
        )


if __name__ == "__main__":
    main()
