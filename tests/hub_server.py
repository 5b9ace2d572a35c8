"""Test helpers for the Hugging Face Hub without the network: a local fake Hub server and a cache writer.

``FakeHub`` answers, on 127.0.0.1, the endpoints ``huggingface_hub`` uses to create repositories and
branches, validate a model card, pre-upload and commit files (NDJSON, every file in "regular" mode so the
content arrives in the commit), and to download files (``/resolve/``). It records what arrives.
``write_hub_cache`` lays files out as the Hugging Face cache does (``models--owner--name/blobs``,
``snapshots/<commit>``, ``refs/<branch>``), for offline loading.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class FakeRepo:
    private: bool = False
    gated: bool = False
    heads: dict[str, str] = field(default_factory=dict)  # branch -> commit
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    commits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeHub:
    """A local stand-in for the Hub's HTTP API (see the module docstring); ``url`` is its endpoint."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    validated_cards: list[str] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, **options: Any) -> FakeRepo:
        repo = FakeRepo(**options)
        self.repos[repo_id] = repo
        self._commit(repo, "main", dict(files or {}), "initial commit")
        return repo

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.snapshots[repo.heads[branch]]

    # -- request handling -------------------------------------------------------------------------

    def _commit(self, repo: FakeRepo, branch: str, files: dict[str, bytes], summary: str) -> str:
        oid = hashlib.sha1(f"{len(repo.commits)}:{branch}:{summary}".encode()).hexdigest()
        repo.snapshots[oid] = files
        repo.heads[branch] = oid
        repo.commits.append({"oid": oid, "branch": branch, "summary": summary, "files": sorted(files)})
        return oid

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(request.path).path
        self.requests.append((method, path, dict(request.headers)))
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            if method == "POST" and path == "/api/repos/create":
                self._create_repo(request, json.loads(body))
            elif method == "POST" and path == "/api/validate-yaml":
                self._validate_yaml(request, json.loads(body))
            elif method == "POST" and len(parts) >= 6 and parts[:2] == ["api", "models"]:
                repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                actions = {"branch": self._branch, "preupload": self._preupload, "commit": self._commit_files}
                repo = self._repo(request, repo_id)
                if repo is not None and action in actions:
                    actions[action](request, repo_id, repo, revision, body)
                elif repo is not None:
                    _reply(request, 404, {"error": f"no fake endpoint for {action}"})
            elif method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(request, method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            else:
                _reply(request, 404, {"error": f"no fake endpoint for {method} {path}"})
        except Exception as exc:  # surface the helper's own bugs as a 500 with the reason
            _reply(request, 500, {"error": f"{type(exc).__name__}: {exc}"})

    def _repo(self, request: BaseHTTPRequestHandler, repo_id: str) -> FakeRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            _reply(request, 404, {"error": "Repository not found"}, error_code="RepoNotFound")
        return repo

    def _create_repo(self, request: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.repos:
            _reply(
                request, 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            )
            return
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.add_repo(
            repo_id,
            {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
            private=private,
        )
        _reply(request, 200, {"url": f"{self.url}/{repo_id}"})

    def _validate_yaml(self, request: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
        content = payload["content"]
        self.validated_cards.append(content)
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as exc:
                _reply(request, 400, {"errors": [{"message": str(exc)}]})
                return
        _reply(request, 200, {"errors": [], "warnings": []})

    def _branch(self, request, repo_id: str, repo: FakeRepo, branch: str, body: bytes) -> None:
        if branch in repo.heads:
            _reply(request, 409, {"error": "Reference already exists"})
            return
        repo.heads[branch] = repo.heads["main"]
        _reply(request, 200, {})

    def _preupload(self, request, repo_id: str, repo: FakeRepo, revision: str, body: bytes) -> None:
        if revision not in repo.heads:
            _reply(request, 404, {"error": "Invalid rev id"}, error_code="RevisionNotFound")
            return
        files = json.loads(body)["files"]
        _reply(
            request,
            200,
            {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
        )

    def _commit_files(self, request, repo_id: str, repo: FakeRepo, revision: str, body: bytes) -> None:
        if revision not in repo.heads:
            _reply(request, 404, {"error": "Invalid rev id"}, error_code="RevisionNotFound")
            return
        files = dict(repo.snapshots[repo.heads[revision]])
        summary = ""
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"]["summary"]
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            else:
                raise ValueError(f"the fake Hub does not take {item['key']!r} operations")
        oid = self._commit(repo, revision, files, summary)
        _reply(request, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid})

    def _resolve(self, request, method: str, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo(request, repo_id)
        if repo is None:
            return
        if repo.gated:
            _reply(
                request,
                401,
                {"error": "gated"},
                error_code="GatedRepo",
                error_message="Access to this model is restricted",
            )
            return
        commit = repo.heads.get(revision, revision if revision in repo.snapshots else None)
        if commit is None:
            _reply(request, 404, {"error": "Invalid rev id"}, error_code="RevisionNotFound")
            return
        content = repo.snapshots[commit].get(filename)
        if content is None:
            _reply(
                request,
                404,
                {"error": "Entry not found"},
                error_code="EntryNotFound",
                headers={"X-Repo-Commit": commit},
            )
            return
        request.send_response(200)
        request.send_header("X-Repo-Commit", commit)
        request.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        if method == "GET":
            request.wfile.write(content)


def _reply(
    request: BaseHTTPRequestHandler,
    status: int,
    payload: dict[str, Any],
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(payload).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    if error_code:
        request.send_header("X-Error-Code", error_code)
    if error_message:
        request.send_header("X-Error-Message", error_message)
    for key, value in (headers or {}).items():
        request.send_header(key, value)
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(data)


def write_hub_cache(
    cache: Path,
    repo_id: str,
    files: dict[str, Path | bytes],
    revision: str = "main",
    commit: str | None = None,
) -> Path:
    """Lay ``files`` out in a Hugging Face cache as one commit of ``repo_id`` (blobs + symlinked snapshot)
    and point ``refs/<revision>`` at it; returns the snapshot folder."""
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        data = source.read_bytes() if isinstance(source, Path) else source
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, snapshot), link)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snapshot
