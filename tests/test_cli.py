import json
import subprocess
from pathlib import Path

from hf_dpsynth import __version__
from hf_dpsynth.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_info(capsys):
    proc = subprocess.run(["hf-dpsynth", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"hf-dpsynth {__version__}"
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["hf-dpsynth"] == __version__
    assert info["packages"]["dp-accounting"] and "cpu" in info["devices"]
    assert "installed" in info["default_model"]


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_ci_runs_the_readme_test_command_verbatim():
    ci = [l for l in (ROOT / ".ci" / "run").read_text().splitlines()
          if l.strip() and not l.lstrip().startswith(("#", "set ", "cd ", "export "))]
    assert len(ci) == 1
    command = ci[0].strip()
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0].strip() for b in setup.split("```bash")[1:]]
    assert len(blocks) == 2, "the set-up section has exactly two commands"
    assert blocks[1] == command
    assert "hf-dpsynth demo" in blocks[0] and "pip install" in blocks[0]


def test_demo_smoke_run_on_tiny_model(tmp_path, capsys):
    from hf_dpsynth.privacy import PrivacyLedger

    out = tmp_path / "demo"
    assert main(["demo", "--method", "finetune", "--model", "tiny", "--records", "40", "--steps", "2", "--samples", "4",
                 "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Not run by this demo" in printed and "label_histogram" in printed
    ledger = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in ledger.charges] == ["label_histogram", "training"]
    assert ledger.num_units == 40 and 0 < ledger.epsilon_spent() <= 4.0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_generated"] == 4
    assert (out / "public_only" / "data.parquet").is_file()  # the ε = 0 baseline was generated
    # A second demo run in the same folder is a new release of the public demo data.
    assert main(["demo", "--method", "finetune", "--model", "tiny", "--records", "40", "--steps", "1", "--samples", "2",
                 "--output-dir", str(out)]) == 0
    assert "Removing the previous demo outputs" in capsys.readouterr().out


def test_the_default_demo_prompts_the_base_model_with_dp_keywords(tmp_path, capsys):
    from hf_dpsynth.privacy import PrivacyLedger

    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny", "--records", "300", "--samples", "24", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    ledger = PrivacyLedger.load(out / "privacy_ledger.json")
    assert [c.stage for c in ledger.charges] == ["keywords"] and 0 < ledger.epsilon_spent() <= 4.0
    assert (out / "keywords.json").is_file() and not (out / "adapter").exists()
    assert (out / "public_only" / "data.parquet").is_file()
    assert "DP keywords in the base model's prompts" in printed
    if (out / "metrics.json").is_file():  # the tiny model may write too few valid records of a label to evaluate
        assert "spam F1" in printed
