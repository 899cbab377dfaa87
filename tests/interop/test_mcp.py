"""The MCP endpoint, driven by the official Python `mcp` client over
streamable HTTP (bearer header) and over stdio through `airlock mcp`, as two
agents of different swarms beside the same agents over Flight (ADBC): row
filters, masks, denied columns and artifact isolation hold through MCP
exactly as through Flight, and no tool answers without a token."""

import asyncio
import csv
import io
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager

import adbc_driver_flightsql.dbapi as flightsql
import httpx2
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from conftest import call

TOOLS = {
    "list_tables", "describe_table", "sample_rows", "profile_table", "search_context", "query",
    "export_query", "explain_query", "list_artifacts", "read_artifact", "save_artifact",
}


@asynccontextmanager
async def session(url, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300)) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                yield s


def run(coroutine):
    return asyncio.run(coroutine)


async def tool(url, token, name, arguments=None):
    async with session(url, token) as s:
        return await s.call_tool(name, arguments or {})


def text(result):
    return "".join(c.text for c in result.content if getattr(c, "text", None) is not None)


def table(result):
    """The CSV rows of a query tool's answer, without its closing note."""
    body = text(result)
    lines = body.rstrip().splitlines()
    assert lines[-1].startswith("("), body
    return list(csv.DictReader(io.StringIO("\n".join(lines[:-1]) + "\n"))), lines[-1]


def flight_rows(server, token, sql):
    auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    with flightsql.connect(server.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def flight_error(server, token, sql):
    with pytest.raises(Exception) as raised:
        flight_rows(server, token, sql)
    return str(raised.value)


@pytest.fixture(scope="module")
def agents(server):
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    rules = lambda region: {  # noqa: E731
        "demo.customers": {"row_filter": f"region = '{region}'", "columns": {"email": {"mask": "'***'"}, "signup_date": "deny"}},
        "demo.orders": {"row_filter": f"region = '{region}'"},
    }
    call(client, admin, "grant.set", {"swarm": "mcp_eu", "tables": rules("EU"), "limits": {"max_rows": 5000}})
    call(client, admin, "grant.set", {"swarm": "mcp_us", "tables": rules("US"), "limits": {"max_rows": 50}})
    tokens = {
        "eu": call(client, admin, "token.create", {"kind": "agent", "name": "m_eu", "swarm": "mcp_eu"})["token"],
        "us": call(client, admin, "token.create", {"kind": "agent", "name": "m_us", "swarm": "mcp_us"})["token"],
        "admin": headers[0][1].decode().split(" ", 1)[1],
    }
    yield {"url": f"{server.http_url}/mcp", "tokens": tokens, "server": server}
    for swarm in ("mcp_eu", "mcp_us"):
        call(client, admin, "grant.delete", {"swarm": swarm})


def post_raw(url, token=None):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("content-type", "application/json")
    request.add_header("accept", "application/json, text/event-stream")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_no_tool_answers_without_a_valid_token(agents):
    for token in (None, "not-a-token"):
        status, body = post_raw(agents["url"], token)
        assert status == 401, body
        assert json.loads(body)["code"] == "UNAUTHENTICATED"

    async def connect_without_token():
        async with session(agents["url"], None) as s:
            await s.list_tools()

    with pytest.raises(BaseException):
        run(connect_without_token())


def test_a_session_answers_only_the_token_that_opened_it(agents):
    def post(token, body, session=None):
        request = urllib.request.Request(agents["url"], data=json.dumps(body).encode(), method="POST")
        request.add_header("content-type", "application/json")
        request.add_header("accept", "application/json, text/event-stream")
        request.add_header("authorization", f"Bearer {token}")
        if session:
            request.add_header("mcp-session-id", session)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}
    status, headers, _ = post(agents["tokens"]["eu"], initialize)
    session = headers["mcp-session-id"]
    assert status == 200 and session
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    status, _, body = post(agents["tokens"]["us"], listing, session)
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"
    assert post(agents["tokens"]["eu"], {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)[0] == 202
    status, _, body = post(agents["tokens"]["eu"], listing, session)
    assert status == 200 and b"list_tables" in body


def test_tools_are_listed_with_descriptions_and_schemas(agents):
    async def listed():
        async with session(agents["url"], agents["tokens"]["eu"]) as s:
            return (await s.list_tools()).tools

    tools = run(listed())
    assert {t.name for t in tools} == TOOLS  # no language model configured: no generate_sql
    for t in tools:
        assert t.description and "Example" in t.description, t.name
        assert t.input_schema["type"] == "object", t.name
    query = next(t for t in tools if t.name == "query")
    assert query.input_schema["required"] == ["sql"]


SQL = "SELECT customer_id, name, email, region FROM demo.customers ORDER BY customer_id LIMIT 50"


def test_each_agent_sees_through_mcp_exactly_what_it_sees_through_flight(agents):
    server = agents["server"]
    for who, region in (("eu", "EU"), ("us", "US")):
        token = agents["tokens"][who]
        expected = flight_rows(server, token, SQL)
        rows, note = table(run(tool(agents["url"], token, "query", {"sql": SQL})))
        assert rows == [{k: str(v) for k, v in r.items()} for r in expected]
        assert rows and all(r["region"] == region and r["email"] == "***" for r in rows)
        assert note == f"({len(rows)} rows)"


def test_a_denied_column_fails_with_the_flight_message(agents):
    token = agents["tokens"]["eu"]
    sql = "SELECT signup_date FROM demo.customers"
    result = run(tool(agents["url"], token, "query", {"sql": sql}))
    assert result.is_error
    message = text(result)
    assert message.endswith("(INVALID_ARGUMENT)"), message
    assert message.rsplit(" (", 1)[0] in flight_error(agents["server"], token, sql)
    # Bad arguments are tool errors too, never a stack trace.
    bad = run(tool(agents["url"], token, "query", {"sql": "SELECT 1", "max_rows": 0}))
    assert bad.is_error and "max_rows must be between 1 and 1000" in text(bad)


def test_query_caps_rows_and_says_how_to_get_them_all(agents):
    token = agents["tokens"]["eu"]
    rows, note = table(run(tool(agents["url"], token, "query", {"sql": "SELECT order_id FROM demo.orders"})))
    assert len(rows) == 200
    assert "showing the first 200 rows" in note and "export_query" in note
    rows, note = table(run(tool(agents["url"], token, "query", {
        "sql": "SELECT order_id, region FROM demo.orders WHERE order_id < $1 ORDER BY order_id", "params": [500], "max_rows": 5})))
    assert len(rows) == 5 and {r["region"] for r in rows} == {"EU"}
    assert "your grant" not in note
    # A grant's cap below the tool's is the one that cut, and the note says so.
    rows, note = table(run(tool(agents["url"], agents["tokens"]["us"], "query", {"sql": "SELECT order_id FROM demo.orders"})))
    assert len(rows) == 50 and "your grant caps results at 50 rows" in note


def test_tables_are_described_as_the_agent_sees_them(agents):
    token = agents["tokens"]["eu"]
    listed = json.loads(text(run(tool(agents["url"], token, "list_tables"))))
    names = {t["name"] for t in listed["tables"]}
    assert {"demo.customers", "demo.orders"} <= names
    described = json.loads(text(run(tool(agents["url"], token, "describe_table", {"table": "demo.customers"}))))
    assert [c["name"] for c in described["columns"]] == ["customer_id", "name", "email", "region", "lifetime_value"]
    missing = run(tool(agents["url"], token, "describe_table", {"table": "demo.secret"}))
    assert missing.is_error and "(NOT_FOUND)" in text(missing)


def test_samples_and_profiles_hold_the_policy(agents):
    token = agents["tokens"]["us"]
    rows, _ = table(run(tool(agents["url"], token, "sample_rows", {"table": "demo.customers", "rows": 10})))
    assert 0 < len(rows) <= 10 and {r["region"] for r in rows} == {"US"} and {r["email"] for r in rows} == {"***"}
    profile = json.loads(text(run(tool(agents["url"], token, "profile_table", {"table": "demo.customers", "columns": ["region", "email"]}))))
    by_name = {c["column"]: c for c in profile["columns"]}
    assert [v["value"] for v in by_name["region"]["top_values"]] == ["US"]
    assert [v["value"] for v in by_name["email"]["top_values"]] == ["***"]


def test_explain_shows_an_agent_the_shape_and_no_policy(agents):
    token = agents["tokens"]["eu"]
    shape = json.loads(text(run(tool(agents["url"], token, "explain_query", {
        "sql": "SELECT region, count(*) FROM demo.customers GROUP BY region"}))))
    assert "TableScan demo.customers" in shape["shape"] and "Aggregate" in shape["shape"]
    dumped = json.dumps(shape)
    for secret in ("EU", "***", "region =", "SELECT"):
        assert secret not in dumped, secret


def test_search_context_answers_from_visible_tables(agents):
    token = agents["tokens"]["eu"]
    found = json.loads(text(run(tool(agents["url"], token, "search_context", {"question": "customers email region"}))))
    assert found["tables"] and all(t["table"].startswith("demo.") for t in found["tables"])
    customers = next(t for t in found["tables"] if t["table"] == "demo.customers")
    assert "signup_date" not in [c["name"] for c in customers["columns"]]


def test_artifacts_stay_with_their_swarm(agents):
    eu, us = agents["tokens"]["eu"], agents["tokens"]["us"]
    url = agents["url"]
    exported = run(tool(url, eu, "export_query", {"sql": "SELECT customer_id, email FROM demo.customers", "name": "mcp_eu_customers"}))
    assert not exported.is_error, text(exported)
    exported = json.loads(text(exported))
    assert exported["state"] == "succeeded", exported
    preview = text(run(tool(url, eu, "read_artifact", {"name": "mcp_eu_customers"})))
    assert "customer_id,email" in preview and "artifacts.mcp_eu_customers" in preview
    assert "@example.com" not in preview  # masked at export, as over Flight
    saved = json.loads(text(run(tool(url, eu, "save_artifact", {"name": "mcp_notes", "text": "EU notes: ünïcode ok"}))))
    assert saved["name"] == "mcp_notes"
    assert text(run(tool(url, eu, "read_artifact", {"name": "mcp_notes"}))) == "EU notes: ünïcode ok"
    names = [a["name"] for a in json.loads(text(run(tool(url, eu, "list_artifacts"))))["artifacts"]]
    assert {"mcp_eu_customers", "mcp_notes"} <= set(names)
    # The other swarm cannot list or read them.
    other = [a["name"] for a in json.loads(text(run(tool(url, us, "list_artifacts"))))["artifacts"]]
    assert not {"mcp_eu_customers", "mcp_notes"} & set(other)
    for name in ("mcp_eu_customers", "mcp_notes"):
        refused = run(tool(url, us, "read_artifact", {"name": name}))
        assert refused.is_error and "(NOT_FOUND)" in text(refused)


def test_tables_are_resources(agents):
    async def resources():
        async with session(agents["url"], agents["tokens"]["eu"]) as s:
            listed = (await s.list_resources()).resources
            read = await s.read_resource("airlock://table/demo.customers")
            return listed, read

    listed, read = run(resources())
    assert "airlock://table/demo.customers" in {str(r.uri) for r in listed}
    described = json.loads(read.contents[0].text)
    assert described["table"] == "demo.customers"
    assert "signup_date" not in [c["name"] for c in described["columns"]]


def test_tool_calls_are_audited_with_the_caller(agents):
    marker = "SELECT count(*) AS n FROM demo.orders WHERE 'mcp-audit' <> ''"
    run(tool(agents["url"], agents["tokens"]["us"], "query", {"sql": marker}))
    admin = agents["tokens"]["admin"]
    for _ in range(100):
        records = flight_rows(
            agents["server"], admin,
            "SELECT request, principal, swarm, outcome, rows FROM airlock.audit "
            f"WHERE statement = '{marker.replace(chr(39), chr(39) * 2)}'",
        )
        if records:
            break
        time.sleep(0.1)
    assert records == [{"request": "MCP query", "principal": "m_us", "swarm": "mcp_us", "outcome": "ok", "rows": 1}]


def test_the_stdio_bridge_serves_the_same_tools(agents, airlock_bin):
    params = StdioServerParameters(
        command=airlock_bin, args=["mcp", "--server", agents["url"]],
        env={**os.environ, "AIRLOCK_TOKEN": agents["tokens"]["eu"]},
    )

    async def over_stdio():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = {t.name for t in (await s.list_tools()).tools}
                result = await s.call_tool("query", {"sql": SQL})
                return tools, result

    tools, result = run(over_stdio())
    assert tools == TOOLS
    rows, _ = table(result)
    assert rows and all(r["region"] == "EU" and r["email"] == "***" for r in rows)
    # It requires a token at start.
    env = {k: v for k, v in os.environ.items() if k != "AIRLOCK_TOKEN"}
    started = subprocess.run([airlock_bin, "mcp", "--server", agents["url"]], env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30)
    assert started.returncode == 2 and "--token" in started.stderr
