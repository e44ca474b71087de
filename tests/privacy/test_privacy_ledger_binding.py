"""A ledger bound to a file is the one writer of that file: it saves inside plan() and charge(), before
they return (so before the mechanism runs), and never over a file that holds spend it lacks."""

from __future__ import annotations

import json

import pytest

from hf_dpsynth import _io
from hf_dpsynth.errors import LedgerConflictError, LedgerFormatError, PrivacyBudgetExceededError
from hf_dpsynth.privacy import PrivacyLedger, gaussian_event


def _ledger(**kwargs):
    return PrivacyLedger(epsilon=4.0, delta=1e-6, num_units=1000, **kwargs)


def _ids_on_disk(path):
    return [c["id"] for c in json.loads(path.read_text(encoding="utf-8"))["charges"]]


def test_a_bound_ledger_is_on_disk_before_charge_returns(tmp_path):
    path = tmp_path / "privacy_ledger.json"
    ledger = _ledger().bind(path)
    assert ledger.path == path and _ids_on_disk(path) == []
    ledger.plan({"label_histogram": 0.5, "training": 0.5})
    assert json.loads(path.read_text())["plan"]  # the plan is saved too
    first = ledger.charge("label_histogram", gaussian_event(noise_multiplier=5.0))
    assert _ids_on_disk(path) == [first.id]  # what a crash right now would leave: the spend is recorded
    reloaded = PrivacyLedger.load(path)
    assert reloaded.epsilon_spent() == pytest.approx(ledger.epsilon_spent(), rel=1e-12)
    # An unbound ledger writes nothing by itself.
    free = _ledger()
    free.charge("x", gaussian_event(noise_multiplier=5.0))
    assert free.path is None and sorted(p.name for p in tmp_path.iterdir()) == ["privacy_ledger.json"]


def test_a_charge_that_cannot_be_saved_raises_before_the_mechanism_would_run(tmp_path, monkeypatch):
    ledger = _ledger().bind(tmp_path / "privacy_ledger.json")

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hf_dpsynth.privacy.ledger.atomic_write_json", full_disk)
    with pytest.raises(OSError, match="No space"):
        ledger.charge("x", gaussian_event(noise_multiplier=5.0))
    # The caller never got a charge back, so its mechanism never ran; the in-memory ledger keeps the
    # spend (over-counting is safe), and the file still holds the last state that was saved.
    assert len(ledger.charges) == 1 and _ids_on_disk(tmp_path / "privacy_ledger.json") == []
    assert _io.atomic_write_json is not full_disk


def test_binding_refuses_a_file_with_spend_the_ledger_does_not_hold(tmp_path):
    path = tmp_path / "privacy_ledger.json"
    earlier = _ledger().bind(path)
    earlier.charge("label_histogram", gaussian_event(noise_multiplier=5.0))
    before = path.read_bytes()
    with pytest.raises(LedgerConflictError, match="forget that spend") as refused:
        _ledger().bind(path)
    assert "label_histogram" in str(refused.value) and "PrivacyLedger.open" in str(refused.value)
    assert path.read_bytes() == before  # nothing written
    # Opening it binds the ledger that holds that spend; a new charge goes on top.
    opened = PrivacyLedger.open(path)
    assert opened.path == path
    second = opened.charge("training", gaussian_event(noise_multiplier=5.0))
    assert _ids_on_disk(path) == [earlier.charges[0].id, second.id]
    # A ledger holding every charge of the file (and more) may take its place.
    assert PrivacyLedger.load(path).bind(tmp_path / "copy.json").path == tmp_path / "copy.json"


def test_record_re_records_a_charge_with_its_id_and_is_checked_like_a_charge(tmp_path):
    source = _ledger()
    charge = source.charge("training", gaussian_event(noise_multiplier=5.0), metadata={"run_id": "r1"})
    fresh = _ledger().bind(tmp_path / "privacy_ledger.json")
    fresh.record(charge)
    assert fresh.charge_ids() == (charge.id,) and _ids_on_disk(tmp_path / "privacy_ledger.json") == [charge.id]
    assert fresh.epsilon_spent() == pytest.approx(source.epsilon_spent(), rel=1e-12)
    with pytest.raises(LedgerFormatError, match="already"):
        fresh.record(charge)
    tight = PrivacyLedger(epsilon=0.01, delta=1e-6, num_units=1000)
    with pytest.raises(PrivacyBudgetExceededError):
        tight.record(charge)
    assert tight.charges == ()


def test_two_ledgers_bound_to_one_file_never_write_over_each_others_spend(tmp_path):
    path = tmp_path / "privacy_ledger.json"
    _ledger().bind(path)
    first, second = PrivacyLedger.open(path), PrivacyLedger.open(path)  # e.g. two processes
    kept = first.charge("a", gaussian_event(noise_multiplier=5.0))
    with pytest.raises(LedgerConflictError, match="forget that spend"):
        second.charge("b", gaussian_event(noise_multiplier=5.0))  # raises before its mechanism could run
    assert _ids_on_disk(path) == [kept.id]
