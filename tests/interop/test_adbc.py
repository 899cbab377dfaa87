"""ADBC Flight SQL driver through its DB-API, and pandas/polars on top."""

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import PASSWORD


@pytest.fixture()
def conn(server):
    connection = flightsql.connect(server.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
    yield connection
    connection.close()


def demo_file(server, name):
    return pq.read_table(server.data_dir / "demo" / f"{name}.parquet")


def test_fetch_arrow_table_matches_the_source_files(server, conn):
    with conn.cursor() as cur:
        cur.execute("SELECT region, sum(amount) AS total, count(*) AS n FROM demo.orders GROUP BY region ORDER BY region")
        table = cur.fetch_arrow_table()
    assert table.schema.field("total").type == pa.decimal128(22, 2) or pa.types.is_decimal(table.schema.field("total").type)
    # Independent answer: pyarrow over the Parquet file the demo loaded.
    source = demo_file(server, "orders")
    expected = source.group_by("region").aggregate([("amount", "sum"), ("amount", "count")]).sort_by("region")
    assert table.column("region").to_pylist() == expected.column("region").to_pylist()
    assert [str(v) for v in table.column("total").to_pylist()] == [str(v) for v in expected.column("amount_sum").to_pylist()]
    assert table.column("n").to_pylist() == expected.column("amount_count").to_pylist()


def test_types_survive_the_round_trip(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM demo.orders ORDER BY order_id LIMIT 5")
        table = cur.fetch_arrow_table()
    schema = table.schema
    assert schema.field("order_id").type == pa.int64()
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("ordered_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("status").type == pa.string()
    assert table.column("order_id").to_pylist() == [1, 2, 3, 4, 5]


def test_pandas_read_sql(server, conn):
    df = pd.read_sql("SELECT customer_id, name, region FROM demo.customers WHERE region = 'EU' ORDER BY customer_id", conn)
    source = demo_file(server, "customers").to_pandas()
    expected = source[source.region == "EU"].sort_values("customer_id")
    assert list(df.columns) == ["customer_id", "name", "region"]
    assert df.customer_id.tolist() == expected.customer_id.tolist()
    assert df.name.tolist() == expected.name.tolist()


def test_polars_read_database(server, conn):
    df = pl.read_database("SELECT status, count(*) AS n FROM demo.orders GROUP BY status ORDER BY status", connection=conn)
    source = pl.from_arrow(demo_file(server, "orders"))
    expected = source.group_by("status").len().sort("status")
    assert df["status"].to_list() == expected["status"].to_list()
    assert df["n"].to_list() == expected["len"].to_list()


def test_parameters_bind_through_prepared_statements(server, conn):
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM demo.customers WHERE customer_id = ?", parameters=(42,))
        first = cur.fetch_arrow_table()
        cur.execute("SELECT count(*) AS n FROM demo.orders WHERE region = ? AND amount > ?", parameters=("EU", 500))
        count = cur.fetch_arrow_table()
    customers = demo_file(server, "customers")
    expected_name = customers.filter(pc.equal(customers["customer_id"], 42))["name"].to_pylist()
    assert first.column("name").to_pylist() == expected_name
    orders = demo_file(server, "orders")
    mask = pc.and_(pc.equal(orders["region"], "EU"), pc.greater(orders["amount"], pa.scalar(500, pa.decimal128(12, 2))))
    assert count.column("n").to_pylist() == [pc.sum(mask.cast(pa.int64())).as_py()]


def test_get_objects_lists_catalog_schemas_tables_and_columns(conn):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    assert "airlock" in catalogs
    schemas = {s["db_schema_name"]: s for s in catalogs["airlock"]["catalog_db_schemas"]}
    assert "demo" in schemas
    tables = {t["table_name"]: t for t in schemas["demo"]["db_schema_tables"]}
    assert set(tables) == {"customers", "orders"}
    columns = [c["column_name"] for c in tables["orders"]["table_columns"]]
    assert columns == ["order_id", "customer_id", "ordered_at", "status", "amount", "region"]
    amount = [c for c in tables["orders"]["table_columns"] if c["column_name"] == "amount"][0]
    assert amount["xdbc_type_name"] == "DECIMAL(12,2)"


def test_get_table_schema(conn):
    schema = conn.adbc_get_table_schema("customers", db_schema_filter="demo")
    assert schema.names == ["customer_id", "name", "email", "region", "signup_date", "lifetime_value"]
    assert schema.field("signup_date").type == pa.date32()
    assert schema.field("lifetime_value").type == pa.decimal128(12, 2)
    assert schema.field("lifetime_value").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"DECIMAL(12,2)"


def test_empty_results_keep_their_schema(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT order_id, amount FROM demo.orders WHERE order_id < 0")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 0
    assert table.schema.names == ["order_id", "amount"]
    assert table.schema.field("amount").type == pa.decimal128(12, 2)


def test_errors_are_precise_and_the_connection_survives(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as bad_sql:
            cur.execute("SELECT * FROM demo.orders WHERE")
        assert "SQL syntax error" in str(bad_sql.value)
        with pytest.raises(adbc_driver_manager.Error) as ddl:
            cur.execute("DROP TABLE demo.orders")
        assert "DROP TABLE is not allowed" in str(ddl.value)
        with pytest.raises(adbc_driver_manager.Error) as missing:
            cur.execute("SELECT * FROM demo.nope")
        assert "'demo.nope' does not exist" in str(missing.value)
        cur.execute("SELECT count(*) AS n FROM demo.orders")
        assert cur.fetch_arrow_table().column("n").to_pylist() == [20000]


def test_reused_plans_keep_now_moving_and_follow_grant_changes(server, conn):
    """Plans are reused per principal and catalog (a prepared statement is planned once);
    what must not be frozen with them is not."""
    import time

    from adbc_driver_flightsql import DatabaseOptions
    import pyarrow.flight as flight

    from conftest import call

    def run(connection, sql):
        with connection.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    # now() is the time of each execution, not of the first plan.
    first = run(conn, "SELECT now() AS t, count(*) AS n FROM demo.orders")
    time.sleep(0.05)
    second = run(conn, "SELECT now() AS t, count(*) AS n FROM demo.orders")
    assert second["t"][0].as_py() > first["t"][0].as_py()
    assert second["n"].to_pylist() == first["n"].to_pylist()

    # A sample without REPEATABLE draws a new seed each time.
    sample = "SELECT order_id FROM demo.orders TABLESAMPLE BERNOULLI (5 PERCENT)"
    assert run(conn, sample)["order_id"].to_pylist() != run(conn, sample)["order_id"].to_pylist()

    # An agent's reused plan follows a change of its grant.
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(client, admin, "grant.set", {"swarm": "plancache", "tables": {"demo.orders": {}}})
    token = call(client, admin, "token.create", {"kind": "agent", "name": "plancache_a1", "swarm": "plancache"})["token"]
    agent = flightsql.connect(server.uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"})
    try:
        count = "SELECT count(*) AS n FROM demo.orders"
        everything = run(agent, count)["n"][0].as_py()
        assert run(agent, count)["n"][0].as_py() == everything
        call(client, admin, "grant.set", {"swarm": "plancache", "tables": {"demo.orders": {"row_filter": "region = 'EU'"}}})
        orders = demo_file(server, "orders")
        eu = pc.sum(pc.equal(orders["region"], "EU").cast(pa.int64())).as_py()
        assert run(agent, count)["n"][0].as_py() == eu < everything
    finally:
        agent.close()
        call(client, admin, "grant.delete", {"swarm": "plancache"})
