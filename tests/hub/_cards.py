"""A real DP dataset card for the gate and publish tests, rendered from a real ledger, and that ledger's
report (the push compares the two: use them together)."""

from hf_dpsynth import PrivacyLedger
from hf_dpsynth.data import TextCodec
from hf_dpsynth.hub.cards import render_dataset_card
from hf_dpsynth.hub.gates import VERBATIM_OWNER_CHECK
from hf_dpsynth.privacy import gaussian_event


def ledger(private=True):
    led = PrivacyLedger(epsilon=4.0 if private else float("inf"), delta=1e-6, accountant="rdp", num_units=4459)
    led.charge("label_histogram", gaussian_event(noise_multiplier=5.0 if private else 0.0),
               metadata={"mechanism": "gaussian_histogram", "noise_multiplier": 5.0 if private else 0.0})
    return led


def report(private=True):
    """``PrivacyLedger.report().to_dict()`` of the ledger ``card`` is rendered from."""
    return ledger(private).report().to_dict()


def card(private=True, num_records=3, *, owner_checks=(VERBATIM_OWNER_CHECK,), ledger_report=None, **kwargs):
    codec = TextCodec(conditions={"label": ["ham", "spam"]})
    return str(render_dataset_card(
        ledger_report=ledger(private) if ledger_report is None else ledger_report, num_records=num_records,
        codec_info=codec.to_dict(),
        generator_info={"generator": "adapter_sampler", "num_generated": num_records, "num_valid": num_records},
        owner_checks=owner_checks, **kwargs,
    ))
