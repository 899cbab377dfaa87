"""Replication against the real binary: a sync killed with SIGKILL leaves the replica whole."""

import json
import signal
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

from conftest import PASSWORD, Airlock


def call(server, name, body):
    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])
    result = next(client.do_action(flight.Action(name, json.dumps(body).encode()), options))
    return json.loads(result.body.to_pybytes())


def count(server, table):
    with flightsql.connect(server.uri, db_kwargs={"username": "admin", "password": PASSWORD}) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*), sum(id) FROM {table}")
            return cur.fetchone()


def wait(server, job_id, states=("succeeded", "failed", "cancelled")):
    for _ in range(2400):
        status = call(server, "sync.status", {"job_id": job_id})
        if status["state"] in states:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_sync_killed_mid_load_leaves_the_old_replica_and_an_interrupted_job(airlock_bin, tmp_path):
    source = tmp_path / "src" / "big.csv"
    source.parent.mkdir()
    source.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(1000)))
    data = tmp_path / "data"
    server = Airlock(airlock_bin, data, args=("serve",))
    call(server, "table.register", {"name": "s.big", "source": str(source), "every": "1h"})
    first = call(server, "sync.start", {"table": "s.big"})["job_id"]
    assert wait(server, first)["state"] == "succeeded"
    assert count(server, "s.big") == (1000, sum(range(1000)))

    # A source big enough that the load is still running when the process dies.
    with open(source, "w") as f:
        f.write("id,name\n")
        for i in range(3_000_000):
            f.write(f"{i},name-{i}\n")
    job = call(server, "sync.start", {"table": "s.big"})["job_id"]
    for _ in range(1000):
        if call(server, "sync.status", {"job_id": job})["rows"] > 0:
            break
        time.sleep(0.01)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    server.log.close()

    restarted = Airlock(airlock_bin, data, args=("serve",))
    try:
        assert count(restarted, "s.big") == (1000, sum(range(1000)))
        status = call(restarted, "sync.status", {"job_id": job})
        assert status["state"] == "failed" and status["error"].startswith("interrupted"), status
        # Scheduled, so it is retried at once as a recovery run, and completes.
        jobs = []
        for _ in range(200):
            jobs = call(restarted, "sync.jobs", {"table": "s.big"})["jobs"]
            if jobs and jobs[0]["trigger"] == "recovery":
                break
            time.sleep(0.05)
        assert jobs[0]["trigger"] == "recovery" and jobs[0]["attempt"] == 2, jobs[0]
        recovered = wait(restarted, jobs[0]["job_id"])
        assert recovered["state"] == "succeeded", recovered
        assert count(restarted, "s.big") == (3_000_000, sum(range(3_000_000)))
    finally:
        restarted.stop()
