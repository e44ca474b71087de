"""The frozen-prefix activation cache and the target-only loss change no example's loss or gradient.

Oracles: the model's own full forward pass, and ordinary autograd one example at a time.
"""

import os
import stat

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from hf_dpsynth import DPSynthConfig, DPSynthTrainer
from hf_dpsynth.data.tokenize import IGNORE_INDEX, TokenizedExamples
from hf_dpsynth.errors import DPConfigError, PublishRefusedError, UnsupportedModelError
from hf_dpsynth.hub.gates import check_folder
from hf_dpsynth.models import tiny_causal_lm
from hf_dpsynth.training.batching import collate, packing_order
from hf_dpsynth.training.fast_path import CACHE_FOLDER_PREFIX, build_fast_path
from hf_dpsynth.training.grad_sample import PerExampleGradients, validate_model
from hf_dpsynth.training.loss import per_example_causal_lm_loss

LAYERS = 4
TOP = [2, 3]
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = "hi call me later free prize win now text stop ok see you soon thanks party tonight station noon".split()


def top_lora_model(seed=0, attention_dropout=0.0):
    model, tok = tiny_causal_lm(num_hidden_layers=LAYERS, seed=seed)
    model.config.attention_dropout = attention_dropout
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = attention_dropout
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=PROJECTIONS, layers_to_transform=TOP)
    model = get_peft_model(model, config)
    with torch.no_grad():  # lora_B starts at zero: randomise it so that lora_A's gradients are non-zero too
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model, tok


def examples_of(tok, n=6, seed=0):
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for i in range(n):
        row = tok(" ".join(rng.choice(WORDS, size=int(rng.integers(2, 14)))))["input_ids"] + [tok.eos_token_id]
        prompt = min(3, len(row) - 1)
        ids.append(row)
        labels.append([IGNORE_INDEX] * prompt + row[prompt:])  # a prompt without loss, as the codecs make
    labels[1] = [IGNORE_INDEX] * len(labels[1])  # an example without target tokens: loss 0, gradient 0
    return TokenizedExamples(ids, labels)


def fast_path_of(model, examples, tok, mode="memory", tmp_path=None):
    return build_fast_path(model, validate_model(model), examples, mode=mode, pad_token_id=tok.pad_token_id,
                           output_dir=str(tmp_path or "."), max_gib=1.0, bytes_per_value=4)


def hooked(model, loss_of):
    engine = PerExampleGradients(validate_model(model))
    engine.attach()
    with engine.capture(batch_size=loss_of.batch):
        loss_of().sum().backward()
    engine.detach()
    model.zero_grad(set_to_none=True)
    grads = engine.pop()
    return {t.name: grads[t.param] for t in engine.trainable}


class _Loss:
    def __init__(self, fn, batch):
        self.fn, self.batch = fn, batch

    def __call__(self):
        return self.fn()


def one_at_a_time(model, examples, rows):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out = {n: [] for n, _ in params}
    for r in rows:
        ids = torch.tensor([examples.input_ids[r]])
        loss = per_example_causal_lm_loss(model(input_ids=ids).logits, torch.tensor([examples.labels[r]])).sum()
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        for (n, p), g in zip(params, grads):
            out[n].append(torch.zeros_like(p) if g is None else g)
    return {n: torch.stack(v) for n, v in out.items()}


def test_cached_losses_and_per_example_gradients_equal_the_full_forward_pass():
    model, tok = top_lora_model()
    examples = examples_of(tok)
    fast = fast_path_of(model, examples, tok)
    assert fast.caches and fast.boundary == TOP[0]
    rows = [0, 1, 2, 3, 4, 5]
    batch = collate(examples, rows, pad_token_id=tok.pad_token_id)
    labels = batch.pop("labels")
    plain = per_example_causal_lm_loss(model(**batch).logits, labels)
    first = fast.per_example_loss(rows, batch, labels)  # fills the cache
    again = fast.per_example_loss(rows, batch, labels)  # reads it
    assert fast.cache_misses == 6 and fast.cache_hits == 6
    torch.testing.assert_close(first, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, plain, rtol=1e-5, atol=1e-6)
    assert float(first[1].detach()) == 0.0

    oracle = one_at_a_time(model, examples, rows)
    cached = hooked(model, _Loss(lambda: fast.per_example_loss(rows, batch, labels), len(rows)))
    full = hooked(model, _Loss(lambda: per_example_causal_lm_loss(model(**batch).logits, labels), len(rows)))
    assert cached.keys() == oracle.keys() and len(oracle) == 2 * 7 * len(TOP)  # A and B of 7 projections × 2 layers
    for name in oracle:
        torch.testing.assert_close(cached[name], oracle[name], rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(cached[name], full[name], rtol=1e-4, atol=1e-6, msg=name)
        assert float(cached[name][1].abs().max()) == 0.0


def test_a_row_cached_in_one_chunk_is_reused_exactly_in_a_chunk_of_another_length():
    model, tok = top_lora_model()
    examples = examples_of(tok)
    fast = fast_path_of(model, examples, tok)
    for rows in ([3], [0, 3, 5], [5, 3]):  # row 3 cached alone, then padded to other lengths
        batch = collate(examples, rows, pad_token_id=tok.pad_token_id)
        labels = batch.pop("labels")
        torch.testing.assert_close(fast.per_example_loss(rows, batch, labels),
                                   per_example_causal_lm_loss(model(**batch).logits, labels), rtol=1e-5, atol=1e-6)


def test_the_cache_is_computed_with_the_frozen_layers_in_eval_mode():
    # With attention dropout active in training mode, a cache computed in training mode would freeze one
    # dropout mask: the frozen layers run in eval mode, so the cached states equal an eval forward pass.
    model, tok = top_lora_model(attention_dropout=0.5)
    model.train()
    examples = examples_of(tok)
    fast = fast_path_of(model, examples, tok)
    rows = [0, 2, 4]
    batch = collate(examples, rows, pad_token_id=tok.pad_token_id)
    captured = {}
    handle = model.get_base_model().model.layers[TOP[0]].register_forward_pre_hook(
        lambda module, args: captured.setdefault("h", args[0].detach().clone()))
    model.eval()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    handle.remove()
    model.train()
    cached = fast._prefix_hidden(rows, batch)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(cached[mask], captured["h"][mask], rtol=1e-5, atol=1e-6)
    assert all(m.training for m in model.modules())  # the training flags are restored


class _ScaledLogits(LlamaForCausalLM):
    """A model whose forward is not decoder → norm → head (its logits are scaled): the fast path's check must see it."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out


def _scaled_model():
    _, tok = tiny_causal_lm(num_hidden_layers=LAYERS)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    return _ScaledLogits(config), tok


def make_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset.from_dict({"text": [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]})


def trainer_of(tmp_path, model=None, tok=None, **overrides):
    if model is None:
        model, tok = tiny_causal_lm(num_hidden_layers=LAYERS)
    args = dict(output_dir=str(tmp_path / "out"), noise_multiplier=1.0, logical_batch_size=8,
                per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2, dp_seed=1234, report_to="none",
                save_strategy="no", use_cpu=True, disable_tqdm=True, accountant="rdp", target_delta=1e-3)
    args.update(overrides)
    peft = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=PROJECTIONS, layers_to_transform=TOP)
    return DPSynthTrainer(model=model, args=DPSynthConfig(**args), train_dataset=make_data(), processing_class=tok,
                          peft_config=peft)


def adapter(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_training_with_the_cache_or_length_grouping_gives_the_same_adapter_as_the_plain_path(tmp_path):
    runs = {}
    for name, overrides in {
        "plain": dict(activation_cache="off", train_sampling_strategy="random"),
        "memory": dict(activation_cache="memory", train_sampling_strategy="random"),
        "disk": dict(activation_cache="disk"),
        "auto": dict(),
    }.items():
        trainer = trainer_of(tmp_path / name, **overrides)
        trainer.train()
        runs[name] = adapter(trainer)
        assert trainer._fast is None  # closed when train() returns
    for name in ("memory", "disk", "auto"):
        for key, value in runs["plain"].items():
            torch.testing.assert_close(runs[name][key], value, rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")
    assert all(float(v.abs().max()) > 0 for k, v in runs["plain"].items() if "lora_B" in k)  # it trained (B starts at 0)


def test_group_by_length_packs_chunks_longest_first_and_loses_no_unit(tmp_path):
    trainer = trainer_of(tmp_path)
    share = np.arange(40)
    order = packing_order(share, trainer._unit_lengths, trainer.args.train_sampling_strategy)
    assert sorted(order.tolist()) == share.tolist()
    lengths = trainer._unit_lengths[order]
    assert (np.diff(lengths) <= 0).all() and lengths[0] > lengths[-1]
    random = trainer_of(tmp_path / "r", train_sampling_strategy="random")
    assert packing_order(share, random._unit_lengths, random.args.train_sampling_strategy).tolist() == share.tolist()
    with pytest.raises(DPConfigError, match="Poisson"):
        trainer_of(tmp_path / "s", train_sampling_strategy="sequential")


class _CacheWatch(TrainerCallback):
    """During training: what of the cache has a name on disk, and what this process maps."""

    def __init__(self, out):
        self.out, self.named, self.mapped = out, [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.named += [str(p) for p in self.out.rglob("*") if CACHE_FOLDER_PREFIX in str(p)]
        maps = open("/proc/self/maps").read().splitlines()
        self.mapped += [line for line in maps if CACHE_FOLDER_PREFIX in line and "hidden.bin" in line]


def test_a_disk_cache_has_no_name_on_disk_while_training_and_the_push_gate_refuses_its_folder(tmp_path):
    # The file is created owner-only (0600 in a 0700 folder) and unlinked as soon as it is mapped: a hard
    # kill leaves nothing behind, since the kernel frees an unlinked file when its last mapping goes.
    trainer = trainer_of(tmp_path, activation_cache="disk")
    out = tmp_path / "out"
    watch = _CacheWatch(out)
    trainer.add_callback(watch)
    modes = []
    original = os.open

    def watched_open(path, flags, mode=0o777, *args, **kwargs):
        if CACHE_FOLDER_PREFIX in str(path) and str(path).endswith("hidden.bin"):
            modes.append((stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), mode))
        return original(path, flags, mode, *args, **kwargs)

    os.open = watched_open
    try:
        trainer.train()
    finally:
        os.open = original
    assert modes == [(0o700, 0o600)]
    assert watch.mapped and all(line.endswith("(deleted)") for line in watch.mapped)  # mapped, but nameless
    assert not watch.named
    assert not [p for p in out.iterdir() if p.name.startswith(CACHE_FOLDER_PREFIX)]

    (out / f"{CACHE_FOLDER_PREFIX}x").mkdir()
    (out / f"{CACHE_FOLDER_PREFIX}x" / "hidden.bin").write_bytes(b"\0" * 8)
    with pytest.raises(PublishRefusedError, match="activation caches"):
        check_folder(out)


def test_a_disk_cache_is_deleted_when_training_fails(tmp_path):
    class Boom(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            raise RuntimeError("boom")

    trainer = trainer_of(tmp_path, activation_cache="disk")
    trainer.add_callback(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(CACHE_FOLDER_PREFIX)]


def test_a_model_the_fast_path_does_not_reproduce_is_refused_or_trained_on_the_plain_path(tmp_path):
    model, tok = _scaled_model()
    with pytest.raises(UnsupportedModelError, match="does not reproduce"):
        trainer_of(tmp_path / "memory", model=model, tok=tok, activation_cache="memory").train()
    auto = trainer_of(tmp_path / "auto", model=_scaled_model()[0], tok=tok)
    auto.train()  # falls back after the first-chunk check
    plain = trainer_of(tmp_path / "off", model=_scaled_model()[0], tok=tok, activation_cache="off",
                       train_sampling_strategy="group_by_length")
    plain.train()
    for key, value in adapter(plain).items():
        torch.testing.assert_close(adapter(auto)[key], value, rtol=1e-4, atol=1e-6)


def test_the_check_waits_for_a_chunk_with_target_tokens(tmp_path):
    # The longest examples (packed first) carry no target token: a check on them would compare 0 with 0.
    model, tok = _scaled_model()
    rng = np.random.default_rng(1)
    short = [tok(" ".join(rng.choice(WORDS, size=3)))["input_ids"] for _ in range(30)]
    long = [tok(" ".join(rng.choice(WORDS, size=14)))["input_ids"] for _ in range(10)]
    data = Dataset.from_dict({"input_ids": long + short,
                              "labels": [[IGNORE_INDEX] * len(x) for x in long] + [list(x) for x in short]})
    args = dict(output_dir=str(tmp_path / "out"), noise_multiplier=1.0, logical_batch_size=40, per_device_train_batch_size=4,
                max_steps=1, dp_seed=3, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                accountant="rdp", target_delta=1e-3, activation_cache="memory")
    peft = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=PROJECTIONS, layers_to_transform=TOP)
    trainer = DPSynthTrainer(model=model, args=DPSynthConfig(**args), train_dataset=data, processing_class=tok,
                             peft_config=peft)
    with pytest.raises(UnsupportedModelError, match="does not reproduce"):
        trainer.train()


def test_auto_never_caches_frozen_layers_that_use_dropout_in_training(tmp_path):
    model, tok = top_lora_model(attention_dropout=0.1)
    examples = examples_of(tok)
    assert not fast_path_of(model, examples, tok, mode="auto").caches  # would turn the dropout off
    assert fast_path_of(model, examples, tok, mode="memory").caches  # asked for: frozen layers in eval mode
    model, tok = top_lora_model()
    model.config.embedding_dropout = 0.1  # a Starcoder2-style dropout on the decoder's input
    with pytest.raises(UnsupportedModelError, match="embedding dropout"):
        fast_path_of(model, examples, tok, mode="memory")


def test_unsupported_placements_and_sizes_are_refused_before_the_charge(tmp_path):
    trainer = trainer_of(tmp_path, activation_cache="memory", activation_cache_max_gib=1e-9)
    with pytest.raises(DPConfigError, match="activation_cache_max_gib"):
        trainer.train()
    assert trainer.ledger.epsilon_spent() == 0.0
    model, tok = tiny_causal_lm(num_hidden_layers=LAYERS)
    model.config.final_logit_softcapping = 30.0
    trainer = trainer_of(tmp_path / "cap", model=model, tok=tok, activation_cache="disk")
    with pytest.raises(UnsupportedModelError, match="final_logit_softcapping"):
        trainer.train()
    assert trainer.ledger.epsilon_spent() == 0.0
    assert not list((tmp_path / "cap").glob(f"**/{CACHE_FOLDER_PREFIX}*"))
