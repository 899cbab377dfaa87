"""Profiles through stock clients, checked against statistics this test
computes itself with pyarrow from the rows the same principal reads:
the table.profile action (pyarrow.flight) and SELECT * FROM
airlock.profile('…') (ADBC). A filtered agent's profile describes only its
rows, and masked columns profile their masked values."""

import json
import statistics

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import PASSWORD, call



@pytest.fixture(scope="module")
def people(server):
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(
        client,
        admin,
        "grant.set",
        {
            "swarm": "profilers",
            "tables": {
                "demo.customers": {
                    "row_filter": "region = agent_attr('region')",
                    "columns": {"email": {"mask": "'hidden'"}},
                }
            },
        },
    )
    out = {"admin": (client, admin, flightsql.connect(server.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True))}
    for region in ("EU", "US"):
        token = call(
            client, admin, "token.create", {"kind": "agent", "name": f"p_{region}", "swarm": "profilers", "attributes": {"region": region}}
        )["token"]
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
        conn = flightsql.connect(server.uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}, autocommit=True)
        out[region] = (server.flight_client(), options, conn)
    yield out
    for _, _, conn in out.values():
        conn.close()
    call(client, admin, "grant.delete", {"swarm": "profilers"})


def read(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def by_column(profile):
    return {c["column"]: c for c in profile["columns"]}


def test_the_profile_matches_statistics_computed_independently(people):
    client, options, conn = people["admin"]
    table = read(conn, "SELECT * FROM demo.orders")
    profile = call(client, options, "table.profile", {"table": "demo.orders"})
    assert profile["rows"] == table.num_rows == 20_000 and profile["sampled"] is False
    columns = by_column(profile)
    assert list(columns) == table.column_names
    amount = [float(v) for v in table.column("amount").to_pylist() if v is not None]
    stats = columns["amount"]
    assert stats["count"] == len(amount) and stats["null_count"] == table.num_rows - len(amount)
    assert stats["min"] == pytest.approx(min(amount)) and stats["max"] == pytest.approx(max(amount))
    assert stats["mean"] == pytest.approx(statistics.fmean(amount), rel=1e-9)
    assert stats["stddev"] == pytest.approx(statistics.stdev(amount), rel=1e-9)
    q = statistics.quantiles(amount, n=4)
    spread = max(amount) - min(amount)
    for key, expected in zip(("p25", "p50", "p75"), q):
        assert abs(stats[key] - expected) <= 0.01 * spread, (key, stats[key], expected)
    assert sum(b["count"] for b in stats["histogram"]) == len(amount)
    assert stats["histogram"][0]["lower"] == pytest.approx(min(amount))
    assert stats["histogram"][-1]["upper"] == pytest.approx(max(amount))
    width = (max(amount) - min(amount)) / 10
    first = sum(1 for v in amount if v < min(amount) + width)
    assert stats["histogram"][0]["count"] == first
    status = columns["status"]
    counts = pc.value_counts(table.column("status")).to_pylist()
    expected_top = sorted(({"value": c["values"], "count": c["counts"]} for c in counts), key=lambda t: (-t["count"], t["value"]))
    assert status["top_values"] == expected_top
    assert status["approx_distinct"] == len(counts)
    lengths = [len(v) for v in table.column("status").to_pylist()]
    assert (status["min_length"], status["max_length"]) == (min(lengths), max(lengths))
    assert status["avg_length"] == pytest.approx(statistics.fmean(lengths))
    ids = columns["order_id"]
    assert abs(ids["approx_distinct"] - 20_000) <= 20_000 * 0.05
    ordered = columns["ordered_at"]
    times = table.column("ordered_at")
    assert ordered["min"].startswith(pc.min(times).as_py().strftime("%Y-%m-%dT%H:%M:%S"))
    assert ordered["max"].startswith(pc.max(times).as_py().strftime("%Y-%m-%dT%H:%M:%S"))
    # The audit records the rows profiled, as it does a query's rows.
    import time

    for _ in range(100):
        audited = read(
            conn,
            "SELECT rows FROM airlock.audit WHERE request = 'DoAction table.profile' "
            "AND statement LIKE '%demo.orders%' ORDER BY time DESC LIMIT 1",
        ).to_pylist()
        if audited:
            break
        time.sleep(0.1)
    assert audited == [{"rows": 20_000}]


def test_the_sql_form_gives_the_same_profile_as_a_table(people):
    client, options, conn = people["admin"]
    profile = by_column(call(client, options, "table.profile", {"table": "demo.customers"}))
    rows = read(conn, "SELECT * FROM airlock.profile('demo.customers')").to_pylist()
    assert [r["column_name"] for r in rows] == list(profile)
    for row in rows:
        expected = profile[row["column_name"]]
        assert row["row_count"] == 1000
        assert row["non_null_count"] == expected["count"] and row["null_count"] == expected["null_count"]
        assert row["approx_distinct"] == expected["approx_distinct"]
        assert row["data_type"] == expected["data_type"]
        if expected["top_values"] is not None:
            assert json.loads(row["top_values"]) == expected["top_values"]
    regions = next(r for r in rows if r["column_name"] == "region")
    assert {t["value"] for t in json.loads(regions["top_values"])} == {"EU", "US", "APAC", "LATAM"}


def test_a_filtered_agent_profiles_only_its_rows_and_masked_values(people):
    _, _, admin_conn = people["admin"]
    for region in ("EU", "US"):
        client, options, conn = people[region]
        mine = read(conn, "SELECT * FROM demo.customers")
        assert set(mine.column("region").to_pylist()) == {region}
        profile = by_column(call(client, options, "table.profile", {"table": "demo.customers"}))
        assert profile["region"]["top_values"] == [{"value": region, "count": mine.num_rows}]
        assert profile["email"]["top_values"] == [{"value": "hidden", "count": mine.num_rows}]
        assert profile["email"]["min"] == "hidden" and profile["email"]["max"] == "hidden"
        values = [float(v) for v in mine.column("lifetime_value").to_pylist() if v is not None]
        assert profile["lifetime_value"]["mean"] == pytest.approx(statistics.fmean(values), rel=1e-9)
        sql = read(conn, "SELECT column_name, top_values FROM airlock.profile('demo.customers')").to_pylist()
        text = json.dumps(sql)
        other = {"EU", "US", "APAC", "LATAM"} - {region}
        assert not any(f'"{o}"' in text for o in other), text
        assert "@example.com" not in text


def test_columns_and_samples_and_errors(people):
    client, options, _ = people["admin"]
    only = call(client, options, "table.profile", {"table": "demo.orders", "columns": ["status"], "sample": 500})
    assert [c["column"] for c in only["columns"]] == ["status"] and only["rows"] == 500 and only["sampled"] is True
    for body, text in [
        ({"table": "demo.nope"}, "does not exist or is not visible"),
        ({"table": "demo.orders", "columns": ["nope"]}, "no column 'nope'"),
        ({"table": "demo.orders", "colour": "red"}, "unknown field"),
    ]:
        with pytest.raises(Exception) as error:
            call(client, options, "table.profile", body)
        assert text in str(error.value), str(error.value)
    _, agent_options, agent_conn = people["EU"]
    with pytest.raises(Exception) as error:
        call(people["EU"][0], agent_options, "table.profile", {"table": "demo.orders"})
    assert "does not exist or is not visible" in str(error.value)
    with pytest.raises(Exception) as error:
        read(agent_conn, "SELECT * FROM airlock.profile('demo.orders')")
    assert "does not exist or is not visible" in str(error.value)
    # Other table functions stay closed to agents.
    with pytest.raises(Exception) as error:
        read(agent_conn, "SELECT * FROM range(10)")
    assert "not available" in str(error.value)


def test_a_profile_counts_once_against_the_agents_rate_limit(server):
    """A profile runs many queries inside, but is one request against the
    caller's limits: with two queries a minute, two profiles of a
    many-column table pass (their inner queries alone would not) and the third is
    refused."""
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(client, admin, "grant.set", {"swarm": "rationed", "tables": {"demo.customers": {}}, "limits": {"per_minute": 2}})
    try:
        token = call(client, admin, "token.create", {"kind": "agent", "name": "rationed_1", "swarm": "rationed"})["token"]
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
        agent = server.flight_client()
        # Cached or not, each profile is one query against the limit.
        first = call(agent, options, "table.profile", {"table": "demo.customers"})
        assert len(first["columns"]) > 2
        second = call(agent, options, "table.profile", {"table": "demo.customers", "columns": ["region"]})
        assert [c["column"] for c in second["columns"]] == ["region"]
        # pyarrow raises ArrowInvalid for RESOURCE_EXHAUSTED.
        with pytest.raises(Exception) as error:
            call(agent, options, "table.profile", {"table": "demo.customers", "columns": ["email"]})
        assert "resource exhausted" in str(error.value) and "rate limit of 2 queries per minute" in str(error.value)
    finally:
        call(client, admin, "grant.delete", {"swarm": "rationed"})
