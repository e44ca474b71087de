"""Recipes: every recipe parses and runs end to end on a tiny model; runs resume without charging a
finished stage twice; bad recipes are refused clearly."""

import json
from pathlib import Path

import pytest

from hf_dpsynth.errors import DPConfigError
from hf_dpsynth.pipeline import load_recipe, run_recipe
from hf_dpsynth.privacy import PrivacyLedger

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
TINY = {
    "sms_spam_text": dict(data={"max_records": 60}, training={"max_steps": 2}, generation={"num_records": 12}),
    # The tiny tokenizer has 10 whole-word tokens: none is skipped as most common.
    "sms_spam_keywords": dict(data={"max_records": 200}, keywords={"skip_most_common": 0},
                              generation={"num_records": 12, "max_new_tokens": 6}),
    "sms_spam_private_prediction": dict(
        data={"max_records": 120}, generation={"expected_batch_size": 16, "max_private_tokens": 3, "max_new_tokens": 3,
                                               "num_records": None}),
    "adult_tabular": dict(data={"max_records": 60}, training={"max_steps": 2, "max_length": 48},
                          generation={"num_records": 4, "max_new_tokens": 8}, evaluation={"max_test_records": 50}),
    "digits_images": dict(data={"max_records": 60}, training={"max_steps": 2}, generation={"num_records": 4, "max_new_tokens": 8}),
    "user_level_text": dict(data={"max_records": 80, "synthetic_user_ids": 20}, training={"max_steps": 2},
                            generation={"num_records": 4}),
    "your_own_csv": dict(data={"max_records": 80}, training={"max_steps": 2}, generation={"num_records": 4},
                         evaluation={"max_test_records": 40}),
}
REPO = Path(__file__).resolve().parents[1]


def test_every_recipe_is_covered():
    assert {p.stem for p in RECIPES} == set(TINY)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_runs_on_a_tiny_model(path, tmp_path, request):
    recipe = load_recipe(path)
    overrides = {**TINY[path.stem], "model": {"name": "tiny"}}
    if recipe.data.schema == "adult":
        overrides["data"] = {**overrides["data"], "source": str(request.getfixturevalue("shared_data") / "uci-adult")}
    if recipe.data.source.startswith("recipes/"):  # paths in recipes are relative to the repository root
        overrides["data"] = {**overrides["data"], "source": str(REPO / recipe.data.source)}
        overrides["evaluation"] = {**overrides.get("evaluation", {}), "test_source": str(REPO / recipe.evaluation.test_source)}
    summary = run_recipe(recipe.with_overrides(**overrides), output_dir=tmp_path / "run", progress=False, log=lambda _: None)
    ledger = PrivacyLedger.load(tmp_path / "run" / "privacy_ledger.json")
    assert summary.epsilon_spent == pytest.approx(ledger.epsilon_spent())
    assert 0 < summary.epsilon_spent <= recipe.privacy.epsilon + 1e-9
    assert set(summary.stages) == set(recipe.privacy.shares)
    assert summary.num_generated >= 1
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["num_generated"] == summary.num_generated


def test_the_text_recipe_reports_fidelity_against_the_public_only_baseline(tmp_path, capsys):
    # The full SMS recipe's claim is about fidelity (MiniLM Fréchet distance, k-NN precision and
    # recall) of the DP records and of the public-only baseline: both reach the summary, owner-only.
    recipe, out = _sms(tmp_path)
    assert recipe.evaluation.embeddings and recipe.evaluation.public_only_baseline
    # The tiny model's byte tokens often break UTF-8 (about half the records are invalid): enough short
    # records that both sets keep ≥ 6 records of both labels (spam is ~13%) for k-NN and TSTR.
    # 1,000 messages: the DP label histogram (σ ≈ 15 counts at this ε share) keeps spam near its 13%.
    recipe = recipe.with_overrides(data={"max_records": 1000}, generation={"num_records": 240, "max_new_tokens": 2})
    summary = run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    keys = [k for k in summary.headline if k.startswith(("Fréchet distance", "k-NN"))]
    assert len(keys) == 6, summary.headline  # three metrics, for the DP run and the baseline
    assert all(k.endswith("(owner-only)") for k in keys)
    # The baseline drew its labels from the DP histogram: it is named after that release, not "public-only".
    assert sum("public model + DP label distribution (ε = " in k for k in keys) == 3
    assert not any("public-only" in k for k in keys)
    assert all(0 <= summary.headline[k] <= 1 for k in keys if k.startswith("k-NN"))
    report = (out / "report" / "report.md").read_text()
    assert "Fréchet distance" not in report  # computed on the private test split: not in the shareable report
    assert "Fréchet distance" in (out / "report_owner" / "report.md").read_text()
    # recipes/compare_fidelity.py restates the run's point values, with a bootstrap spread.
    import runpy
    import sys

    script = str(Path(__file__).resolve().parents[1] / "recipes" / "compare_fidelity.py")
    argv, sys.argv = sys.argv, [script, str(out), "--rounds", "3"]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
    lines = {line.split("  ")[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    recall = lines["k-NN recall"]
    dp_key = next(k for k in summary.headline if k.startswith("k-NN recall") and "public model" not in k)
    assert float(recall[2]) == pytest.approx(summary.headline[dp_key], abs=5e-4)


def _sms(tmp_path):
    recipe = load_recipe(RECIPES[[p.stem for p in RECIPES].index("sms_spam_text")])
    return recipe.with_overrides(model={"name": "tiny"}, **TINY["sms_spam_text"]), tmp_path / "run"


def test_a_crashed_run_resumes_without_charging_a_finished_stage_twice(tmp_path, monkeypatch):
    from hf_dpsynth.generation import adapter_sampler

    recipe, out = _sms(tmp_path)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash during generation")

    monkeypatch.setattr(adapter_sampler.AdapterSynthesizer, "generate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    charged = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in charged.charges] == ["label_histogram", "training"]
    monkeypatch.undo()
    summary = run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    after = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in after.charges] == ["label_histogram", "training"]  # nothing charged twice
    assert summary.epsilon_spent == pytest.approx(charged.epsilon_spent())
    assert {"label_histogram", "training"} <= set(summary.reused)
    again = run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    assert "generation" in again.reused and len(PrivacyLedger.load(out / "privacy_ledger.json").charges) == 2


def test_a_lost_output_is_never_rerun_for_free(tmp_path):
    from hf_dpsynth.errors import PrivacyBudgetExceededError

    recipe, out = _sms(tmp_path)
    run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    before = PrivacyLedger.load(out / "privacy_ledger.json")
    (out / "label_histogram.json").unlink()
    # Re-running the lost stage needs a new charge; its share is spent, so the ledger refuses it.
    with pytest.raises(PrivacyBudgetExceededError, match="label_histogram"):
        run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    after = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in after.charges] == [c.stage for c in before.charges]
    assert not (out / "label_histogram.json").exists()


def test_an_output_folder_holding_another_run_is_refused(tmp_path):
    recipe, out = _sms(tmp_path)
    run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    other = recipe.with_overrides(privacy={"epsilon": 2.0})
    with pytest.raises(DPConfigError, match="holds a different run"):
        run_recipe(other, output_dir=out, progress=False, log=lambda _: None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("not a run")
    with pytest.raises(DPConfigError, match="not empty"):
        run_recipe(recipe, output_dir=tmp_path / "busy", progress=False, log=lambda _: None)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"trainin": {}}, r"unknown top-level key\(s\) \['trainin'\]; valid keys: \['name', 'data'"),
        ({"training": {"stepz": 3}}, r"unknown key\(s\) \['stepz'\]; valid keys: \['logical_batch_size'"),
        ({"training": {"activation_cache": "gpu"}}, "training.activation_cache must be one of 'auto', 'memory'"),
        ({"privacy": {"configurations_tried": 0}}, "configurations_tried must be a positive integer"),
        ({"lora": {"per_label": True}}, "declare data.label_column and data.labels"),
        ({"lora": {"per_label": True}, "data": {"source": "sms_spam", "label_column": "label", "labels": ["ham", "spam"]},
          "privacy": {"unit": "user", "max_examples_per_user": 2}}, "example-level only"),
        ({"lora": {"per_label": True}, "data": {"source": "sms_spam", "label_column": "label", "labels": ["ham", "spam"]},
          "privacy": {"shares": {"label_histogram": 0.1, "training": 0.4, "audit": 0.5}}}, "does not yet repeat"),
        ({"privacy": {"configurations_tried": 4}}, "say on what data they were compared in privacy.chosen_on"),
        ({"generation": {"method": "evolution"}}, "generation.method must be one of 'adapter_sampler'"),
        ({"privacy": {"shares": {"label_histogram": 0.5, "training": 0.7}}}, "sum to at most 1"),
        ({"hub": {"repo_id": "not a valid id!!"}}, "not a valid Hub repo id"),
        ({"data": {"modality": "tabular"}}, "needs data.schema"),
        ({"privacy": {"unit": "user"}}, "needs data.user_id_column"),
        ({"privacy": {"shares": {"training": 0.6, "audit": 0.3}}}, "costs what training costs"),
        ({"generation": {"method": "prompted"}}, "needs a privacy.shares entry 'keywords'"),
        ({"generation": {"method": "prompted"}, "privacy": {"shares": {"keywords": 0.5, "training": 0.5}},
          "data": {"source": "sms_spam", "label_column": "label", "labels": ["ham", "spam"],
                   "prompt_template": "{label}{keywords}"}}, "samples the base model"),
        ({"generation": {"label_distribution": "uniform"}}, "never reads the DP label histogram"),
        ({"privacy": {"shares": {"label_histogram": 0.1, "keywords": 0.4, "training": 0.5}},
          "data": {"source": "sms_spam", "label_column": "label", "labels": ["ham", "spam"]}}, "by the field {keywords}"),
        ({"data": {"source": "sms_spam", "label_column": "label", "labels": ["ham", "spam"]},
          "privacy": {"shares": {"training": 1.0}}}, "has no 'label_histogram'"),
        ({"generation": {"method": "private_prediction", "pp_top_k": 20},
          "privacy": {"shares": {"private_prediction": 1.0}}}, "set generation.public_prompt"),
        ({"privacy": {"shares": {"keywords": 0.5, "training": 0.5}}}, "per label of a text recipe"),
        ({"privacy": {"shares": {"label_histogram": 0.1, "keywords": 0.4, "training": 0.5}}, "model": {"name": "."},
          "data": {"source": "sms_spam", "label_column": "label", "labels": ["ham", "spam"],
                   "prompt_template": "{label}{keywords}"}}, "declare keywords.public_tokenizer"),
        ({"privacy": {"shares": {"label_histogram": 0.1, "keywords": 0.4, "training": 0.5}},
          "keywords": {"vocabulary": str(REPO / "recipes" / "data" / "reviews_train.csv")},
          "data": {"source": str(REPO / "recipes" / "data" / "reviews_train.csv"), "label_column": "label", "labels": ["ham", "spam"],
                   "prompt_template": "{label}{keywords}"}}, "a file of private records"),
        ({"privacy": {"shares": {"label_histogram": 0.1, "keywords": 0.4, "training": 0.5}}, "keywords": {"k": 0},
          "data": {"source": "sms_spam", "label_column": "label", "labels": ["ham", "spam"],
                   "prompt_template": "{label}{keywords}"}}, "keywords.k must be a positive integer"),
    ],
)
def test_bad_recipes_are_refused(change, match):
    raw = {"name": "x", "data": {"source": "sms_spam"}, "privacy": {"shares": {"label_histogram": 0.05, "training": 0.95}}}
    for key, value in change.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and key in raw else value
    with pytest.raises(DPConfigError, match=match):
        load_recipe(raw)


def test_a_missing_data_path_is_refused(tmp_path):
    recipe = load_recipe({"name": "x", "data": {"source": str(tmp_path / "nope.csv")}, "privacy": {"shares": {"training": 1.0}},
                          "model": {"name": "tiny"}})
    with pytest.raises(DPConfigError, match="does not exist"):
        run_recipe(recipe, output_dir=tmp_path / "run", progress=False, log=lambda _: None)


def test_a_run_that_crashed_during_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from hf_dpsynth.training import trainer as trainer_module

    recipe, out = _sms(tmp_path)
    recipe = recipe.with_overrides(training={"max_steps": 3, "save_steps": 1})
    original = trainer_module.DPSynthTrainer.training_step

    def crash_at_step_2(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise RuntimeError("simulated crash during training")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DPSynthTrainer, "training_step", crash_at_step_2)
    with pytest.raises(RuntimeError, match="during training"):
        run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    charged = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in charged.charges] == ["label_histogram", "training"]  # all T steps charged up front
    assert (out / "checkpoint-2").is_dir()
    monkeypatch.undo()
    lines = []
    summary = run_recipe(recipe, output_dir=out, progress=False, log=lines.append)
    assert any("resuming from checkpoint-2" in line for line in lines)
    after = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in after.charges] == ["label_histogram", "training"]  # a continuation, not a re-run
    assert summary.epsilon_spent == pytest.approx(charged.epsilon_spent())


def test_train_generate_evaluate_commands_share_one_run(tmp_path, capsys):
    from hf_dpsynth.cli.main import main

    out = tmp_path / "run"
    recipe = str(RECIPES[[p.stem for p in RECIPES].index("sms_spam_text")])
    common = ["--model", "tiny", "--max-records", "60", "--max-steps", "2", "--num-records", "4", "--output-dir", str(out)]
    assert main(["train", recipe, *common]) == 0
    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "synthetic").exists()
    charges = [c.stage for c in PrivacyLedger.load(out / "privacy_ledger.json").charges]
    assert main(["generate", recipe, *common]) == 0
    assert (out / "synthetic" / "data.parquet").is_file()
    assert main(["evaluate", str(out), "--max-test-records", "50"]) == 0
    assert main(["card", str(out)]) == 0
    assert [c.stage for c in PrivacyLedger.load(out / "privacy_ledger.json").charges] == charges == ["label_histogram", "training"]
    capsys.readouterr()
    # A user error is one message and exit status 2, not a traceback (--debug shows it).
    pp = [str(RECIPES[[p.stem for p in RECIPES].index("sms_spam_private_prediction")]), "--model", "tiny",
          "--output-dir", str(tmp_path / "pp")]
    assert main(["train", *pp]) == 2
    err = capsys.readouterr().err
    assert "no training stage" in err and "Traceback" not in err
    with pytest.raises(DPConfigError, match="no training stage"):
        main(["--debug", "train", *pp])


def test_audit_command_audits_the_recipe_training_as_its_own_run(tmp_path):
    import json as _json

    from hf_dpsynth.cli.main import main

    recipe = str(RECIPES[[p.stem for p in RECIPES].index("sms_spam_text")])
    code = main(["audit", recipe, "--model", "tiny", "--max-records", "40", "--max-steps", "2", "--num-canaries", "200",
                 "--output-dir", str(tmp_path / "run")])
    assert code == 0  # correct DP: not refuted
    saved = _json.loads((tmp_path / "run-audit" / "audit.json").read_text())
    assert saved["claimed_epsilon"] == pytest.approx(4.0 * 0.95)
    assert saved["main"]["num_canaries"] == 200 and saved["main"]["epsilon_lower_bound"] <= saved["claimed_epsilon"]
    assert saved["positive_control"] is not None and "did not refute" in saved["verdict"]
    assert saved["charged"] is False  # owner-only
    assert not (tmp_path / "run").exists()  # the audit never writes into the release's folder


def test_a_charged_audit_is_a_stage_of_the_run_and_only_its_dp_run_reaches_the_card(tmp_path, capsys):
    import dp_accounting

    from hf_dpsynth.hub.card_reading import read_dp_block, validate_card
    from hf_dpsynth.hub.cards import render_dataset_card
    from hf_dpsynth.pipeline.audit_run import load_audit

    recipe, out = _sms(tmp_path)
    recipe = recipe.with_overrides(privacy={"shares": {"label_histogram": 0.05, "training": 0.45, "audit": 0.5}},
                                   audit={"num_canaries": 200})
    run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    ledger = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in ledger.charges] == ["label_histogram", "training", "audit"]
    train, audit_charge = ledger.charges[1].metadata, ledger.charges[2].metadata
    # The audit repeats the release's mechanism: the σ it was charged with, q no larger, the same steps.
    assert audit_charge["noise_multiplier"] == train["noise_multiplier"]
    assert audit_charge["num_steps"] == train["num_steps"]
    assert audit_charge["public_units"] > 0  # the canaries: public units, not counted in N
    assert audit_charge["sampling_probability"] <= train["sampling_probability"]
    n = ledger.num_units
    assert audit_charge["sampling_probability"] == pytest.approx(
        audit_charge["logical_batch_size"] / (n + audit_charge["public_units"]))
    # Oracle: the audit stage's ε is dp-accounting's for that event, computed directly.
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        audit_charge["sampling_probability"], dp_accounting.GaussianDpEvent(audit_charge["noise_multiplier"])),
        audit_charge["num_steps"])
    oracle = dp_accounting.pld.PLDAccountant().compose(event).get_epsilon(ledger.delta)
    assert ledger.epsilon_spent("audit") == pytest.approx(oracle, rel=1e-6)
    assert ledger.epsilon_spent() <= recipe.privacy.epsilon + 1e-9

    report = load_audit(out / "audit")
    assert report.charged and report.shareable and report.positive_control is not None
    card = str(render_dataset_card(ledger_report=ledger, num_records=4, codec_info={"modality": "text"},
                                   generator_info={"generator": "adapter_sampler"}, audit=report))
    validate_card(card)
    block = read_dp_block(card)["audit"]
    assert block["basis"] == "charged" and block["epsilon_lower_bound"] == report.main.epsilon_lower_bound
    assert block["verdict"] == report.main_verdict
    assert "control" not in card.lower()  # the controls ran on private data uncharged: never in a card
    # A rerun reuses the audit: nothing is charged twice.
    again = run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    assert "audit" in again.reused and len(PrivacyLedger.load(out / "privacy_ledger.json").charges) == 3

    # Row 32: a charged audit that refutes the claim (ε̂ > ε) stops the release: no summary of a
    # release, no card. A planted refutation stands in for a broken mechanism.
    from hf_dpsynth.audit.audit import AuditReport
    from hf_dpsynth.errors import ClaimRefutedError

    (out / "summary.json").unlink()
    earlier_card = (out / "README.md").read_text(encoding="utf-8")  # rendered before the audit refuted ε
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AuditReport, "refuted", property(lambda self: True))
        with pytest.raises(ClaimRefutedError, match="BUG"):
            run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
        assert "refused" in json.loads((out / "summary.json").read_text())["release"]
        assert len(PrivacyLedger.load(out / "privacy_ledger.json").charges) == 3  # nothing re-run
        assert not (out / "README.md").exists()  # the earlier card does not show the refutation: removed
        # The push reads the run's own audit, not the card: with the earlier card put back, still refused.
        from hf_dpsynth.cli.main import main

        (out / "README.md").write_text(earlier_card, encoding="utf-8")
        capsys.readouterr()
        assert main(["push", str(out), "--repo-id", "me/sms"]) == 1
        assert "charged audit refuted its ε" in capsys.readouterr().out
        # A card rendered without the audit block hides it: refused whatever the audit says.
        from hf_dpsynth.errors import PublishRefusedError
        from hf_dpsynth.hub.gates import check_card

        silent = render_dataset_card(ledger_report=ledger, num_records=4, codec_info={"modality": "text"},
                                     generator_info={"generator": "adapter_sampler"})
        with pytest.raises(PublishRefusedError, match="charged privacy audit but the card shows none"):
            check_card(silent, ledger_report=ledger)
        # The explicit override lets the run finish (its cards then say ε̂ > ε).
        run_recipe(recipe.with_overrides(audit={"publish_if_refuted": True}), output_dir=out, progress=False,
                   log=lambda _: None)


def test_overrides_are_checked_as_a_recipe_file_is():
    recipe = load_recipe(RECIPES[[p.stem for p in RECIPES].index("sms_spam_text")])
    with pytest.raises(DPConfigError, match="costs what training costs"):
        recipe.with_overrides(privacy={"shares": {"label_histogram": 0.1, "training": 0.6, "audit": 0.3}})


def test_the_keywords_stage_is_charged_once_reused_and_never_rerun_for_free(tmp_path, monkeypatch):
    from hf_dpsynth.errors import PrivacyBudgetExceededError
    from hf_dpsynth.generation import adapter_sampler

    recipe = load_recipe(REPO / "recipes" / "sms_spam_keywords.yaml").with_overrides(
        model={"name": "tiny"}, evaluation={"enabled": False}, **TINY["sms_spam_keywords"])
    recipe = recipe.with_overrides(privacy={"configurations_tried": 3, "chosen_on": "a dev split of the training data"})
    out = tmp_path / "run"
    prompts = []
    original = adapter_sampler.AdapterSynthesizer._generate_batch

    def record(self, batch, pad, device, words):
        prompts.extend(batch)
        return original(self, batch, pad, device, words)

    monkeypatch.setattr(adapter_sampler.AdapterSynthesizer, "_generate_batch", record)
    from hf_dpsynth.data import keywords as keywords_module

    seeds = []
    release = keywords_module.dp_keywords

    def watched(*args, **kwargs):
        seeds.append(kwargs.get("seed"))
        return release(*args, **kwargs)

    monkeypatch.setattr(keywords_module, "dp_keywords", watched)
    run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    assert seeds == [None]  # the noise comes from OS entropy: a recipe never fixes it (row 27)
    ledger = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in ledger.charges] == ["keywords"]
    def keys(node):
        if isinstance(node, dict):
            return [*node, *(k for v in node.values() for k in keys(v))]
        return [k for v in node for k in keys(v)] if isinstance(node, list) else []

    assert not [k for k in keys(json.loads((out / "keywords.json").read_text())) if "seed" in k.lower()]
    assert ledger.charges[0].metadata["mechanism"] == "gaussian_keyword_histogram"
    released = json.loads((out / "keywords.json").read_text())
    words = {t for terms in released["keywords"].values() for t, _ in terms}
    assert words, "the tiny run should release some keywords at ε = 4 on 200 messages"
    assert all(("Use the words: " in p) == bool(words) for p in prompts)
    card = (out / "README.md").read_text()
    assert "gaussian_keyword_histogram" in card and "DP keywords per label" in card
    assert "declared public weights label: ham 1, spam 1 (not the data's proportions)" in card
    assert ("chosen among 3 configurations compared on a dev split of the training data. Only this run is "
            "accounted") in " ".join(card.split())
    # Rerun: reused with its charge, nothing new.
    summary = run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    assert "keywords" in summary.reused and len(PrivacyLedger.load(out / "privacy_ledger.json").charges) == 1
    # Lost: releasing it again needs a new charge, and the share is spent.
    (out / "keywords.json").unlink()
    with pytest.raises(PrivacyBudgetExceededError, match="keywords"):
        run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    assert len(PrivacyLedger.load(out / "privacy_ledger.json").charges) == 1


def test_user_level_keywords_count_users_and_charge_at_the_user_unit(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "user_level_text.yaml").with_overrides(
        model={"name": "tiny"}, data={**TINY["user_level_text"]["data"],
                                      "prompt_template": "Write a {label} message.{keywords}\n"},
        privacy={"shares": {"label_histogram": 0.1, "keywords": 0.9}}, keywords={"skip_most_common": 0},
        generation={"method": "prompted", "num_records": 4, "max_new_tokens": 4}, evaluation={"enabled": False})
    run_recipe(recipe, output_dir=tmp_path / "run", progress=False, log=lambda _: None)
    ledger = PrivacyLedger.load(tmp_path / "run" / "privacy_ledger.json")
    assert [c.stage for c in ledger.charges] == ["label_histogram", "keywords"]
    keywords = ledger.charges[1]
    assert ledger.privacy_unit == "user" and ledger.num_units <= 20  # made-up users, not the 80 messages
    assert keywords.metadata["contribution"] == "k distinct (label, term) pairs per user"
    assert keywords.metadata["l2_sensitivity"] == pytest.approx(8 ** 0.5)


def test_one_adapter_per_label_is_trained_with_dp_counts_charged_once_and_samples_each_label_with_its_own(
        tmp_path, monkeypatch):
    from hf_dpsynth.data.statistics import DPHistogramRelease
    from hf_dpsynth.generation import adapter_sampler
    from hf_dpsynth.training import trainer as trainer_module

    recipe = load_recipe(REPO / "recipes" / "sms_spam_text.yaml").with_overrides(
        model={"name": "tiny"}, evaluation={"enabled": False}, lora={"per_label": True}, **TINY["sms_spam_text"])
    out = tmp_path / "run"
    seen_counts, sampled = [], []
    init = trainer_module.DPSynthTrainer.__init__

    def watched_init(self, *args, **kwargs):
        seen_counts.append(dict(kwargs["args"].label_counts))
        init(self, *args, **kwargs)

    original = adapter_sampler.AdapterSynthesizer._generate_batch

    crash = [True]

    def record(self, batch, pad, device, words):
        if crash.pop() if crash else False:
            raise RuntimeError("crash while sampling")  # after training: the adapters are saved, not the records
        sampled.append((self.model.active_adapter, [p for p in batch]))
        return original(self, batch, pad, device, words)

    monkeypatch.setattr(trainer_module.DPSynthTrainer, "__init__", watched_init)
    monkeypatch.setattr(adapter_sampler.AdapterSynthesizer, "_generate_batch", record)
    with pytest.raises(RuntimeError, match="crash while sampling"):
        run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    # The rerun loads both saved label adapters (nothing trained or charged again) and samples with them.
    summary = run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    assert "training" in summary.reused and len(seen_counts) == 1
    released = DPHistogramRelease.load(out / "label_histogram.json")["label"]
    assert seen_counts == [dict(zip(released.categories, released.noisy_counts))]  # the DP counts, never the real ones
    ledger = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in ledger.charges] == ["label_histogram", "training"]  # one training charge for both labels
    assert ledger.charges[1].metadata["adapters"].startswith("one per 'label' label (2: ham, spam)")  # on the cards
    assert {a for a, _ in sampled} == {"label_0", "label_1"}
    for adapter, prompts in sampled:  # every batch is one label's, sampled with that label's adapter
        label = "ham" if adapter == "label_0" else "spam"
        assert all(f"Write one {label} SMS" in p for p in prompts)
    adapters = next(p for p in out.rglob("label_1") if (p / "adapter_model.safetensors").is_file()).parent
    assert (adapters / "label_0" / "adapter_model.safetensors").is_file()
