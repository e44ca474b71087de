"""TEST SCAFFOLDING, NOT A PRODUCT COMPONENT: a local imitation of the Hugging Face Hub API.

No machine in this project reaches huggingface.co, and no installable server implements the Hub's upload
API. This module is a small in-memory HTTP server (standard library ``http.server`` + ``threading``) that
answers the requests the *real* clients make -- ``huggingface_hub.HfApi`` 2.4 (create_repo, upload_file,
upload_folder, repo_info, list_repo_files, hf_hub_download, HfFileSystem) and ``datasets`` 5.2
(``Dataset.push_to_hub``, ``load_dataset(repo_id)``) -- so that publishing can be tested offline with
``HF_ENDPOINT`` pointed at it and ``HF_HUB_DISABLE_XET=1``. It lives under ``tests/`` on purpose: product
code must talk to whatever endpoint the user configures and must never import it.

The request and response shapes were read from the clients' source (huggingface_hub/hf_api.py,
_commit_api.py, lfs.py, file_download.py, hf_file_system.py, utils/_http.py; datasets/arrow_dataset.py,
load.py), not guessed:

- ``GET /api/whoami-v2``; ``POST /api/repos/create`` (409 if the repo exists; the client's ``exist_ok``
  swallows it); ``POST /api/validate-yaml`` (400 + ``errors`` when the README front matter is not YAML).
- ``GET /api/{type}s/{ns}/{name}[/revision/{rev}]``: ``id``, ``sha``, ``private``, ``siblings`` (with
  ``size``/``blobId``/``lfs`` when ``?blobs=true``), ``cardData`` parsed from README.md's YAML front matter.
- ``POST /api/{type}s/{ns}/{name}/preupload/{rev}``: ``uploadMode`` ``lfs`` for files matching a
  ``filter=lfs`` pattern of the revision's ``.gitattributes``, binary samples or files >= 10 MiB, else
  ``regular``; ``shouldIgnore`` from the ``gitIgnore`` sent; ``oid`` of the file already at that path.
- LFS: ``POST /{datasets/|spaces/}{ns}/{name}.git/info/lfs/objects/batch`` answers an upload ``href`` on
  this server (no ``actions`` when the object is already stored) and a ``verify`` href; the ``PUT`` there
  is refused (400) unless the bytes' sha256 and size match the announced oid and size.
- ``POST /api/{type}s/{ns}/{name}/commit/{rev}``: NDJSON ``header`` (``parentCommit`` -> 412 when the
  branch has moved), ``file`` (base64; binary or >= 10 MiB regular files are refused as the Hub does),
  ``lfsFile`` (the object must have been uploaded, sizes must agree), ``deletedFile``, ``deletedFolder``
  (404 ``EntryNotFound`` "A file with this name doesn't exist" when absent); answers ``commitOid`` and
  ``commitUrl``. Each commit gets a 40-hex sha; ``main`` points at the newest one; old commits stay
  readable by sha.
- ``PUT /api/{type}s/{ns}/{name}/settings`` (``HfApi.update_repo_settings``): ``visibility``
  (``public``/``private``) or ``private``, and ``gated`` (accepted, not enforced).
- ``GET /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]`` (``recursive``, ``expand``) and
  ``POST .../paths-info/{rev}`` (form or JSON ``paths``), as used by HfFileSystem.
- ``GET|HEAD /{datasets/|spaces/}{ns}/{name}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (git
  blob oid), ``X-Linked-Etag``/``X-Linked-Size`` (sha256 and size) for LFS files, ``Accept-Ranges`` and
  single-range ``Range`` requests (206/416); never ``X-Xet-Hash``.
- Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
  ``X-Error-Message`` the way the client's ``hf_raise_for_status`` maps them to ``RepositoryNotFoundError``
  and friends. A private repo is invisible (401 + ``RepoNotFound``) without the server's token; a wrong
  token gets 401 "Invalid credentials in Authorization header"; writes need the token.

Not implemented (404, recorded in ``HubServer.unhandled``): branches/tags/refs, pull requests
(``create_pr``), Xet, multipart LFS, spaces runtime, the dataset viewer (datasets-server), buckets, and
everything else. One user (``HubServer.user``) with one token; it may create and write repos in its own namespace
and in ``HubServer.orgs`` (403 elsewhere) and read every repo. ``HubServer.create_repo``/``commit_files`` seed
repos directly, e.g. someone else's public dataset.

Tests can inspect what was stored without going through the clients: ``HubServer.read_file``,
``HubServer.file_entry``, ``HubServer.list_files``, ``HubServer.get_repo``; ``requests``, ``errors`` (500s,
with tracebacks) and ``unhandled`` record the traffic.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import itertools
import json
import re
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space")
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
PREFIX_TO_TYPE = {"datasets": "dataset", "spaces": "space"}
API_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
MAX_REGULAR_FILE_SIZE = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files of 10 MiB or more
LFS_UPLOAD_ROUTE = "__test_hub_lfs_upload__"
LFS_VERIFY_ROUTE = "__test_hub_lfs_verify__"
DEFAULT_TOKEN = "hf_local_test_hub_token_not_a_secret"
DEFAULT_USER = "test-user"
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Same front-matter pattern as huggingface_hub.repocard.REGEX_YAML_BLOCK
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
# An abridged version of the .gitattributes the Hub puts in every new repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.lz4", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet",
        "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tflite",
        "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.mp3", "*.wav", "*.jpg", "*.jpeg",
        "*.png", "*.webp",
    )
)


class HubError(Exception):
    """An HTTP error answer, with the Hub's X-Error-Code / X-Error-Message headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def parse_front_matter(text: str) -> dict | None:
    """The README's YAML metadata as the Hub reports it in ``cardData`` (None without a mapping)."""
    match = _YAML_BLOCK.search(text)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _now() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _is_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the end of the 512-byte sample is still text
        return not (e.start >= len(sample) - 3 and e.reason == "unexpected end of data")
    return False


@dataclass
class FileEntry:
    size: int
    blob_oid: str  # git oid of the blob: the content (regular file) or the LFS pointer
    last_commit: str
    content: bytes | None = None  # regular files
    lfs_oid: str | None = None  # sha256 hex, LFS files
    pointer_size: int | None = None

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes, uploaded through LFS
    lfs_announced: dict[str, int] = field(default_factory=dict)  # sha256 -> size announced in a batch call

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in self.refs:
            return self.refs[revision[len("refs/heads/") :]]
        if revision in self.commits:
            return revision
        return None


class HubServer:
    """In-memory Hub state plus the threaded HTTP server that exposes it. Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = DEFAULT_TOKEN,
                 user: str = DEFAULT_USER, orgs: tuple[str, ...] = ("test-org",)):
        self.token = token
        self.user = user
        self.orgs = tuple(orgs)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.errors: list[str] = []  # tracebacks of requests answered 500
        self.unhandled: list[tuple[str, str]] = []  # requests no route matched
        self._counter = itertools.count()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- direct access for tests (no HTTP) -----------------------------------------------------------
    def get_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def _commit_at(self, repo_type: str, repo_id: str, revision: str) -> Commit:
        repo = self.get_repo(repo_type, repo_id)
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r}")
        sha = repo.resolve(revision)
        if sha is None:
            raise KeyError(f"no revision {revision!r} in {repo_id!r}")
        return repo.commits[sha]

    def list_files(self, repo_type: str, repo_id: str, revision: str = "main") -> list[str]:
        with self.lock:
            return sorted(self._commit_at(repo_type, repo_id, revision).files)

    def file_entry(self, repo_type: str, repo_id: str, path: str, revision: str = "main") -> FileEntry:
        with self.lock:
            return self._commit_at(repo_type, repo_id, revision).files[path]

    def read_file(self, repo_type: str, repo_id: str, path: str, revision: str = "main") -> bytes:
        """The stored bytes of a file (the LFS object itself for LFS files, never the pointer)."""
        with self.lock:
            entry = self.file_entry(repo_type, repo_id, path, revision)
            return self._content(self.get_repo(repo_type, repo_id), entry)

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> Repo:
        """Create a repo directly (as another user could have), with the Hub's initial .gitattributes commit."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            self.repos[(repo_type, repo_id)] = repo
            gitattributes = DEFAULT_GITATTRIBUTES.encode()
            self._new_commit(repo, "main", "initial commit", "", {
                ".gitattributes": ("regular", gitattributes),
            })
            return repo

    def commit_files(self, repo_type: str, repo_id: str, files: dict[str, bytes], message: str = "seed",
                     lfs: bool = False) -> str:
        """Commit files directly; ``lfs=True`` stores them as LFS objects. Returns the commit sha."""
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            additions = {}
            for path, data in files.items():
                if lfs:
                    oid = hashlib.sha256(data).hexdigest()
                    repo.lfs_objects[oid] = data
                    additions[path] = ("lfs", oid)
                else:
                    additions[path] = ("regular", data)
            return self._new_commit(repo, "main", message, "", additions).oid

    # --- internals -----------------------------------------------------------------------------------
    @staticmethod
    def _content(repo: Repo, entry: FileEntry) -> bytes:
        return repo.lfs_objects[entry.lfs_oid] if entry.is_lfs else entry.content  # type: ignore[return-value]

    def _new_commit(self, repo: Repo, branch: str, title: str, description: str,
                    additions: dict[str, tuple[str, Any]], deletions: tuple[str, ...] = (),
                    deleted_folders: tuple[str, ...] = ()) -> Commit:
        parent = repo.refs.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for path in deletions:
            files.pop(path)
        for folder in deleted_folders:
            for path in [p for p in files if p.startswith(folder + "/")]:
                files.pop(path)
        listing = json.dumps([parent, title, next(self._counter), _now(), sorted(additions), deletions,
                              deleted_folders])
        oid = hashlib.sha1(listing.encode()).hexdigest()
        for path, (mode, value) in additions.items():
            if mode == "regular":
                files[path] = FileEntry(size=len(value), blob_oid=git_blob_oid(value), last_commit=oid, content=value)
            else:
                size = len(repo.lfs_objects[value])
                pointer = lfs_pointer(value, size)
                files[path] = FileEntry(size=size, blob_oid=git_blob_oid(pointer), last_commit=oid, lfs_oid=value,
                                        pointer_size=len(pointer))
        commit = Commit(oid=oid, parent=parent, title=title, description=description, date=_now(), files=files)
        repo.commits[oid] = commit
        repo.refs[branch] = oid
        return commit


def _tree_oid(files: dict[str, FileEntry], folder: str) -> str:
    body = "\n".join(f"{p} {e.blob_oid}" for p, e in sorted(files.items()) if p.startswith(folder + "/"))
    return hashlib.sha1(f"tree {folder}\n{body}".encode()).hexdigest()


def _folders(files: dict[str, FileEntry]) -> set[str]:
    out = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalTestHub/1.0"
    timeout = 60  # idle keep-alive connections end eventually

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    # --- plumbing ------------------------------------------------------------------------------------
    def log_message(self, format, *args):  # silence the default stderr logging
        pass

    def log_request(self, code="-", size="-"):
        try:
            status = int(code)
        except (TypeError, ValueError):
            status = 0
        self.hub.requests.append((self.command, self.path, status))

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value).encode("latin-1", "backslashreplace").decode("latin-1"))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict | None = None,
              content_type: str = "application/json") -> None:
        self._send(status, json.dumps(obj).encode(), content_type, headers)

    def _dispatch(self) -> None:
        try:
            body = self._read_body() if self.command in ("POST", "PUT", "DELETE") else b""
            self._route(body)
        except HubError as e:
            headers = dict(e.headers)
            headers["X-Error-Message"] = e.message
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json(e.body if e.body is not None else {"error": e.message}, e.status, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up mid-answer (e.g. a partial read): not a server bug
        except Exception:  # noqa: BLE001 - a bug in this scaffolding: recorded so the fixtures fail the test
            self.hub.errors.append(f"{self.command} {self.path}\n{traceback.format_exc()}")
            self._json({"error": "internal error in the local test Hub server"}, 500)

    # --- auth ----------------------------------------------------------------------------------------
    def _authenticated(self) -> bool:
        header = self.headers.get("Authorization")
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.hub.token:
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _require_write(self, repo: Repo | None = None) -> None:
        if not self._authenticated():
            raise HubError(401, "Invalid username or password.")
        if repo is not None and repo.repo_id.split("/")[0] not in (self.hub.user, *self.hub.orgs):
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        """The repo, or the Hub's RepoNotFound answer (401 for a private repo seen anonymously)."""
        authed = self._authenticated()
        repo = self.hub.get_repo(repo_type, repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and not authed:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _commit(repo: Repo, revision: str) -> Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def _base(self) -> str:
        return f"http://{self.headers.get('Host') or self.hub.url.split('://', 1)[1]}"

    def _repo_url(self, repo: Repo) -> str:
        return f"{self._base()}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # --- routing -------------------------------------------------------------------------------------
    def _route(self, body: bytes) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        segs = [unquote(s) for s in url.path.split("/")[1:]]
        while segs and segs[-1] == "":
            segs.pop()
        method = self.command
        hub = self.hub
        with hub.lock:
            if segs[:1] == ["api"]:
                if segs == ["api", "whoami-v2"] and method == "GET":
                    return self._whoami()
                if segs == ["api", "repos", "create"] and method == "POST":
                    return self._create_repo(body)
                if segs == ["api", "validate-yaml"] and method == "POST":
                    return self._validate_yaml(body)
                if len(segs) >= 4 and segs[1] in API_PLURALS:
                    repo_type, repo_id, rest = API_PLURALS[segs[1]], f"{segs[2]}/{segs[3]}", segs[4:]
                    if not rest and method == "GET":
                        return self._repo_info(repo_type, repo_id, "main", query)
                    if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                        return self._repo_info(repo_type, repo_id, rest[1], query)
                    if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                        return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), query)
                    if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
                        return self._paths_info(repo_type, repo_id, rest[1], body)
                    if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                        return self._preupload(repo_type, repo_id, rest[1], body)
                    if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                        return self._commit_endpoint(repo_type, repo_id, rest[1], body, query)
                    if rest == ["settings"] and method == "PUT":
                        return self._settings(repo_type, repo_id, body)
            elif segs[:1] == [LFS_UPLOAD_ROUTE] and len(segs) == 5 and method == "PUT":
                return self._lfs_put(segs[1], f"{segs[2]}/{segs[3]}", segs[4], body)
            elif segs[:1] == [LFS_VERIFY_ROUTE] and len(segs) == 4 and method == "POST":
                return self._lfs_verify(segs[1], f"{segs[2]}/{segs[3]}", body)
            else:
                repo_type = PREFIX_TO_TYPE.get(segs[0], "model") if segs else "model"
                rest = segs[1:] if segs and segs[0] in PREFIX_TO_TYPE else segs
                if (len(rest) == 6 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]
                        and method == "POST"):
                    return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1][: -len('.git')]}", body)
                if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
                    return self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        hub.unhandled.append((method, self.path))
        raise HubError(404, "Sorry, we can't find the page you are looking for (not implemented by the local test Hub)")

    # --- endpoints -----------------------------------------------------------------------------------
    def _whoami(self) -> None:
        if not self._authenticated():
            raise HubError(401, "Invalid credentials in Authorization header")
        hub = self.hub
        self._json({
            "type": "user", "id": "0" * 24, "name": hub.user, "fullname": "Local Test User",
            "email": f"{hub.user}@example.invalid", "emailVerified": True, "canPay": False, "isPro": False,
            "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in hub.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local-test", "role": "write",
                                                             "createdAt": "2024-01-01T00:00:00.000Z"}},
        })

    def _create_repo(self, body: bytes) -> None:
        self._require_write()
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        name = payload.get("name") or ""
        namespace = payload.get("organization") or self.hub.user
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        if not _REPO_NAME.match(name) or "--" in name or ".." in name or name.endswith((".git", ".")):
            raise HubError(400, f"Invalid repo name: {name!r}")
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, "A Space needs an sdk")
        if namespace != self.hub.user and namespace not in self.hub.orgs:
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo_id = f"{namespace}/{name}"
        url = f"{self._base()}/{URL_PREFIXES[repo_type]}{repo_id}"
        if self.hub.get_repo(repo_type, repo_id) is not None:
            raise HubError(409, f"You already created this {repo_type} repo", body={
                "error": f"You already created this {repo_type} repo", "url": url})
        self.hub.create_repo(repo_type, repo_id, private=private)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _settings(self, repo_type: str, repo_id: str, body: bytes) -> None:
        repo = self._repo(repo_type, repo_id)
        self._require_write(repo)
        payload = json.loads(body or b"{}")
        unknown = set(payload) - {"visibility", "private", "gated"}
        if unknown or not payload:
            raise HubError(400, f"Unsupported repo settings: {sorted(unknown) or 'none given'}")
        if "gated" in payload and payload["gated"] not in ("auto", "manual", False):
            raise HubError(400, f"Invalid gated value: {payload['gated']!r}")
        visibility = payload.get("visibility")
        if visibility is not None:
            if visibility not in ("public", "private"):
                raise HubError(400, f"Invalid visibility: {visibility!r}")
            repo.private = visibility == "private"
        elif "private" in payload:
            repo.private = bool(payload["private"])
        self._json({})

    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body or b"{}").get("content", "")
        match = _YAML_BLOCK.search(content)
        errors = []
        if match is not None:
            try:
                data = yaml.safe_load(match.group(2))
            except yaml.YAMLError as e:
                errors.append({"message": f"Invalid YAML in README.md front matter: {e}"})
            else:
                if data is not None and not isinstance(data, dict):
                    errors.append({"message": "README.md metadata must be a YAML mapping"})
        if errors:
            return self._json({"errors": errors, "warnings": []}, 400,
                              {"X-Error-Message": "Invalid metadata in README.md"})
        self._json({"errors": [], "warnings": []})

    def _file_info(self, files: dict[str, FileEntry], path: str, expand: bool, repo: Repo) -> dict:
        entry = files[path]
        info: dict[str, Any] = {"type": "file", "oid": entry.blob_oid, "size": entry.size, "path": path}
        if entry.is_lfs:
            info["lfs"] = {"oid": entry.lfs_oid, "size": entry.size, "pointerSize": entry.pointer_size}
        if expand:
            commit = repo.commits[entry.last_commit]
            info["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return info

    def _folder_info(self, files: dict[str, FileEntry], path: str, expand: bool, repo: Repo) -> dict:
        info: dict[str, Any] = {"type": "directory", "oid": _tree_oid(files, path), "size": 0, "path": path}
        if expand:
            inside = [repo.commits[e.last_commit] for p, e in files.items() if p.startswith(path + "/")]
            last = max(inside, key=lambda c: c.date)
            info["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return info

    def _repo_info(self, repo_type: str, repo_id: str, revision: str, query: dict) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = self._commit(repo, revision)
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = commit.files[path]
                sibling.update(size=entry.size, blobId=entry.blob_oid)
                if entry.is_lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.lfs_oid, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        namespace = repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24], "id": repo_id,
            "author": namespace, "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created_at,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        readme = commit.files.get("README.md")
        if readme is not None:
            card = parse_front_matter(self.hub._content(repo, readme).decode("utf-8", errors="replace"))
            if card is not None:
                info["cardData"] = card
                tags = card.get("tags")
                if isinstance(tags, list):
                    info["tags"] = [str(t) for t in tags]
        expand = query.get("expand")
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        self._json(info)

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, query: dict) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = self._commit(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        files, folders = commit.files, _folders(commit.files)
        path = path.strip("/")
        if path and path not in folders:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        prefix = path + "/" if path else ""

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

        out = [self._folder_info(files, f, expand, repo) for f in sorted(folders) if wanted(f)]
        out += [self._file_info(files, p, expand, repo) for p in sorted(files) if wanted(p)]
        self._json(out)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = self._commit(repo, revision)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        if isinstance(paths, str):
            paths = [paths]
        folders = _folders(commit.files)
        out = []
        for raw in paths:
            path = raw.strip("/")
            if path in commit.files:
                out.append(self._file_info(commit.files, path, expand, repo))
            elif path in folders:
                out.append(self._folder_info(commit.files, path, expand, repo))
        self._json(out)

    def _lfs_patterns(self, repo: Repo, commit: Commit) -> list[str]:
        entry = commit.files.get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in self.hub._content(repo, entry).decode("utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    @staticmethod
    def _matches(path: str, pattern: str) -> bool:
        if "/" in pattern.strip("/"):
            return fnmatch.fnmatchcase(path, pattern.lstrip("/"))
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)

    def _preupload(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._repo(repo_type, repo_id)
        self._require_write(repo)
        commit = self._commit(repo, revision)
        payload = json.loads(body or b"{}")
        lfs_patterns = self._lfs_patterns(repo, commit)
        ignore = [line.strip() for line in (payload.get("gitIgnore") or "").splitlines()
                  if line.strip() and not line.strip().startswith("#")]
        answers = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            sample = base64.b64decode(item.get("sample", ""))
            lfs = (size >= MAX_REGULAR_FILE_SIZE or _is_binary(sample)
                   or any(self._matches(path, p) for p in lfs_patterns))
            answer = {"path": path, "uploadMode": "lfs" if lfs else "regular",
                      "shouldIgnore": any(self._matches(path, p) for p in ignore)}
            existing = commit.files.get(path)
            if existing is not None:
                answer["oid"] = existing.lfs_oid if existing.is_lfs else existing.blob_oid
            answers.append(answer)
        self._json({"files": answers, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str, body: bytes) -> None:
        repo = self._repo(repo_type, repo_id)
        self._require_write(repo)
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the LFS upload operation is implemented by the local test Hub")
        if payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(400, "Only sha256 LFS objects are supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "Invalid oid"}})
                continue
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if repo.lfs_objects.get(oid) is None or len(repo.lfs_objects[oid]) != size:
                repo.lfs_announced[oid] = size
                where = f"{repo_type}/{repo_id}"
                answer["actions"] = {
                    "upload": {"href": f"{self._base()}/{LFS_UPLOAD_ROUTE}/{where}/{oid}", "expires_in": 3600},
                    "verify": {"href": f"{self._base()}/{LFS_VERIFY_ROUTE}/{where}", "expires_in": 3600},
                }
            objects.append(answer)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, repo_type: str, repo_id: str, oid: str, body: bytes) -> None:
        repo = self.hub.get_repo(repo_type, repo_id)
        if repo is None or oid not in repo.lfs_announced:
            raise HubError(404, "No LFS upload was announced for this object")
        actual = hashlib.sha256(body).hexdigest()
        if actual != oid:
            raise HubError(400, f"LFS object sha256 mismatch: announced {oid}, received {actual}")
        if len(body) != repo.lfs_announced[oid]:
            raise HubError(400, f"LFS object size mismatch: announced {repo.lfs_announced[oid]}, received {len(body)}")
        repo.lfs_objects[oid] = body
        self._send(200, b"", headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, body: bytes) -> None:
        repo = self.hub.get_repo(repo_type, repo_id)
        self._require_write(repo)
        payload = json.loads(body or b"{}")
        stored = None if repo is None else repo.lfs_objects.get(payload.get("oid", ""))
        if stored is None or len(stored) != payload.get("size"):
            raise HubError(404, "LFS object not found or of another size")
        self._json({"success": True})

    def _commit_endpoint(self, repo_type: str, repo_id: str, revision: str, body: bytes, query: dict) -> None:
        repo = self._repo(repo_type, repo_id)
        self._require_write(repo)
        if query.get("create_pr", ["0"])[0] not in ("0", "false", ""):
            raise HubError(400, "Pull requests are not implemented by the local test Hub")
        if revision not in repo.refs:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first NDJSON line of a commit must be its header")
        header = lines[0]["value"]
        head = repo.refs[revision]
        parent = header.get("parentCommit")
        if parent is not None and repo.resolve(parent) != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = repo.commits[head].files
        additions: dict[str, tuple[str, Any]] = {}
        deletions: list[str] = []
        deleted_folders: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = str(value.get("path", ""))
            if (not path or path.startswith("/") or ".." in path.split("/") or path.split("/")[0] == ".git"):
                raise HubError(400, f"Invalid path in commit: {path!r}")
            if key == "file":
                encoding = value.get("encoding", "base64")
                data = (base64.b64decode(value["content"]) if encoding == "base64"
                        else str(value["content"]).encode())
                if len(data) >= MAX_REGULAR_FILE_SIZE:
                    raise HubError(400, f"Your push was rejected because it contains files larger than 10 MiB: {path}"
                                        " (use LFS)")
                if _is_binary(data[:512]) or (b"\x00" in data):
                    raise HubError(400, f"Your push was rejected because it contains binary files: {path} (use LFS)")
                additions[path] = ("regular", data)
            elif key == "lfsFile":
                oid = value.get("oid", "")
                if value.get("algo", "sha256") != "sha256" or oid not in repo.lfs_objects:
                    raise HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that does"
                                        f" not exist: {path} ({oid})")
                if value.get("size") is not None and int(value["size"]) != len(repo.lfs_objects[oid]):
                    raise HubError(400, f"LFS size mismatch for {path}")
                additions[path] = ("lfs", oid)
            elif key == "deletedFile":
                if path not in files or path in deletions:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                deletions.append(path)
            elif key == "deletedFolder":
                folder = path.rstrip("/")
                if not any(p.startswith(folder + "/") for p in files):
                    raise HubError(404, f"A file with this name doesn't exist: {folder}/", "EntryNotFound")
                deleted_folders.append(folder)
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        commit = self.hub._new_commit(repo, revision, header.get("summary") or "", header.get("description") or "",
                                      additions, tuple(deletions), tuple(deleted_folders))
        self._json({"success": True, "commitOid": commit.oid, "hookOutput": "", "pullRequestUrl": None,
                    "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}"})

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = self._commit(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        content = self.hub._content(repo, entry)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.blob_oid}"', "Accept-Ranges": "bytes"}
        if entry.is_lfs:
            headers["X-Linked-Etag"] = f'"{entry.lfs_oid}"'
            headers["X-Linked-Size"] = str(entry.size)
        status, data = 200, content
        range_header = self.headers.get("Range")
        if range_header:
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
            if match is None or not (match.group(1) or match.group(2)):
                raise HubError(416, "Invalid Range header", headers={"Content-Range": f"bytes */{len(content)}"})
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), len(content) - 1) if last else len(content) - 1
            else:  # suffix range: the last N bytes
                start, end = max(len(content) - int(last), 0), len(content) - 1
            if start >= len(content) or start > end:
                raise HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{len(content)}"})
            status, data = 206, content[start: end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        headers["Content-Length"] = str(len(data))
        self._send(status, data, "application/octet-stream", headers)


@contextlib.contextmanager
def serve_hub(**kwargs) -> Iterator[HubServer]:
    """Run a HubServer on a free port of 127.0.0.1 in a background thread for the duration of the block."""
    with HubServer(**kwargs) as hub:
        yield hub

