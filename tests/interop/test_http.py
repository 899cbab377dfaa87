"""The HTTP port: liveness, readiness, its address setting, plain logs and
a clean stop of both ports, through the real binary and plain HTTP."""

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request

import pyarrow.flight as flight
import pytest

from conftest import Airlock


def get(url):
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("content-type"), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type"), error.read().decode()


@pytest.fixture(scope="module")
def server(airlock_bin, tmp_path_factory):
    server = Airlock(airlock_bin, tmp_path_factory.mktemp("http") / "data", args=("serve",))
    yield server
    server.stop()


def test_healthz_says_the_process_is_up(server):
    assert get(f"{server.http_url}/healthz")[::2] == (200, "ok\n")


def test_readyz_names_each_check_it_passed(server):
    status, content_type, body = get(f"{server.http_url}/readyz")
    assert (status, content_type) == (200, "application/json"), body
    answer = json.loads(body)
    assert answer["ready"] is True
    assert {c["name"]: c["ok"] for c in answer["checks"]} == {"replica": True, "snapshots": True, "metadata": True, "scheduler": True}
    assert answer["role"] == "writer" and answer["node"].endswith(f":{server.port}"), answer


def test_unknown_routes_are_not_found(server):
    assert get(f"{server.http_url}/nothing-here")[0] == 404


def test_the_log_has_no_colour_codes_when_it_is_a_file(server):
    text = server.output()
    assert "airlock is serving HTTP" in text
    assert "\x1b[" not in text


def test_http_none_serves_flight_only(airlock_bin, tmp_path):
    server = Airlock(airlock_bin, tmp_path / "data", args=("serve",), extra_env={"AIRLOCK_HTTP_ADDR": "none"})
    try:
        assert server.http_url is None
        assert "serving HTTP" not in server.output()
        client, headers = server.admin_headers()
        assert list(client.list_actions(flight.FlightCallOptions(headers=headers)))
    finally:
        server.stop()


def test_a_bad_http_address_stops_the_start_with_what_to_write(airlock_bin, tmp_path):
    result = subprocess.run(
        [airlock_bin, "serve", "--data-dir", str(tmp_path / "data"), "--http-addr", "localhost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "HOST:PORT" in result.stderr and "none" in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()


def test_a_stop_signal_ends_both_ports_cleanly(airlock_bin, tmp_path):
    server = Airlock(airlock_bin, tmp_path / "data", args=("serve",))
    url = server.http_url
    assert get(f"{url}/healthz")[0] == 200
    server.process.terminate()
    assert server.process.wait(timeout=30) == 0
    server.log.close()
    assert "airlock stopped" in server.log_path.read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/healthz", timeout=5)


def healthcheck(airlock_bin, http_addr):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    env["AIRLOCK_HTTP_ADDR"] = http_addr
    return subprocess.run([airlock_bin, "healthcheck"], env=env, capture_output=True, text=True, timeout=60)


def test_healthcheck_exits_by_readiness(airlock_bin, server):
    addr = server.http_url.removeprefix("http://")
    assert healthcheck(airlock_bin, addr).returncode == 0
    # Listening on every interface: the check asks loopback.
    assert healthcheck(airlock_bin, "0.0.0.0:" + addr.rsplit(":", 1)[1]).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{s.getsockname()[1]}"
    down = healthcheck(airlock_bin, nobody)
    assert down.returncode == 1 and f"cannot reach http://{nobody}/readyz" in down.stderr, down
    off = healthcheck(airlock_bin, "none")
    assert off.returncode == 2 and "--http-addr" in off.stderr, off
