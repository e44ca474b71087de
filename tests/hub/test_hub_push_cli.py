"""`hf-dpsynth push` on a run folder, against the local test Hub (tests/hub/hub_server.py, scaffolding)."""

import uuid
from pathlib import Path

from datasets import Dataset

from _cards import card
from hf_dpsynth.cli.main import main
from hf_dpsynth.pipeline import load_recipe, run_recipe
from hf_dpsynth.pipeline.runner import save_synthetic

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "sms_spam_text.yaml"


def test_push_command_runs_the_gates_and_uploads(hub_env, tmp_path, capsys):
    recipe = load_recipe(RECIPE).with_overrides(
        model={"name": "tiny"}, data={"max_records": 60}, training={"max_steps": 1}, generation={"num_records": 2})
    out = tmp_path / "run"
    run_recipe(recipe, output_dir=out, progress=False, log=lambda _: None)
    repo = f"{hub_env.user}/cli-{uuid.uuid4().hex[:8]}"
    # A tiny random model gets no card: the push is refused, nothing uploaded.
    assert main(["push", str(out), "--repo-id", repo]) == 1
    assert "no card" in capsys.readouterr().out
    assert hub_env.hub.get_repo("dataset", repo) is None
    # With valid records and a DP card the gates pass; a copied training message would not.
    save_synthetic(Dataset.from_dict({"label": ["ham", "spam"], "text": ["c u later", "WIN now txt STOP"],
                                     "generator": ["adapter_sampler"] * 2, "condition": ["label=ham", "label=spam"]}),
                  out / "synthetic")
    (out / "README.md").write_text(card(num_records=2), encoding="utf-8")
    assert main(["push", str(out), "--repo-id", repo]) == 0
    assert "pushed the synthetic dataset" in capsys.readouterr().out
    assert hub_env.hub.get_repo("dataset", repo).private
