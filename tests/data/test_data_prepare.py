"""Preparation end to end: loading, bounding, scrubbing, encoding, tokenising; bad input."""

import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from hf_dpsynth.data import (
    CategoricalColumn,
    PreparationReport,
    FloatColumn,
    ImageCodec,
    IntegerColumn,
    PIIScrubber,
    TabularCodec,
    TabularSchema,
    TextCodec,
    adult_schema,
    bound_contributions,
    load_digits_images,
    load_records,
    load_sms_spam_collection,
    load_uci_adult,
    prepare_dataset,
)
from hf_dpsynth.errors import DatasetError, SchemaError
from hf_dpsynth.resources import load_sms_spam
from hf_dpsynth.data.tokenize import IGNORE_INDEX

LABELS = {"label": ["ham", "spam"]}


def _messages():
    return Dataset.from_dict(
        {
            "user": ["u1", "u1", "u1", "u2", "u1", "u3", "u2"],
            "label": ["ham", "spam", "ham", "ham", "ham", "spam", "ham"],
            "text": [
                "see you at 6",
                "WIN a prize! call 09061701461 now",
                "see you at 6",  # exact duplicate of u1's first record
                "see you at 6",  # same text, another user: not a duplicate of u1's
                "mail me: jo.smith@example.com",
                "claim at www.example.com/win",
                "ok",
            ],
        }
    )


# ------------------------------------------------------------------------------------ text


def test_text_preparation_scrubs_and_conditions():
    prepared = prepare_dataset(_messages(), TextCodec(conditions=LABELS))
    rows = prepared.dataset.to_list()
    assert [r["prompt"] for r in rows] == ["label: ham\n", "label: spam\n", "label: ham\n", "label: ham\n", "label: ham\n", "label: spam\n", "label: ham\n"]
    assert rows[1]["completion"] == "WIN a prize! call <PHONE> now"
    assert rows[4]["completion"] == "mail me: <EMAIL>"
    assert rows[5]["completion"] == "claim at <URL>"
    assert prepared.num_units == 7 and prepared.num_users is None
    report = prepared.report
    assert report.pii_replacements == {"PHONE": 1, "EMAIL": 1, "URL": 1}
    assert report.records_with_pii == 3


def test_scrubbing_can_be_switched_off_or_configured():
    raw = prepare_dataset(_messages(), TextCodec(conditions=LABELS), scrub_pii=False)
    assert raw.dataset[1]["completion"] == "WIN a prize! call 09061701461 now"
    assert raw.report.pii_scrubbing["enabled"] is False
    only_email = prepare_dataset(_messages(), TextCodec(conditions=LABELS), scrub_pii=PIIScrubber(types=["EMAIL"]))
    assert only_email.dataset[1]["completion"] == "WIN a prize! call 09061701461 now"
    assert only_email.dataset[4]["completion"] == "mail me: <EMAIL>"


def test_user_level_caps_and_collapses_duplicates_within_a_user():
    prepared = prepare_dataset(
        _messages(), TextCodec(conditions=LABELS), privacy_unit="user", user_id_column="user", max_examples_per_user=2
    )
    users = prepared.dataset["user"][:]
    assert prepared.num_units == prepared.num_users == 3
    # u1 had 4 records, one an exact duplicate: 3 distinct, capped to 2. u2 keeps its "see you at 6".
    assert users.count("u1") == 2 and users.count("u2") == 2 and users.count("u3") == 1
    assert users == sorted(users, key=["u1", "u2", "u3"].index)  # grouped by unit
    report = prepared.report
    assert (report.num_records_read, report.duplicates_removed, report.capped_removed, report.num_records_kept) == (7, 1, 1, 5)
    assert prepared.training_kwargs() == {"privacy_unit": "user", "user_id_column": "user", "max_examples_per_user": 2}


def test_cap_is_deterministic_and_independent_of_other_users():
    base = {"user": ["a"] * 10, "text": [f"message {i}" for i in range(10)]}
    others = {"user": ["b"] * 5 + ["a"] * 10, "text": [f"other {i}" for i in range(5)] + base["text"]}
    first = prepare_dataset(Dataset.from_dict(base), TextCodec(), privacy_unit="user", user_id_column="user", max_examples_per_user=3)
    second = prepare_dataset(Dataset.from_dict(others), TextCodec(), privacy_unit="user", user_id_column="user", max_examples_per_user=3)
    kept_a = [r["completion"] for r in first.dataset.to_list()]
    kept_a_again = [r["completion"] for r in second.dataset.to_list() if r["user"] == "a"]
    assert kept_a == kept_a_again and len(kept_a) == 3


def test_bound_contributions_never_keeps_more_than_the_cap():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, size=500).tolist()
    bounded = bound_contributions(500, privacy_unit="user", user_ids=users, max_examples_per_user=4)
    sizes = np.diff(bounded.offsets)
    assert sizes.max() <= 4 and bounded.num_units == len(set(users))
    kept_per_user = {}
    for row in bounded.rows:
        kept_per_user[users[row]] = kept_per_user.get(users[row], 0) + 1
    assert all(kept_per_user[u] == min(4, users.count(u)) for u in set(users))


def test_loss_mask_covers_only_the_text(tiny_tokenizer):
    prepared = prepare_dataset(_messages(), TextCodec(conditions=LABELS))
    examples = prepared.tokenize(tiny_tokenizer, max_length=64)
    prompts = prepared.dataset["prompt"][:]
    for prompt, ids, labels in zip(prompts, examples.input_ids, examples.labels):
        prompt_len = len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert prompt_len > 0
        assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
        assert labels[prompt_len:] == ids[prompt_len:]  # the text and the closing EOS
        assert ids[-1] == tiny_tokenizer.eos_token_id
    short = prepared.tokenize(tiny_tokenizer, max_length=4)
    assert all(len(ids) <= 4 for ids in short.input_ids)


@pytest.fixture
def tiny_tokenizer():
    from hf_dpsynth.models import tiny_tokenizer

    return tiny_tokenizer()


# ------------------------------------------------------------------------------------ tabular


SCHEMA = TabularSchema(
    [
        IntegerColumn("age", 17, 90),
        CategoricalColumn("sex", ("Female", "Male")),
        FloatColumn("score", 0.0, 1.0, precision=2, nullable=True),
    ]
)


def _column_order(completion):
    return tuple(pair.split(" is ")[0] for pair in completion.split(", "))


def test_tabular_preparation_shuffles_order_per_example():
    ages = list(range(20, 60))
    data = Dataset.from_dict({"age": ages, "sex": ["Male"] * 40, "score": [0.5] * 40})
    prepared = prepare_dataset(data, TabularCodec(SCHEMA), shuffle_seed=1)
    completions = prepared.dataset["completion"][:]
    assert len({_column_order(c) for c in completions}) > 1  # orders differ between examples
    codec = TabularCodec(SCHEMA)
    assert [codec.decode(c) for c in completions] == [{"age": a, "sex": "Male", "score": 0.5} for a in ages]
    again = prepare_dataset(data, TabularCodec(SCHEMA), shuffle_seed=1)
    assert again.dataset["completion"][:] == completions
    other_key = prepare_dataset(data, TabularCodec(SCHEMA), shuffle_seed=2)
    assert other_key.dataset["completion"][:] != completions  # shuffle_seed is mixed into the hash
    # The order is a function of the record alone: identical records are written identically.
    twins = prepare_dataset(Dataset.from_dict({"age": [30] * 5, "sex": ["Male"] * 5, "score": [0.5] * 5}), TabularCodec(SCHEMA))
    assert len(set(twins.dataset["completion"][:])) == 1


def test_out_of_bounds_is_an_error_or_clipped_on_request():
    data = Dataset.from_dict({"age": [30, 150], "sex": ["Male", "Female"], "score": [0.5, 0.2]})
    with pytest.raises(DatasetError, match=r"Row 1 .*\[17, 90\]"):
        prepare_dataset(data, TabularCodec(SCHEMA))
    clipped = prepare_dataset(data, TabularCodec(SCHEMA), on_out_of_bounds="clip")
    assert "age is 90" in clipped.dataset[1]["completion"]
    assert clipped.report.rows_clipped_to_bounds == 1
    with pytest.raises(DatasetError, match="tabular data only"):
        prepare_dataset(_messages(), TextCodec(), on_out_of_bounds="clip")


def test_report_separates_owner_only_counts():
    prepared = prepare_dataset(
        _messages(), TextCodec(conditions=LABELS), privacy_unit="user", user_id_column="user", max_examples_per_user=2
    )
    shareable = prepared.report.to_dict()
    assert shareable["num_units"] == 3 and shareable["privacy_unit"] == "user"
    flat = json.dumps(shareable)
    for owner_only in ("duplicates_removed", "capped_removed", "pii_replacements", "num_records_read"):
        assert owner_only not in flat
    full = prepared.report.to_dict(include_owner_only=True)
    assert full["owner_only"]["capped_removed"] == 1
    assert "not differentially private" in str(prepared.report)


# ------------------------------------------------------------------------------------ images


def test_digits_prepare_exactly():
    digits = load_digits_images().select(range(50))
    codec = ImageCodec((8, 8), 17, conditions={"label": [str(d) for d in range(10)]})
    prepared = prepare_dataset(digits, codec)
    first = prepared.dataset[0]
    decoded = codec.decode(first["prompt"] + first["completion"])
    np.testing.assert_array_equal(decoded["image"], np.asarray(digits[0]["image"]))
    assert decoded["label"] == digits[0]["label"]
    assert prepared.report.pii_scrubbing["enabled"] is False


# ------------------------------------------------------------------------------------ inputs


def test_files_of_each_format(tmp_path):
    rows = [{"label": "ham", "text": "hello there"}, {"label": "spam", "text": "WIN now"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "m.csv").write_text("label,text\nham,hello there\nspam,WIN now\n", encoding="utf-8")
    Dataset.from_list(rows).to_parquet(str(tmp_path / "m.parquet"))
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello there", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("WIN now", encoding="utf-8")
    for name in ("m.jsonl", "m.csv", "m.parquet"):
        prepared = prepare_dataset(tmp_path / name, TextCodec(conditions=LABELS))
        assert prepared.dataset["completion"][:] == ["hello there", "WIN now"], name
    assert load_records(folder)["file"][:] == ["a.txt", "sub/b.txt"]
    assert prepare_dataset(folder, TextCodec()).dataset["completion"][:] == ["hello there", "WIN now"]
    split = DatasetDict({"train": Dataset.from_list(rows)})
    assert len(prepare_dataset(split, TextCodec()).dataset) == 2
    with pytest.raises(DatasetError, match=r"no split 'test'.*\['train'\]"):
        prepare_dataset(split, TextCodec(), split="test")


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [
        (b"label,text\nham,caf\xe9\n", ".csv", r"not valid UTF-8: byte 0xe9 .*line 2"),
        (b'{"text": "a"}\n{"text": NaN}\n', ".jsonl", "line 2: not a JSON object.*NaN"),
        (b'{"text": "a"}\n[1, 2]\n', ".jsonl", "line 2: expected a JSON object"),
        (b'{"text": "a"}\n{"body": "b"}\n', ".jsonl", "same fields"),
        (b"label,text\n", ".csv", "is empty"),
        (b"x,text\n1,inf\n", ".tsv", "unsupported file type"),
    ],
)
def test_bad_files_are_refused_clearly(tmp_path, content, suffix, match):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=match):
        prepare_dataset(path, TextCodec())


def test_infinite_numbers_in_csv_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("age,sex,score\n30,Male,inf\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="infinite"):
        prepare_dataset(path, TabularCodec(SCHEMA))


def test_nan_in_a_non_nullable_column_is_refused():
    data = Dataset.from_dict({"age": [30.0, float("nan")], "sex": ["Male", "Male"], "score": [0.1, 0.2]})
    with pytest.raises(DatasetError, match="Row 1 .*not_finite"):
        prepare_dataset(data, TabularCodec(SCHEMA))


@pytest.mark.parametrize(
    ("kwargs", "data", "error", "match"),
    [
        ({}, {"label": ["ham"], "body": ["x"]}, DatasetError, r"no column\(s\) \['text'\].*\['label', 'body'\]"),
        ({}, {"label": [], "text": []}, DatasetError, "is empty"),
        ({}, {"label": ["eggs"], "text": ["x"]}, DatasetError, r"Row 0 \(column 'label'\) .*unknown_category.*'ham', 'spam'"),
        ({}, {"label": ["ham"], "text": ["   "]}, DatasetError, "Row 0 .*empty"),
        ({"privacy_unit": "user"}, {"label": ["ham"], "text": ["x"]}, DatasetError, "needs user_id_column"),
        ({"privacy_unit": "user", "user_id_column": "u"}, {"label": ["ham"], "text": ["x"], "u": [1]}, DatasetError, "max_examples_per_user"),
        ({"privacy_unit": "user", "user_id_column": "u", "max_examples_per_user": 2}, {"label": ["ham"], "text": ["x"]}, DatasetError, r"no column\(s\) \['u'\]"),
        ({"privacy_unit": "user", "user_id_column": "u", "max_examples_per_user": 2}, {"label": ["ham"], "text": ["x"], "u": [None]}, DatasetError, "Row 0 has no user id"),
        ({"privacy_unit": "user", "user_id_column": "label", "max_examples_per_user": 2}, {"label": ["ham"], "text": ["x"]}, DatasetError, "never be part of the training text"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, data, error, match):
    with pytest.raises(error, match=match):
        prepare_dataset(Dataset.from_dict(data), TextCodec(conditions=LABELS), **kwargs)


def test_images_of_wrong_shape_or_dtype_are_refused():
    codec = ImageCodec((8, 8), 17)
    with pytest.raises(DatasetError, match="Row 1 .*shape"):
        prepare_dataset(Dataset.from_dict({"image": [[[0] * 8] * 8, [[0] * 7] * 8]}), codec)
    with pytest.raises(DatasetError, match="Row 0 .*dtype"):
        prepare_dataset(Dataset.from_dict({"image": [[["a"] * 8] * 8]}), codec)


def test_schema_that_does_not_match_the_data():
    data = Dataset.from_dict({"age": [30], "gender": ["Male"], "score": [0.1]})
    with pytest.raises((SchemaError, DatasetError), match=r"\['sex'\]"):
        prepare_dataset(data, TabularCodec(SCHEMA))


# ------------------------------------------------------------------------------------ real data


def test_sms_loader_matches_the_packaged_copy(shared_data):
    from_path = load_sms_spam_collection(shared_data / "sms-spam-collection")
    assert len(from_path) == 5574
    assert from_path["label"][:].count("spam") == 747
    assert from_path.to_dict() == load_sms_spam("all").to_dict()


def test_adult_loader_and_public_schema(shared_data):
    train = load_uci_adult(shared_data / "uci-adult")
    test = load_uci_adult(shared_data / "uci-adult" / "adult.test", split="test")
    assert (len(train), len(test)) == (32561, 16281)
    assert set(test["income"][:]) == {"<=50K", ">50K"}
    assert sum(v is None for v in train["workclass"][:]) > 0
    prepared = prepare_dataset(train.select(range(2000)), TabularCodec(adult_schema()))
    codec = TabularCodec(adult_schema())
    assert codec.decode(prepared.dataset[0]["completion"]) == {k: v for k, v in train[0].items()}
    with pytest.raises(DatasetError, match="is not a file"):
        load_uci_adult(shared_data)  # no adult.data directly in the data root


# ------------------------------------------------------------------------------------ training


def test_trainer_trains_on_a_prepared_dataset_at_its_unit(tmp_path):
    from hf_dpsynth import DPSynthConfig, DPSynthTrainer
    from hf_dpsynth.errors import DPConfigError
    from hf_dpsynth.models import tiny_causal_lm
    from peft import LoraConfig

    prepared = prepare_dataset(
        _messages(), TextCodec(conditions=LABELS), privacy_unit="user", user_id_column="user", max_examples_per_user=2
    )

    def trainer(**overrides):
        model, tok = tiny_causal_lm()
        args = dict(
            output_dir=str(tmp_path / "out"), target_epsilon=8.0, target_delta=1e-3, logical_batch_size=2,
            per_device_train_batch_size=2, max_steps=2, dp_seed=1, report_to="none", save_strategy="no",
            use_cpu=True, disable_tqdm=True, accountant="rdp", **prepared.training_kwargs(),
        )
        args.update(overrides)
        return DPSynthTrainer(
            model=model, args=DPSynthConfig(**args), train_dataset=prepared, processing_class=tok,
            peft_config=LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"),
        )

    with pytest.raises(DPConfigError, match="max_examples_per_user is 3 in the config but 2 in the preparation"):
        trainer(max_examples_per_user=3)
    run = trainer()
    run.train()
    report = run.privacy_report()
    assert report.num_units == prepared.num_units == 3


# ------------------------------------------------------------------------------------ 1-stability
# docs/DP_CORRECTNESS.md row 30: every per-record choice is a function of that record (and its user) alone,
# so preparing D and D minus one record writes every other record exactly the same way.


def _tabular_rows(n=30):
    rng = np.random.default_rng(7)
    return {
        "user": [f"u{i % 7}" for i in range(n)],
        "label": ["ham" if i % 3 else "spam" for i in range(n)],
        "age": [int(a) for a in rng.integers(17, 91, size=n)],
        "sex": [["Female", "Male"][int(b)] for b in rng.integers(0, 2, size=n)],
        "score": [round(float(x), 2) for x in rng.random(n)],
    }


def _without(data, row):
    return {k: v[:row] + v[row + 1:] for k, v in data.items()}


def _written(prepared, codec):
    """Each prepared record's (prompt, completion), keyed by the record it encodes (and its user)."""
    rows = prepared.dataset.to_list()
    out = {}
    for r in rows:
        key = (r.get("user"), json.dumps(codec.decode(r["prompt"] + r["completion"]), sort_keys=True))
        assert key not in out  # the records are distinct
        out[key] = (r["prompt"], r["completion"])
    return out


@pytest.mark.parametrize("unit", ["example", "user"])
def test_tabular_preparation_is_one_stable(unit):
    """Row 30: removing one record leaves every other record's prompt and completion unchanged."""
    codec = TabularCodec(SCHEMA, conditions=LABELS)
    kwargs = {"privacy_unit": "user", "user_id_column": "user", "max_examples_per_user": 10} if unit == "user" else {}
    data = _tabular_rows()
    full = _written(prepare_dataset(Dataset.from_dict(data), codec, shuffle_seed=3, **kwargs), codec)
    assert len({_column_order(c) for _, c in full.values()}) > 1  # the orders do vary
    for removed in (0, 11, 29):
        less = _written(prepare_dataset(Dataset.from_dict(_without(data, removed)), codec, shuffle_seed=3, **kwargs), codec)
        assert len(less) == len(full) - 1 and set(less) < set(full)
        assert all(less[key] == full[key] for key in less), f"removing row {removed} rewrote other records"


def test_text_preparation_is_one_stable():
    data = _messages().to_dict()
    full = prepare_dataset(Dataset.from_dict(data), TextCodec(conditions=LABELS)).dataset.to_list()
    for removed in range(len(full)):
        less = prepare_dataset(Dataset.from_dict(_without(data, removed)), TextCodec(conditions=LABELS)).dataset.to_list()
        assert less == full[:removed] + full[removed + 1:]


def test_private_prediction_batches_differ_in_one_member_after_removing_one_record():
    """Row 30: private prediction's batch key is the prepared text, so it must be 1-stable too."""
    from hf_dpsynth import PrivacyLedger
    from hf_dpsynth.generation import PrivatePredictionSynthesizer
    from hf_dpsynth.models import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=3)
    codec = TabularCodec(SCHEMA, conditions=LABELS)
    data = _tabular_rows()

    def members(d):
        ledger = PrivacyLedger(epsilon=8.0, delta=1e-5, accountant="rdp")
        ledger.plan({"private_prediction": 1.0})
        gen = PrivatePredictionSynthesizer(
            model, tok, prepare_dataset(Dataset.from_dict(d), codec), codec=codec, ledger=ledger,
            expected_batch_size=2, batches_per_label={"ham": 3, "spam": 2}, clip=1.0, max_private_tokens=2,
        )
        return gen._members

    full = members(data)
    for removed in (0, 11, 29):
        less = members(_without(data, removed))
        assert less.keys() == full.keys()
        changed = [key for key in full if full[key] != less[key]]
        assert len(changed) == 1, f"removing row {removed} moved records in batches {changed}"
        (key,) = changed
        gone = [m for m in full[key] if m not in less[key]]
        assert len(gone) == 1 and [m for m in full[key] if m != gone[0]] == less[key]
        assert key[0] == data["label"][removed]


# ------------------------------------------------------------------------------------ errors, drop_invalid


def test_row_errors_name_the_row_and_column_never_the_value():
    cases = [
        (TextCodec(conditions=LABELS), {"label": ["ham", "secretcategory"], "text": ["hi", "x"]}, "secretcategory", r"Row 1 \(column 'label'\)"),
        (TextCodec(), {"text": [123456789, 5]}, "123456789", r"Row 0 \(column 'text'\) .*not_text"),
        (TabularCodec(SCHEMA), {"age": [30, 87654], "sex": ["Male", "Male"], "score": [0.1, 0.2]}, "87654", r"Row 1 \(column 'age'\) .*\[17, 90\]"),
    ]
    for codec, data, secret, match in cases:
        with pytest.raises(DatasetError, match=match) as info:
            prepare_dataset(Dataset.from_dict(data), codec)
        assert secret not in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained reason quoting it
        assert "drop_invalid=True" in str(info.value)


def _with_blanks():
    return Dataset.from_dict({
        "label": ["ham", "spam", "ham", "ham", "eggs", "spam", "ham"],
        "text": ["see you at 6", "WIN now", "", "ok then", "fine", "   ", "call me"],
    })


def test_blank_texts_refuse_by_default_and_are_dropped_on_request():
    with pytest.raises(DatasetError, match=r"Row 2 \(column 'text'\) does not fit the codec \(empty\)"):
        prepare_dataset(_with_blanks(), TextCodec(conditions=LABELS))
    prepared = prepare_dataset(_with_blanks(), TextCodec(conditions=LABELS), drop_invalid=True)
    assert prepared.dataset["completion"][:] == ["see you at 6", "WIN now", "ok then", "call me"]
    assert prepared.dataset["label"][:] == ["ham", "spam", "ham", "ham"]
    assert prepared.num_units == 4  # N counts the rows kept
    report = prepared.report
    assert report.invalid_dropped == {"empty": 2, "unknown_category": 1}
    assert (report.num_records_read, report.num_records_kept) == (7, 4)
    assert "invalid_dropped" in PreparationReport.OWNER_ONLY
    assert "invalid_dropped" not in json.dumps(report.to_dict()) and report.to_dict()["drop_invalid"] is True
    assert report.to_dict(include_owner_only=True)["owner_only"]["invalid_dropped"] == {"empty": 2, "unknown_category": 1}
    assert "empty 2, unknown_category 1" in str(report)
    assert prepare_dataset(_messages(), TextCodec(conditions=LABELS)).report.invalid_dropped == {}


@pytest.mark.parametrize("unit", ["example", "user"])
def test_drop_invalid_is_one_stable(unit):
    """D and D plus one invalid row prepare to identical datasets (the drop precedes dedup and cap)."""
    kwargs = {"privacy_unit": "user", "user_id_column": "user", "max_examples_per_user": 2} if unit == "user" else {}
    text = _messages().to_dict()
    tab = {k: v for k, v in _tabular_rows(12).items() if k != "label"}
    bad_text = [{"user": "u1", "label": "ham", "text": " "}, {"user": "u2", "label": "eggs", "text": "hi"},
                {"user": "u9", "label": "ham", "text": ""}]
    bad_tab = [{"user": "u1", "age": 300, "sex": "Male", "score": 0.1}, {"user": "u2", "age": float("nan"), "sex": "Male", "score": 0.1},
               {"user": "u3", "age": 40, "sex": "Other", "score": 0.1}]
    for data, codec, bad_rows in ((text, TextCodec(conditions=LABELS), bad_text), (tab, TabularCodec(SCHEMA), bad_tab)):
        base = prepare_dataset(Dataset.from_dict(data), codec, drop_invalid=True, **kwargs)
        for bad in bad_rows:
            for at in (0, 3, len(data["user"])):
                plus = {k: v[:at] + [bad[k]] + v[at:] for k, v in data.items()}
                prepared = prepare_dataset(Dataset.from_dict(plus), codec, drop_invalid=True, **kwargs)
                assert prepared.dataset.to_dict() == base.dataset.to_dict()
                assert prepared.num_units == base.num_units and prepared.num_users == base.num_users
                assert sum(prepared.report.invalid_dropped.values()) == 1


def test_a_text_that_no_longer_fits_once_scrubbed_is_dropped_too():
    data = Dataset.from_dict({"text": ["hello", "x a@b.io", "bye"]})  # 8 characters; "x <EMAIL>" has 9
    codec = TextCodec(max_chars=8)
    with pytest.raises(DatasetError, match=r"Row 1 \(column 'text'\) does not fit the codec after PII scrubbing \(too_long\)") as info:
        prepare_dataset(data, codec)
    assert "a@b.io" not in str(info.value)
    prepared = prepare_dataset(data, codec, drop_invalid=True)
    assert prepared.dataset["completion"][:] == ["hello", "bye"]
    assert prepared.report.invalid_dropped == {"too_long": 1} and prepared.report.records_with_pii == 0


def test_everything_dropped_is_the_empty_dataset_error_with_a_hint():
    with pytest.raises(DatasetError, match=r"Every one of the 2 rows was dropped as invalid.*empty 2.*codec's fields"):
        prepare_dataset(Dataset.from_dict({"text": ["", " "]}), TextCodec(), drop_invalid=True)
    with pytest.raises(DatasetError, match="drop_invalid must be True or False"):
        prepare_dataset(_messages(), TextCodec(), drop_invalid="yes")


def test_a_missing_user_id_names_its_own_row_after_rows_were_dropped():
    data = Dataset.from_dict({"u": ["a", "b", None], "text": ["", "hi", "ho"]})
    with pytest.raises(DatasetError, match="Row 2 has no user id"):
        prepare_dataset(data, TextCodec(), privacy_unit="user", user_id_column="u", max_examples_per_user=1, drop_invalid=True)


def test_prepared_data_keeps_each_condition_value_in_its_own_column():
    source = _messages()
    prepared = prepare_dataset(source, TextCodec(conditions=LABELS))
    assert prepared.dataset.column_names == ["prompt", "completion", "label"]
    assert prepared.dataset["label"][:] == source["label"][:]
    users = prepare_dataset(source, TextCodec(conditions=LABELS), privacy_unit="user", user_id_column="user", max_examples_per_user=2)
    by_text = {(u, t): lab for u, t, lab in zip(source["user"][:], source["text"][:], source["label"][:])}
    for row in users.dataset.to_list():  # each kept record's label is its source row's (no PII in these texts)
        if "<" not in row["completion"]:
            assert row["label"] == by_text[(row["user"], row["completion"])]
    assert prepare_dataset(source, TextCodec()).dataset.column_names == ["prompt", "completion"]
    with pytest.raises(DatasetError, match="name of a column of the prepared data"):
        prepare_dataset(Dataset.from_dict({"prompt": ["a"], "text": ["x"]}), TextCodec(conditions={"prompt": ["a"]}))
