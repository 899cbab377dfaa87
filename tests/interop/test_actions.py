"""Flight actions through pyarrow.flight, and tokens used by ADBC."""

import json

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import wait_for_job


# pyarrow raises ArrowInvalid for INVALID_ARGUMENT, ArrowKeyError for NOT_FOUND, Flight* for the rest.
REFUSED = (flight.FlightError, pa.ArrowException)


def call(client, options, name, body=None):
    payload = b"" if body is None else json.dumps(body).encode()
    results = list(client.do_action(flight.Action(name, payload), options))
    assert len(results) == 1
    return json.loads(results[0].body.to_pybytes())


@pytest.fixture()
def admin(server):
    client, headers = server.admin_headers()
    return client, flight.FlightCallOptions(headers=headers)


def agent_connection(server, token):
    return flightsql.connect(
        server.uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}, autocommit=True
    )


def test_list_actions_has_every_action_with_a_description(server, admin):
    client, options = admin
    actions = {a.type: a.description for a in client.list_actions(options)}
    for name in ["token.create", "token.revoke", "token.list", "whoami", "table.register", "table.list",
                 "table.remove", "sync.start", "sync.status", "grant.set", "grant.get", "grant.list",
                 "grant.delete", "explain", "sync.jobs", "sync.cancel", "sync.schedule", "table.status",
                 "sources.list_tables", "CancelFlightInfo"]:
        assert name in actions and len(actions[name]) > 20, name


def test_swarm_and_agent_tokens_end_to_end(server, admin):
    client, options = admin
    swarm = call(
        client, options, "token.create", {"kind": "swarm", "name": "emea", "ttl_seconds": 3600, "attributes": {"region": "EU"}}
    )
    assert set(swarm) >= {"id", "token", "expires_at"}
    call(client, options, "grant.set", {"swarm": "emea", "tables": {"demo.*": {}}})
    swarm_options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {swarm['token']}".encode())])
    # Agents inherit their swarm token's attributes.
    agent = call(client, swarm_options, "token.create", {"kind": "agent", "name": "a1"})
    me = call(client, flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {agent['token']}".encode())]), "whoami")
    assert me["kind"] == "agent" and me["swarm"] == "emea" and me["attributes"] == {"region": "EU"}

    # The agent queries through ADBC with its bearer token.
    conn = agent_connection(server, agent["token"])
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM demo.customers")
        assert cur.fetch_arrow_table().column("n").to_pylist() == [1000]

    # Revoke: the very next call fails, on a connection that was working.
    revoked = call(client, options, "token.revoke", {"id": agent["id"]})
    assert revoked["revoked"] is True
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELECT 1")
        assert "revoked" in str(err.value)
    conn.close()


def test_register_sync_and_query_a_csv(server, admin, tmp_path):
    client, options = admin
    csv_path = tmp_path / "scores.csv"
    lines = ["player,score,played_on"] + [f"p{i},{i * 7 % 100},2024-01-{i % 28 + 1:02d}" for i in range(500)]
    csv_path.write_text("\n".join(lines) + "\n")

    registered = call(client, options, "table.register", {"name": "games.scores", "source": f"file://{csv_path}"})
    assert registered["format"] == "csv"
    started = call(client, options, "sync.start", {"table": "games.scores"})
    status = wait_for_job(client, options, started["job_id"])
    assert status["state"] == "succeeded", status
    assert status["rows"] == 500
    assert status["started_at"] and status["finished_at"] and status["duration_ms"] is not None

    expected = pacsv.read_csv(csv_path)
    conn = flightsql.connect(server.uri, db_kwargs={"username": "admin", "password": "interop-password"}, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT sum(score) AS s, min(played_on) AS first FROM games.scores")
        row = cur.fetch_arrow_table().to_pylist()[0]
    conn.close()
    assert row["s"] == sum(expected.column("score").to_pylist())
    assert row["first"] == min(expected.column("played_on").to_pylist())


def test_bad_requests_are_refused_precisely(server, admin):
    client, options = admin
    with pytest.raises(REFUSED) as malformed:
        list(client.do_action(flight.Action("token.create", b"{nope"), options))
    assert "invalid JSON body for token.create" in str(malformed.value)

    with pytest.raises(REFUSED) as unknown:
        list(client.do_action(flight.Action("frobnicate", b"{}"), options))
    assert "unknown action 'frobnicate'" in str(unknown.value)

    with pytest.raises(REFUSED) as missing:
        call(client, options, "table.register", {"name": "x.y", "source": "file:///nonexistent/dir/x.parquet"})
    assert "no parquet files found" in str(missing.value)

    with pytest.raises(REFUSED) as unsupported:
        call(client, options, "table.register", {"name": "x.y", "source": "file:///tmp/report.xlsx"})
    assert "unsupported file type 'xlsx'" in str(unsupported.value)

    with pytest.raises(flight.FlightUnauthenticatedError):
        list(client.do_action(flight.Action("whoami", b""), flight.FlightCallOptions(headers=[(b"authorization", b"Bearer nonsense")])))
