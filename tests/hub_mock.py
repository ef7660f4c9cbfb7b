"""A Hugging Face Hub in memory, behind `huggingface_hub`'s own HTTP client: nothing leaves the machine.

`huggingface_hub.set_client_factory` swaps the HTTP client every `huggingface_hub` call uses for one whose
transport is a `MockTransport`; the real `HfApi`/`hf_hub_download` code then runs against the routes below,
so a test sees exactly the requests and uploaded bytes a real push would send.

Routes: ``POST /api/repos/create``; ``POST /api/validate-yaml`` (a model card's metadata: accepted);
``POST /api/models/<repo>/preupload/<rev>`` (every file "regular", so its content travels base64-encoded
inside the commit), ``POST /api/models/<repo>/commit/<rev>``, and
``HEAD``/``GET /<repo>/resolve/<rev>/<file>`` serving what was committed. Anything else is a 404.
"""

from __future__ import annotations

import base64
import importlib
import json
from urllib.parse import unquote

COMMIT_OID = "0123456789abcdef0123456789abcdef01234567"


def http_module():
    """The httpx-compatible module `huggingface_hub` builds its client from (`httpx`, or `httpx2` in 2.x)."""
    from huggingface_hub import get_session

    return importlib.import_module(type(get_session()).__module__.split(".")[0])


class MockHub:
    """Records every request; keeps the files of each repo as committed (``repos[repo_id][path] = bytes``)."""

    def __init__(self):
        self.httpx = http_module()
        self.requests: list = []
        self.created: list[dict] = []  # bodies of create_repo calls
        self.commits: list[dict] = []  # {"repo_id", "revision", "summary", "description", "files": {path: bytes}}
        self.repos: dict[str, dict[str, bytes]] = {}
        self.offline = False  # True: every request fails as with no network (a DNS error)

    def client(self):
        return self.httpx.Client(transport=self.httpx.MockTransport(self.handle), follow_redirects=True)

    def handle(self, request):
        self.requests.append(request)
        if self.offline:
            raise self.httpx.ConnectError("[Errno -2] Name or service not known", request=request)
        path = unquote(request.url.path)
        if request.method == "POST" and path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            self.repos.setdefault(repo_id, {})
            return self.httpx.Response(200, json={"url": f"https://huggingface.co/{repo_id}", "name": repo_id})
        if request.method == "POST" and path == "/api/validate-yaml":  # model card metadata check before a push
            return self.httpx.Response(200, json={"errors": [], "warnings": []})
        if request.method == "POST" and path.startswith("/api/models/") and "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return self.httpx.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if request.method == "POST" and path.startswith("/api/models/") and "/commit/" in path:
            repo_id, revision = path[len("/api/models/"):].split("/commit/")
            commit = {"repo_id": repo_id, "revision": revision, "files": {}}
            for line in request.content.decode().splitlines():
                op = json.loads(line)
                if op["key"] == "header":
                    commit["summary"], commit["description"] = op["value"]["summary"], op["value"]["description"]
                elif op["key"] == "file":
                    commit["files"][op["value"]["path"]] = base64.b64decode(op["value"]["content"])
                else:
                    return self.httpx.Response(400, json={"error": f"MockHub does not handle {op['key']!r}"})
            self.commits.append(commit)
            self.repos.setdefault(repo_id, {}).update(commit["files"])
            return self.httpx.Response(200, json={"commitUrl": f"https://huggingface.co/{repo_id}/commit/{COMMIT_OID}",
                                                  "commitOid": COMMIT_OID, "pullRequestUrl": None})
        if request.method in ("HEAD", "GET") and "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            filename = rest.split("/", 1)[1]
            content = self.repos.get(repo_id, {}).get(filename)
            if content is None:
                return self.httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"})
            headers = {"X-Repo-Commit": COMMIT_OID, "ETag": f'"{COMMIT_OID}-{len(content)}"',
                       "Content-Length": str(len(content))}
            return self.httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else content)
        return self.httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "not in MockHub"})

    def last_files(self) -> dict[str, bytes]:
        """The files of the last commit."""
        assert self.commits, "nothing was committed"
        return self.commits[-1]["files"]
