"""Two processes (torchrun, gloo) give the same adapter as one process for the same dp_seed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_script.py")


def run(tmp_path: Path, nproc: int, unit: str) -> dict:
    out = tmp_path / f"{unit}-{nproc}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(SCRIPT), str(out), unit]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "adapter.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["example", "user"])
def test_two_processes_equal_one_process(tmp_path, unit):
    one = run(tmp_path, 1, unit)
    two = run(tmp_path, 2, unit)
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["epsilon"] == two["epsilon"]
    assert one["state"].keys() == two["state"].keys()
    for name in one["state"]:
        torch.testing.assert_close(torch.tensor(two["state"][name]), torch.tensor(one["state"][name]),
                                   rtol=1e-4, atol=1e-6, msg=name)
