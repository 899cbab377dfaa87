"""Sampling through stock clients: TABLESAMPLE in SQL through ADBC, and the
table.sample action through pyarrow.flight. Samples are drawn from the rows
the caller may see, with masks applied, and the same seed gives the same
sample."""

import base64
import json

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import call



@pytest.fixture(scope="module")
def agent(server):
    client, headers = server.admin_headers()
    options = flight.FlightCallOptions(headers=headers)
    call(
        client,
        options,
        "grant.set",
        {
            "swarm": "samplers",
            "tables": {
                "demo.customers": {
                    "row_filter": "region = agent_attr('region')",
                    "columns": {"email": {"mask": "'***'"}},
                },
                "demo.orders": {},
            },
            "limits": {"per_minute": 100000, "max_concurrent": 4},
        },
    )
    token = call(
        client,
        options,
        "token.create",
        {"kind": "agent", "name": "s1", "swarm": "samplers", "attributes": {"region": "EU"}},
    )["token"]
    conn = flightsql.connect(
        server.uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}, autocommit=True
    )
    agent_options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    yield {"conn": conn, "client": server.flight_client(), "options": agent_options}
    conn.close()
    call(client, options, "grant.delete", {"swarm": "samplers"})


def rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def test_tablesample_no_longer_returns_the_whole_table(agent):
    # DataFusion alone parses TABLESAMPLE and ignores it: this returned all
    # 20,000 orders before airlock planned the clause itself.
    total = rows(agent["conn"], "SELECT count(*) AS n FROM demo.orders")[0]["n"]
    assert total == 20_000
    sampled = rows(agent["conn"], "SELECT count(*) AS n FROM demo.orders TABLESAMPLE BERNOULLI (1 PERCENT) REPEATABLE (1)")
    assert 120 <= sampled[0]["n"] <= 280, sampled
    system = rows(agent["conn"], "SELECT count(*) AS n FROM demo.orders TABLESAMPLE SYSTEM (10 PERCENT) REPEATABLE (1)")
    assert 1_700 <= system[0]["n"] <= 2_300, system


def test_reservoir_samples_are_exact_and_repeatable(agent):
    conn = agent["conn"]
    query = "SELECT order_id FROM demo.orders TABLESAMPLE (100 ROWS) REPEATABLE ({}) ORDER BY order_id"
    first = rows(conn, query.format(5))
    assert len(first) == 100 and len({r["order_id"] for r in first}) == 100
    assert rows(conn, query.format(5)) == first
    assert rows(conn, query.format(6)) != first
    aliased = rows(conn, "SELECT o.order_id FROM demo.orders AS o TABLESAMPLE (3 ROWS) REPEATABLE (5) ORDER BY o.order_id")
    assert len(aliased) == 3


def test_a_hidden_row_never_appears_in_a_thousand_samples(agent):
    conn = agent["conn"]
    seen = set()
    for seed in range(1000):
        for row in rows(conn, f"SELECT customer_id, region, email FROM demo.customers TABLESAMPLE (5 ROWS) REPEATABLE ({seed})"):
            assert row["region"] == "EU", row
            assert row["email"] == "***", row
            seen.add(row["customer_id"])
    visible = {r["customer_id"] for r in rows(conn, "SELECT customer_id FROM demo.customers")}
    assert seen <= visible and len(seen) > 100


def test_unsupported_forms_are_refused_by_name(agent):
    for sql, named in [
        ("SELECT * FROM demo.orders TABLESAMPLE (10 PERCENT)", "not supported"),
        ("SELECT * FROM demo.orders TABLESAMPLE BERNOULLI (5 ROWS)", "BERNOULLI (5 ROWS)"),
        ("SELECT * FROM (SELECT * FROM demo.orders) AS s TABLESAMPLE (5 ROWS)", "subquery"),
        ("SELECT * FROM demo.orders TABLESAMPLE BERNOULLI (101 PERCENT)", "between 0 and 100"),
    ]:
        with pytest.raises(adbc_driver_manager.Error) as error:
            rows(agent["conn"], sql)
        assert named in str(error.value), str(error.value)


def test_the_sample_action_streams_a_repeatable_sample(agent):
    client, options = agent["client"], agent["options"]

    def sample(body):
        answer = call(client, options, "table.sample", body)
        reader = client.do_get(flight.Ticket(base64.b64decode(answer["ticket"])), options)
        return answer, reader.read_all().to_pylist()

    answer, first = sample({"table": "demo.customers", "rows": 20, "seed": 11})
    assert answer["method"] == "reservoir" and answer["seed"] == 11 and len(first) == 20
    assert {r["region"] for r in first} == {"EU"} and {r["email"] for r in first} == {"***"}
    assert sample({"table": "demo.customers", "rows": 20, "seed": 11})[1] == first
    answer, drawn = sample({"table": "demo.orders", "fraction": 0.05, "method": "system"})
    assert answer["method"] == "system" and isinstance(answer["seed"], int)
    assert 700 <= len(drawn) <= 1300
    # A random seed is reported, so the same sample can be drawn again.
    again = sample({"table": "demo.orders", "fraction": 0.05, "method": "system", "seed": answer["seed"]})[1]
    # The same rows (in whatever order the scan's partitions deliver them).
    assert sorted(r["order_id"] for r in again) == sorted(r["order_id"] for r in drawn)


def test_stratified_samples_spread_across_values(agent, server):
    client, headers = server.admin_headers()
    options = flight.FlightCallOptions(headers=headers)
    answer = call(client, options, "table.sample", {"table": "demo.orders", "rows": 8, "stratify_by": "status", "seed": 2})
    drawn = client.do_get(flight.Ticket(base64.b64decode(answer["ticket"])), options).read_all().to_pylist()
    statuses = {r["status"] for r in client.do_get(
        flight.Ticket(base64.b64decode(call(client, options, "table.sample", {"table": "demo.orders", "rows": 20000, "seed": 1})["ticket"])),
        options,
    ).read_all().to_pylist()}
    counts = {}
    for r in drawn:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    assert len(drawn) == 8
    # Every value gets rows before any gets a second round.
    assert len(statuses) <= 8 and set(counts) == statuses
    assert max(counts.values()) - min(counts.values()) <= 1


def test_bad_sample_requests_are_precise(agent):
    client, options = agent["client"], agent["options"]
    for body, text in [
        ({"table": "demo.orders"}, "exactly one"),
        ({"table": "demo.orders", "rows": 5, "fraction": 0.1}, "exactly one"),
        ({"table": "demo.orders", "rows": 5, "method": "bernoulli"}, "take \"fraction\""),
        ({"table": "demo.orders", "rows": 5, "stratify_by": "nope"}, "no column 'nope'"),
        ({"table": "secret.vault", "rows": 5}, "does not exist or is not visible"),
    ]:
        with pytest.raises((flight.FlightError, Exception)) as error:
            call(client, options, "table.sample", body)
        assert text in str(error.value), (body, str(error.value))
