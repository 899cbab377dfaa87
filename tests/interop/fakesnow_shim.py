"""fakesnow's Snowflake emulator, made to behave like Snowflake where airlock's client cares.

Runs `fakesnow.server.app` (pinned fakesnow==0.12.1) under uvicorn behind an ASGI middleware
that adds what real Snowflake does and fakesnow does not:

* response fields fakesnow omits (login: sessionId, masterToken, validities, roleName; queries:
  returned, version, finalRoleName; errors: age, internalError, queryId);
* NULL timestamps as struct-level nulls (fakesnow leaves the struct valid with null children,
  which strict Arrow readers reject);
* long-running queries (`--pending-polls N`): every query is first answered with code 333333
  and a getResultUrl, which must be polled N times before the result comes;
* result chunks (`--chunk-rows N`): results larger than N rows come as an inline first chunk
  plus chunks downloaded from presigned-style URLs that demand the `chunkHeaders` headers;
  every other chunk is gzipped without saying so, as Snowflake's are;
* transient failures on demand: `POST /_control/fail?n=K&status=503` makes the next K
  query requests fail with that HTTP status;
* a refused login (`--reject-password P`): logging in with password P gets Snowflake's
  390100 "Incorrect username or password" answer (fakesnow accepts any password).

Prints FAKESNOW_PORT=<port> on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import socket
import sys
import uuid

import pyarrow as pa
import uvicorn

import fakesnow.arrow as fsa

_orig_ts_struct = fsa.timestamp_to_sf_struct


def _ts_struct_with_nulls(ts):
    s = _orig_ts_struct(ts)
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    if ts.null_count == 0:
        return s
    kids = [s.field(i).fill_null(0) for i in range(s.type.num_fields)]
    return pa.StructArray.from_arrays(kids, fields=list(s.type), mask=ts.is_null())


fsa.timestamp_to_sf_struct = _ts_struct_with_nulls  # to_sf() looks it up at call time

import fakesnow.server  # noqa: E402  (after the patch)

CHUNK_KEY = "airlock-test-chunk-key"


def _patch(path: str, doc: dict) -> dict:
    data = doc.get("data")
    if path.endswith("/session/v1/login-request") and doc.get("success") and isinstance(data, dict):
        data.setdefault("sessionId", 1)
        data.setdefault("masterToken", data.get("token"))
        data.setdefault("validityInSeconds", 3600)
        data.setdefault("masterValidityInSeconds", 14400)
        info = data.setdefault("sessionInfo", {})
        info.setdefault("roleName", "SYSADMIN")
        info.setdefault("warehouseName", None)
    elif path.endswith("/queries/v1/query-request"):
        if doc.get("success") and isinstance(data, dict) and "rowtype" in data:
            rows = len(data["rowset"]) if isinstance(data.get("rowset"), list) else data.get("total", 0)
            data.setdefault("returned", rows)
            data.setdefault("version", 1)
            data.setdefault("finalRoleName", "SYSADMIN")
            data.setdefault("finalWarehouseName", None)
            data.setdefault("chunks", [])
        elif not doc.get("success"):
            if not isinstance(data, dict):
                data = doc["data"] = {"errorCode": doc.get("code") or "000000", "sqlState": "XX000"}
            data.setdefault("age", 0)
            data.setdefault("internalError", False)
            data.setdefault("queryId", str(uuid.uuid4()))
    return doc


def _ipc(batches: list[pa.RecordBatch], schema: pa.Schema) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


class Shim:
    def __init__(self, app, base: str, chunk_rows: int, pending_polls: int, reject_password=None):
        self.app = app
        self.reject_password = reject_password
        self.base = base
        self.chunk_rows = chunk_rows
        self.pending_polls = pending_polls
        self.chunks: dict[str, bytes] = {}
        self.pending: dict[str, list] = {}  # query id -> [polls left, body]
        self.fail_next = 0
        self.fail_status = 503
        self.stats = {"chunks_served": 0, "polls": 0, "failed": 0}

    def _chunk(self, doc: dict) -> dict:
        data = doc.get("data") or {}
        if not (doc.get("success") and data.get("queryResultFormat") == "arrow" and data.get("rowsetBase64")):
            return doc
        if not self.chunk_rows or data.get("total", 0) <= self.chunk_rows:
            return doc
        table = pa.ipc.open_stream(base64.b64decode(data["rowsetBase64"])).read_all()
        pieces = table.to_batches(max_chunksize=self.chunk_rows)
        data["rowsetBase64"] = base64.b64encode(_ipc(pieces[:1], table.schema)).decode()
        chunks = []
        for i, piece in enumerate(pieces[1:]):
            body = _ipc([piece], table.schema)
            if i % 2 == 0:
                body = gzip.compress(body)
            key = uuid.uuid4().hex
            self.chunks[key] = body
            chunks.append({"url": f"{self.base}/_chunks/{key}", "rowCount": piece.num_rows,
                           "uncompressedSize": len(body), "compressedSize": len(body)})
        data["chunks"] = chunks
        data["chunkHeaders"] = {"x-airlock-test-chunk-key": CHUNK_KEY}
        return doc

    async def _reply(self, send, status: int, body: bytes, ctype=b"application/json"):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/_control/fail":
            query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
            self.fail_next = int(query.get("n", "1"))
            self.fail_status = int(query.get("status", "503"))
            return await self._reply(send, 200, b"{}")
        if path == "/_control/stats":
            return await self._reply(send, 200, json.dumps(self.stats).encode())
        if path.startswith("/_chunks/"):
            headers = dict(scope["headers"])
            if headers.get(b"x-airlock-test-chunk-key") != CHUNK_KEY.encode():
                return await self._reply(send, 403, b"chunk headers missing", b"text/plain")
            body = self.chunks.pop(path.rsplit("/", 1)[1], None)
            if body is None:
                return await self._reply(send, 404, b"no such chunk", b"text/plain")
            self.stats["chunks_served"] += 1
            return await self._reply(send, 200, body, b"application/octet-stream")
        if path.startswith("/queries/") and path.endswith("/result"):
            qid = path.split("/")[2]
            entry = self.pending.get(qid)
            if entry is None:
                return await self._reply(send, 404, b"{}")
            self.stats["polls"] += 1
            entry[0] -= 1
            if entry[0] > 0:
                return await self._reply(send, 200, self._in_progress(qid))
            del self.pending[qid]
            return await self._reply(send, 200, entry[1])
        if path.endswith("/session/v1/login-request") and self.reject_password:
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            try:
                password = json.loads(body)["data"].get("PASSWORD")
            except (ValueError, KeyError, AttributeError):
                password = None
            if password == self.reject_password:
                return await self._reply(send, 200, json.dumps({
                    "data": {"nextAction": "RETRY_LOGIN"}, "code": "390100", "success": False,
                    "message": "Incorrect username or password was specified."}).encode())
            sent = False

            async def receive():  # noqa: F811  (replays the body read above)
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
        if path.endswith("/queries/v1/query-request") and self.fail_next > 0:
            self.fail_next -= 1
            self.stats["failed"] += 1
            return await self._reply(send, self.fail_status, b"<html>unavailable</html>", b"text/html")

        start: dict = {}
        parts: list[bytes] = []

        async def capture(msg):
            if msg["type"] == "http.response.start":
                start.update(msg)
            elif msg["type"] == "http.response.body":
                parts.append(msg.get("body", b""))
                if msg.get("more_body"):
                    return
                body = b"".join(parts)
                ctype = dict(start.get("headers", [])).get(b"content-type", b"")
                if ctype.startswith(b"application/json"):
                    try:
                        doc = _patch(path, json.loads(body))
                        if path.endswith("/queries/v1/query-request"):
                            doc = self._chunk(doc)
                            if self.pending_polls and doc.get("success"):
                                qid = (doc.get("data") or {}).get("queryId") or uuid.uuid4().hex
                                self.pending[qid] = [self.pending_polls, json.dumps(doc).encode()]
                                await self._reply(send, 200, self._in_progress(qid))
                                return
                        body = json.dumps(doc).encode()
                    except ValueError:
                        pass
                await self._reply(send, start.get("status", 200), body, ctype or b"application/json")

        await self.app(scope, receive, capture)

    def _in_progress(self, qid: str) -> bytes:
        return json.dumps({"code": "333333", "success": True, "message": "Query execution in progress",
                           "data": {"queryId": qid, "getResultUrl": f"/queries/{qid}/result",
                                    "queryAbortsAfterSecs": 300}}).encode()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--chunk-rows", type=int, default=0)
    p.add_argument("--pending-polls", type=int, default=0)
    p.add_argument("--reject-password", default=None)
    a = p.parse_args()
    port = a.port
    if not port:
        with socket.socket() as s:
            s.bind((a.host, 0))
            port = s.getsockname()[1]
    app = Shim(fakesnow.server.app, f"http://{a.host}:{port}", a.chunk_rows, a.pending_polls, a.reject_password)
    server = uvicorn.Server(uvicorn.Config(app, host=a.host, port=port, log_level="warning"))
    orig_startup = server.startup

    async def startup(*args, **kw):
        await orig_startup(*args, **kw)
        print(f"FAKESNOW_PORT={port}", flush=True)

    server.startup = startup
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
