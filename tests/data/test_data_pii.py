"""PII scrubbing against a hand-labelled set of real-looking messages (tests/data/pii_labelled.jsonl).

The set has 206 messages: 149 labelled identifiers of 7 types and 81 messages with none but with
lookalikes (prices, dates, times, SMS short codes, version numbers, Luhn-invalid references).
Scoring is per identifier: a detection counts when it has the labelled type and overlaps the
labelled span.
"""

import collections
import json
from pathlib import Path

import pytest

from hf_dpsynth.data.pii import PII_TYPES, PIIScrubber

LABELLED = Path(__file__).with_name("pii_labelled.jsonl")
RECALL_FLOOR = {"EMAIL": 0.95, "URL": 0.95, "CARD": 0.95, "IBAN": 0.95, "PHONE": 0.85}


def _gold_spans(item):
    spans, cursor = [], collections.defaultdict(int)
    for ent in item["entities"]:
        start = item["text"].find(ent["value"], cursor[ent["value"]])
        assert start >= 0, ent
        cursor[ent["value"]] = start + 1
        spans.append((ent["type"], start, start + len(ent["value"])))
    return spans


@pytest.fixture(scope="module")
def scored():
    items = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    scrubber = PIIScrubber()
    found = collections.Counter()
    total = collections.Counter()
    true_pred = false_pred = 0
    false_examples = []
    for item in items:
        gold = _gold_spans(item)
        predicted = scrubber.find(item["text"])
        for kind, start, end in gold:
            total[kind] += 1
            if any(p.type == kind and p.start < end and start < p.end for p in predicted):
                found[kind] += 1
        for p in predicted:
            if any(p.type == kind and p.start < end and start < p.end for kind, start, end in gold):
                true_pred += 1
            else:
                false_pred += 1
                false_examples.append((p.type, item["text"][p.start : p.end]))
    return {"items": items, "found": found, "total": total, "tp": true_pred, "fp": false_pred, "false": false_examples}


def test_labelled_set_is_large_enough(scored):
    assert sum(scored["total"].values()) >= 50
    assert set(scored["total"]) == set(PII_TYPES)


@pytest.mark.parametrize("kind", sorted(RECALL_FLOOR))
def test_recall_per_type(scored, kind):
    recall = scored["found"][kind] / scored["total"][kind]
    assert recall >= RECALL_FLOOR[kind], f"{kind} recall {recall:.3f} ({scored['found'][kind]}/{scored['total'][kind]})"


def test_ip_and_national_id_recall(scored):
    # No floor is required for these two types; hold them to the phone floor anyway.
    for kind in ("IP", "NATIONAL_ID"):
        assert scored["found"][kind] / scored["total"][kind] >= 0.85, kind


def test_precision_overall(scored):
    precision = scored["tp"] / (scored["tp"] + scored["fp"])
    assert precision >= 0.90, f"precision {precision:.3f}; false detections: {scored['false']}"


def test_scrub_replaces_with_typed_placeholders_and_counts():
    text = "Mail jo.smith@example.com or call +44 7911 123456, card 4111-1111-1111-1111, see www.example.com/x."
    result = PIIScrubber().scrub(text)
    assert result.text == "Mail <EMAIL> or call <PHONE>, card <CARD>, see <URL>."
    assert result.counts == {"EMAIL": 1, "PHONE": 1, "CARD": 1, "URL": 1}
    # Spans refer to the input text.
    assert [text[s.start : s.end] for s in result.spans] == [
        "jo.smith@example.com", "+44 7911 123456", "4111-1111-1111-1111", "www.example.com/x",
    ]


def test_lookalikes_are_left_alone():
    text = "Order #4471 for £1,480.00 on 12/03/2024 at 10:30, v2.3.1, text WIN to 87121, ref 4111 1111 1111 1112"
    assert PIIScrubber().scrub(text).text == text


def test_types_can_be_switched_off():
    text = "jo@example.com 4111 1111 1111 1111"
    assert PIIScrubber(types=["CARD"]).scrub(text).text == "jo@example.com <CARD>"
    with pytest.raises(ValueError, match="unknown PII type"):
        PIIScrubber(types=["NAME"])
    with pytest.raises(ValueError, match="phone_regions"):
        PIIScrubber(phone_regions=["XX"])
