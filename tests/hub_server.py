"""A small local stand-in for the Hugging Face Hub, for tests without internet.

It speaks the HTTP endpoints that the real ``huggingface_hub`` (2.4) and ``transformers`` (5.x) clients call when
they push and pull a model, so ``push_to_hub``, ``HfApi().upload_folder``, ``Trainer(push_to_hub=True)``,
``ModelCard.push_to_hub`` and ``from_pretrained("org/name")`` run end to end against it:

========================================================  ===========================================================
``GET  /api/whoami-v2``                                   the user behind the token
``POST /api/repos/create``                                create a repo (409 if it exists)
``POST /api/validate-yaml``                               README metadata check before a commit
``POST /api/{type}s/{repo}/preupload/{rev}``              "regular" (inline base64) or "lfs" upload mode per file
``POST /{repo}.git/info/lfs/objects/batch``               LFS batch API (basic transfer) for LFS files
``PUT  /lfs-upload/{sha256}``                             where the batch API sends LFS file contents
``POST /api/{type}s/{repo}/commit/{rev}``                 NDJSON commit: header, file, lfsFile, deletedFile/Folder
``GET  /api/{type}s/{repo}[/revision/{rev}]``             repo info (sha, siblings)
``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]``          tree listing (``recursive``)
``POST /api/{type}s/{repo}/paths-info/{rev}``             the tree entries of the given ``paths`` (form or JSON)
``HEAD|GET /{repo}/resolve/{rev}/{path}``                 file download with X-Repo-Commit, ETag, X-Linked-* headers
========================================================  ===========================================================

Errors carry the headers the client maps to exceptions: ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` /
``EntryNotFound``. Xet storage is not implemented: a client with ``hf_xet`` installed must run with
``HF_HUB_DISABLE_XET=1`` (or, in-process, ``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``) so that LFS
files (``*.safetensors``, ...) go through the LFS batch API; otherwise ``hf_xet`` keeps retrying the Xet token
endpoint, which answers 501 with a message saying so.

LFS files are described as the real Hub does: ``{"oid": sha256, "size", "pointerSize"}`` in tree and paths-info
entries, ``{"sha256", "size", "pointerSize"}`` in the ``siblings`` of the repo info.

Repositories live in memory; commits have 40-hex ids and parents, branches are refs. Every request is recorded in
``FakeHub.requests`` as ``(method, route, path)``; requests no route matched are in ``FakeHub.unhandled``.

Use in tests::

    with FakeHub() as hub:
        env = {**os.environ, **hub.client_env(hf_home)}   # HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET, ...
        subprocess.run([sys.executable, "-c", "..."], env=env, check=True)
        assert "config.json" in hub.files("org/name")

or from a shell: ``python tests/hub_server.py --port 8080`` then ``HF_ENDPOINT=http://127.0.0.1:8080``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_USER = "test-user"
DEFAULT_ORGS = ("org",)
REPO_TYPES = ("model", "dataset", "space")
# Files the real Hub stores in LFS (from its default .gitattributes); anything of 10 MB or more also goes to LFS.
LFS_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.msgpack", "*.npy", "*.npz",
    "*.parquet", "*.arrow", "*.pkl", "*.pickle", "*.zip", "*.tar", "*.gz", "*.model", "*.tflite", "*.joblib",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS).encode()


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's ``oid`` and ``ETag``)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit: inline content, or a reference into the LFS store."""

    size: int
    oid: str  # git blob id (of the pointer file for LFS files)
    content: bytes | None = None  # regular files
    lfs_sha256: str | None = None  # LFS files

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.lfs_sha256, self.size)) if self.lfs_sha256 else 0


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    parents: list[str]
    files: dict[str, StoredFile]
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit oid
    created_at: str = field(default_factory=_now)

    def resolve(self, revision: str) -> Commit | None:
        """A branch name (``main``, ``refs/heads/main``) or a full commit id."""
        revision = revision.removeprefix("refs/heads/")
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)


class HubError(Exception):
    """An HTTP error answered with the Hub's error headers."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")


class FakeHub:
    """In-memory Hub served over HTTP on ``127.0.0.1`` (port 0 = a free port) from a background thread.

    Args:
        port: TCP port (0 picks a free one).
        user: the user every token authenticates as; ``orgs`` are the organisations it may write to.
        token: the token accepted on write endpoints (``None`` accepts any non-empty token).
    """

    def __init__(self, port: int = 0, user: str = DEFAULT_USER, orgs=DEFAULT_ORGS, token: str | None = None):
        self.user, self.orgs, self.token = user, tuple(orgs), token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._commit_counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeHub":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever(), so only after start()
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_env(self, hf_home: str, token: str = "dummy-token") -> dict[str, str]:
        """Environment for a client process talking to this Hub (set before huggingface_hub is imported)."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": token,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",  # uploads of LFS files use the LFS batch API, which this server implements
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "30",
        }

    # ------------------------------------------------------------------ inspection helpers for tests
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on the fake Hub (have {sorted(self.repos)})")
        return repo

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, int]:
        """``{path: size}`` of the files of a repo at a revision."""
        commit = self.repo(repo_id, repo_type).resolve(revision)
        return {path: f.size for path, f in commit.files.items()}

    def read(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        return self._content(commit.files[path])

    def routes_called(self) -> list[str]:
        """Distinct routes (``"POST /api/{type}s/{repo}/commit/{rev}"``) in the order first called."""
        seen: dict[str, None] = {}
        for method, route, _ in self.requests:
            seen.setdefault(f"{method} {route}", None)
        return list(seen)

    # ------------------------------------------------------------------ storage
    def _content(self, stored: StoredFile) -> bytes:
        return stored.content if stored.content is not None else self.lfs_objects[stored.lfs_sha256]

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _repo_not_found(repo_id)
        return repo

    def _get_commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _new_commit(
        self, repo: Repo, branch: str, title: str, description: str, files: dict[str, StoredFile]
    ) -> Commit:
        parent = repo.branches.get(branch)
        self._commit_counter += 1
        tree = sorted((path, f.oid) for path, f in files.items())
        key = [repo.repo_id, parent, title, self._commit_counter, time.time(), tree]
        digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()
        commit = Commit(digest, title, description, [parent] if parent else [], files)
        repo.commits[digest] = commit
        repo.branches[branch] = digest
        return commit

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        """Create a repo with an initial commit holding ``.gitattributes`` (as the Hub does)."""
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_id, repo_type, private)
            self.repos[(repo_type, repo_id)] = repo
            self._new_commit(repo, "main", "initial commit", "", {".gitattributes": _regular(GITATTRIBUTES)})
            return repo

    # ------------------------------------------------------------------ auth
    def _check_token(self, headers, write: bool) -> None:
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not token or (self.token is not None and token != self.token):
            if write or auth:
                raise HubError(401, "Invalid credentials in Authorization header")

    def _check_namespace(self, repo_id: str) -> None:
        namespace = repo_id.split("/")[0]
        if namespace not in (self.user, *self.orgs):
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")

    # ------------------------------------------------------------------ endpoints
    def whoami(self, request) -> tuple[int, dict]:
        self._check_token(request.headers, write=True)
        return 200, {
            "type": "user", "id": "0" * 24, "name": self.user, "fullname": "Test User", "email": None,
            "emailVerified": True, "canPay": False, "isPro": False, "periodEnd": None,
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
        }

    def create_repo_endpoint(self, request) -> tuple[int, dict]:
        self._check_token(request.headers, write=True)
        payload = request.json()
        name, organization = payload.get("name"), payload.get("organization")
        if not name or "/" in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        repo_id = f"{organization or self.user}/{name}"
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        self._check_namespace(repo_id)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        try:
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.create_repo(repo_id, repo_type, private=private)
        except HubError as error:
            error.body = {"error": error.message, "url": url}  # type: ignore[attr-defined]
            raise
        return 200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def validate_yaml(self, request) -> tuple[int, dict]:
        import yaml

        content = request.json().get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if match is None:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            metadata = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"YAML parse error: {error}"}], "warnings": []}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}
        problems = _model_index_errors(metadata["model-index"]) if "model-index" in metadata else []
        errors = [{"message": problem} for problem in problems]
        return (400 if errors else 200), {"errors": errors, "warnings": []}

    def preupload(self, request, repo_type: str, repo_id: str, revision: str) -> tuple[int, dict]:
        self._check_token(request.headers, write=True)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
        answers = []
        for entry in request.json().get("files", []):
            path, size = entry["path"], int(entry["size"])
            lfs = size >= LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)
            existing = commit.files.get(path)
            # The client compares "oid" with its own: sha256 for LFS files, git blob sha1 for regular ones.
            remote_oid = None if existing is None else (existing.lfs_sha256 or existing.oid)
            mode = "lfs" if lfs else "regular"
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
        return 200, {"files": answers, "commitOid": commit.oid}

    def lfs_batch(self, request, repo_type: str, repo_id: str) -> tuple[int, dict]:
        self._check_token(request.headers, write=True)
        payload = request.json()
        with self._lock:
            self._get_repo(repo_type, repo_id)
        if payload.get("operation") != "upload":
            raise HubError(400, "only the upload operation is implemented")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.lfs_objects:  # no "actions" = already stored, the client skips the upload
                upload = {"href": f"{self.url}/lfs-upload/{oid}", "header": {}, "expires_in": 3600}
                answer["actions"] = {"upload": upload}
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_upload(self, request, oid: str) -> tuple[int, dict]:
        body = request.body
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match sha256 {oid}")
        with self._lock:
            self.lfs_objects[oid] = body
        return 200, {}

    def commit(self, request, repo_type: str, repo_id: str, revision: str) -> tuple[int, dict]:
        self._check_token(request.headers, write=True)
        if request.query.get("create_pr"):
            raise HubError(400, "pull requests are not implemented by the fake Hub")
        lines = [json.loads(line) for line in request.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        branch = revision.removeprefix("refs/heads/")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and parent != head.oid:
                raise HubError(412, f"parentCommit {parent} is not the head of {branch} ({head.oid})")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r} for {path}")
                    files[path] = _regular(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    sha256 = value["oid"]
                    if sha256 not in self.lfs_objects:
                        raise HubError(422, f"LFS object {sha256} for {path} was not uploaded")
                    size = len(self.lfs_objects[sha256])
                    files[path] = StoredFile(size=size, oid=git_blob_oid(lfs_pointer(sha256, size)), lfs_sha256=sha256)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"cannot delete {path}: no such file", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for name in [n for n in files if n.startswith(prefix)]:
                        del files[name]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = self._new_commit(repo, branch, header.get("summary", ""), header.get("description", ""), files)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return 200, {
            "success": True, "commitOid": commit.oid, "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{commit.oid}",
            "pullRequestUrl": None, "hookOutput": "",
        }

    def repo_info(self, request, repo_type: str, repo_id: str, revision: str = "main") -> tuple[int, dict]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
        siblings = [
            {"rfilename": path, "size": f.size, "blobId": f.oid, **({"lfs": _sibling_lfs_info(f)} if f.lfs_sha256 else {})}
            for path, f in sorted(commit.files.items())
        ]
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
            "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        }
        if repo_type == "model" and "config.json" in commit.files:
            try:
                config = json.loads(self._content(commit.files["config.json"]))
                info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
            except ValueError:
                pass
        return 200, info

    def tree(self, request, repo_type: str, repo_id: str, revision: str, path: str) -> tuple[int, list]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        base = path.strip("/")
        prefix = base + "/" if base else ""
        if base and base in commit.files:
            raise HubError(400, f"{base} is a file, not a folder")
        entries, folders = [], set()
        for name, stored in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):  # folders on the way
                folder = prefix + "/".join(parts[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    oid = hashlib.sha1(folder.encode()).hexdigest()
                    entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": stored.oid, "size": stored.size, "path": name}
                if stored.lfs_sha256:
                    entry["lfs"] = _lfs_info(stored)
                entries.append(entry)
        if base and not entries:
            raise HubError(404, f"{base} does not exist at {revision}", "EntryNotFound", commit=commit.oid)
        return 200, entries

    def paths_info(self, request, repo_type: str, repo_id: str, revision: str) -> tuple[int, list]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
        if "json" in (request.headers.get("Content-Type") or ""):
            paths = request.json().get("paths") or []
        else:
            paths = parse_qs(request.body.decode()).get("paths", [])
        entries = []
        for path in dict.fromkeys(p.strip("/") for p in ([paths] if isinstance(paths, str) else paths)):
            stored = commit.files.get(path)
            if stored is not None:
                entry = {"type": "file", "oid": stored.oid, "size": stored.size, "path": path}
                if stored.lfs_sha256:
                    entry["lfs"] = _lfs_info(stored)
                entries.append(entry)
            elif any(name.startswith(path + "/") for name in commit.files):
                entries.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                                "path": path})
        return 200, entries  # paths that do not exist are left out, as on the Hub

    def resolve(self, request, repo_type: str, repo_id: str, revision: str, path: str):
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            stored = commit.files.get(path)
            if stored is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=commit.oid)
            content = self._content(stored)
        headers = {"X-Repo-Commit": commit.oid, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if stored.lfs_sha256:
            headers["ETag"] = f'"{stored.lfs_sha256}"'
            headers["X-Linked-Etag"] = f'"{stored.lfs_sha256}"'
            headers["X-Linked-Size"] = str(stored.size)
        else:
            headers["ETag"] = f'"{stored.oid}"'
        status = 200
        range_header = request.headers.get("Range")
        if range_header:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if match is None:
                raise HubError(416, f"unsupported Range {range_header!r}")
            start = int(match.group(1)) if match.group(1) else 0
            end = int(match.group(2)) if match.group(2) else len(content) - 1
            if start >= len(content) and len(content) > 0:
                raise HubError(416, f"Range {range_header!r} starts after the end of the file")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        return status, headers, content

    def xet_token(self, request) -> tuple[int, dict]:
        raise HubError(
            501, "The fake Hub does not implement Xet storage: run the client with HF_HUB_DISABLE_XET=1 "
            "(or set huggingface_hub.constants.HF_HUB_DISABLE_XET = True) so LFS files use the LFS batch API"
        )


def _model_index_errors(index) -> list[str]:
    """What the Hub checks in a card's ``model-index``: models with a name and results, each result with a task
    type, a dataset name and type, and metrics that have a type and a value."""
    if not isinstance(index, list) or not index:
        return ['"model-index" must be a non-empty list']
    errors = []
    for m, model in enumerate(index):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"model-index[{m}].name" must be a string')
            continue
        for r, result in enumerate(model.get("results") or []):
            where = f"model-index[{m}].results[{r}]"
            if not isinstance(result, dict):
                errors.append(f'"{where}" must be a mapping')
                continue
            if not isinstance((result.get("task") or {}).get("type"), str):
                errors.append(f'"{where}.task.type" is required')
            dataset = result.get("dataset") or {}
            if not isinstance(dataset.get("name"), str) or not isinstance(dataset.get("type"), str):
                errors.append(f'"{where}.dataset" needs a name and a type')
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{where}.metrics" must be a non-empty list')
                continue
            for i, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append(f'"{where}.metrics[{i}]" needs a type and a value')
    return errors


def _regular(content: bytes) -> StoredFile:
    return StoredFile(size=len(content), oid=git_blob_oid(content), content=content)


def _lfs_info(stored: StoredFile) -> dict:
    """An LFS file in tree and paths-info entries."""
    return {"oid": stored.lfs_sha256, "sha256": stored.lfs_sha256, "size": stored.size, "pointerSize": stored.pointer_size}


def _sibling_lfs_info(stored: StoredFile) -> dict:
    """An LFS file among the ``siblings`` of the repo info (``files_metadata=True``)."""
    return {"sha256": stored.lfs_sha256, "size": stored.size, "pointerSize": stored.pointer_size}


# ---------------------------------------------------------------------------------------------------------------
# HTTP plumbing: routes -> FakeHub methods
# ---------------------------------------------------------------------------------------------------------------
_REPO = r"(?P<repo_id>[\w.-]+/[\w.-]+)"
_TYPE = r"(?P<repo_type>model|dataset|space)s"
_URL_PREFIX = r"(?:(?P<url_type>datasets|spaces)/)?"
_REV = r"(?P<revision>[^/]+)"
ROUTES = [
    ("GET", "/api/whoami-v2", r"/api/whoami-v2", "whoami"),
    ("POST", "/api/repos/create", r"/api/repos/create", "create_repo_endpoint"),
    ("POST", "/api/validate-yaml", r"/api/validate-yaml", "validate_yaml"),
    ("POST", "/api/{type}s/{repo}/preupload/{rev}", rf"/api/{_TYPE}/{_REPO}/preupload/{_REV}", "preupload"),
    ("POST", "/api/{type}s/{repo}/commit/{rev}", rf"/api/{_TYPE}/{_REPO}/commit/{_REV}", "commit"),
    ("GET", "/api/{type}s/{repo}/xet-write-token/{rev}", rf"/api/{_TYPE}/{_REPO}/xet-\w+-token/.*", "xet_token"),
    ("GET", "/api/{type}s/{repo}/tree/{rev}", rf"/api/{_TYPE}/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?", "tree"),
    ("POST", "/api/{type}s/{repo}/paths-info/{rev}", rf"/api/{_TYPE}/{_REPO}/paths-info/{_REV}", "paths_info"),
    ("GET", "/api/{type}s/{repo}/revision/{rev}", rf"/api/{_TYPE}/{_REPO}/revision/{_REV}", "repo_info"),
    ("GET", "/api/{type}s/{repo}", rf"/api/{_TYPE}/{_REPO}", "repo_info"),
    ("POST", "/{repo}.git/info/lfs/objects/batch", rf"/{_URL_PREFIX}{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", "/lfs-upload/{oid}", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("HEAD", "/{repo}/resolve/{rev}/{path}", rf"/{_URL_PREFIX}{_REPO}/resolve/{_REV}/(?P<path>.+)", "resolve"),
    ("GET", "/{repo}/resolve/{rev}/{path}", rf"/{_URL_PREFIX}{_REPO}/resolve/{_REV}/(?P<path>.+)", "resolve"),
]
_COMPILED = [(method, name, re.compile(pattern), handler) for method, name, pattern, handler in ROUTES]


class _Request:
    def __init__(self, headers, body: bytes, query: dict[str, str]):
        self.headers, self.body, self.query = headers, body, query

    def json(self):
        return json.loads(self.body or b"{}")


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeHub/1.0"

        def log_message(self, format, *args):  # keep test output clean; requests are in hub.requests
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, headers: dict, body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _dispatch(self) -> None:
            body = self._read_body()  # always consume the body: the connection is kept alive
            split = urlsplit(self.path)
            path = unquote(split.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            for method, name, pattern, handler in _COMPILED:
                if method != self.command:
                    continue
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                args = {k: v for k, v in match.groupdict().items() if k != "url_type"}
                if "path" in args and args["path"] is None:
                    args["path"] = ""
                if match.groupdict().get("url_type"):
                    args["repo_type"] = match.group("url_type")[:-1]
                elif "repo_id" in args and "repo_type" not in args:
                    args["repo_type"] = "model"
                hub.requests.append((self.command, name, self.path))
                try:
                    result = getattr(hub, handler)(_Request(self.headers, body, query), **args)
                except HubError as error:
                    self._send_error(error)
                    return
                except Exception as error:  # a server bug: answer 500 so the client shows it
                    self._send_error(HubError(500, f"fake Hub error: {type(error).__name__}: {error}"))
                    return
                if len(result) == 3:
                    status, headers, content = result
                else:
                    status, payload = result
                    headers, content = {"Content-Type": "application/json"}, json.dumps(payload).encode()
                self._send(status, headers, content)
                return
            hub.unhandled.append((self.command, self.path))
            hub.requests.append((self.command, "<unhandled>", self.path))
            self._send_error(HubError(404, f"The fake Hub has no route for {self.command} {split.path}"))

        def _send_error(self, error: HubError) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            payload = getattr(error, "body", None) or {"error": error.message}
            self._send(error.status, headers, json.dumps(payload).encode())

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    return Handler


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve an in-memory fake Hugging Face Hub on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    hub = FakeHub(port=args.port)
    print(f"Fake Hub on {hub.url}: export HF_ENDPOINT={hub.url} HF_TOKEN=dummy-token HF_HUB_DISABLE_XET=1")
    hub.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
