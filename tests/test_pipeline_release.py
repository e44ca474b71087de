"""A run folder's outputs are released only with their charges (docs/DP_CORRECTNESS.md rows 24, 31), by one
process at a time; `evaluate` and `card` never charge; the baseline is named after what it used;
bring-your-own-data evaluation never tests on training rows; the CLI answers bad input in one line."""

import json
import re
import shutil
from pathlib import Path

import pytest

from hf_dpsynth.cli.main import main
from hf_dpsynth.errors import DatasetError, DPConfigError, ReusedOutputError
from hf_dpsynth.pipeline import load_recipe, run_recipe
from hf_dpsynth.pipeline.outputs import RunLock, sidecar_path
from hf_dpsynth.privacy import PrivacyLedger

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SMS = RECIPES / "sms_spam_text.yaml"
TINY = dict(model={"name": "tiny"}, data={"max_records": 60}, training={"max_steps": 2}, generation={"num_records": 4},
            evaluation={"enabled": False})
QUIET = dict(progress=False, log=lambda _: None)


def _recipe(**overrides):
    recipe = load_recipe(SMS).with_overrides(**TINY)
    return recipe.with_overrides(**overrides) if overrides else recipe


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run_recipe(_recipe(), output_dir=out, **QUIET)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def _ledger_bytes(out):
    return (out / "privacy_ledger.json").read_bytes()


# -- row 31: reused outputs need their charge --------------------------------------------------------


def test_every_charged_output_names_its_charges_in_the_ledger(finished_run):
    ledger = PrivacyLedger.load(finished_run / "privacy_ledger.json")
    by_stage = {s: set(ledger.charge_ids(s)) for s in ("label_histogram", "training")}
    expected = {"label_histogram.json": {"label_histogram"}, "adapter": {"training"},
                "synthetic": {"training", "label_histogram"}}
    for name, stages in expected.items():
        side = json.loads(sidecar_path(finished_run / name).read_text())
        assert set(side["stages"]) == stages
        assert set(side["charge_ids"]) == set().union(*(by_stage[s] for s in stages))
    assert len(set(ledger.charge_ids())) == len(ledger.charges) == 2  # random ids, one per charge


def test_a_deleted_ledger_is_refused_and_nothing_is_reused(run_copy):
    (run_copy / "privacy_ledger.json").unlink()
    with pytest.raises(ReusedOutputError, match="no privacy_ledger.json"):
        run_recipe(_recipe(), output_dir=run_copy, **QUIET)
    assert not (run_copy / "privacy_ledger.json").exists()  # no fresh, empty ledger was written


def test_a_replaced_ledger_is_refused(run_copy, tmp_path):
    # Another run's ledger (same recipe, same spend, other charges) in place of this one's.
    other = tmp_path / "other"
    run_recipe(_recipe(), output_dir=other, **QUIET)
    shutil.copy(other / "privacy_ledger.json", run_copy / "privacy_ledger.json")
    with pytest.raises(ReusedOutputError, match="does not hold"):
        run_recipe(_recipe(), output_dir=run_copy, **QUIET)


def test_an_output_changed_after_its_charge_is_refused(run_copy):
    hist = run_copy / "label_histogram.json"
    data = json.loads(hist.read_text())
    hist.write_text(json.dumps(data, indent=1))  # same content, other bytes: not what was charged
    with pytest.raises(ReusedOutputError, match="changed after it was charged"):
        run_recipe(_recipe(), output_dir=run_copy, **QUIET)


def test_an_output_without_its_charge_record_is_refused(run_copy):
    sidecar_path(run_copy / "synthetic").unlink()
    with pytest.raises(ReusedOutputError, match="no record of the charge"):
        run_recipe(_recipe(), output_dir=run_copy, **QUIET)


def test_a_sidecar_that_names_no_charge_of_its_stages_is_refused(run_copy):
    side = sidecar_path(run_copy / "synthetic")
    data = json.loads(side.read_text())
    assert data["stages"] and data["charge_ids"]
    side.write_text(json.dumps({**data, "charge_ids": []}))  # stages listed, no charge named
    with pytest.raises(ReusedOutputError, match="names no charge of stage"):
        run_recipe(_recipe(), output_dir=run_copy, **QUIET)


def test_every_epsilon_label_of_the_run_is_rounded_up():
    from hf_dpsynth.pipeline.context import RunSummary
    from hf_dpsynth.pipeline.release import dp_setting, public_baseline_setting
    from hf_dpsynth.privacy import gaussian_event

    ledger = PrivacyLedger(epsilon=10.0, delta=1e-6, num_units=1000)
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=1.3))
    spent = ledger.epsilon_spent()
    shown = [dp_setting(ledger), public_baseline_setting(ledger, ["label_histogram"]),
             RunSummary(output_dir=".", epsilon_spent=spent, delta=1e-6, stages={"label_histogram": spent}).table()]
    for text in shown:
        numbers = [float(v) for v in re.findall(r"(?:ε = |label_histogram\s+|total\s+)([0-9.]+)", text)]
        assert numbers and all(spent <= v <= spent * 1.01 for v in numbers), (text, spent)
    assert float(f"{spent:.3g}") < spent  # this ε is one that rounding to nearest would understate


def test_the_intact_folder_reuses_everything_for_free(run_copy):
    before = _ledger_bytes(run_copy)
    summary = run_recipe(_recipe(), output_dir=run_copy, **QUIET)
    assert {"label_histogram", "generation"} <= set(summary.reused)
    assert _ledger_bytes(run_copy) == before


def test_two_runs_on_one_folder_at_once_are_refused(run_copy):
    before = _ledger_bytes(run_copy)
    with RunLock(run_copy), pytest.raises(DPConfigError, match="in use by another hf-dpsynth process"):
        run_recipe(_recipe(), output_dir=run_copy, **QUIET)
    assert _ledger_bytes(run_copy) == before
    run_recipe(_recipe(), output_dir=run_copy, **QUIET)  # released: the folder is usable again


def test_the_push_refuses_synthetic_data_its_ledger_did_not_pay_for(run_copy, tmp_path, capsys):
    other = tmp_path / "other"
    run_recipe(_recipe(), output_dir=other, **QUIET)
    shutil.copy(other / "privacy_ledger.json", run_copy / "privacy_ledger.json")
    assert main(["push", str(run_copy), "--repo-id", "me/data"]) == 2
    assert "does not hold" in capsys.readouterr().err


# -- evaluate and card never charge ------------------------------------------------------------------


def test_evaluate_and_card_refuse_an_unfinished_stage_instead_of_charging_it(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--model", "tiny", "--max-records", "60", "--max-steps", "2", "--num-records", "4", "--output-dir", str(out)]
    assert main(["train", str(SMS), *common]) == 0
    before = _ledger_bytes(out)
    for command in (["evaluate", str(out), "--max-test-records", "20"], ["card", str(out)]):
        capsys.readouterr()
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "never charges" in err and "hf-dpsynth run" in err and "Traceback" not in err
    assert _ledger_bytes(out) == before
    assert not (out / "synthetic").exists()
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


# -- the baseline's name -----------------------------------------------------------------------------


def test_the_baseline_that_used_the_dp_histogram_is_not_called_public_only(finished_run):
    from hf_dpsynth.evaluation.evaluator import is_public_baseline
    from hf_dpsynth.pipeline.release import PUBLIC_ONLY_SETTING, public_baseline_setting

    ledger = PrivacyLedger.load(finished_run / "privacy_ledger.json")
    name = public_baseline_setting(ledger, ["label_histogram"])
    assert name.startswith("public model + DP label distribution (ε = ") and "public-only" not in name
    shown = float(name.rsplit("= ", 1)[1].rstrip(")"))
    assert shown >= ledger.epsilon_spent("label_histogram")  # rounded up, never understated
    assert shown == pytest.approx(ledger.epsilon_spent("label_histogram"), rel=1e-2)
    assert public_baseline_setting(ledger, []) == PUBLIC_ONLY_SETTING
    assert is_public_baseline(name) and is_public_baseline(PUBLIC_ONLY_SETTING)


# -- bring your own data -----------------------------------------------------------------------------


def _csv(path, rows):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    return path


def _reviews(n, *, start=0):
    words = ["plot", "acting", "music", "ending", "camera", "script", "cast", "pace"]
    return [(f"Review {i}: the {words[i % 8]} was {'great' if i % 3 else 'dull'} and {words[(i * 5) % 8]} too",
             "pos" if i % 3 else "neg") for i in range(start, start + n)]


def _csv_recipe(source, **evaluation):
    return {
        "name": "reviews", "model": {"name": "tiny"},
        "data": {"source": str(source), "text_column": "review", "label_column": "sentiment", "labels": ["neg", "pos"]},
        "privacy": {"epsilon": 4.0, "shares": {"label_histogram": 0.1, "training": 0.9}},
        "training": {"max_steps": 1, "logical_batch_size": 16}, "generation": {"num_records": 4},
        "evaluation": {"enabled": True, **evaluation},
    }


def test_a_file_source_without_held_out_data_is_never_evaluated_on_its_training_rows(tmp_path):
    source = _csv(tmp_path / "reviews.csv", _reviews(40))
    with pytest.raises(DPConfigError, match="test on the very records the model trained on"):
        load_recipe(_csv_recipe(source))
    with pytest.raises(DPConfigError, match="not both"):
        load_recipe(_csv_recipe(source, holdout=0.1, test_source=str(source)))
    from hf_dpsynth.pipeline.data import load_test_data

    with pytest.raises(DPConfigError, match="data.source itself"):
        load_test_data(load_recipe(_csv_recipe(source, test_source=str(source))))
    with pytest.raises(DPConfigError, match=r"fraction in \(0, 1\)"):
        load_recipe(_csv_recipe(source, holdout=1.5))


def test_the_holdout_rule_keeps_units_out_of_every_private_stage_and_is_one_stable(tmp_path):
    from hf_dpsynth.pipeline.data import holdout_rows, load_recipe_data, load_test_data, prepare_recipe_data

    rows = _reviews(200)
    recipe = load_recipe(_csv_recipe(_csv(tmp_path / "all.csv", rows), holdout=0.25))
    train, test = load_recipe_data(recipe), load_test_data(recipe)
    assert len(train) + len(test) == 200 and 25 <= len(test) <= 75
    assert not set(train["review"]) & set(test["review"])
    _, _, prepared = prepare_recipe_data(recipe)
    assert prepared.num_units == len(train)  # N counts the training units only
    # 1-stable: removing one record leaves every other record on its side.
    smaller = load_recipe(_csv_recipe(_csv(tmp_path / "minus.csv", rows[:50] + rows[51:]), holdout=0.25))
    full, minus = holdout_rows(recipe, load_recipe_data(recipe.with_overrides(evaluation={"holdout": None, "enabled": False}))), \
        holdout_rows(smaller, load_recipe_data(smaller.with_overrides(evaluation={"holdout": None, "enabled": False})))
    assert full[:50] + full[51:] == minus
    # The holdout decides the training units: it is part of the release's fingerprint.
    assert recipe.fingerprint() != recipe.with_overrides(evaluation={"holdout": 0.3}).fingerprint()


def test_made_up_users_are_one_stable_and_a_cap_by_position_is_stated_in_the_card(tmp_path):
    from hf_dpsynth.hub.cards import render_dataset_card
    from hf_dpsynth.pipeline.data import load_recipe_data, prepare_recipe_data

    rows = _reviews(120)

    def recipe(path, **data):
        base = _csv_recipe(path, holdout=0.2)
        return load_recipe({**base, "privacy": {**base["privacy"], "unit": "user", "max_examples_per_user": 3},
                            "data": {**base["data"], "user_id_column": "user", "synthetic_user_ids": 15, **data}})

    full = load_recipe_data(recipe(_csv(tmp_path / "all.csv", rows)).with_overrides(evaluation={"holdout": None,
                                                                                                "enabled": False}))
    minus = load_recipe_data(recipe(_csv(tmp_path / "minus.csv", rows[:7] + rows[8:])).with_overrides(
        evaluation={"holdout": None, "enabled": False}))
    users_full = dict(zip(full["review"], full["user"]))
    # Removing one record changes no other record's user (round-robin by position would shift every later one).
    assert dict(zip(minus["review"], minus["user"])) == {k: v for k, v in users_full.items() if k != rows[7][0]}
    assert len(set(users_full.values())) > 5
    # data.max_records keeps the first rows (by position): the card says the guarantee is for those rows.
    _, _, prepared = prepare_recipe_data(recipe(tmp_path / "all.csv", max_records=50))
    assert prepared.report.first_rows == 50
    ledger = PrivacyLedger(epsilon=4.0, delta=1e-6, privacy_unit="user", num_units=prepared.num_units)
    from hf_dpsynth.privacy import gaussian_event

    ledger.charge("label_histogram", gaussian_event(noise_multiplier=5.0))
    card = str(render_dataset_card(ledger_report=ledger, num_records=3, codec_info={"modality": "text"},
                                   generator_info={"generator": "adapter_sampler"}, preparation=prepared.report))
    assert "the first 50 (data.max_records, a cap by position)" in card and "about 2ε" in card
    _, _, uncapped = prepare_recipe_data(recipe(tmp_path / "all.csv"))
    assert uncapped.report.first_rows is None


def test_a_csv_run_with_a_held_out_file_evaluates_on_that_file(tmp_path):
    source = _csv(tmp_path / "train.csv", _reviews(60))
    held = _csv(tmp_path / "held.csv", _reviews(30, start=1000))
    recipe = load_recipe(_csv_recipe(source, test_source=str(held), max_test_records=30))
    from hf_dpsynth.pipeline.data import load_test_data

    test = load_test_data(recipe)
    assert len(test) == 30 and set(test["review"]) == {r for r, _ in _reviews(30, start=1000)}
    summary = run_recipe(recipe, output_dir=tmp_path / "run", **QUIET)
    assert summary.num_generated == 4


def test_the_run_reads_its_own_files_wherever_a_later_command_runs_and_refuses_changed_ones(tmp_path, monkeypatch,
                                                                                           capsys):
    # The push's verbatim gate compares the synthetic data with the training file: it must be the file
    # the run read, not whatever a relative data.source finds from another working directory.
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    for folder, rows in ((project, _reviews(60)), (elsewhere, [("unrelated text", "pos")])):
        (folder / "data").mkdir(parents=True)
        _csv(folder / "data" / "reviews.csv", rows)
    monkeypatch.chdir(project)
    recipe = load_recipe({**_csv_recipe("data/reviews.csv", holdout=0.2)})
    out = tmp_path / "run"
    run_recipe(recipe, output_dir=out, **QUIET)
    fingerprint = recipe.fingerprint()  # of the file the relative path names from here
    state = json.loads((out / "run_state.json").read_text())
    assert state["sources"]["data.source"]["path"] == str(project / "data" / "reviews.csv")
    monkeypatch.chdir(elsewhere)
    from hf_dpsynth.pipeline.data import private_texts
    from hf_dpsynth.pipeline.folder import load_run_recipe

    again = load_run_recipe(out)
    assert again.data.source == str(project / "data" / "reviews.csv") and again.fingerprint() == fingerprint
    assert "unrelated text" not in private_texts(again) and len(private_texts(again)) > 40
    # A training file edited after the run: every later command refuses (no gate against other records).
    monkeypatch.chdir(project)
    _csv(project / "data" / "reviews.csv", _reviews(59))
    with pytest.raises(DPConfigError, match="changed since the run"):
        load_run_recipe(out)
    with pytest.raises(DPConfigError, match="changed since the run"):
        run_recipe(recipe, output_dir=out, **QUIET)
    capsys.readouterr()
    assert main(["push", str(out), "--repo-id", "me/reviews"]) == 2
    assert "changed since the run" in capsys.readouterr().err


def test_a_data_error_before_any_charge_leaves_the_folder_free_for_the_corrected_run(tmp_path):
    source = _csv(tmp_path / "train.csv", _reviews(60))
    out = tmp_path / "run"
    bad = load_recipe({**_csv_recipe(source, holdout=0.2), "data": {**_csv_recipe(source)["data"], "text_column": "text"}})
    with pytest.raises(DatasetError):
        run_recipe(bad, output_dir=out, **QUIET)
    assert not (out / "run_state.json").exists() and not (out / "privacy_ledger.json").exists()
    assert run_recipe(load_recipe(_csv_recipe(source, holdout=0.2)), output_dir=out, **QUIET).num_generated == 4


def test_set_overrides_any_recipe_key_and_enters_the_fingerprint(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--model", "tiny", "--max-records", "60", "--max-steps", "1", "--num-records", "2", "--output-dir", str(out)]
    assert main(["generate", str(SMS), *common, "--set", "privacy.epsilon=2", "--set", "generation.temperature=0.7"]) == 0
    state = json.loads((out / "run_state.json").read_text())
    assert state["recipe"]["privacy"]["epsilon"] == 2.0 and state["recipe"]["generation"]["temperature"] == 0.7
    assert PrivacyLedger.load(out / "privacy_ledger.json").epsilon == 2.0
    # Another ε is another release: the folder refuses it rather than mixing two runs.
    capsys.readouterr()
    assert main(["generate", str(SMS), *common, "--set", "privacy.epsilon=1"]) == 2
    assert "holds a different run" in capsys.readouterr().err
    for bad, message in (("privacy.epsilon", "SECTION.KEY=VALUE"), ("privcy.epsilon=1", "unknown recipe section"),
                         ("training.stepz=3", "unknown key")):
        assert main(["run", str(SMS), *common, "--set", bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["run", "no/such/recipe.yaml"],
    ["train", "no/such/recipe.yaml"],
    ["generate", "no/such/recipe.yaml"],
    ["audit", "no/such/recipe.yaml"],
    ["evaluate", "no/such/run"],
    ["card", "no/such/run"],
    ["push", "no/such/run", "--repo-id", "me/data"],
])
def test_every_subcommand_answers_bad_input_with_one_message_and_status_2(command, capsys):
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hf-dpsynth {command[0]}: error: ") and "Traceback" not in err
    assert "--debug" in err


def test_a_missing_user_column_under_a_holdout_is_one_message_too(tmp_path, capsys):
    source = _csv(tmp_path / "train.csv", _reviews(40))
    recipe = tmp_path / "recipe.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(_csv_recipe(source, holdout=0.2)), encoding="utf-8")
    assert main(["run", str(recipe), "--output-dir", str(tmp_path / "run"), "--set", "privacy.unit=user",
                 "--set", "privacy.max_examples_per_user=2", "--set", "data.user_id_column=uid"]) == 2
    err = capsys.readouterr().err
    assert "'uid' is not a column" in err and "Traceback" not in err


# -- item 6: owner-only cards never replace the shareable card ---------------------------------------


def test_owner_only_cards_go_to_their_own_file_and_the_push_never_takes_them(tmp_path, capsys):
    from hf_dpsynth.errors import PublishRefusedError
    from hf_dpsynth.hub.publish import push_synthetic_dataset

    run_copy = tmp_path / "run"  # two-token records: the tiny model's bytes then often decode, so there is a card
    run_recipe(_recipe(generation={"num_records": 16, "max_new_tokens": 2}), output_dir=run_copy, **QUIET)
    shareable = (run_copy / "README.md").read_bytes()
    assert b"owner_only_included: false" in shareable
    assert main(["card", str(run_copy), "--include-owner-only"]) == 0
    assert (run_copy / "README.md").read_bytes() == shareable  # README.md is still the shareable card
    owner = (run_copy / "README.owner.md").read_text(encoding="utf-8")
    assert "owner_only_included: true" in owner
    assert "never publish" in capsys.readouterr().out
    # Even handed to the push by hand, the owner-only render is refused before any upload.
    with pytest.raises(PublishRefusedError, match="owner-only"):
        push_synthetic_dataset(run_copy / "synthetic", "me/data", card=owner, private_texts=[],
                               ledger_report=PrivacyLedger.load(run_copy / "privacy_ledger.json"), private=True)


def test_a_recipe_declares_label_descriptions_and_the_prompt_writes_them(tmp_path):
    from hf_dpsynth.pipeline.build import recipe_codec

    source = _csv(tmp_path / "train.csv", _reviews(20))
    base = _csv_recipe(source, holdout=0.2)
    described = {"neg": "a review that did not like the film", "pos": "a review that enjoyed the film"}
    recipe = load_recipe({**base, "data": {**base["data"], "label_descriptions": described,
                                           "prompt_template": "Write {sentiment_description}.\n"}})
    codec = recipe_codec(recipe)
    assert codec.prompt_for(sentiment="pos") == "Write a review that enjoyed the film.\n"
    assert codec.decode(codec.prompt_for(sentiment="neg") + "meh")["sentiment"] == "neg"
    assert recipe.fingerprint() != load_recipe({**base, "data": {**base["data"], "prompt_template": "{sentiment}: "}}).fingerprint()
    for data, match in [
        ({"label_descriptions": {"neg": "x"}, "prompt_template": "{sentiment_description}"}, "exactly the labels"),
        ({"label_descriptions": described, "prompt_template": "Write {sentiment}."}, r"\{sentiment_description\}"),
        ({"label_descriptions": described, "labels": None, "label_column": None}, "declare data.label_column"),
    ]:
        with pytest.raises(DPConfigError, match=match):
            load_recipe({**base, "data": {**base["data"], **data}})


def test_a_ledger_that_is_not_the_recipes_is_refused_and_train_on_a_finished_run_goes_on(run_copy):
    # A finished folder: `hf-dpsynth train` (stop_after="training") reuses everything and goes on to the summary.
    assert run_recipe(_recipe(), output_dir=run_copy, stop_after="training", **QUIET) is not None
    # A ledger without the recipe's plan (e.g. written before its plan by an older run) is refused, not
    # charged against the whole ε.
    path = run_copy / "privacy_ledger.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "plan": None, "accountant_source": "first_charge"}))
    with pytest.raises(DPConfigError, match="not this recipe's ledger: its shares"):
        run_recipe(_recipe(), output_dir=run_copy, **QUIET)


def test_the_public_baseline_samples_the_base_model_without_the_dp_adapter(tmp_path, monkeypatch):
    # PEFT injects the DP adapter's layers into the base model in place: a baseline sampled from that
    # object would be the DP model under the name "public only".
    import torch

    from hf_dpsynth.generation import adapter_sampler
    from hf_dpsynth.models import tiny_causal_lm

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "sms_spam_text.yaml").with_overrides(
        model={"name": "tiny"}, data={"max_records": 60}, training={"max_steps": 2, "learning_rate": 0.05},
        generation={"num_records": 4, "max_new_tokens": 4},
        evaluation={"enabled": True, "public_only_baseline": True, "embeddings": False, "max_test_records": 20})
    probe = torch.tensor([[5, 17, 42, 7, 99]])
    logits = []
    original = adapter_sampler.AdapterSynthesizer.generate

    def watch(self, *args, **kwargs):
        with torch.no_grad():
            logits.append(self.model(input_ids=probe).logits.float())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(adapter_sampler.AdapterSynthesizer, "generate", watch)
    run_recipe(recipe, output_dir=tmp_path / "run", progress=False, log=lambda _: None)
    fresh, _ = tiny_causal_lm()
    with torch.no_grad():
        base = fresh(input_ids=probe).logits.float()
    dp_run, baseline = logits
    assert not torch.allclose(dp_run, base, atol=1e-6)  # the DP model differs from the base model ...
    torch.testing.assert_close(baseline, base)  # ... and the baseline is the base model
