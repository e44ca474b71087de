import json
import runpy
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_dp_finetune_recipe_runs_on_a_tiny_model(tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["dp_finetune_sms.py", "--model_name_or_path", "tiny", "--output_dir", str(out), "--use_cpu",
            "--target_epsilon", "3", "--logical_batch_size", "16", "--per_device_train_batch_size", "8",
            "--max_steps", "2", "--num_records", "64", "--lora_r", "4", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "true", "--accountant", "rdp"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(RECIPES / "dp_finetune_sms.py"), run_name="__main__")
    report = json.loads((out / "privacy_report.json").read_text())
    assert report["num_units"] == 64 and report["num_steps"] == 2 and report["epsilon"] <= 3.0
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_accelerate_config_is_plain_data_parallel():
    import yaml

    config = yaml.safe_load((RECIPES / "accelerate" / "multi_gpu.yaml").read_text())
    assert config["distributed_type"] == "MULTI_GPU"
    assert "deepspeed_config" not in config and "fsdp_config" not in config
