"""A scripted OpenAI-compatible HTTP server for airlock's interop tests (standard library only).

    stub = OpenAIStub(api_key=None)          # serves on 127.0.0.1:<free port> in a daemon thread
    stub.base_url                            # "http://127.0.0.1:PORT/v1"
    stub.script("chat", [{"content": "hi"}, {"status": 429, "retry_after": 2}])
    ...; stub.chat_requests(); stub.stop()

Scripted responses (FIFO per kind, "chat" or "embeddings"), one dict each:
    {"content": "text", "usage": {...}?}     200 chat completion (chat only)
    {"embeddings": [[...], ...]}             200 embeddings with these vectors (embeddings only)
    {"status": 503, "body": str|dict?, "retry_after": secs?}   an error; default body is OpenAI error JSON
    {"raw": "text"}                          200, application/json, body sent verbatim (may be malformed)
    {"json": {...}}                          200 with this JSON
    {"delay": secs, ...}                     sleep first; a dict with nothing else gives the default answer
With an empty queue the answer comes from `default_chat` / `default_embeddings` (a callable taking
the request JSON and returning such a dict). If `default_chat` is None: 500 "no scripted response";
if `default_embeddings` is None: deterministic 64-dim hashed bag-of-words vectors, L2-normalized.

Also: in-memory files + fine-tuning API (/v1/files, /v1/fine_tuning/jobs; each GET of a job advances
it along `finetune_path`), Bearer auth when `api_key` is set, and control endpoints
POST /_control/script {"kind", "responses"}, POST /_control/config {"api_key", "finetune_path",
"default_chat", "default_embeddings" (static dicts)}, GET /_control/requests, POST /_control/clear.

As a script: `python openai_stub.py [--port N] [--api-key K]` prints OPENAI_STUB_PORT=<port> and
serves forever; `python openai_stub.py --self-test` runs a quick self-check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR_TYPES = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
               404: ("invalid_request_error", "not_found"), 429: ("requests", "rate_limit_exceeded"),
               500: ("server_error", None), 503: ("server_error", None)}
TERMINAL = ("succeeded", "failed", "cancelled")


def error_body(status: int, message: str, code: str | None = None) -> dict:
    etype, default_code = ERROR_TYPES.get(status, ("api_error", None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code or default_code}}


def _words(text) -> list[str]:
    return str(text or "").split()


def hashed_embedding(text: str, dims: int = 64) -> list[float]:
    vec = [0.0] * dims
    for tok in re.findall(r"\w+", str(text).lower()):
        vec[int(hashlib.md5(tok.encode()).hexdigest(), 16) % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec] if norm else vec


def parse_multipart(content_type: str, body: bytes) -> dict:
    """{field name: (filename or None, bytes)} from a multipart/form-data body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m:
        raise ValueError("multipart body without boundary")
    fields = {}
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        head = head.decode("utf-8", "replace")
        name = re.search(r'(?:^|;)\s*name="([^"]*)"', head, re.I | re.M)
        fname = re.search(r'filename="([^"]*)"', head, re.I)
        if name:
            fields[name.group(1)] = (fname.group(1) if fname else None, data)
    return fields


class _Reply(Exception):
    """Raised inside a route to answer with (status, JSON body)."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(status, message, code)


class OpenAIStub:
    def __init__(self, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0):
        self.api_key = api_key
        self.default_chat = None
        self.default_embeddings = None
        self.finetune_path = ["validating_files", "queued", "running", "succeeded"]
        self.requests: list[dict] = []
        self.files: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self._queues = {"chat": deque(), "embeddings": deque()}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.stub = self
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # -- test-facing API ------------------------------------------------------------------------
    def script(self, kind: str, responses) -> None:
        if kind not in self._queues:
            raise ValueError(f"unknown kind {kind!r} (want 'chat' or 'embeddings')")
        if isinstance(responses, dict):
            responses = [responses]
        with self._lock:
            self._queues[kind].extend(responses)

    def chat_requests(self) -> list[dict]:
        with self._lock:
            return [r["json"] for r in self.requests if r["path"] == "/v1/chat/completions" and r["method"] == "POST"]

    def clear(self) -> None:
        with self._lock:
            for q in self._queues.values():
                q.clear()
            self.requests.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- internals ------------------------------------------------------------------------------
    def _next(self, kind: str, req: dict) -> dict:
        with self._lock:
            if self._queues[kind]:
                return self._queues[kind].popleft()
        return self._default(kind, req)

    def _default(self, kind: str, req: dict) -> dict:
        default = self.default_chat if kind == "chat" else self.default_embeddings
        if default is not None:
            return default(req) or {}
        return {"status": 500, "body": error_body(500, "no scripted response")} if kind == "chat" else {}

    def _answer(self, kind: str, req: dict, resp: dict, fallback: bool = True):
        """(status, body: JSON-able or bytes, headers) for one scripted response dict."""
        if resp.get("delay"):
            self._stopping.wait(float(resp["delay"]))  # stop() cuts the wait short
        if "status" in resp:
            status, body = int(resp["status"]), resp.get("body")
            headers = {} if resp.get("retry_after") is None else {"Retry-After": str(resp["retry_after"])}
            if isinstance(body, str):
                return status, body.encode(), {**headers, "Content-Type": resp.get("content_type", "text/plain")}
            return status, error_body(status, f"scripted error {status}") if body is None else body, headers
        if "raw" in resp:
            return 200, str(resp["raw"]).encode(), {"Content-Type": "application/json"}
        if "json" in resp:
            return 200, resp["json"], {}
        if kind == "chat" and "content" in resp:
            return 200, self._completion(req, resp), {}
        if kind == "embeddings":
            return 200, self._embeddings(req, resp), {}
        if fallback:  # e.g. a bare {"delay": 3}: answer with the default after the delay
            return self._answer(kind, req, {k: v for k, v in self._default(kind, req).items() if k != "delay"}, False)
        return 500, error_body(500, "unusable scripted response"), {}

    @staticmethod
    def _completion(req: dict, resp: dict) -> dict:
        text = str(resp["content"])
        prompt = 0
        for msg in req.get("messages") or []:
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            prompt += len(_words(content))
        usage = {"prompt_tokens": prompt, "completion_tokens": len(_words(text))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        usage.update(resp.get("usage") or {})
        return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model", "stub-model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": resp.get("finish_reason", "stop")}],
                "usage": usage}

    @staticmethod
    def _embeddings(req: dict, resp: dict) -> dict:
        inputs = req.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        vectors = resp.get("embeddings") or [hashed_embedding(s) for s in inputs]
        n = sum(len(_words(s)) for s in inputs)
        return {"object": "list", "model": req.get("model", "stub-embedding"),
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    def _route(self, method: str, path: str, headers: dict, req, body: bytes):
        """Files + fine-tuning routes; returns (status, JSON or bytes)."""
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        now = int(time.time())
        with self._lock:
            if parts == ["files"] and method == "POST":
                fields = parse_multipart(headers.get("content-type", ""), body)
                if "file" not in fields or "purpose" not in fields:
                    raise _Reply(400, "multipart fields 'file' and 'purpose' are required")
                fid = "file-" + uuid.uuid4().hex[:24]
                fname, data = fields["file"]
                self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": now,
                                   "filename": fname or "upload", "purpose": fields["purpose"][1].decode(),
                                   "status": "processed", "_data": data}
                return 200, _public(self.files[fid])
            if parts == ["files"] and method == "GET":
                return 200, {"object": "list", "data": [_public(f) for f in self.files.values()], "has_more": False}
            if parts[:1] == ["files"] and len(parts) in (2, 3):
                f = self.files.get(parts[1])
                if f is None:
                    raise _Reply(404, f"No such File object: {parts[1]}")
                if len(parts) == 3 and parts[2] == "content" and method == "GET":
                    return 200, f["_data"]
                if len(parts) == 2 and method == "GET":
                    return 200, _public(f)
                if len(parts) == 2 and method == "DELETE":
                    del self.files[parts[1]]
                    return 200, {"id": parts[1], "object": "file", "deleted": True}
            if parts == ["fine_tuning", "jobs"] and method == "POST":
                tf = req.get("training_file") if isinstance(req, dict) else None
                if tf not in self.files:
                    raise _Reply(400, f"invalid training_file: {tf}", "invalid_training_file")
                jid = "ftjob-" + uuid.uuid4().hex[:24]
                self.jobs[jid] = {"id": jid, "object": "fine_tuning.job", "model": req.get("model"),
                                  "training_file": req["training_file"], "validation_file": req.get("validation_file"),
                                  "hyperparameters": req.get("hyperparameters") or {}, "suffix": req.get("suffix"),
                                  "status": self.finetune_path[0], "fine_tuned_model": None, "created_at": now,
                                  "finished_at": None, "error": None, "trained_tokens": None, "result_files": [],
                                  "_step": 0}
                return 200, _public(self.jobs[jid])
            if parts == ["fine_tuning", "jobs"] and method == "GET":
                return 200, {"object": "list", "data": [_public(j) for j in self.jobs.values()], "has_more": False}
            if parts[:2] == ["fine_tuning", "jobs"] and len(parts) in (3, 4):
                job = self.jobs.get(parts[2])
                if job is None:
                    raise _Reply(404, f"No such fine-tuning job: {parts[2]}")
                if len(parts) == 3 and method == "GET":
                    if job["status"] not in TERMINAL and job["_step"] + 1 < len(self.finetune_path):
                        job["_step"] += 1
                        job["status"] = self.finetune_path[job["_step"]]
                        if job["status"] == "succeeded":
                            suffix = job["suffix"] or "custom"
                            job["fine_tuned_model"] = f"ft:{job['model']}:airlock:{suffix}:{uuid.uuid4().hex[:8]}"
                            data = self.files.get(job["training_file"], {}).get("_data", b"")
                            job["finished_at"], job["trained_tokens"] = now, len(data.split())
                        elif job["status"] == "failed":
                            job["finished_at"] = now
                            job["error"] = {"code": "invalid_training_file", "param": "training_file",
                                            "message": "The training file is not valid (scripted failure)."}
                    return 200, _public(job)
                if len(parts) == 4 and parts[3] == "cancel" and method == "POST":
                    if job["status"] in ("succeeded", "failed"):
                        raise _Reply(400, "Job has already completed", "job_completed")
                    job["status"] = "cancelled"
                    job["finished_at"] = job["finished_at"] or now
                    return 200, _public(job)
        raise _Reply(404, f"Unknown route: {method} {path}", "unknown_url")


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OpenAIStub/1.0"

    def log_message(self, *args):  # quiet by default
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)):
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return out
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body, headers: dict | None = None):
        if isinstance(body, (bytes, bytearray)):
            headers = {"Content-Type": "application/octet-stream", **(headers or {})}
        else:
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _handle(self, method: str):
        stub: OpenAIStub = self.server.stub
        try:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            body = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                req = json.loads(body) if body else None
            except (ValueError, UnicodeDecodeError):
                req = None
            if path.startswith("/_control/"):
                return self._control(stub, method, path, req)
            if not path.startswith("/v1/"):
                return self._send(404, error_body(404, f"Unknown route: {method} {path}", "unknown_url"))
            with stub._lock:
                stub.requests.append({"method": method, "path": path, "headers": headers, "json": req, "body": body})
            if stub.api_key is not None and headers.get("authorization") != f"Bearer {stub.api_key}":
                return self._send(401, error_body(401, "Incorrect API key provided", "invalid_api_key"))
            kind = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}.get(path)
            if kind and method == "POST":
                if not isinstance(req, dict):
                    return self._send(400, error_body(400, "request body must be a JSON object"))
                status, out, hdrs = stub._answer(kind, req, stub._next(kind, req))
                return self._send(status, out, hdrs)
            try:
                status, out = stub._route(method, path, headers, req, body)
            except _Reply as r:
                status, out = r.status, r.body
            return self._send(status, out)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # never let a handler error kill the server
            try:
                self._send(500, error_body(500, f"stub error: {type(e).__name__}: {e}"))
            except OSError:
                self.close_connection = True

    def _control(self, stub: OpenAIStub, method: str, path: str, req):
        if path == "/_control/script" and method == "POST":
            stub.script(req["kind"], req["responses"])
            return self._send(200, {"ok": True})
        if path == "/_control/config" and method == "POST":
            for key in ("api_key", "finetune_path"):
                if key in req:
                    setattr(stub, key, req[key])
            for key in ("default_chat", "default_embeddings"):
                if key in req:
                    setattr(stub, key, (lambda _r, v=req[key]: dict(v)) if req[key] is not None else None)
            return self._send(200, {"ok": True})
        if path == "/_control/requests" and method == "GET":
            with stub._lock:
                reqs = [{**{k: v for k, v in r.items() if k != "body"},
                         "body_b64": base64.b64encode(r["body"]).decode()} for r in stub.requests]
            return self._send(200, reqs)
        if path == "/_control/clear" and method == "POST":
            stub.clear()
            return self._send(200, {"ok": True})
        return self._send(404, error_body(404, f"Unknown control route: {method} {path}", "unknown_url"))


def _self_test() -> None:
    import urllib.error
    import urllib.request

    def call(method, url, payload=None, headers=None, data=None, timeout=10):
        hdrs = dict(headers or {})
        if payload is not None:
            data, hdrs["Content-Type"] = json.dumps(payload).encode(), "application/json"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data, hdrs, method=method), timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    stub = OpenAIStub()
    chat, emb = stub.base_url + "/chat/completions", stub.base_url + "/embeddings"
    ask = {"model": "gpt-x", "messages": [{"role": "user", "content": "say hello please"}]}
    stub.script("chat", [{"content": "hello there"}, {"status": 429, "retry_after": 7}, {"raw": "{not json"},
                         {"delay": 1.5, "content": "slow"}])
    st, _, b = call("POST", chat, ask)
    out = json.loads(b)
    assert st == 200 and out["choices"][0]["message"]["content"] == "hello there" and out["model"] == "gpt-x"
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, out["usage"]
    st, h, b = call("POST", chat, ask)
    assert st == 429 and h["Retry-After"] == "7" and json.loads(b)["error"]["code"] == "rate_limit_exceeded"
    st, _, b = call("POST", chat, ask)
    assert st == 200 and b == b"{not json"
    try:
        call("POST", chat, ask, timeout=0.5)
        raise AssertionError("delay did not cause a client timeout")
    except (TimeoutError, OSError):
        pass
    st, _, b = call("POST", chat, ask)
    assert st == 500 and "no scripted response" in json.loads(b)["error"]["message"]
    stub.default_chat = lambda req: {"content": "echo " + req["messages"][-1]["content"]}
    assert json.loads(call("POST", chat, ask)[2])["choices"][0]["message"]["content"] == "echo say hello please"
    assert len(stub.chat_requests()) == 6 and stub.chat_requests()[0]["model"] == "gpt-x"

    st, _, b = call("POST", emb, {"model": "e", "input": ["Hello world", "hello WORLD!", "other"]})
    data = json.loads(b)["data"]
    assert st == 200 and len(data) == 3 and len(data[0]["embedding"]) == 64
    assert data[0]["embedding"] == data[1]["embedding"] != data[2]["embedding"]
    assert abs(sum(v * v for v in data[0]["embedding"]) - 1.0) < 1e-9
    assert len(json.loads(call("POST", emb, {"model": "e", "input": "one"})[2])["data"]) == 1

    boundary, payload = "XyZzY", b'{"messages": []}\n{"messages": []}\n'
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"train.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    st, _, b = call("POST", stub.base_url + "/files", data=body,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    f = json.loads(b)
    assert st == 200 and f["id"].startswith("file-") and f["bytes"] == len(payload), f
    assert f["filename"] == "train.jsonl" and f["purpose"] == "fine-tune"
    assert call("GET", f"{stub.base_url}/files/{f['id']}/content")[2] == payload
    assert stub.requests[-2]["body"] == body and stub.requests[-2]["json"] is None

    jobs = stub.base_url + "/fine_tuning/jobs"
    assert call("POST", jobs, {"model": "gpt-x", "training_file": "file-nope"})[0] == 400
    job = json.loads(call("POST", jobs, {"model": "gpt-x", "training_file": f["id"], "suffix": "s1"})[2])
    assert job["status"] == "validating_files" and job["fine_tuned_model"] is None
    seen = [json.loads(call("GET", f"{jobs}/{job['id']}")[2]) for _ in range(4)]
    assert [j["status"] for j in seen] == ["queued", "running", "succeeded", "succeeded"]
    assert seen[-1]["fine_tuned_model"].startswith("ft:gpt-x:airlock:s1:") and seen[-1]["finished_at"]
    job2 = json.loads(call("POST", jobs, {"model": "m", "training_file": f["id"]})[2])
    assert json.loads(call("POST", f"{jobs}/{job2['id']}/cancel")[2])["status"] == "cancelled"
    assert json.loads(call("GET", f"{jobs}/{job2['id']}")[2])["status"] == "cancelled"
    stub.finetune_path = ["validating_files", "failed"]
    job3 = json.loads(call("POST", jobs, {"model": "m", "training_file": f["id"]})[2])
    failed = json.loads(call("GET", f"{jobs}/{job3['id']}")[2])
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_training_file"
    assert len(json.loads(call("GET", jobs)[2])["data"]) == 3
    assert call("GET", f"{jobs}/ftjob-nope")[0] == 404 and call("GET", stub.base_url + "/nothing")[0] == 404
    assert json.loads(call("DELETE", f"{stub.base_url}/files/{f['id']}")[2])["deleted"] is True
    assert call("GET", f"{stub.base_url}/files/{f['id']}")[0] == 404

    stub.api_key = "sk-test"
    st, _, b = call("POST", chat, ask)
    assert st == 401 and json.loads(b)["error"]["code"] == "invalid_api_key"
    assert call("POST", chat, ask, headers={"Authorization": "Bearer sk-wrong"})[0] == 401
    assert call("POST", chat, ask, headers={"Authorization": "Bearer sk-test"})[0] == 200
    assert stub.requests[-1]["headers"]["authorization"] == "Bearer sk-test"

    control = f"http://127.0.0.1:{stub.port}/_control"
    assert call("POST", control + "/script", {"kind": "chat", "responses": [{"content": "via control"}]})[0] == 200
    got = call("POST", chat, ask, headers={"Authorization": "Bearer sk-test"})[2]
    assert json.loads(got)["choices"][0]["message"]["content"] == "via control"
    assert json.loads(call("GET", control + "/requests")[2])[-1]["json"]["model"] == "gpt-x"
    assert call("POST", control + "/clear")[0] == 200 and stub.requests == []
    stub.stop()
    print("openai_stub self-test: OK")


def main(argv: list[str]) -> None:
    if "--self-test" in argv:
        return _self_test()
    opts = dict(zip(argv[::2], argv[1::2]))
    stub = OpenAIStub(api_key=opts.get("--api-key"), port=int(opts.get("--port", 0)))
    print(f"OPENAI_STUB_PORT={stub.port}", flush=True)
    try:
        stub._thread.join()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
