"""Fixtures that point the real huggingface_hub / datasets clients at the local test Hub (tests/hub/hub_server.py).

``hub_server`` (session): starts the TEST-ONLY imitation of the Hub on a free port of 127.0.0.1 in a thread and
yields its URL, a ``str`` (e.g. ``"http://127.0.0.1:41234"``) whose ``.hub`` attribute is the ``HubServer`` (its
in-memory repos, ``token``, ``user``, ``read_file``/``file_entry``/``list_files``, ``requests``/``errors``).

``hub_env`` (function): makes the clients in *this* process and in any subprocess talk to that server only, with
a throw-away cache, and yields a ``HubEnv`` (endpoint, token, user, hub, home, api). See its docstring for what
it patches and why.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hub_server import HubServer, serve_hub


class HubServerURL(str):
    """The server's base URL; ``.hub`` is the running ``HubServer``."""

    hub: HubServer


@dataclass
class HubEnv:
    endpoint: str  # the local Hub's URL, also in HF_ENDPOINT
    token: str  # the fake token the server accepts, also in HF_TOKEN
    user: str  # the namespace of that token (whoami)
    hub: HubServer  # the server's state, for assertions on what was stored
    home: Path  # the temporary HF_HOME (hub cache, datasets cache, token path)
    outbound: list = field(default_factory=list)  # non-loopback hosts something tried to resolve (must stay empty)

    def api(self, **kwargs):
        """An ``HfApi`` bound to the local Hub with the test token."""
        from huggingface_hub import HfApi

        kwargs.setdefault("endpoint", self.endpoint)
        kwargs.setdefault("token", self.token)
        return HfApi(**kwargs)


@pytest.fixture(scope="session")
def hub_server():
    with serve_hub() as hub:
        url = HubServerURL(hub.url)
        url.hub = hub
        yield url


_LOOPBACK = {"127.0.0.1", "localhost", "::1", "", None}


@pytest.fixture
def hub_env(hub_server, tmp_path, monkeypatch):
    """Point huggingface_hub and datasets at the local test Hub, online, with a fake token and a temporary cache.

    Environment (for subprocesses, which read it when they import the libraries): HF_ENDPOINT, HF_HUB_DISABLE_XET=1,
    HF_HUB_OFFLINE=0, HF_DATASETS_OFFLINE=0 (tests/conftest.py sets both to 1), HF_TOKEN, HF_HOME, HF_HUB_CACHE,
    HF_DATASETS_CACHE, HF_XET_CACHE, HF_TOKEN_PATH, HF_HUB_DISABLE_TELEMETRY=1, HF_UPDATE_DOWNLOAD_COUNTS=0.

    In this process huggingface_hub and datasets have usually been imported already, and both copy those variables
    into module constants at import time (huggingface_hub.constants.ENDPOINT, HUGGINGFACE_CO_URL_TEMPLATE,
    HF_HUB_OFFLINE, HF_HUB_DISABLE_XET, cache paths; datasets.config.HF_ENDPOINT, HUB_DATASETS_URL, HF_HUB_OFFLINE,
    cache paths). The clients read those constants at call time (``constants.X``, ``config.X``; checked in their
    source), so they are monkeypatched too, as are the two objects created at import with the default endpoint:
    ``huggingface_hub.hf_api.api`` (behind the module-level ``huggingface_hub.create_repo``/``upload_file``/...) and
    ``huggingface_hub.hf_file_system.hffs``. HfFileSystem's fsspec instance cache is cleared before and after.

    Two datasets side calls that would leave the machine are switched off: the download-count HEAD to S3
    (``config.HF_UPDATE_DOWNLOAD_COUNTS``) and the dataset-viewer lookup (``config.USE_PARQUET_EXPORT``; it would
    ask ``datasets-server.<endpoint host>``, which this server does not imitate). Any other attempt to resolve a
    non-loopback host is refused and fails the test, as does any 500 (a scaffolding bug) the server answered.
    """
    import datasets.config as ds_config
    import huggingface_hub.constants as hf_constants
    import huggingface_hub.hf_api as hf_api_module
    import huggingface_hub.hf_file_system as hf_fs_module
    from huggingface_hub import HfFileSystem

    hub: HubServer = hub_server.hub
    endpoint = str(hub_server)
    home = tmp_path / "hf_home"
    hub_cache, datasets_cache = home / "hub", home / "datasets"
    for folder in (hub_cache, datasets_cache):
        folder.mkdir(parents=True)

    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_TOKEN": hub.token,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_DATASETS_CACHE": str(datasets_cache),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HUGGINGFACE_CO_STAGING", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE",
                "HUGGINGFACE_ASSETS_CACHE"):
        monkeypatch.delenv(key, raising=False)

    constants = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(hf_constants.HF_URL_HOSTS | {"127.0.0.1", "localhost"}),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    for name, value in constants.items():
        monkeypatch.setattr(hf_constants, name, value)
    monkeypatch.setattr(hf_api_module.api, "endpoint", endpoint)
    monkeypatch.setattr(hf_fs_module.hffs, "endpoint", endpoint)
    monkeypatch.setattr(hf_fs_module.hffs._api, "endpoint", endpoint)

    config = {
        "HF_ENDPOINT": endpoint,
        "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_OFFLINE": False,
        "HF_CACHE_HOME": str(home),
        "HF_DATASETS_CACHE": datasets_cache,
        "HF_MODULES_CACHE": home / "modules",
        "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
        "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
        "HF_UPDATE_DOWNLOAD_COUNTS": False,
        "USE_PARQUET_EXPORT": False,
    }
    for name, value in config.items():
        monkeypatch.setattr(ds_config, name, value)

    outbound: list = []
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only_getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOOPBACK:
            outbound.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"hub_env: {name} is not the local test Hub (offline test)")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only_getaddrinfo)

    HfFileSystem.clear_instance_cache()
    errors_before = len(hub.errors)
    info = HubEnv(endpoint=endpoint, token=hub.token, user=hub.user, hub=hub, home=home, outbound=outbound)
    try:
        yield info
    finally:
        HfFileSystem.clear_instance_cache()
    new_errors = hub.errors[errors_before:]
    if new_errors:
        pytest.fail("the local test Hub answered 500 (a bug in tests/hub/hub_server.py):\n" + "\n".join(new_errors))
    if outbound:
        pytest.fail(f"a client tried to leave the machine during an offline Hub test: {sorted(set(outbound))}")

