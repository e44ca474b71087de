"""Preparation end to end: loading, bounding, scrubbing, encoding, tokenising; bad input."""

import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from hf_dpsynth.data import (
    CategoricalColumn,
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
from hf_dpsynth.training.data import IGNORE_INDEX

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


def test_tabular_preparation_shuffles_order_per_example():
    data = Dataset.from_dict({"age": [30] * 40, "sex": ["Male"] * 40, "score": [0.5] * 40})
    prepared = prepare_dataset(data, TabularCodec(SCHEMA), shuffle_seed=1)
    completions = prepared.dataset["completion"][:]
    assert len(set(completions)) > 1  # orders differ between examples
    codec = TabularCodec(SCHEMA)
    assert all(codec.decode(c) == {"age": 30, "sex": "Male", "score": 0.5} for c in completions)
    again = prepare_dataset(data, TabularCodec(SCHEMA), shuffle_seed=1)
    assert again.dataset["completion"][:] == completions


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
        ({}, {"label": ["eggs"], "text": ["x"]}, DatasetError, "Row 0 .*unknown_category.*'eggs'"),
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
