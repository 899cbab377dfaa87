"""Exports and jobs through pyarrow.flight (actions, DoGet) and ADBC (SQL
over the exported artifact): query.export writes a query's result as an
artifact under the caller's policy and row cap, as a durable job that
job.get / job.list / job.cancel follow."""

import base64
import io
import json
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import call



class Caller:
    def __init__(self, server, options):
        self.client = server.flight_client()
        self.options = options
        self.uri = server.uri

    def act(self, name, body=None):
        return call(self.client, self.options, name, body or {})

    def download(self, name):
        got = self.act("artifact.get", {"name": name})
        return got, self.client.do_get(flight.Ticket(base64.b64decode(got["ticket"])), self.options).read_all()


@pytest.fixture(scope="module")
def callers(server):
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(
        client,
        admin,
        "grant.set",
        {
            "swarm": "exporters",
            "tables": {
                "demo.customers": {"row_filter": "region = agent_attr('region')", "columns": {"email": {"mask": "'***'"}}},
                "demo.orders": {},
            },
            "limits": {"max_rows": 5000},
        },
    )
    out = {"admin": Caller(server, admin)}
    for name in ("e1", "e2"):
        token = call(client, admin, "token.create", {"kind": "agent", "name": name, "swarm": "exporters", "attributes": {"region": "EU"}})["token"]
        caller = Caller(server, flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())]))
        caller.token = token
        out[name] = caller
    yield out
    call(client, admin, "grant.delete", {"swarm": "exporters"})


def wait_for(caller, job_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = caller.act("job.get", {"job_id": job_id})
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_a_parquet_export_holds_exactly_the_callers_rows(callers):
    e1 = callers["e1"]
    job = e1.act("query.export", {"sql": "SELECT * FROM demo.customers", "format": "parquet", "name": "eu_customers", "wait": True})
    assert job["state"] == "succeeded" and job["kind"] == "export" and job["owner"] == "agent:e1@exporters"
    result = job["result"]
    conn = flightsql.connect(e1.uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {e1.token}"}, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM demo.customers ORDER BY customer_id")
        expected = cur.fetch_arrow_table()
        cur.execute("SELECT * FROM artifacts.eu_customers ORDER BY customer_id")
        exported = cur.fetch_arrow_table()
    conn.close()
    assert result["rows"] == expected.num_rows == job["rows"] and result["truncated"] is False
    assert exported.to_pylist() == expected.to_pylist()
    assert set(exported.column("region").to_pylist()) == {"EU"} and set(exported.column("email").to_pylist()) == {"***"}
    got, _ = e1.download("eu_customers")
    assert got["id"] == result["artifact_id"] and got["size"] == result["bytes"] == job["bytes"]


def test_csv_and_jsonl_exports_round_trip(callers):
    e1 = callers["e1"]
    sql = "SELECT order_id, status, amount FROM demo.orders WHERE order_id <= 1500 ORDER BY order_id"
    for fmt in ("csv", "jsonl"):
        job = e1.act("query.export", {"sql": sql, "format": fmt, "name": f"orders_{fmt}", "wait": True})
        assert job["state"] == "succeeded", job
        got, table = e1.download(f"orders_{fmt}")
        data = b"".join(table.column("chunk").to_pylist())
        assert got["kind"] == "bytes" and len(data) == got["size"]
        if fmt == "csv":
            assert got["content_type"] == "text/csv"
            parsed = pacsv.read_csv(io.BytesIO(data)).to_pylist()
            assert [r["order_id"] for r in parsed] == list(range(1, 1501))
            assert data.startswith(b'"order_id","status","amount"\n') or data.startswith(b"order_id,status,amount\n")
        else:
            lines = [json.loads(line) for line in data.decode().splitlines()]
            assert [r["order_id"] for r in lines] == list(range(1, 1501))
            assert {"order_id", "status", "amount"} == set(lines[0])


def test_the_row_cap_applies_and_is_reported(callers):
    job = callers["e1"].act("query.export", {"sql": "SELECT * FROM demo.orders", "format": "parquet", "name": "capped", "wait": True})
    assert job["state"] == "succeeded" and job["result"]["rows"] == 5000 and job["result"]["truncated"] is True


def test_jobs_run_in_the_background_and_are_visible_to_their_owner(callers):
    e1, e2, admin = callers["e1"], callers["e2"], callers["admin"]
    started = e1.act("query.export", {"sql": "SELECT * FROM demo.orders WHERE amount > 100", "format": "jsonl", "name": "background"})
    assert started["state"] == "running"
    ended = wait_for(e1, started["job_id"])
    assert ended["state"] == "succeeded" and ended["rows"] > 0 and ended["bytes"] > 0
    mine = [j["job_id"] for j in e1.act("job.list")["jobs"]]
    assert started["job_id"] in mine
    assert started["job_id"] not in [j["job_id"] for j in e2.act("job.list")["jobs"]]
    with pytest.raises(pa.ArrowKeyError):
        e2.act("job.get", {"job_id": started["job_id"]})
    assert admin.act("job.get", {"job_id": started["job_id"]})["owner"] == "agent:e1@exporters"
    syncs = admin.act("job.list", {"kind": "sync"})["jobs"]
    assert syncs and all(j["kind"] == "sync" and "table" in j for j in syncs)
    assert admin.act("job.get", {"job_id": syncs[0]["job_id"]})["table"] == syncs[0]["table"]
    assert e1.act("job.list", {"kind": "sync"})["jobs"] == []
    with pytest.raises((flight.FlightError, pa.ArrowException)) as ended_already:
        e1.act("job.cancel", {"job_id": started["job_id"]})
    assert "already succeeded" in str(ended_already.value)


def test_a_cancelled_export_leaves_no_artifact(callers):
    admin = callers["admin"]
    job = admin.act(
        "query.export",
        {"sql": "SELECT count(*) AS n FROM demo.orders a, demo.orders b, demo.orders c", "format": "parquet", "name": "never"},
    )
    time.sleep(0.5)
    admin.act("job.cancel", {"job_id": job["job_id"]})
    ended = wait_for(admin, job["job_id"], timeout=30)
    assert ended["state"] == "cancelled", ended
    names = [a["name"] for a in admin.act("artifact.list", {"limit": 1000})["artifacts"]]
    assert "never" not in names


def test_bad_exports_are_refused_before_a_job_starts(callers):
    e1 = callers["e1"]
    before = len(e1.act("job.list", {"limit": 500})["jobs"])
    for body, text in [
        ({"sql": "SELEC 1", "format": "csv", "name": "x"}, "syntax error"),
        ({"sql": "SELECT * FROM secret.vault", "format": "csv", "name": "x"}, "does not exist or is not visible"),
        ({"sql": "SELECT 1", "format": "csv", "name": "bad-name"}, "invalid artifact name"),
        ({"sql": "SELECT 1", "format": "xlsx", "name": "x"}, "unknown variant"),
        ({"sql": "DROP TABLE demo.orders", "format": "csv", "name": "x"}, "DROP TABLE"),
    ]:
        with pytest.raises(Exception) as error:
            e1.act("query.export", body)
        assert text in str(error.value), (body, str(error.value))
    assert len(e1.act("job.list", {"limit": 500})["jobs"]) == before
