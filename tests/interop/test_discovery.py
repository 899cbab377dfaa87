"""Discovery in SQL through the stock ADBC driver: SHOW TABLES, DESCRIBE,
SHOW COLUMNS and information_schema answer from the caller's own catalog,
so two swarms with different grants see different worlds, and neither sees
a table it was not granted or a column it was denied."""

import json

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import call


# demo.customers as the sales swarm sees it: `region` denied, `email` masked.
VISIBLE = ["customer_id", "name", "email", "signup_date", "lifetime_value"]



@pytest.fixture(scope="module")
def swarms(server):
    client, headers = server.admin_headers()
    options = flight.FlightCallOptions(headers=headers)
    call(
        client,
        options,
        "grant.set",
        {
            "swarm": "disc_sales",
            "tables": {
                "demo.customers": {"columns": {"email": {"mask": "'***'"}, "region": "deny"}},
            },
        },
    )
    call(client, options, "grant.set", {"swarm": "disc_ops", "tables": {"demo.orders": {}}})
    conns = {}
    for swarm in ("disc_sales", "disc_ops"):
        token = call(client, options, "token.create", {"kind": "agent", "name": "a1", "swarm": swarm})["token"]
        conns[swarm] = flightsql.connect(
            server.uri,
            db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
            autocommit=True,
        )
    yield conns
    for conn in conns.values():
        conn.close()
    for swarm in ("disc_sales", "disc_ops"):
        call(client, options, "grant.delete", {"swarm": swarm})


def rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def test_show_tables_lists_only_granted_tables(swarms):
    sales = [(r["table_schema"], r["table_name"]) for r in rows(swarms["disc_sales"], "SHOW TABLES")]
    ops = [(r["table_schema"], r["table_name"]) for r in rows(swarms["disc_ops"], "SHOW TABLES")]
    # airlock's context tables are everyone's (their rows are filtered per caller).
    context = {("airlock", t) for t in ("context_tables", "context_columns", "instructions", "golden_sql")}
    assert [t for t in sales if t not in context] == [("demo", "customers")]
    assert [t for t in ops if t not in context] == [("demo", "orders")]
    assert context <= set(sales) and context <= set(ops)


def test_describe_and_show_columns_hide_denied_columns_and_keep_masked_ones(swarms):
    described = rows(swarms["disc_sales"], "DESCRIBE demo.customers")
    assert [r["column_name"] for r in described] == VISIBLE
    assert {r["column_name"]: r["data_type"] for r in described}["email"] == "Utf8"
    shown = rows(swarms["disc_sales"], "SHOW COLUMNS FROM demo.customers")
    assert [r["column_name"] for r in shown] == VISIBLE
    # The masked column's values are masked when read, as always.
    emails = {r["email"] for r in rows(swarms["disc_sales"], "SELECT email FROM demo.customers LIMIT 5")}
    assert emails == {"***"}


def test_information_schema_is_the_callers_catalog(swarms):
    columns = rows(
        swarms["disc_sales"],
        "SELECT table_name, column_name, ordinal_position, is_nullable FROM information_schema.columns "
        "WHERE table_schema <> 'airlock' ORDER BY table_name, ordinal_position",
    )
    assert [(r["table_name"], r["column_name"]) for r in columns] == [
        ("customers", "customer_id"),
        ("customers", "name"),
        ("customers", "email"),
        ("customers", "signup_date"),
        ("customers", "lifetime_value"),
    ]
    assert [r["ordinal_position"] for r in columns] == [1, 2, 3, 4, 5]
    ops_tables = rows(swarms["disc_ops"], "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'airlock'")
    assert ops_tables == [{"table_schema": "demo", "table_name": "orders"}]


@pytest.mark.parametrize(
    "swarm,sql,expected",
    [
        ("disc_ops", "DESCRIBE demo.customers", "does not exist or is not visible"),
        ("disc_ops", "SHOW COLUMNS FROM demo.customers", "does not exist or is not visible"),
        ("disc_sales", "DESCRIBE demo.orders", "does not exist or is not visible"),
        ("disc_sales", "SELECT * FROM information_schema.df_settings", "not found"),
        ("disc_sales", "SELECT * FROM information_schema.routines", "not found"),
    ],
)
def test_what_is_not_granted_does_not_exist(swarms, swarm, sql, expected):
    with pytest.raises(adbc_driver_manager.Error) as refused:
        rows(swarms[swarm], sql)
    assert expected in str(refused.value), str(refused.value)


@pytest.mark.parametrize("sql,named", [("SHOW ALL", "SHOW ALL"), ("SET datafusion.execution.batch_size = 1", "SET"), ("SHOW FUNCTIONS", "SHOW FUNCTIONS")])
def test_settings_stay_out_of_reach(swarms, sql, named):
    with pytest.raises(adbc_driver_manager.Error) as refused:
        rows(swarms["disc_sales"], sql)
    assert named.lower() in str(refused.value).lower(), str(refused.value)
