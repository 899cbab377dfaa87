"""Starts the real airlock binary for the interop suite.

The binary comes from AIRLOCK_BIN (the test script sets it to the freshly
built debug binary). Each test session gets its own data directory, a free
port and the demo dataset.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.flight as flight
import pytest

PASSWORD = "interop-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airlock:
    """One airlock process on a free port; its output goes to a log file."""

    def __init__(self, binary: str, data_dir: Path, args=("serve", "--demo"), password=PASSWORD, extra_env=None, cwd=None,
                 port=None):
        self.port = port or free_port()
        self.data_dir = data_dir
        self.uri = f"grpc://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
        env.update(
            {
                "AIRLOCK_DATA_DIR": str(data_dir),
                "AIRLOCK_FLIGHT_ADDR": f"127.0.0.1:{self.port}",
                # Any free port: the server reports the one it bound.
                "AIRLOCK_HTTP_ADDR": "127.0.0.1:0",
                "AIRLOCK_LOG": "info",
            }
        )
        if password is not None:
            env["AIRLOCK_ADMIN_PASSWORD"] = password
        env.update(extra_env or {})
        self.serves_http = env["AIRLOCK_HTTP_ADDR"] != "none"
        self.http_url = None
        log_dir = Path(cwd) if cwd else data_dir.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"airlock-{self.port}.log"
        restart = 1
        while self.log_path.exists():  # a node started again on its port keeps its first log
            restart += 1
            self.log_path = log_dir / f"airlock-{self.port}-{restart}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd
        )
        self.wait_ready()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airlock exited early:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            if not self.serves_http:
                return
            bound = re.search(r"airlock is serving HTTP addr=(\S+)", self.log_path.read_text())
            if bound:
                self.http_url = f"http://{bound.group(1)}"
                return
            time.sleep(0.05)
        raise RuntimeError(f"airlock did not start:\n{self.log_path.read_text()}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def flight_client(self) -> "flight.FlightClient":
        return flight.FlightClient(self.uri)

    def admin_headers(self):
        client = self.flight_client()
        header = client.authenticate_basic_token("admin", PASSWORD)
        return client, [header]


def call(client, options, name, body=None):
    """Runs a JSON action and returns its answer."""
    payload = b"" if body is None else json.dumps(body).encode()
    results = list(client.do_action(flight.Action(name, payload), options))
    return json.loads(results[0].body.to_pybytes())


def wait_for_job(client, options, job_id, seconds=60):
    """Polls sync.status until the job finishes; returns its last status."""
    deadline = time.time() + seconds
    while True:
        status = call(client, options, "sync.status", {"job_id": job_id})
        if status["state"] in ("succeeded", "failed") or time.time() > deadline:
            return status
        time.sleep(0.05)


@pytest.fixture(scope="session")
def airlock_bin() -> str:
    binary = os.environ.get("AIRLOCK_BIN")
    if not binary:
        root = Path(__file__).resolve().parents[2]
        target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
        binary = str(target / "debug" / "airlock")
    assert Path(binary).exists(), f"airlock binary not found at {binary}; build it or set AIRLOCK_BIN"
    return binary


@pytest.fixture(scope="session")
def server(airlock_bin):
    with tempfile.TemporaryDirectory(prefix="airlock-interop-") as tmp:
        instance = Airlock(airlock_bin, Path(tmp) / "data")
        yield instance
        instance.stop()


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free port (`http://127.0.0.1:PORT`)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
