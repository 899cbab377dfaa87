"""Snowflake sources against the fakesnow emulator behind tests/interop/fakesnow_shim.py.

The shim makes every query long-running (two getResultUrl polls) and splits results over
500 rows into chunks (gzipped every other one, behind chunk headers), so these tests drive
airlock's Snowflake client through the paths real Snowflake takes. Data is written with the
stock snowflake-connector-python.
"""

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import snowflake.connector

from conftest import PASSWORD, Airlock

SHIM = Path(__file__).with_name("fakesnow_shim.py")
REJECTED_PASSWORD = "wrong-password"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    out = tmp_path_factory.mktemp("fakesnow") / "port.txt"
    with open(out, "w") as stdout:
        process = subprocess.Popen(
            [sys.executable, str(SHIM), "--chunk-rows", "500", "--pending-polls", "2",
             "--reject-password", REJECTED_PASSWORD],
            stdout=stdout, stderr=subprocess.STDOUT,
        )
    port = None
    for _ in range(300):
        text = out.read_text()
        if "FAKESNOW_PORT=" in text:
            port = int(text.split("FAKESNOW_PORT=")[1].split()[0])
            break
        if process.poll() is not None:
            raise RuntimeError(f"fakesnow exited:\n{text}")
        time.sleep(0.1)
    assert port, out.read_text()
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def snow(emulator):
    host, port = emulator.removeprefix("http://").split(":")
    conn = snowflake.connector.connect(
        user="loader", password="x", account="fakesnow", host=host, port=int(port), protocol="http",
        database="AIRDB", schema="PUB",
    )
    yield conn.cursor()
    conn.close()


@pytest.fixture(scope="module")
def airlock(airlock_bin, emulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("airlock-snowflake")
    config = tmp / "airlock.toml"
    config.write_text(
        f"""
[sync]
retry_backoff = "100ms"

[snowflake.emu]
account = "fakesnow"
user = "SYNC_USER"
role = "SYNC_ROLE"
warehouse = "WH"
database = "AIRDB"
password_env = "EMU_SNOWFLAKE_PASSWORD"
url = "{emulator}"
"""
    )
    server = Airlock(airlock_bin, tmp / "data", args=("serve", "--config", str(config)),
                     extra_env={"EMU_SNOWFLAKE_PASSWORD": "not-a-real-secret-42"})
    yield server
    server.stop()
    # The password never reaches the log.
    assert "not-a-real-secret-42" not in server.log_path.read_text()


class Admin:
    def __init__(self, server):
        self.client = flight.FlightClient(server.uri)
        self.options = flight.FlightCallOptions(headers=[self.client.authenticate_basic_token("admin", PASSWORD)])
        self.uri = server.uri

    def call(self, name, body):
        result = next(self.client.do_action(flight.Action(name, json.dumps(body).encode()), self.options))
        return json.loads(result.body.to_pybytes())

    def sync(self, table):
        job = self.call("sync.start", {"table": table})["job_id"]
        for _ in range(1200):
            status = self.call("sync.status", {"job_id": job})
            if status["state"] in ("succeeded", "failed", "cancelled"):
                return status
            time.sleep(0.05)
        raise AssertionError("sync did not finish")

    def query(self, sql) -> pa.Table:
        with flightsql.connect(self.uri, db_kwargs={"username": "admin", "password": PASSWORD}) as conn:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()


def test_every_type_replicates_with_its_precision(airlock, snow):
    snow.execute(
        "create or replace table AIRDB.PUB.TYPES (ID number(38,0), AMOUNT number(12,2), BIG number(20,0), "
        "F float, NAME varchar, FLAG boolean, D date, T time, TS_NTZ timestamp_ntz, TS_TZ timestamp_tz, "
        "V variant, B binary)"
    )
    snow.execute(
        "insert into AIRDB.PUB.TYPES select 1, 1234567890.12, 12345678901234567890, 1.5, 'zoë', true, "
        "'0001-01-01', '23:59:59.999999', '9999-12-31 23:59:59.999999', '2024-01-15 10:30:00.25+05:30', "
        "parse_json('{\"a\": [1, 2]}'), to_binary('CAFE', 'HEX')"
    )
    snow.execute(
        "insert into AIRDB.PUB.TYPES select -9223372036854775807, -9999999999.99, null, null, null, null, "
        "null, null, null, null, null, null"
    )
    admin = Admin(airlock)
    registered = admin.call("table.register", {"name": "snow.types", "source": "snowflake://emu/AIRDB.PUB.TYPES"})
    assert registered["source"] == "snowflake://emu/AIRDB.PUB.TYPES"
    # Upper-case Snowflake names become lower-case replica names (airlock folds unquoted names).
    types = {c["name"]: c["type"] for c in registered["columns"]}
    assert types["amount"] == "DECIMAL(12,2)" and types["id"] == "DECIMAL(38,0)", types
    assert types["ts_tz"] == "TIMESTAMPTZ" and types["ts_ntz"] == "TIMESTAMP", types
    status = admin.sync("snow.types")
    assert status["state"] == "succeeded", status
    table = admin.query("SELECT * FROM snow.types ORDER BY ID DESC")  # ID folds to id
    schema = table.schema
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("big").type == pa.decimal128(20, 0)
    assert schema.field("f").type == pa.float64()
    assert schema.field("d").type == pa.date32()
    assert schema.field("t").type == pa.time64("us")
    assert schema.field("ts_ntz").type == pa.timestamp("us")
    assert schema.field("ts_tz").type == pa.timestamp("us", tz="UTC")
    assert schema.field("b").type == pa.binary()
    first, second = table.to_pylist()
    assert first["amount"] == Decimal("1234567890.12")
    assert first["big"] == Decimal("12345678901234567890")
    assert first["name"] == "zoë" and first["flag"] is True
    assert first["d"] == dt.date(1, 1, 1)
    assert first["t"] == dt.time(23, 59, 59, 999999)
    assert first["ts_ntz"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert first["ts_tz"] == dt.datetime(2024, 1, 15, 5, 0, 0, 250000, tzinfo=dt.timezone.utc)
    assert json.loads(first["v"]) == {"a": [1, 2]}
    assert first["b"] == bytes.fromhex("CAFE")
    assert second["id"] == Decimal("-9223372036854775807")
    assert second["amount"] == Decimal("-9999999999.99")
    assert all(second[c] is None for c in ["big", "f", "name", "flag", "d", "t", "ts_ntz", "ts_tz", "v", "b"])


def test_incremental_and_append_follow_the_watermark_through_chunked_results(airlock, snow, emulator):
    snow.execute("create or replace table AIRDB.PUB.ORDERS (ID number(10,0), STATUS varchar, UPDATED_AT timestamp_ntz)")
    snow.execute(
        "insert into AIRDB.PUB.ORDERS select i, 'placed', dateadd(minute, i, '2026-01-01'::timestamp_ntz) "
        "from (select seq4() + 1 as i from table(generator(rowcount => 2000)))"
    )
    admin = Admin(airlock)
    admin.call("table.register", {
        "name": "snow.orders", "source": "snowflake://emu/AIRDB.PUB.ORDERS", "strategy": "incremental",
        "primary_key": ["id"], "cursor": "updated_at", "overlap": "1m",
    })
    before = json.load(urllib.request.urlopen(f"{emulator}/_control/stats"))
    first = admin.sync("snow.orders")
    assert first["state"] == "succeeded", first
    assert first["rows"] == 2000
    after = json.load(urllib.request.urlopen(f"{emulator}/_control/stats"))
    # 2000 rows in chunks of 500: the inline first and three downloaded; every query polled.
    assert after["chunks_served"] - before["chunks_served"] == 3, (before, after)
    assert after["polls"] > before["polls"]

    snow.execute("update AIRDB.PUB.ORDERS set STATUS = 'shipped', UPDATED_AT = '2026-02-01' where ID <= 10")
    snow.execute("insert into AIRDB.PUB.ORDERS values (2001, 'placed', '2026-02-01 00:00:01')")
    second = admin.sync("snow.orders")
    assert second["state"] == "succeeded", second
    assert second["watermark_before"] == first["watermark_after"]
    assert second["watermark_after"] == "2026-02-01T00:00:01"
    assert second["rows"] == 13, second  # 11 changed + the 2 rows within the 1 minute overlap
    counts = admin.query(
        "SELECT count(*) AS n, count(DISTINCT ID) AS ids, sum(CASE WHEN STATUS = 'shipped' THEN 1 ELSE 0 END) AS shipped "
        "FROM snow.orders"
    ).to_pylist()
    assert counts == [{"n": 2001, "ids": 2001, "shipped": 10}]

    admin.call("table.register", {
        "name": "snow.orders_log", "source": "snowflake://emu/AIRDB.PUB.ORDERS", "strategy": "append", "cursor": "id",
    })
    assert admin.sync("snow.orders_log")["rows"] == 2001
    snow.execute("insert into AIRDB.PUB.ORDERS values (2002, 'placed', '2026-02-02')")
    appended = admin.sync("snow.orders_log")
    assert appended["rows"] == 1 and appended["table_rows"] == 2002, appended


def test_schema_drift_and_source_errors(airlock, snow, emulator):
    snow.execute("create or replace table AIRDB.PUB.DRIFT (ID int, A varchar)")
    snow.execute("insert into AIRDB.PUB.DRIFT values (1, 'x'), (2, 'y')")
    admin = Admin(airlock)
    admin.call("table.register", {"name": "snow.drift", "source": "snowflake://emu/AIRDB.PUB.DRIFT"})
    assert admin.sync("snow.drift")["state"] == "succeeded"

    snow.execute("alter table AIRDB.PUB.DRIFT add column EXTRA number(12,3)")
    added = admin.sync("snow.drift")
    assert added["state"] == "succeeded" and added["added_columns"] == ["extra"], added
    assert admin.query("SELECT * FROM snow.drift ORDER BY id").schema.field("extra").type == pa.decimal128(12, 3)

    snow.execute("alter table AIRDB.PUB.DRIFT drop column A")
    failed = admin.sync("snow.drift")
    assert failed["state"] == "failed" and "removed a" in failed["error"], failed
    assert admin.query("SELECT count(*) AS n FROM snow.drift").to_pylist() == [{"n": 2}]

    # A missing table is refused at registration, precisely.
    with pytest.raises((flight.FlightError, pa.ArrowException)) as refused:
        admin.call("table.register", {"name": "snow.none", "source": "snowflake://emu/AIRDB.PUB.NO_SUCH"})
    assert "AIRDB.PUB.NO_SUCH does not exist" in str(refused.value)

    # Transient failures (HTTP 503 past the client's own retries) are retried by the job.
    urllib.request.urlopen(urllib.request.Request(f"{emulator}/_control/fail?n=6&status=503", method="POST"))
    retried = admin.sync("snow.orders")
    assert retried["state"] == "succeeded", retried
    assert retried["attempt"] == 2, retried


def test_sources_list_tables_shows_counts(airlock, snow):
    snow.execute("create or replace table AIRDB.PUB.LISTED (ID int)")
    snow.execute("insert into AIRDB.PUB.LISTED values (1), (2), (3)")
    admin = Admin(airlock)
    listed = admin.call("sources.list_tables", {"connection": "emu", "database": "AIRDB", "schema": "PUB"})
    by_name = {t["table"]: t for t in listed["tables"]}
    assert by_name["AIRDB.PUB.LISTED"]["rows"] == 3, listed
    assert "bytes" in by_name["AIRDB.PUB.LISTED"]
    with pytest.raises((flight.FlightError, pa.ArrowException)) as refused:
        admin.call("sources.list_tables", {"connection": "nope", "database": "AIRDB", "schema": "PUB"})
    assert "no connection named 'nope'" in str(refused.value)
