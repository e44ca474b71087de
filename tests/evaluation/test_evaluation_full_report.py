"""One report from an evaluation across ε and an audit: what is shareable stays shareable."""

import json

import numpy as np

from hf_dpsynth.audit import AuditConfig, evaluate_guesses
from hf_dpsynth.audit.audit import AuditReport
from hf_dpsynth.data import TextCodec
from hf_dpsynth.evaluation import Report, add_privacy_utility_curve, evaluate
from hf_dpsynth.resources import load_sms_spam

CODEC = TextCodec(conditions={"label": ["ham", "spam"]})


def test_report_with_curve_and_audit(tmp_path):
    train, test = load_sms_spam("train"), load_sms_spam("test").select(range(300))
    # Stand-ins for DP synthetic sets of growing quality (real subsets of growing size), and the
    # public-only baseline (texts with labels shuffled: no information).
    public_only = train.select(range(100)).shuffle(seed=0)
    public_only = public_only.add_column("shuffled", list(np.random.default_rng(0).permutation(public_only["label"][:])))
    public_only = public_only.remove_columns("label").rename_column("shuffled", "label")
    results = {
        eps: evaluate(train.select(range(n)), test, codec=CODEC, embeddings=False, setting="DP",
                      references={"public-only (ε = 0)": public_only}, test_is_public=True)
        for eps, n in ((1.0, 60), (4.0, 400), (8.0, 1500))
    }
    assert results[8.0].beats_public_only is True
    report = Report("SMS synthetic data")
    report.extend(results[4.0].metrics)
    add_privacy_utility_curve(report, results)

    config = AuditConfig(delta=1e-5, num_canaries=200, guesses="in_only", grid=(40,), significance=0.01)
    included = np.arange(200) % 2 == 0
    scores = included + np.random.default_rng(1).normal(scale=2.0, size=200)
    main = evaluate_guesses(scores, included, config)
    audit = AuditReport(claimed_epsilon=4.0, delta=1e-5, config=config, inclusion_hash="h", main=main, ceiling=config.ceiling())
    audit.add_to(report)  # uncharged audit on private data: owner-only

    shared = report.save(tmp_path / "shared")
    names = {p.name for p in shared}
    assert {"report.md", "report.json"} <= names and any(n.endswith(".png") for n in names)
    assert not any("canary" in n for n in names)  # the owner-only histogram is not in the shareable export
    exported = json.loads((tmp_path / "shared" / "report.json").read_text())
    text = json.dumps(exported) + (tmp_path / "shared" / "report.md").read_text()
    assert "ε̂ (one-run lower bound)" not in text and "claimed ε" in text
    owner = report.save(tmp_path / "owner", include_owner_only=True)
    assert any("canary" in p.name for p in owner)
    assert "ε̂ (one-run lower bound)" in (tmp_path / "owner" / "report.md").read_text()
