"""The HTTP API fuzzed from its own OpenAPI document with schemathesis, as
an agent and as an admin, with a bounded number of examples per operation:
no 5xx, every status, content type and body matches the document, and no
response to the agent carries a value its grant hides."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyarrow.flight as flight
import pytest

from conftest import Airlock, call

HERE = Path(__file__).resolve().parent
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,no_hidden_value"
# Operations that reach out to the network (object stores, Snowflake, model
# providers) wait on timeouts here, with no network: the admin run leaves them out.
NETWORK = r"table\.register|sources\.(create|update|test|list_tables)|finetune\.create|nl\.(sql|answer|evaluate)"


@pytest.fixture(scope="module")
def fuzzed(airlock_bin, tmp_path_factory):
    server = Airlock(airlock_bin, tmp_path_factory.mktemp("fuzz") / "data")
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(client, admin, "grant.set", {"swarm": "fuzz", "tables": {
        "demo.customers": {"row_filter": "region = 'EU'", "columns": {"email": "deny", "name": {"mask": "'***'"}}},
    }})
    agent = call(client, admin, "token.create", {"kind": "agent", "name": "fuzzer", "swarm": "fuzz"})["token"]
    admin_token = headers[0][1].decode().split(" ", 1)[1]
    yield server, agent, admin_token
    server.stop()


def schemathesis(server, token, tmp_path, *extra, hidden=()):
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "AIRLOCK_FUZZ_HIDDEN": "|".join(hidden),
           "PYTHONPATH": str(HERE)}
    command = [
        str(Path(sys.executable).parent / "st"), "run", f"{server.http_url}/api/v1/openapi.json",
        "-H", f"Authorization: Bearer {token}", "--checks", CHECKS, "--max-examples", "8",
        "--seed", "1", "--generation-deterministic", "--report", "junit", "--report-dir", str(tmp_path),
        *extra,
    ]
    # Run from the test's directory: schemathesis keeps a cache in its working directory.
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    return run.returncode, run.stdout + run.stderr


def test_the_document_describes_every_action_and_route(fuzzed):
    server, _, _ = fuzzed
    with urllib.request.urlopen(f"{server.http_url}/api/v1/openapi.json", timeout=30) as response:
        document = json.load(response)
    client = server.flight_client()
    # Flight SQL's own actions (CreatePreparedStatement, …) are CamelCase; airlock's are not.
    actions = {a.type for a in client.list_actions() if a.type[0].islower()}
    assert "grant.set" in actions and "whoami" in actions
    paths = set(document["paths"])
    assert {f"/api/v1/actions/{a}" for a in actions} <= paths
    assert {"/api/v1/login", "/api/v1/query", "/healthz", "/readyz", "/metrics"} <= paths
    grant = document["components"]["schemas"]["Grant"]
    assert grant["required"] == ["swarm"] and grant["additionalProperties"] is False


def test_fuzzing_as_an_agent_finds_no_error_and_no_hidden_value(fuzzed, tmp_path):
    server, agent, _ = fuzzed
    # Every customer email, and every name, is hidden from this agent.
    code, output = schemathesis(server, agent, tmp_path, hidden=("@example.com",))
    assert code == 0, output[-6000:]


def test_the_hidden_value_check_can_fail(fuzzed, tmp_path):
    server, agent, _ = fuzzed
    # The agent's own name is in whoami's answer: the check must see it.
    code, output = schemathesis(server, agent, tmp_path, "--include-path", "/api/v1/actions/whoami", hidden=("fuzzer",))
    assert code != 0 and "a value the caller may not read appeared: 'fuzzer'" in output, output[-3000:]


def test_fuzzing_as_an_admin_finds_no_server_error(fuzzed, tmp_path):
    server, _, admin = fuzzed
    code, output = schemathesis(server, admin, tmp_path, "--exclude-path-regex", NETWORK)
    assert code == 0, output[-6000:]
