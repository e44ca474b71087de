"""PrivacyLedger: oracles (dp-accounting directly, Opacus), refusals, persistence, reports."""

from __future__ import annotations

import dataclasses
import json
import math

import dp_accounting as dpa
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from hf_dpsynth.errors import (
    BudgetPlanError,
    InvalidPrivacyParameterError,
    LedgerFormatError,
    PrivacyBudgetExceededError,
    PrivacyUnitMismatchError,
    UnplannedStageError,
    UnsupportedEventError,
)
from hf_dpsynth.privacy import (
    SIGMA_REL_TOL,
    LedgerReport,
    compute_epsilon,
    PrivacyLedger,
    dpsgd_event,
    gaussian_event,
    private_evolution_event,
    zcdp_event,
)

DELTA = 1e-5
# (sampling probability, noise multiplier, steps)
CONFIGS = [
    (0.01, 1.0, 1000),
    (0.05, 1.5, 400),
    (0.002, 1.2, 5000),
    (0.1, 2.0, 200),
    (1.0, 5.0, 10),
    (0.02, 3.0, 2000),
]


def _dpsgd(sigma, q, steps):
    return dpsgd_event(noise_multiplier=sigma, sampling_probability=q, num_steps=steps)


def _direct(cls, events, delta=DELTA):
    acc = cls()
    for event in events:
        acc.compose(event)
    return acc.get_epsilon(delta)


def _opacus_rdp_epsilon(history, delta=DELTA):
    accountants = pytest.importorskip("opacus.accountants")
    accountant = accountants.RDPAccountant()
    accountant.history = list(history)  # [(noise_multiplier, sample_rate, num_steps)]
    return accountant.get_epsilon(delta)


def _snapshot(ledger, tmp_path, name):
    path = tmp_path / name
    ledger.save(path)
    data = json.loads(path.read_text())
    data.pop("versions")
    return data


# ------------------------------------------------------------------------------------------
# Oracles
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q, sigma, steps", CONFIGS)
def test_ledger_epsilon_equals_dp_accounting_and_sits_below_opacus_rdp(q, sigma, steps):
    event = _dpsgd(sigma, q, steps)
    pld = PrivacyLedger(epsilon=math.inf, delta=DELTA, accountant="pld")
    pld.charge("training", event)
    rdp = PrivacyLedger(epsilon=math.inf, delta=DELTA, accountant="rdp")
    rdp.charge("training", event)

    assert pld.epsilon_spent() == pytest.approx(_direct(PLDAccountant, [event]), rel=1e-12)
    assert rdp.epsilon_spent() == pytest.approx(_direct(RdpAccountant, [event]), rel=1e-12)
    opacus = _opacus_rdp_epsilon([(sigma, q, steps)])
    assert pld.epsilon_spent() <= opacus  # PLD is tighter than RDP
    assert rdp.epsilon_spent() == pytest.approx(opacus, rel=0.02)


@pytest.mark.parametrize("accountant, cls", [("pld", PLDAccountant), ("rdp", RdpAccountant)])
def test_composed_charges_equal_dp_accounting_on_the_same_sequence(accountant, cls):
    ledger = PrivacyLedger(epsilon=20.0, delta=DELTA, num_units=50_000, accountant=accountant)
    events = [gaussian_event(noise_multiplier=8.0)]
    events += [_dpsgd(sigma, q, steps) for q, sigma, steps in CONFIGS[3:]]
    events.append(private_evolution_event(noise_multiplier=20.0, num_rounds=5))
    for i, event in enumerate(events):
        ledger.charge(f"stage_{i % 2}", event)
    assert ledger.epsilon_spent() == pytest.approx(_direct(cls, events), rel=1e-12)
    assert ledger.epsilon_spent("stage_0") == pytest.approx(_direct(cls, events[0::2]), rel=1e-12)
    assert ledger.epsilon_spent("stage_1") == pytest.approx(_direct(cls, events[1::2]), rel=1e-12)


# ------------------------------------------------------------------------------------------
# Refusals leave the ledger unchanged
# ------------------------------------------------------------------------------------------


def test_total_overspend_is_refused_before_spending(tmp_path):
    ledger = PrivacyLedger(epsilon=1.0, delta=DELTA, num_units=10_000)
    ledger.charge("training", _dpsgd(2.0, 0.01, 500), metadata={"noise_multiplier": 2.0})
    before = _snapshot(ledger, tmp_path, "before.json")
    spent = ledger.epsilon_spent()
    big = _dpsgd(2.0, 0.05, 2000)
    assert ledger.would_exceed("training", big)
    with pytest.raises(PrivacyBudgetExceededError, match="Nothing was spent"):
        ledger.charge("training", big)
    assert _snapshot(ledger, tmp_path, "after.json") == before
    assert ledger.epsilon_spent() == spent
    assert len(ledger.charges) == 1


def test_stage_overspend_is_refused_before_spending(tmp_path):
    ledger = PrivacyLedger(epsilon=4.0, delta=DELTA)
    ledger.plan({"label_histogram": 0.1, "training": 0.9})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=20.0))
    before = _snapshot(ledger, tmp_path, "before.json")
    # ε ≈ 0.73 alone: far below the total budget, above the stage's 0.4.
    histogram = gaussian_event(noise_multiplier=5.0)
    assert ledger.would_exceed("label_histogram", histogram)
    with pytest.raises(PrivacyBudgetExceededError, match="share"):
        ledger.charge("label_histogram", histogram)
    assert _snapshot(ledger, tmp_path, "after.json") == before
    assert ledger.epsilon_spent("label_histogram") <= 0.4
    assert not ledger.would_exceed("training", histogram)


def test_charges_up_to_the_budget_are_accepted_and_remaining_follows():
    ledger = PrivacyLedger(epsilon=2.0, delta=DELTA)
    ledger.plan({"label_histogram": 0.25, "training": 0.75})
    assert ledger.remaining() == 2.0
    assert ledger.remaining("label_histogram") == 0.5
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=12.0))
    spent_hist = ledger.epsilon_spent("label_histogram")
    assert ledger.remaining("label_histogram") == pytest.approx(0.5 - spent_hist)
    assert ledger.remaining("training") == pytest.approx(min(1.5, 2.0 - ledger.epsilon_spent()))
    assert ledger.remaining() == pytest.approx(2.0 - ledger.epsilon_spent())


# ------------------------------------------------------------------------------------------
# Calibration against what is already spent
# ------------------------------------------------------------------------------------------


def test_ledger_calibrate_gives_the_smallest_sigma_that_fits():
    ledger = PrivacyLedger(epsilon=1.0, delta=DELTA, num_units=20_000)
    ledger.plan({"label_histogram": 0.2, "training": 0.8})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=30.0))
    q, steps = 0.02, 300
    sigma = ledger.calibrate("training", sampling_probability=q, num_steps=steps)
    assert ledger.would_exceed("training", _dpsgd(sigma / (1 + SIGMA_REL_TOL), q, steps))
    ledger.charge("training", _dpsgd(sigma, q, steps), metadata={"noise_multiplier": sigma})
    assert ledger.epsilon_spent() <= 1.0
    assert ledger.epsilon_spent("training") <= 0.8 * 1.0


@pytest.mark.parametrize(
    "accountant, event",
    [("pld", gaussian_event(noise_multiplier=5.0)), ("rdp", zcdp_event(rho=0.05))],
)
def test_ledger_calibrate_refuses_when_the_budget_is_spent(accountant, event):
    ledger = PrivacyLedger(
        epsilon=compute_epsilon(event, delta=DELTA, accountant=accountant), delta=DELTA,
        accountant=accountant,
    )
    ledger.charge("training", event)  # spends the whole budget
    assert ledger.remaining() == 0.0
    with pytest.raises(PrivacyBudgetExceededError, match="fewer steps"):
        ledger.calibrate("training", sampling_probability=0.01, num_steps=10)


def test_ledger_calibrate_with_dp_disabled_needs_no_noise():
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA)
    assert ledger.calibrate("training", sampling_probability=0.1, num_steps=10) == 0.0


# ------------------------------------------------------------------------------------------
# Persistence
# ------------------------------------------------------------------------------------------


def test_save_load_continue_equals_never_saving(tmp_path):
    def fresh():
        ledger = PrivacyLedger(epsilon=5.0, delta=DELTA, num_units=40_000)
        ledger.plan({"label_histogram": 0.2, "training": 0.8})
        return ledger

    first = gaussian_event(noise_multiplier=10.0)
    second = _dpsgd(1.5, 0.01, 1000)
    third = _dpsgd(1.5, 0.01, 500)

    uninterrupted = fresh()
    for stage, event in [("label_histogram", first), ("training", second), ("training", third)]:
        uninterrupted.charge(stage, event)

    resumed = fresh()
    resumed.charge("label_histogram", first, metadata={"noise_multiplier": 10.0})
    resumed.charge("training", second)
    path = tmp_path / "ledger.json"
    resumed.save(path)
    resumed = PrivacyLedger.load(path)
    assert [c.event for c in resumed.charges] == [first, second]
    assert resumed.charges[0].metadata == {"noise_multiplier": 10.0}
    resumed.charge("training", third)

    assert resumed.epsilon_spent() == uninterrupted.epsilon_spent()
    assert resumed.epsilon_spent("training") == uninterrupted.epsilon_spent("training")
    assert resumed.accountant == uninterrupted.accountant == "pld"
    assert resumed.stage_plan == uninterrupted.stage_plan


def test_save_is_atomic_json_with_a_format_version(tmp_path):
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA, privacy_unit="user", num_units=100)
    ledger.charge("training", dpsgd_event(noise_multiplier=0.0, sampling_probability=0.1,
                                          num_steps=3))
    path = tmp_path / "ledger.json"
    ledger.save(path)
    ledger.save(path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]  # no temp files left
    data = json.loads(path.read_text())
    assert data["format_version"] == 1
    assert data["epsilon"] == "inf" and data["epsilon_spent"] == "inf"
    assert data["privacy_unit"] == "user" and data["adjacency"] == "add_or_remove_one"
    loaded = PrivacyLedger.load(path)
    assert loaded.epsilon_spent() == math.inf and not loaded.report().private


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="something_else"),
        lambda d: d.update(format_version=99),
        lambda d: d.pop("charges"),
        lambda d: d["charges"][0]["event"].update(type="laplace"),
    ],
)
def test_load_refuses_malformed_files(tmp_path, mutate):
    ledger = PrivacyLedger(epsilon=2.0, delta=DELTA)
    ledger.charge("training", gaussian_event(noise_multiplier=10.0))
    data = ledger.to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises((LedgerFormatError, UnsupportedEventError)):
        PrivacyLedger.load(path)


def test_load_refuses_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(LedgerFormatError):
        PrivacyLedger.load(path)


# ------------------------------------------------------------------------------------------
# Accountant choice
# ------------------------------------------------------------------------------------------


def test_planning_private_prediction_selects_rdp_before_the_first_charge():
    ledger = PrivacyLedger(epsilon=3.0, delta=DELTA, num_units=10_000)
    ledger.plan({"label_histogram": 0.1, "private_prediction": 0.9})
    assert ledger.accountant == "rdp"
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=30.0))
    rho = 0.05
    while not ledger.would_exceed("private_prediction", zcdp_event(rho=rho)):
        ledger.charge("private_prediction", zcdp_event(rho=rho))
        assert ledger.epsilon_spent() <= 3.0
        assert ledger.epsilon_spent("private_prediction") <= 0.9 * 3.0
    with pytest.raises(PrivacyBudgetExceededError):
        ledger.charge("private_prediction", zcdp_event(rho=rho))
    assert ledger.epsilon_spent() <= 3.0
    events = [c.event for c in ledger.charges]
    assert ledger.epsilon_spent() == pytest.approx(_direct(RdpAccountant, events), rel=1e-12)


def test_first_charge_fixes_the_accountant_and_zcdp_on_pld_is_refused():
    ledger = PrivacyLedger(epsilon=3.0, delta=DELTA)
    assert ledger.accountant is None
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=10.0))
    assert ledger.accountant == "pld"
    with pytest.raises(UnsupportedEventError, match="accountant='rdp'") as info:
        ledger.charge("private_prediction", zcdp_event(rho=0.01))
    assert "plan" in str(info.value)
    assert len(ledger.charges) == 1

    given = PrivacyLedger(epsilon=3.0, delta=DELTA, accountant="pld")
    with pytest.raises(UnsupportedEventError, match="rdp"):
        given.charge("private_prediction", zcdp_event(rho=0.01))
    with pytest.raises(BudgetPlanError, match="rdp"):
        given.plan({"private_prediction": 1.0})


def test_a_first_zcdp_charge_selects_rdp():
    ledger = PrivacyLedger(epsilon=3.0, delta=DELTA)
    ledger.charge("private_prediction", zcdp_event(rho=0.01))
    assert ledger.accountant == "rdp"


# ------------------------------------------------------------------------------------------
# Privacy unit, N, δ
# ------------------------------------------------------------------------------------------


def test_a_charge_at_another_privacy_unit_is_refused():
    ledger = PrivacyLedger(epsilon=3.0, delta=DELTA, privacy_unit="user", num_units=1000)
    with pytest.raises(PrivacyUnitMismatchError, match="user"):
        ledger.charge("label_histogram", gaussian_event(noise_multiplier=10.0),
                      privacy_unit="example")
    with pytest.raises(PrivacyUnitMismatchError):
        ledger.charge("label_histogram", gaussian_event(noise_multiplier=10.0), num_units=999)
    assert not ledger.charges
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=10.0), privacy_unit="user",
                  num_units=1000)


def test_num_units_is_adopted_from_the_first_charge_that_states_it():
    ledger = PrivacyLedger(epsilon=3.0, delta=1e-6)
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=10.0), num_units=5000)
    assert ledger.num_units == 5000
    with pytest.raises(PrivacyUnitMismatchError):
        ledger.charge("training", _dpsgd(2.0, 0.01, 10), num_units=6000)
    too_big_delta = PrivacyLedger(epsilon=3.0, delta=1e-3)
    with pytest.raises(InvalidPrivacyParameterError, match="1/N"):
        too_big_delta.charge("training", _dpsgd(2.0, 0.01, 10), num_units=5000)
    assert too_big_delta.num_units is None and not too_big_delta.charges


@pytest.mark.parametrize("num_units, delta", [(1000, 1e-3), (1000, 2e-3), (100_000, 1e-4)])
def test_delta_at_or_above_one_over_n_is_refused(num_units, delta):
    with pytest.raises(InvalidPrivacyParameterError, match=r"1/\(N·ln N\)"):
        PrivacyLedger(epsilon=1.0, delta=delta, num_units=num_units)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0},
        {"epsilon": -1.0},
        {"epsilon": math.nan},
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": -0.1},
        {"privacy_unit": "record"},
        {"num_units": 0},
        {"num_units": 10.5},
        {"accountant": "prv"},
    ],
)
def test_ledger_validates_its_parameters(kwargs):
    args = {"epsilon": 1.0, "delta": DELTA}
    args.update(kwargs)
    with pytest.raises(InvalidPrivacyParameterError):
        PrivacyLedger(**args)


# ------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shares, kinds",
    [
        ({"label_histogram": 0.5, "training": 0.6}, None),  # sums above 1
        ({"training": 1.2}, None),
        ({"training": -0.1, "label_histogram": 0.5}, None),
        ({"training": 0.0}, None),
        ({"training": math.nan}, None),
        ({}, None),
        ({"my_stage": 0.5}, None),  # custom stage without a kind
        ({"my_stage": 0.5}, {"my_stage": "laplace"}),
        ({"training": 0.5}, {"training": "zcdp"}),  # contradicts the vocabulary
        ({"training": 0.5}, {"other": "gaussian"}),
    ],
)
def test_bad_plans_are_refused(shares, kinds):
    ledger = PrivacyLedger(epsilon=1.0, delta=DELTA)
    with pytest.raises(BudgetPlanError):
        ledger.plan(shares, kinds=kinds)
    assert ledger.stage_plan is None


def test_custom_stages_declare_their_kind_and_plans_come_first():
    ledger = PrivacyLedger(epsilon=2.0, delta=DELTA)
    ledger.plan({"training": 0.7, "dp_quantiles": 0.3}, kinds={"dp_quantiles": "zcdp"})
    assert ledger.accountant == "rdp"
    assert ledger.stage_plan["dp_quantiles"].kind.value == "zcdp"
    ledger.charge("dp_quantiles", zcdp_event(rho=0.001))
    with pytest.raises(BudgetPlanError, match="before the first charge"):
        ledger.plan({"training": 1.0})


def test_unplanned_stages_are_refused():
    ledger = PrivacyLedger(epsilon=2.0, delta=DELTA)
    ledger.plan({"training": 1.0})
    with pytest.raises(UnplannedStageError, match="label_histogram"):
        ledger.charge("label_histogram", gaussian_event(noise_multiplier=10.0))
    with pytest.raises(UnplannedStageError):
        ledger.calibrate("label_histogram", sampling_probability=0.1, num_steps=10)
    assert not ledger.charges


# ------------------------------------------------------------------------------------------
# Non-private runs
# ------------------------------------------------------------------------------------------


def test_zero_noise_gives_inf_at_once_and_a_non_private_report(monkeypatch):
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA)
    ledger.charge("training", _dpsgd(2.0, 0.01, 100))
    assert math.isfinite(ledger.epsilon_spent())
    monkeypatch.setattr(PLDAccountant, "compose", _fail)  # no accountant call for σ = 0
    ledger.charge("training", _dpsgd(0.0, 0.01, 100))
    assert ledger.epsilon_spent() == math.inf
    report = ledger.report()
    assert not report.private
    assert "NOT PRIVATE" in str(report)
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["epsilon_spent"] == "inf"


def test_a_finite_budget_refuses_non_private_events():
    ledger = PrivacyLedger(epsilon=8.0, delta=DELTA)
    with pytest.raises(PrivacyBudgetExceededError, match="math.inf"):
        ledger.charge("training", gaussian_event(noise_multiplier=0.0))
    assert ledger.report().private


def test_an_infinite_budget_alone_makes_the_report_non_private():
    ledger = PrivacyLedger(epsilon=math.inf, delta=DELTA)
    ledger.charge("training", _dpsgd(2.0, 0.01, 100))
    assert not ledger.report().private


# ------------------------------------------------------------------------------------------
# Report and cache
# ------------------------------------------------------------------------------------------


def _fail(*args, **kwargs):
    raise AssertionError("an accountant was called")


def test_report_and_queries_use_the_cached_epsilon(monkeypatch):
    ledger = PrivacyLedger(epsilon=4.0, delta=DELTA, num_units=10_000)
    ledger.plan({"label_histogram": 0.1, "training": 0.9})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=20.0),
                  metadata={"noise_multiplier": 20.0, "sensitivity": 1.0})
    ledger.charge("training", _dpsgd(1.5, 0.01, 1000),
                  metadata={"noise_multiplier": 1.5, "sampling_probability": 0.01,
                            "num_steps": 1000})
    monkeypatch.setattr(PLDAccountant, "get_epsilon", _fail)
    monkeypatch.setattr(PLDAccountant, "compose", _fail)
    report = ledger.report()
    assert ledger.epsilon_spent() == report.epsilon_spent
    assert ledger.remaining() == pytest.approx(4.0 - report.epsilon_spent)

    assert isinstance(report, LedgerReport)
    assert report.private and report.accountant == "pld"
    assert report.adjacency == "add_or_remove_one" and report.privacy_unit == "example"
    assert report.num_units == 10_000 and report.delta == DELTA and report.epsilon_budget == 4.0
    assert [s.name for s in report.stages] == ["label_histogram", "training"]
    training = report.stages[1]
    assert training.kind == "poisson_gaussian" and training.share == 0.9
    assert training.charges == ({"noise_multiplier": 1.5, "sampling_probability": 0.01,
                                 "num_steps": 1000},)
    assert set(report.versions) == {"hf_dpsynth", "dp-accounting", "python"}
    assert report.versions["dp-accounting"] == "0.6.0"
    card = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    histogram_spent = ledger.epsilon_spent("label_histogram")
    assert card["stages"][0]["epsilon_spent"] == pytest.approx(histogram_spent)
    text = str(report)
    assert "training" in text and "PLD" in text and "add/remove-one" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.epsilon_spent = 0.0  # type: ignore[misc]


def test_metadata_must_be_json():
    ledger = PrivacyLedger(epsilon=4.0, delta=DELTA)
    with pytest.raises(LedgerFormatError):
        ledger.charge("training", _dpsgd(2.0, 0.01, 10), metadata={"rng": object()})
    with pytest.raises(LedgerFormatError):
        ledger.charge("training", _dpsgd(2.0, 0.01, 10), metadata={"loss": math.nan})
    assert not ledger.charges


def test_unsupported_events_are_refused_by_the_ledger():
    ledger = PrivacyLedger(epsilon=4.0, delta=DELTA)
    with pytest.raises(UnsupportedEventError):
        ledger.charge("training", dpa.LaplaceDpEvent(1.0))
    with pytest.raises(UnsupportedEventError):
        ledger.charge("training", "gaussian")  # type: ignore[arg-type]


def test_each_charge_has_a_random_id_that_survives_save_and_load(tmp_path):
    # Row 31: outputs are matched to their charges by id, so ids must be unique, unpredictable
    # across ledgers, and exactly what was saved.
    def charged():
        ledger = PrivacyLedger(epsilon=5.0, delta=DELTA, num_units=40_000)
        ledger.plan({"label_histogram": 0.2, "training": 0.8})
        ledger.charge("label_histogram", gaussian_event(noise_multiplier=10.0))
        ledger.charge("training", _dpsgd(1.5, 0.01, 100))
        return ledger

    first, second = charged(), charged()
    ids = first.charge_ids()
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    assert not set(ids) & set(second.charge_ids())  # the same spend in another ledger: other ids
    assert first.charge_ids("training") == (first.charges[1].id,)
    path = tmp_path / "ledger.json"
    first.save(path)
    assert PrivacyLedger.load(path).charge_ids() == ids

    data = json.loads(path.read_text())
    del data["charges"][0]["id"]
    with pytest.raises(LedgerFormatError, match="has no id"):
        PrivacyLedger.from_dict(data)
    data["charges"][0]["id"] = data["charges"][1]["id"]
    with pytest.raises(LedgerFormatError, match="appears twice"):
        PrivacyLedger.from_dict(data)
