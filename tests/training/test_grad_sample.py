"""Per-example gradients from the hooks equal gradients computed one example at a time."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from hf_dpsynth.errors import UnsupportedModelError
from hf_dpsynth.models import tiny_causal_lm
from hf_dpsynth.data.tokenize import IGNORE_INDEX, TokenizedExamples
from hf_dpsynth.training.batching import collate
from hf_dpsynth.training.grad_sample import ClippedSum, PerExampleGradients, validate_model
from hf_dpsynth.training.loss import per_example_causal_lm_loss

TEXTS = [
    "Hi, are you coming to the party tonight?",
    "Congratulations! You have won a free prize. Call now to claim your reward.",
    "Ok",
    "Sorry I missed your call, can we meet tomorrow at noon near the station? I will call you later.",
]


def lora_model(dropout=0.0, r=4, bias="none", seed=0):
    model, tok = tiny_causal_lm(seed=seed)
    config = LoraConfig(r=r, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", bias=bias)
    model = get_peft_model(model, config)
    # peft initialises lora_B at zero; randomise it so that lora_A's gradients are non-zero too.
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model, tok


def batch_of(tok, texts=TEXTS, no_target_row=None):
    ids = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    labels = [list(x) for x in ids]
    if no_target_row is not None:
        labels[no_target_row] = [IGNORE_INDEX] * len(labels[no_target_row])
    return collate(TokenizedExamples(ids, labels), list(range(len(texts))), pad_token_id=tok.pad_token_id)


def hooked_per_example(model, batch):
    engine = PerExampleGradients(validate_model(model))
    engine.attach()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with engine.capture(batch_size=batch["input_ids"].shape[0]):
        out = model(**inputs)
        per_example_causal_lm_loss(out.logits, batch["labels"]).sum().backward()
    engine.detach()
    grads = engine.pop()
    return {t.name: grads[t.param] for t in engine.trainable}


def one_at_a_time(model, batch):
    """The oracle: each example alone, unpadded, through ordinary autograd."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    out = {n: [] for n in names}
    for i in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][i].sum())
        single = {k: v[i : i + 1, :n] for k, v in batch.items()}
        logits = model(input_ids=single["input_ids"]).logits
        loss = per_example_causal_lm_loss(logits, single["labels"]).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for name, p, g in zip(names, params, grads):
            out[name].append(torch.zeros_like(p) if g is None else g)
    return {n: torch.stack(v) for n, v in out.items()}


def assert_close(hooked, oracle):
    assert hooked.keys() == oracle.keys()
    for name in oracle:
        torch.testing.assert_close(hooked[name], oracle[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("bias", ["none", "lora_only"])
def test_per_example_gradients_equal_one_at_a_time(bias):
    model, tok = lora_model(bias=bias)
    batch = batch_of(tok, no_target_row=2)
    hooked = hooked_per_example(model, batch)
    oracle = one_at_a_time(model, batch)
    assert_close(hooked, oracle)
    # The example without target tokens has an exactly zero gradient; the others do not.
    assert all(float(g[2].abs().max()) == 0.0 for g in hooked.values())
    assert all(float(g[0].abs().max()) > 0 for g in hooked.values())


def test_with_lora_dropout_matches_per_example_autograd_on_the_same_forward():
    # With dropout, masks differ between passes: the oracle differentiates each example's loss of
    # the *same* forward pass separately, which checks that dropout and scaling are not applied twice.
    model, tok = lora_model(dropout=0.3)
    model.train()
    batch = batch_of(tok)
    engine = PerExampleGradients(validate_model(model))
    engine.attach()
    params = [t.param for t in engine.trainable]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with engine.capture(batch_size=len(TEXTS)):
        losses = per_example_causal_lm_loss(model(**inputs).logits, batch["labels"])
        oracle = [torch.autograd.grad(losses[i], params, retain_graph=True) for i in range(len(TEXTS))]
        engine.pop()  # the oracle's own backward passes went through the hooks too
        losses.sum().backward()
    grads = engine.pop()
    for j, p in enumerate(params):
        torch.testing.assert_close(grads[p], torch.stack([o[j] for o in oracle]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_per_example_gradients(use_reentrant):
    model, tok = lora_model()
    batch = batch_of(tok)
    oracle = one_at_a_time(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.enable_input_require_grads()
    model.train()
    hooked = hooked_per_example(model, batch)
    assert_close(hooked, oracle)


def test_bf16_autocast_norms_match_fp32_reference():
    model, tok = lora_model()
    batch = batch_of(tok)
    ref = hooked_per_example(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = hooked_per_example(model, batch)
    for g in low.values():
        assert g.dtype == torch.float32
    norm = lambda d: torch.sqrt(sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in d.values()))
    torch.testing.assert_close(norm(low), norm(ref), rtol=3e-2, atol=0)


def test_validate_model_refuses_what_it_cannot_do():
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(UnsupportedModelError, match="BatchNorm1d"):
        validate_model(bn)
    model, _ = tiny_causal_lm()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(UnsupportedModelError, match="no trainable parameters"):
        validate_model(model)
    model.model.norm.weight.requires_grad_(True)
    with pytest.raises(UnsupportedModelError, match="LlamaRMSNorm"):
        validate_model(model)
    model.model.norm.weight.requires_grad_(False)
    model.lm_head.weight.requires_grad_(True)  # tied to the input embeddings
    with pytest.raises(UnsupportedModelError, match="shared by 2 modules"):
        validate_model(model)


def test_clipped_sum_sensitivity_is_at_most_clip_and_reached():
    """Add/remove one unit moves the pre-noise clipped sum by at most C, with equality reachable."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.zeros(3, 5)), nn.Parameter(torch.zeros(5))]
    clip = 0.7

    def clipped(per_example):
        s = ClippedSum(params, per_example_max_grad_norm=clip)
        s.reset()
        b = per_example[0].shape[0]
        s.accumulate(dict(zip(params, per_example)), unit_slots=torch.arange(b), units=list(range(b)), completes=[True] * b)
        s.add_noise(noise_multiplier=0.0, generator=None)
        return torch.cat([t.reshape(-1) for t in s.finish(expected_batch_size=1.0)])

    for scale in (0.01, 1.0, 100.0):
        grads = [torch.randn(6, 3, 5) * scale, torch.randn(6, 5) * scale]
        full = clipped(grads)
        without_last = clipped([g[:-1] for g in grads])
        diff = float((full - without_last).norm())
        assert diff <= clip * (1 + 1e-5)
        if scale == 100.0:  # a large gradient is clipped to exactly C
            assert diff == pytest.approx(clip, rel=1e-4)


def test_user_gradients_are_summed_before_clipping_even_across_chunks():
    params = [nn.Parameter(torch.zeros(4))]
    g = torch.tensor([[3.0, 0, 0, 0], [0, 4.0, 0, 0], [1.0, 1.0, 1.0, 1.0]])
    # Unit 7 owns rows 0 and 1 (split over two chunks), unit 9 owns row 2.
    s = ClippedSum(params, per_example_max_grad_norm=1.0)
    s.reset()
    s.accumulate({params[0]: g[:1]}, unit_slots=torch.tensor([0]), units=[7], completes=[False])
    s.accumulate({params[0]: g[1:]}, unit_slots=torch.tensor([0, 1]), units=[7, 9], completes=[True, True])
    s.add_noise(noise_multiplier=0.0, generator=None)
    (out,) = s.finish(expected_batch_size=1.0)
    expected = torch.tensor([3.0, 4.0, 0, 0]) / 5.0 + torch.tensor([1.0, 1.0, 1.0, 1.0]) / 2.0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_noise_is_added_exactly_once():
    params = [nn.Parameter(torch.zeros(2))]
    s = ClippedSum(params, per_example_max_grad_norm=1.0)
    s.reset()
    s.add_noise(noise_multiplier=1.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="exactly once"):
        s.add_noise(noise_multiplier=1.0, generator=torch.Generator().manual_seed(0))
