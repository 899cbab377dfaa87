"""GET /metrics, scraped as Prometheus would: after a known sequence of
queries, denials, actions, MCP calls and a sync, the counters moved by
exactly that much, the gauges describe the server, and no agent name,
token or SQL text appears in any label."""

import json
import re
import time
import urllib.error
import urllib.request

import pyarrow.flight as flight
import pytest

from conftest import Airlock, call, wait_for_job

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


METRICS_TOKEN = "prometheus-scrape-token-42"


def scrape(server, token=METRICS_TOKEN):
    request = urllib.request.Request(f"{server.http_url}/metrics", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        assert match, line
        name, labels, value = match.groups()
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or "")))
        samples[(name, labels)] = float(value)
    return text, samples


def value(samples, name, **labels):
    """The sum of a metric's samples whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def post(url, body, token=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def metered(airlock_bin, tmp_path_factory):
    """A server of its own, so no other test moves its counters."""
    server = Airlock(airlock_bin, tmp_path_factory.mktemp("metrics") / "data",
                     extra_env={"AIRLOCK_METRICS_TOKEN": METRICS_TOKEN})
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(client, admin, "grant.set", {"swarm": "metered", "tables": {"demo.orders": {"row_filter": "region = 'EU'"}}})
    token = call(client, admin, "token.create", {"kind": "agent", "name": "secret_agent_name", "swarm": "metered"})["token"]
    server.admin_token = headers[0][1].decode().split(" ", 1)[1]
    yield server, client, admin, token
    server.stop()


def test_only_admins_and_the_metrics_token_read_metrics(metered):
    server, client, admin, token = metered
    for presented, status in ((None, 401), ("wrong", 401), (token, 403)):
        request = urllib.request.Request(f"{server.http_url}/metrics")
        if presented:
            request.add_header("authorization", f"Bearer {presented}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == status, presented
    assert "airlock_requests_total" in scrape(server, server.admin_token)[0]


def test_counters_move_by_exactly_what_was_done(metered):
    server, client, admin, token = metered
    api = f"{server.http_url}/api/v1"
    _, before = scrape(server)

    rows = 0
    for limit in (3, 5, 7):
        status, body = post(f"{api}/query", {"sql": f"SELECT order_id FROM demo.orders LIMIT {limit}"}, token)
        assert status == 200, body
        rows += len(json.loads(body))
    for _ in range(2):
        assert post(f"{api}/actions/grant.list", {}, token)[0] == 403
    assert post(f"{api}/query", {"sql": "SELECT 1"}, "bad-token")[0] == 401
    assert post(f"{api}/actions/no.such.action", {}, token)[0] == 404
    job = call(client, admin, "sync.start", {"table": "demo.orders"})["job_id"]
    assert wait_for_job(client, admin, job)["state"] == "succeeded"
    status, _ = post(f"{api}/query", {"sql": "SELECT 'secret sql text' AS x"}, token)
    assert status == 200

    text, after = scrape(server)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    queries = dict(frontend="http", method="POST /api/v1/query", outcome="ok", principal_kind="agent")
    assert delta("airlock_requests_total", **queries) == 4
    assert delta("airlock_request_duration_seconds_count", frontend="http", method="POST /api/v1/query") == 5
    assert delta("airlock_result_rows_total", frontend="http") == rows + 1
    assert delta("airlock_denials_total", frontend="http", reason="permission_denied") == 2
    assert delta("airlock_denials_total", frontend="http", reason="unauthenticated") == 1
    assert delta("airlock_requests_total", frontend="http", operation="grant.list", outcome="denied") == 2
    # A name the caller chose is not a label.
    assert delta("airlock_requests_total", frontend="http", operation="unknown", outcome="error") == 1
    assert delta("airlock_requests_total", frontend="flight", method="DoAction", operation="sync.start") == 1
    assert delta("airlock_sync_jobs_total", state="succeeded") == 1
    assert delta("airlock_sync_rows_total") == 20_000
    assert delta("airlock_sync_duration_seconds_count", state="succeeded") == 1
    assert 0 <= value(after, "airlock_replica_age_seconds", table="demo.orders") < 120
    assert value(after, "airlock_active_queries") == 0
    assert value(after, "airlock_duckdb_memory_bytes") > 0
    # Audit records are written in batches, a moment after their requests.
    for _ in range(100):
        if value(scrape(server)[1], "airlock_audit_write_lag_seconds_count") > 0:
            break
        time.sleep(0.1)
    assert value(scrape(server)[1], "airlock_audit_write_lag_seconds_count") > 0
    for secret in ("secret_agent_name", token, "secret sql text", "no.such.action"):
        assert secret not in text, secret
    assert "# HELP airlock_requests_total" in text


def test_artifact_bytes_are_per_swarm_and_mcp_sessions_are_counted(metered):
    server, client, admin, token = metered
    status, body = post(f"{server.http_url}/api/v1/query", {"sql": "SELECT 1"}, token)
    _, before = scrape(server)
    import asyncio

    from test_mcp import text as tool_text
    from test_mcp import tool

    saved = asyncio.run(tool(f"{server.http_url}/mcp", token, "save_artifact", {"name": "metered_note", "text": "x" * 1000}))
    assert not saved.is_error, tool_text(saved)
    for _ in range(50):
        _, after = scrape(server)
        if value(after, "airlock_audit_write_lag_seconds_count") > value(before, "airlock_audit_write_lag_seconds_count"):
            break
        time.sleep(0.1)
    assert value(after, "airlock_artifact_bytes", swarm="metered") - value(before, "airlock_artifact_bytes", swarm="metered") >= 1000
    assert value(after, "airlock_requests_total", frontend="mcp", method="tools/call", operation="save_artifact", outcome="ok") == 1
    assert ("airlock_mcp_sessions", ()) in after
