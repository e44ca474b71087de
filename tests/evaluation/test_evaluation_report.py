"""The evaluation report: valid Markdown, JSON round trip, PNG plots, no owner-only leak, bad input."""

from __future__ import annotations

import json
import math
import os
import re
import sys

import pytest

from hf_dpsynth.errors import MissingDependencyError
from hf_dpsynth.evaluation import report as report_module
from hf_dpsynth.evaluation.metric import Metric
from hf_dpsynth._markdown import format_bound
from hf_dpsynth.evaluation.report import Report
from hf_dpsynth.privacy.disclosure import DEFAULT_NOT_COVERED, OWNER_ONLY_HEADING
from hf_dpsynth.privacy import PrivacyLedger, dpsgd_event, gaussian_event

# Distinctive owner-only strings: any of them in a shareable export is a leak.
SECRET_NAME = "SECRET-TSTR-on-private-split"
SECRET_VALUE = 0.987654  # shown as 0.988
SECRET_SETTING = "SECRET-SETTING-real-data"
SECRET_NOTE = "SECRET-NOTE-held-out-private"
SECRET_SECTION = "SECRET-SECTION-preparation"
SECRET_COUNT = 8_675_309
SECRET_PLOT = "SECRETPLOT-canary-scores"
SECRET_CAPTION = "SECRET-CAPTION-uncharged-audit"
SECRET_SCORE = 0.4242424242
SECRET_TEXTS = [SECRET_NAME, SECRET_SETTING, SECRET_NOTE, SECRET_SECTION, SECRET_PLOT, SECRET_CAPTION,
                "owner_only-", OWNER_ONLY_HEADING]
# Owner-only numbers as whole numbers (not digits inside another number), formatted or raw.
SECRET_NUMBERS = {"0.988": r"(?<![\d.])0\.988(?!\d)", "0.987654": r"(?<![\d.])0\.987654(?!\d)",
                  "8,675,309": r"(?<!\d)(?<!\d,)8,?675,?309(?!\d|,\d)", "0.4242": r"(?<![\d.])0\.4242"}


def leaks(text: str) -> list[str]:
    found = [s for s in SECRET_TEXTS if s in text]
    return found + [name for name, pattern in SECRET_NUMBERS.items() if re.search(pattern, text)]

PRIVACY_UTILITY = {
    "epsilons": [0.5, 1, 2, 4, 8],
    "values": [0.71, 0.8, 0.86, 0.9, 0.92],
    "metric": "TSTR accuracy",
    "references": {"real data": 0.97, "ε = ∞": 0.95, "public-only (ε = 0)": 0.6},
}
MARGINALS = {
    "column": "workclass",
    "categories": ["Private", "Self-emp-not-inc", "Local-gov"],
    "real": [0.7, 0.2, 0.1],
    "synthetic": [0.65, 0.25, 0.1],
}


@pytest.fixture(scope="module")
def ledger_report() -> dict:
    ledger = PrivacyLedger(epsilon=4.0, delta=1e-6, privacy_unit="user")
    ledger.plan({"label_histogram": 0.05, "training": 0.95})
    ledger.charge("label_histogram", gaussian_event(noise_multiplier=30.0), privacy_unit="user", num_units=5574,
                  metadata={"mechanism": "gaussian_histogram"})
    ledger.charge("training", dpsgd_event(noise_multiplier=2.0, sampling_probability=0.01, num_steps=10))
    return ledger.report().to_dict()


def make_report(privacy: dict | None) -> Report:
    report = Report("SMS spam: DP synthetic release", privacy=privacy)
    report.extend([
        Metric("TSTR accuracy (TF-IDF + logistic regression)", 0.934567, True, "downstream utility", "ε = 4"),
        Metric("TSTR accuracy (TF-IDF + logistic regression)", 0.4, True, "downstream utility", "public-only (ε = 0)"),
        Metric(SECRET_NAME, SECRET_VALUE, False, "downstream utility", SECRET_SETTING, SECRET_NOTE),
        Metric("invalid generations", 12_345, True, "text fidelity", "ε = 4", "a | pipe in the note"),
        Metric("records dropped", SECRET_COUNT, False, SECRET_SECTION),
        Metric("ε̂ (one-run audit lower bound)", math.inf, True, "audit"),
        Metric("p-value", 1.2345e-7, True, "audit"),
        Metric("mean length", 123_456.7, True, "audit"),
        Metric("not measured", None, True, "audit"),
    ])
    report.add_plot("privacy vs utility", "privacy_utility", PRIVACY_UTILITY, shareable=True,
                    caption="TSTR accuracy across ε")
    report.add_plot("workclass marginal", "marginal_bars", MARGINALS, shareable=True)
    report.add_plot(SECRET_PLOT, "score_histogram",
                    {"in": [SECRET_SCORE, 1.0, 2.0, 2.5], "out": [2.0, 3.0, 4.0], "xlabel": "loss"},
                    shareable=False, caption=SECRET_CAPTION)
    return report


# ---------------------------------------------------------------------------------------------
# A small Markdown parser: headings and pipe tables, with structural checks
# ---------------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), f"table row must start and end with '|': {line!r}"
    parts = re.split(r"(?<!\\)\|", line)
    return [p.strip() for p in parts[1:-1]]


def parse_markdown(text: str) -> tuple[list[tuple[int, str]], list[dict]]:
    """(headings as (level, text), tables as {"heading", "header", "rows"}); asserts valid structure."""
    headings: list[tuple[int, str]] = []
    tables: list[dict] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.fullmatch(r"(#{1,6}) (\S.*)", line)
        if line.startswith("#"):
            assert heading, f"malformed heading {line!r}"
            headings.append((len(heading.group(1)), heading.group(2)))
        elif line.startswith("|"):
            assert i == 0 or lines[i - 1] == "", f"a table must follow a blank line: {line!r}"
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            assert len(block) >= 2, f"a table needs a header and a separator: {block}"
            header, separator, *rows = (_cells(b) for b in block)
            assert all(re.fullmatch(r":?-{3,}:?", c) for c in separator), f"bad separator {block[1]!r}"
            for row in [separator, *rows]:
                assert len(row) == len(header), f"{len(row)} cells instead of {len(header)} in {block}"
            tables.append({"heading": headings[-1][1] if headings else None, "header": header, "rows": rows})
            continue
        i += 1
    return headings, tables


def test_parser_rejects_inconsistent_tables():
    with pytest.raises(AssertionError, match="cells instead of"):
        parse_markdown("# t\n\n| a | b |\n| --- | --- |\n| 1 | 2 | 3 |\n")
    with pytest.raises(AssertionError, match="separator"):
        parse_markdown("# t\n\n| a | b |\n| 1 | 2 |\n")


def _rows(tables: list[dict], heading: str) -> dict[tuple[str, str], list[str]]:
    [table] = [t for t in tables if t["heading"] == heading]
    return {(row[0], row[1]): row for row in table["rows"]}


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def test_markdown_is_valid_with_privacy_block_sections_and_formatted_numbers(ledger_report):
    text = make_report(ledger_report).to_markdown()
    headings, tables = parse_markdown(text)
    assert headings[0] == (1, "SMS spam: DP synthetic release")
    assert sum(level == 1 for level, _ in headings) == 1
    assert [h for h in headings if h[0] == 2] == [
        (2, "Privacy guarantee"), (2, "Downstream utility"), (2, "Text fidelity"), (2, "Audit")
    ]
    assert (3, "Not covered by the guarantee") in headings

    def three_digits(x: float) -> str:  # rounded up at 3 significant digits (a bound is never understated)
        import decimal

        number = decimal.Decimal(f"{x:.12g}")
        quantum = decimal.Decimal(1).scaleb(number.adjusted() - 2)
        return f"{float(number.quantize(quantum, rounding=decimal.ROUND_CEILING)):g}"

    assert f"**ε** = {three_digits(ledger_report['epsilon_spent'])} (budget 4)" in text
    assert "**δ** = 1e-6" in text
    assert "**N** (privacy units) = 5,574" in text
    assert "**Accountant**: PLD" in text
    assert "one user" in text
    stages = {row[0]: row for row in _rows(tables, "Privacy guarantee").values()}
    assert set(stages) == {"label_histogram", "training"}
    for stage in ledger_report["stages"]:
        assert stages[stage["name"]][4] == three_digits(stage["epsilon_spent"])

    for table in tables[1:]:
        assert table["header"] == ["metric", "setting", "value", "note"]
    utility = _rows(tables, "Downstream utility")
    assert utility[("TSTR accuracy (TF-IDF + logistic regression)", "ε = 4")][2] == "0.935"
    assert utility[("TSTR accuracy (TF-IDF + logistic regression)", "public-only (ε = 0)")][2] == "0.4"
    fidelity = _rows(tables, "Text fidelity")
    assert fidelity[("invalid generations", "ε = 4")][2:] == ["12,345", "a \\| pipe in the note"]
    audit = _rows(tables, "Audit")
    assert audit[("ε̂ (one-run audit lower bound)", "")][2] == "∞"
    assert audit[("p-value", "")][2] == "1.23e-7"
    assert audit[("mean length", "")][2] == "123,000"
    assert audit[("not measured", "")][2] == "n/a"


def test_epsilon_and_delta_are_rounded_up_never_to_nearest(ledger_report):
    # 1.2341 shows as 1.23 when rounded to nearest: that would understate the bound.
    privacy = {**ledger_report, "epsilon_spent": 1.2341, "delta": 1.2341e-6,
               "stages": [{**ledger_report["stages"][0], "epsilon_spent": 0.50011},
                          {**ledger_report["stages"][1], "epsilon_spent": 1.0301}]}
    text = Report("rounding", privacy=privacy).to_markdown()
    eps = re.search(r"\*\*ε\*\* = ([^ ]+) \(budget ([^)]+)\)", text)
    delta = re.search(r"\*\*δ\*\* = (\S+)", text).group(1)
    # Oracle: each shown number is at least the true value and within 1% of it (3 significant digits).
    for shown, true in ((eps.group(1), 1.2341), (delta, 1.2341e-6)):
        assert true <= float(shown) <= true * 1.01, (shown, true)
    assert (eps.group(1), delta) == ("1.24", "1.24e-6")
    _, tables = parse_markdown(text)
    stages = {row[0]: row for row in _rows(tables, "Privacy guarantee").values()}
    for stage in privacy["stages"]:
        shown = float(stages[stage["name"]][4])
        assert stage["epsilon_spent"] <= shown <= stage["epsilon_spent"] * 1.01
    # exact values and float noise are not pushed up a digit
    assert format_bound(0.1 * 3) == "0.3" and format_bound(1e-6) == "1e-6"
    assert format_bound(4.0) == "4" and format_bound(math.inf) == "∞"


def test_not_covered_has_the_defaults_and_is_settable(ledger_report):
    report = make_report(ledger_report)
    for keyword in ("logged", "Hyper-parameter tuning", "pre-training data", "verbatim-copy gate", "Floating-point"):
        assert sum(keyword in item for item in report.not_covered) == 1, keyword
    text = report.to_markdown()
    for item in DEFAULT_NOT_COVERED:
        assert f"- {item}" in text

    report.not_covered = [*report.not_covered, "Membership of the public prompts."]
    assert report.not_covered[-1] == "Membership of the public prompts."
    assert report.to_dict()["not_covered"] == [*DEFAULT_NOT_COVERED, "Membership of the public prompts."]
    assert "- Membership of the public prompts." in report.to_markdown()
    with pytest.raises(TypeError, match="list of strings"):
        report.not_covered = "one string"
    with pytest.raises(ValueError, match="non-empty string"):
        report.not_covered = ["fine", ""]


def test_without_a_ledger_and_with_dp_disabled():
    text = make_report(None).to_markdown()
    assert "No privacy ledger is attached" in text
    assert make_report(None).to_dict()["privacy"] is None

    ledger = PrivacyLedger(epsilon=math.inf, delta=1e-6)
    ledger.charge("training", dpsgd_event(noise_multiplier=0.0, sampling_probability=0.1, num_steps=3),
                  num_units=100)
    text = Report("non-private baseline", privacy=ledger.report().to_dict()).to_markdown()
    parse_markdown(text)
    assert "**ε** = ∞ (budget ∞)" in text
    assert "**NOT PRIVATE**" in text


# ---------------------------------------------------------------------------------------------
# Owner-only values
# ---------------------------------------------------------------------------------------------


def test_shareable_exports_never_contain_owner_only_values(ledger_report, tmp_path):
    pytest.importorskip("matplotlib")
    report = make_report(ledger_report)
    exports = {"to_json": report.to_json(), "to_markdown": report.to_markdown(),
               "to_dict": json.dumps(report.to_dict(), ensure_ascii=False)}
    written = report.save(tmp_path / "share")
    assert sorted(p.name for p in (tmp_path / "share").iterdir()) == sorted(
        ["report.md", "report.json", "privacy_vs_utility.png", "workclass_marginal.png"]
    )
    for path in written:
        exports[path.name] = path.read_bytes().decode("utf-8", errors="replace")
    for where, text in exports.items():
        assert not leaks(text), f"{where} leaks owner-only content {leaks(text)}"
    assert report.to_dict()["includes_owner_only"] is False
    assert "owner_only" not in report.to_dict()

    # Positive control: the same search finds the secrets in the owner's export.
    owner_md = report.to_markdown(include_owner_only=True)
    owner_json = report.to_json(include_owner_only=True)
    unsaved_plot = {SECRET_PLOT, SECRET_CAPTION, "owner_only-"}  # the owner-only plot is not saved: no link
    assert set(leaks(owner_md)) == set(SECRET_TEXTS) - unsaved_plot | {"0.988", "8,675,309"}
    assert set(leaks(owner_json)) == set(SECRET_TEXTS) - {"owner_only-"} | {"0.987654", "8,675,309", "0.4242"}


def test_owner_only_content_appears_only_under_the_marked_heading(ledger_report, tmp_path):
    pytest.importorskip("matplotlib")
    report = make_report(ledger_report)
    report.save(tmp_path / "owner", include_owner_only=True)
    text = (tmp_path / "owner" / "report.md").read_text(encoding="utf-8")
    headings, _ = parse_markdown(text)
    assert (2, OWNER_ONLY_HEADING) in headings
    owner_at = text.index(f"## {OWNER_ONLY_HEADING}")
    after = headings[headings.index((2, OWNER_ONLY_HEADING)) + 1:]
    assert all(level >= 3 for level, _ in after), "nothing may follow the owner-only part at its level"
    for secret in (SECRET_NAME, SECRET_SETTING, SECRET_NOTE, SECRET_SECTION, SECRET_PLOT, SECRET_CAPTION,
                   "0.988", "8,675,309"):
        assert secret in text[owner_at:], secret
        assert secret not in text[:owner_at], secret
    _, owner_tables = parse_markdown(text[owner_at:])
    assert _rows(owner_tables, "Downstream utility")[(SECRET_NAME, SECRET_SETTING)][2:] == ["0.988", SECRET_NOTE]
    assert _rows(owner_tables, SECRET_SECTION)[("records dropped", "")][2] == "8,675,309"
    _, shareable_tables = parse_markdown(text[:owner_at])
    assert (SECRET_NAME, SECRET_SETTING) not in _rows(shareable_tables, "Downstream utility")
    assert f"![{SECRET_PLOT}](owner_only-{SECRET_PLOT}.png)" in text[owner_at:]

    data = json.loads((tmp_path / "owner" / "report.json").read_text(encoding="utf-8"))
    assert data["includes_owner_only"] is True
    assert all(m["shareable"] for m in data["metrics"] + data["plots"])
    assert data["owner_only"]["warning"] == OWNER_ONLY_HEADING
    assert {m["name"] for m in data["owner_only"]["metrics"]} == {SECRET_NAME, "records dropped"}
    assert not any(m["shareable"] for m in data["owner_only"]["metrics"] + data["owner_only"]["plots"])
    assert [p["name"] for p in data["owner_only"]["plots"]] == [SECRET_PLOT]
    assert data["owner_only"]["plots"][0]["data"]["in"][0] == SECRET_SCORE


def test_a_shareable_export_refuses_a_folder_holding_owner_only_plots(ledger_report, tmp_path):
    pytest.importorskip("matplotlib")
    report = make_report(ledger_report)
    report.save(tmp_path, include_owner_only=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match="owner-only plot files"):
        report.save(tmp_path)
    with pytest.raises(FileExistsError, match="owner-only plot files"):
        report.save_plots(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def test_json_round_trips_and_writes_atomically(ledger_report, tmp_path):
    report = make_report(ledger_report)
    for include in (False, True):
        text = report.to_json(include_owner_only=include)
        assert json.loads(text) == report.to_dict(include_owner_only=include)
    data = report.to_dict()
    assert data["format"] == "hf_dpsynth.evaluation_report"
    assert data["privacy"] == ledger_report
    values = {(m["section"], m["name"], m["setting"]): m["value"] for m in data["metrics"]}
    assert values[("audit", "ε̂ (one-run audit lower bound)", "")] == "inf"
    assert values[("text fidelity", "invalid generations", "ε = 4")] == 12_345
    assert values[("audit", "not measured", "")] is None
    assert [p["name"] for p in data["plots"]] == ["privacy vs utility", "workclass marginal"]
    assert data["plots"][0]["data"]["references"] == PRIVACY_UTILITY["references"]
    assert data["plots"][0]["file"] is None  # not saved yet

    path = tmp_path / "out.json"
    path.write_text("previous", encoding="utf-8")
    assert report.to_json(path) == path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_numpy_values_serialise():
    np = pytest.importorskip("numpy")
    report = Report("numpy")
    report.extend([Metric("a", np.float32(0.25), True, "s"), Metric("b", np.int64(7), True, "s"),
                   Metric("c", np.float32("inf"), True, "s")])
    assert [m["value"] for m in json.loads(report.to_json())["metrics"]] == [0.25, 7, "inf"]


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def test_plots_are_pngs_of_sensible_size_and_linked_from_the_markdown(ledger_report, tmp_path):
    mpl_image = pytest.importorskip("matplotlib.image")
    report = make_report(ledger_report)
    assert "![" not in report.to_markdown()  # nothing saved yet: no links

    paths = report.save_plots(tmp_path / "plots", include_owner_only=True)
    assert [p.name for p in paths] == ["privacy_vs_utility.png", "workclass_marginal.png",
                                       f"owner_only-{SECRET_PLOT}.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = mpl_image.imread(path)
        height, width = image.shape[:2]
        assert 300 <= width <= 3000 and 200 <= height <= 2000, (path.name, image.shape)
        assert image[..., :3].std() > 0.05, f"{path.name} is blank"
    assert not list((tmp_path / "plots").glob("*.tmp")) and not list((tmp_path / "plots").glob(".*"))

    text = report.to_markdown()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == [(tmp_path / "plots" / "privacy_vs_utility.png").as_posix(),
                     (tmp_path / "plots" / "workclass_marginal.png").as_posix()]
    assert "TSTR accuracy across ε" in text

    written = report.save(tmp_path / "bundle")
    md = (tmp_path / "bundle" / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links == ["privacy_vs_utility.png", "workclass_marginal.png"]
    assert all((tmp_path / "bundle" / link).is_file() for link in links)
    assert [p["file"] for p in json.loads((tmp_path / "bundle" / "report.json").read_text())["plots"]] == links
    assert {p.name for p in written} == {p.name for p in (tmp_path / "bundle").iterdir()}


def test_a_failed_plot_write_leaves_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    report = Report("atomic")
    report.add_plot("bars", "marginal_bars", MARGINALS, shareable=True)
    target = tmp_path / "bars.png"
    target.write_bytes(b"previous")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        report.save_plots(tmp_path)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png"]


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    report = Report("no matplotlib")
    report.add_plot("bars", "marginal_bars", MARGINALS, shareable=True)
    with pytest.raises(MissingDependencyError, match=re.escape('pip install "hf-dpsynth[evaluation]"')):
        report.save_plots(tmp_path)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("pie", {"x": [1]}, "Unknown plot kind 'pie'"),
        ("score_histogram", {"in": [], "out": [1.0]}, r"data\['in'\] is empty"),
        ("score_histogram", {"in": [1.0], "out": []}, r"data\['out'\] is empty"),
        ("score_histogram", {"in": [1.0, float("nan")], "out": [1.0]}, "finite numbers only"),
        ("score_histogram", {"in": [1.0], "out": [2.0], "bins": 5}, r"unknown keys \['bins'\]"),
        ("score_histogram", {"in": "0.1 0.2", "out": [2.0]}, "must be a list of numbers"),
        ("privacy_utility", {"epsilons": [1, 2, 4], "values": [0.5, 0.6], "metric": "acc"},
         r"data\['values'\] has 2 values but data\['epsilons'\] has 3"),
        ("privacy_utility", {"epsilons": [1, 2], "values": [0.5, 0.6]}, r"lacks \['metric'\]"),
        ("privacy_utility", {"epsilons": [1, 1], "values": [0.5, 0.6], "metric": "acc"}, "repeated ε"),
        ("privacy_utility", {"epsilons": [1, math.inf], "values": [0.5, 0.6], "metric": "acc"}, "finite"),
        ("privacy_utility", {"epsilons": [-1, 2], "values": [0.5, 0.6], "metric": "acc"}, "≥ 0"),
        ("privacy_utility", {"epsilons": [1], "values": [0.5], "metric": "acc", "references": {"real": "high"}},
         "finite numbers only"),
        ("marginal_bars", {**MARGINALS, "synthetic": [0.5, 0.5]},
         r"data\['synthetic'\] has 2 values but data\['categories'\] has 3"),
        ("marginal_bars", {**MARGINALS, "categories": ["a", "a", "b"]}, "repeated labels"),
        ("marginal_bars", {**MARGINALS, "categories": [], "real": [], "synthetic": []}, "is empty"),
        ("marginal_bars", [("column", "x")], "data must be a dict"),
    ],
)
def test_bad_plot_input_is_refused_clearly(kind, data, message):
    report = Report("bad plots")
    with pytest.raises(ValueError, match=message):
        report.add_plot("p", kind, data, shareable=True)
    assert report.to_dict()["plots"] == []


def test_bad_report_input_is_refused_clearly(ledger_report):
    with pytest.raises(ValueError, match="title must be a non-empty string"):
        Report("  ")
    with pytest.raises(TypeError, match=r"report\(\)\.to_dict\(\)"):
        Report("t", privacy=[("epsilon_spent", 1.0)])
    with pytest.raises(ValueError, match=r"lacks \['delta'\]"):
        Report("t", privacy={k: v for k, v in ledger_report.items() if k != "delta"})

    report = Report("t")
    with pytest.raises(TypeError, match="takes a Metric"):
        report.add({"name": "x", "value": 1})
    with pytest.raises(TypeError, match="shareable must be True or False"):
        report.add(Metric("x", 1.0, "no", "s"))
    with pytest.raises(TypeError, match="shareable must be True or False"):
        report.add_plot("p", "marginal_bars", MARGINALS, shareable=1)

    report.add(Metric("x", 1.0, True, "s", "ε = 1"))
    with pytest.raises(ValueError, match="already has metric 'x'"):
        report.extend([Metric("y", 2.0, True, "s"), Metric("x", 3.0, True, "s", "ε = 1")])
    assert [m.name for m in report.metrics] == ["x"]  # extend added nothing
    report.add(Metric("y", 2.0, True, "s"))  # ... and forgot the refused batch's keys

    report.add_plot("bars a", "marginal_bars", MARGINALS, shareable=True)
    with pytest.raises(ValueError, match="already has a plot named 'bars a'"):
        report.add_plot("bars a", "marginal_bars", MARGINALS, shareable=True)
    with pytest.raises(ValueError, match="same file bars_a.png"):
        report.add_plot("bars/a", "marginal_bars", MARGINALS, shareable=True)


def test_plot_data_is_copied_when_added():
    data = {"in": [1.0, 2.0], "out": [3.0]}
    report = Report("copy")
    report.add_plot("scores", "score_histogram", data, shareable=True)
    data["in"].append(99.0)
    assert report.to_dict()["plots"][0]["data"] == {"in": [1.0, 2.0], "out": [3.0], "xlabel": "score"}
