"""The local test Hub (tests/hub/hub_server.py, test scaffolding) is faithful enough for the real clients.

Every check goes through the unmodified huggingface_hub / datasets clients and then looks at what the server
actually stored, so a server that merely answered 200 would fail them.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROWS = {
    "text": ["hello", "wörld ✓", "", "a longer synthetic sentence", "x" * 300, "6", "seven", "eight", "nine", "ten"],
    "label": [0, 1, 0, 1, 1, 0, 0, 1, 0, 1],
    "score": [0.5, -1.25, 3.0, 0.0, 1e-9, 2.5, -0.5, 7.75, 8.0, 9.125],
}
RECORDS = [dict(zip(ROWS, values)) for values in zip(*ROWS.values())]

CARD = """---
license: mit
tags:
- synthetic
- differential-privacy
differential_privacy:
  epsilon: 4.0
  delta: 1.0e-06
  accountant: rdp
---
# A synthetic dataset

Generated with DP.
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _http(method: str, url: str, body: bytes | None = None, token: str | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_push_to_hub_private_stores_lfs_parquet_that_reads_back_and_loads(hub_env):
    from datasets import Dataset, load_dataset
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    repo_id = f"{hub_env.user}/{_name('synth')}"
    Dataset.from_dict(ROWS).push_to_hub(repo_id, private=True, num_shards=2)

    # What the server stored: two parquet shards, both LFS objects whose sha256 is their oid, holding the rows.
    hub = hub_env.hub
    files = hub.list_files("dataset", repo_id)
    shards = [f for f in files if f.startswith("data/")]
    assert shards == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert {".gitattributes", "README.md"} <= set(files)
    tables = []
    for shard in shards:
        entry = hub.file_entry("dataset", repo_id, shard)
        data = hub.read_file("dataset", repo_id, shard)
        assert entry.is_lfs and entry.size == len(data) and hashlib.sha256(data).hexdigest() == entry.lfs_oid
        tables.append(pq.read_table(io.BytesIO(data)))
    assert [t.num_rows for t in tables] == [5, 5]
    assert pa.concat_tables(tables).select(list(ROWS)).to_pylist() == RECORDS
    assert not hub.file_entry("dataset", repo_id, "README.md").is_lfs

    # What the clients see: private, the card written by datasets, and nothing for an anonymous caller.
    info = hub_env.api().repo_info(repo_id, repo_type="dataset")
    assert info.private is True and info.id == repo_id and len(info.sha) == 40
    assert info.sha == hub.get_repo("dataset", repo_id).refs["main"]
    splits = info.card_data.to_dict()["dataset_info"]["splits"]
    assert [(s["name"], s["num_examples"]) for s in splits] == [("train", 10)]
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_env.endpoint, token=False).repo_info(repo_id, repo_type="dataset")

    loaded = load_dataset(repo_id, split="train")
    assert loaded.to_list() == RECORDS
    assert loaded.features["label"].dtype == "int64" and loaded.features["text"].dtype == "string"

    # the shards went through the LFS batch + PUT protocol, not through the commit payload
    puts = [path for method, path, status in hub.requests if method == "PUT" and status == 200 and repo_id in path]
    assert len(puts) == 2


def test_a_second_push_replaces_the_split_and_keeps_the_card_of_the_other_split(hub_env):
    from datasets import Dataset, load_dataset

    repo_id = f"{hub_env.user}/{_name('repush')}"
    Dataset.from_dict(ROWS).push_to_hub(repo_id, num_shards=2)
    Dataset.from_dict({k: v[:3] for k, v in ROWS.items()}).push_to_hub(repo_id, split="test")
    first_commit = hub_env.hub.get_repo("dataset", repo_id).refs["main"]
    # same split again, fewer shards: the old shards are deleted in the same commit, the card is rewritten from the
    # one already on the server (read back through HfFileSystem)
    Dataset.from_dict({k: v[5:] for k, v in ROWS.items()}).push_to_hub(repo_id, num_shards=1)

    files = hub_env.hub.list_files("dataset", repo_id)
    assert [f for f in files if f.startswith("data/")] == [
        "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert "data/train-00000-of-00002.parquet" in hub_env.hub.list_files("dataset", repo_id, revision=first_commit)
    card = hub_env.api().repo_info(repo_id, repo_type="dataset").card_data.to_dict()
    assert {s["name"]: s["num_examples"] for s in card["dataset_info"]["splits"]} == {"train": 5, "test": 3}
    loaded = load_dataset(repo_id)
    assert loaded["train"].to_list() == RECORDS[5:] and loaded["test"].to_list() == RECORDS[:3]


def test_readme_with_yaml_front_matter_round_trips_through_download_and_card_data(hub_env):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    api = hub_env.api()
    repo_id = f"{hub_env.user}/{_name('card')}"
    url = api.create_repo(repo_id, repo_type="dataset")
    assert url.repo_id == repo_id and url.repo_type == "dataset"
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id, repo_type="dataset")
    assert conflict.value.response.status_code == 409
    assert api.create_repo(repo_id, repo_type="dataset", exist_ok=True).repo_id == repo_id

    commit = api.upload_file(path_or_fileobj=CARD.encode(), path_in_repo="README.md", repo_id=repo_id,
                             repo_type="dataset")
    assert commit.oid == hub_env.hub.get_repo("dataset", repo_id).refs["main"]

    # module-level hf_hub_download: uses the patched constants.ENDPOINT and the temporary cache
    local = hf_hub_download(repo_id, "README.md", repo_type="dataset")
    assert local.startswith(str(hub_env.home)) and f"/snapshots/{commit.oid}/" in local
    assert Path(local).read_text(encoding="utf-8") == CARD

    info = api.repo_info(repo_id, repo_type="dataset")
    assert info.private is False and info.sha == commit.oid
    assert info.card_data.license == "mit"
    assert info.card_data.to_dict()["differential_privacy"] == {"epsilon": 4.0, "delta": 1e-6, "accountant": "rdp"}
    assert [s.rfilename for s in info.siblings] == [".gitattributes", "README.md"]

    # invalid YAML front matter is refused before anything is committed
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [mit\n---\n", path_in_repo="README.md", repo_id=repo_id,
                        repo_type="dataset")
    assert hub_env.hub.get_repo("dataset", repo_id).refs["main"] == commit.oid


def test_upload_folder_list_files_and_download_of_lfs_and_regular_files(hub_env, tmp_path):
    from huggingface_hub import HfFileSystem, get_hf_file_metadata, hf_hub_url

    api = hub_env.api()
    repo_id = api.create_repo(_name("model"), private=False).repo_id  # no namespace: the server uses whoami's
    assert repo_id.startswith(f"{hub_env.user}/")
    weights = bytes(range(256)) * 40  # binary -> LFS
    folder = tmp_path / "release"
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"epsilon": 4.0}))
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "nested" / "deeper" / "notes.txt").write_text("plain text\n")
    api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="release")

    assert sorted(api.list_repo_files(repo_id)) == [
        ".gitattributes", "config.json", "model.safetensors", "nested/deeper/notes.txt"]
    hub = hub_env.hub
    assert hub.file_entry("model", repo_id, "model.safetensors").is_lfs
    assert not hub.file_entry("model", repo_id, "config.json").is_lfs
    assert hub.read_file("model", repo_id, "model.safetensors") == weights

    path = api.hf_hub_download(repo_id, "model.safetensors")
    assert Path(path).read_bytes() == weights
    meta = get_hf_file_metadata(hf_hub_url(repo_id, "model.safetensors", endpoint=hub_env.endpoint))
    assert meta.etag == hashlib.sha256(weights).hexdigest() and meta.size == len(weights)
    assert meta.commit_hash == hub.get_repo("model", repo_id).refs["main"]
    assert Path(api.hf_hub_download(repo_id, "nested/deeper/notes.txt")).read_text() == "plain text\n"

    # ranged reads, as HfFileSystem makes them, and the edge cases of Range
    fs = HfFileSystem(endpoint=hub_env.endpoint, token=hub_env.token)
    with fs.open(f"{repo_id}/model.safetensors", "rb", block_size=1000) as f:
        f.seek(5000)
        assert f.read(100) == weights[5000:5100]
    url = hf_hub_url(repo_id, "model.safetensors", endpoint=hub_env.endpoint)
    assert _http("GET", url, headers={"Range": "bytes=-10"}) == (206, weights[-10:])
    assert _http("GET", url, headers={"Range": f"bytes={len(weights)}-"})[0] == 416

    # deleting a folder, then a file that is not there
    from huggingface_hub.errors import EntryNotFoundError

    api.delete_folder("nested", repo_id=repo_id)
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "config.json", "model.safetensors"]
    with pytest.raises(EntryNotFoundError):
        api.delete_file("nested/deeper/notes.txt", repo_id=repo_id)


def test_unknown_repo_raises_repository_not_found(hub_env):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = hub_env.api()
    missing = f"{hub_env.user}/{_name('missing')}"
    for repo_type in ("model", "dataset"):
        with pytest.raises(RepositoryNotFoundError):
            api.repo_info(missing, repo_type=repo_type)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(missing, "README.md", repo_type="dataset")
    status, _ = _http("GET", f"{hub_env.endpoint}/api/datasets/{missing}")
    assert status == 404

    existing = api.create_repo(_name("exists"), repo_type="dataset").repo_id
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(existing, repo_type="dataset", revision="no-such-branch")


def test_a_public_repo_seeded_in_another_namespace_is_readable_anonymously_but_not_writable(hub_env):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    repo_id = f"someone-else/{_name('public')}"
    hub_env.hub.create_repo("dataset", repo_id)
    sha = hub_env.hub.commit_files("dataset", repo_id, {"data/blob.bin": b"\x00seeded"}, lfs=True)
    anonymous = HfApi(endpoint=hub_env.endpoint, token=False)
    assert anonymous.repo_info(repo_id, repo_type="dataset").sha == sha
    path = anonymous.hf_hub_download(repo_id, "data/blob.bin", repo_type="dataset")
    assert Path(path).read_bytes() == b"\x00seeded" and Path(path).parent.name == "data"
    with pytest.raises(HfHubHTTPError) as refused:
        hub_env.api().create_repo(f"someone-else/{_name('mine')}")
    assert refused.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as refused:
        hub_env.api().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, repo_type="dataset")
    assert refused.value.response.status_code == 403
    assert hub_env.hub.list_files("dataset", repo_id) == [".gitattributes", "data/blob.bin"]


def test_lfs_put_is_checked_against_the_sha256_and_commits_need_uploaded_objects(hub_env):
    from huggingface_hub.errors import HfHubHTTPError

    api = hub_env.api()
    repo_id = api.create_repo(_name("lfs"), repo_type="dataset").repo_id
    content = b"\x00\x01binary shard" * 100
    oid = hashlib.sha256(content).hexdigest()
    base = hub_env.endpoint
    batch = json.dumps({"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
                        "objects": [{"oid": oid, "size": len(content)}]}).encode()
    status, body = _http("POST", f"{base}/datasets/{repo_id}.git/info/lfs/objects/batch", batch, hub_env.token,
                         {"Content-Type": "application/vnd.git-lfs+json"})
    assert status == 200
    (obj,) = json.loads(body)["objects"]
    href = obj["actions"]["upload"]["href"]

    def commit_lfs() -> int:
        lines = [{"key": "header", "value": {"summary": "add shard", "description": ""}},
                 {"key": "lfsFile", "value": {"path": "data/x.parquet", "algo": "sha256", "oid": oid,
                                              "size": len(content)}}]
        payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        return _http("POST", f"{base}/api/datasets/{repo_id}/commit/main", payload, hub_env.token,
                     {"Content-Type": "application/x-ndjson"})[0]

    assert _http("PUT", href, content[:-1] + b"!")[0] == 400  # wrong bytes: sha256 mismatch
    assert commit_lfs() == 400  # the pointer names an object that was never stored
    # the right bytes, sent with chunked transfer encoding (the clients send Content-Length; both must work)
    target = urllib.parse.urlsplit(href)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    connection.request("PUT", target.path, body=iter([content[:7], content[7:]]), encode_chunked=True)
    assert connection.getresponse().status == 200
    connection.close()
    assert commit_lfs() == 200
    assert hub_env.hub.read_file("dataset", repo_id, "data/x.parquet") == content

    # a regular "file" line with binary content is refused, as on the Hub
    lines = [{"key": "header", "value": {"summary": "bin", "description": ""}},
             {"key": "file", "value": {"path": "b.bin", "encoding": "base64",
                                       "content": base64.b64encode(content).decode()}}]
    payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    assert _http("POST", f"{base}/api/datasets/{repo_id}/commit/main", payload, hub_env.token)[0] == 400

    # optimistic concurrency: a commit on a stale parent is refused with 412
    from huggingface_hub import CommitOperationAdd

    old = api.repo_info(repo_id, repo_type="dataset").sha
    api.upload_file(path_or_fileobj=b"one", path_in_repo="one.txt", repo_id=repo_id, repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit(repo_id, [CommitOperationAdd("two.txt", b"two")], commit_message="late",
                          repo_type="dataset", parent_commit=old)
    assert stale.value.response.status_code == 412
    # the old commit stays readable by its sha
    assert "one.txt" not in api.list_repo_files(repo_id, repo_type="dataset", revision=old)
    # writes need the token
    assert _http("POST", f"{base}/api/datasets/{repo_id}/commit/main", payload)[0] == 401


def test_a_subprocess_reaches_the_local_hub_from_the_environment_alone(hub_env):
    repo_id = hub_env.api().create_repo(_name("sub"), repo_type="dataset", private=True).repo_id
    code = ("import sys; from huggingface_hub import HfApi; "
            "i = HfApi().repo_info(sys.argv[1], repo_type='dataset'); print(i.private, i.sha)")
    out = subprocess.run([sys.executable, "-c", code, repo_id], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", hub_env.hub.get_repo("dataset", repo_id).refs["main"]]
