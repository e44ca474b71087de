"""Tokenisation, units and chunk planning: no packing, nothing dropped, nothing twice."""

import numpy as np
import pytest
from datasets import Dataset

from hf_dpsynth import DPSynthConfig
from hf_dpsynth.models import tiny_tokenizer
from hf_dpsynth.data.tokenize import IGNORE_INDEX, tokenize_dataset
from hf_dpsynth.data.units import PrivacyUnits
from hf_dpsynth.training.batching import collate, plan_chunks, rank_share


def test_each_row_holds_exactly_one_example_no_packing():
    tok = tiny_tokenizer()
    ds = Dataset.from_dict({"prompt": ["label: spam\n", "label: ham\n"], "completion": ["Win a prize now", "ok"]})
    ex = tokenize_dataset(ds, tok, max_length=64)
    batch = collate(ex, [0, 1], pad_token_id=tok.pad_token_id)
    for i in range(2):
        n = len(ex.input_ids[i])
        assert batch["input_ids"][i, :n].tolist() == ex.input_ids[i]  # one example per row, from position 0
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert batch["position_ids"][i, :n].tolist() == list(range(n))  # per-example positions
        prompt_len = len(tok(ds[i]["prompt"], add_special_tokens=False)["input_ids"])
        labels = batch["labels"][i].tolist()
        assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len  # no loss on the conditioning prefix
        assert labels[prompt_len:n] == ex.input_ids[i][prompt_len:]
        assert ex.input_ids[i][-1] == tok.eos_token_id


def test_a_record_without_prefix_is_learned_after_the_start_token_it_is_sampled_from():
    """Unconditioned codecs (tabular rows) have an empty prompt: training must put the same start
    token before the record that sampling starts from, and take a loss on the record's first token."""
    from hf_dpsynth.data.tokenize import prompt_ids

    tok = tiny_tokenizer()
    ds = Dataset.from_dict({"prompt": ["", "label: ham\n"], "completion": ["age is 39, sex is Male", "ok"]})
    ex = tokenize_dataset(ds, tok, max_length=64)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    sampled_from = prompt_ids(tok, [""])[0]
    assert sampled_from == [start]
    body = tok("age is 39, sex is Male", add_special_tokens=False)["input_ids"]
    assert ex.input_ids[0] == [start, *body, tok.eos_token_id]
    assert ex.labels[0] == [IGNORE_INDEX, *body, tok.eos_token_id]  # the first body token carries a loss
    # A non-empty prefix is used as it is (no start token added in front of it).
    assert ex.input_ids[1][: len(prompt_ids(tok, ["label: ham\n"])[0])] == prompt_ids(tok, ["label: ham\n"])[0]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_drawn_unit_is_processed_exactly_once_across_ranks_and_chunks(world_size):
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 7, size=40)  # users with 1..6 examples; chunk size 4 forces splits
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    units = PrivacyUnits(offsets=offsets, examples=np.arange(offsets[-1]))
    draw = np.sort(rng.choice(40, size=25, replace=False))
    seen = []
    for rank in range(world_size):
        for chunk in plan_chunks(rank_share(draw, units, rank=rank, world_size=world_size), units, 4):
            assert len(chunk.examples) <= 4
            seen.extend(chunk.examples.tolist())
            for slot, unit in enumerate(chunk.units):
                members = chunk.examples[chunk.unit_slots == slot]
                assert set(members) <= set(units.examples_of(unit))
            # a unit that fits in one chunk is never split
            for unit, complete in zip(chunk.units, chunk.completes):
                if units.sizes()[unit] <= 4:
                    assert complete
    expected = np.concatenate([units.examples_of(u) for u in draw]).tolist()
    assert sorted(seen) == sorted(expected)


def test_dp_seed_never_reaches_logged_arguments(tmp_path):
    args = DPSynthConfig(output_dir=str(tmp_path), target_epsilon=1.0, dp_seed=1234)
    assert "1234" not in args.to_json_string() and args.to_dict()["dp_seed"] == "<redacted>"
    assert args.dp_seed == 1234  # the trainer still uses it
