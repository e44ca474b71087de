import os

import pytest

# Tests run on 2 cores, often as 2 pytest-xdist workers: one torch thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("HF_DPSYNTH_TEST_THREADS", "1")))
    except ImportError:  # the privacy tests run without torch
        pass


@pytest.fixture
def tiny_lm():
    from hf_dpsynth.models import tiny_causal_lm

    return tiny_causal_lm()


@pytest.fixture(scope="session")
def shared_data():
    """The real datasets beside the checkout (../shared/data), or $HF_DPSYNTH_SHARED_DATA."""
    from pathlib import Path

    root = Path(os.environ.get("HF_DPSYNTH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / "uci-adult" / "adult.data").is_file():
        pytest.skip(f"the shared datasets are not at {root} (set HF_DPSYNTH_SHARED_DATA)")
    return root
