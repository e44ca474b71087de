"""`hf-dpsynth push` on a run folder, against the local test Hub (tests/hub/hub_server.py, scaffolding)."""

import uuid
from pathlib import Path

from _cards import card
from hf_dpsynth.cli.main import main
from hf_dpsynth.hub.cards import render_dataset_card
from hf_dpsynth.hub.gates import VERBATIM_OWNER_CHECK
from hf_dpsynth.pipeline import load_recipe, run_recipe
from hf_dpsynth.generation.io import load_synthetic
from hf_dpsynth.privacy import PrivacyLedger

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
    # A card of another release (another ledger) is refused: the push compares the card with the run's ledger.
    readme = out / "README.md"
    readme.write_text(card(num_records=2), encoding="utf-8")
    assert main(["push", str(out), "--repo-id", repo]) == 1
    assert "does not match the ledger" in capsys.readouterr().out
    # The run's own card, rendered from its ledger, but silent about the verbatim gate: refused (row 29).
    ledger = PrivacyLedger.load(out / "privacy_ledger.json")
    synthetic = load_synthetic(out / "synthetic")

    def run_card(**kwargs):
        return str(render_dataset_card(ledger_report=ledger, num_records=max(1, len(synthetic)),
                                       codec_info={"modality": "text"}, generator_info={"generator": "adapter_sampler"},
                                       **kwargs))

    readme.write_text(run_card(), encoding="utf-8")
    assert main(["push", str(out), "--repo-id", repo]) == 1
    assert "owner_checks does not state" in capsys.readouterr().out
    assert hub_env.hub.get_repo("dataset", repo) is None
    # With the run's card stating the verbatim gate every gate passes: the run's data and card go up, private.
    readme.write_text(run_card(owner_checks=[VERBATIM_OWNER_CHECK]), encoding="utf-8")
    assert main(["push", str(out), "--repo-id", repo]) == 0
    assert "pushed the synthetic dataset" in capsys.readouterr().out
    stored = hub_env.hub.get_repo("dataset", repo)
    assert stored.private and len(stored.commits) == 2
    assert hub_env.hub.read_file("dataset", repo, "README.md").decode() == readme.read_text(encoding="utf-8")
