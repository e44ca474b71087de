"""A real DP dataset card for the gate and publish tests (rendered from a real ledger)."""

from hf_dpsynth import PrivacyLedger
from hf_dpsynth.data import TextCodec
from hf_dpsynth.hub.cards import render_dataset_card
from hf_dpsynth.privacy import gaussian_event


def ledger(private=True):
    led = PrivacyLedger(epsilon=4.0 if private else float("inf"), delta=1e-6, accountant="rdp", num_units=4459)
    led.charge("label_histogram", gaussian_event(noise_multiplier=5.0 if private else 0.0),
               metadata={"mechanism": "gaussian_histogram", "noise_multiplier": 5.0 if private else 0.0})
    return led


def card(private=True, num_records=3):
    codec = TextCodec(conditions={"label": ["ham", "spam"]})
    return str(render_dataset_card(
        ledger_report=ledger(private), num_records=num_records, codec_info=codec.to_dict(),
        generator_info={"generator": "adapter_sampler", "num_generated": num_records, "num_valid": num_records},
    ))
