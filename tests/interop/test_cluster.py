"""Nodes on shared metadata: `--meta-url` puts tokens, grants and
registrations in Postgres (a throwaway cluster of Debian's postgresql the
test starts), with artifacts in an object store (moto's S3 server). A node
started later with an empty data directory serves what the first stored.
Then three nodes on one Postgres and one bucket: one writer, replicas from
snapshots, revocations, limits, failover and one audit trail."""

import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import boto3
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions
from google.protobuf import any_pb2

from conftest import PASSWORD, Airlock, call, free_port, wait_for_job

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}
SHARED = {"AIRLOCK_JWT_SECRET": "cluster-test-jwt-secret-0123456789abcdef",
          "AIRLOCK_SECRETS_KEY": "00" * 32}


POSTGRES = {}


def as_postgres(*command):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *map(str, command)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def postgres():
    directory = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    port = free_port()
    data = directory / "data"
    as_postgres(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    start = [PG_BIN / "pg_ctl", "-D", data, "-l", directory / "log", "-w", "-o",
             f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]
    as_postgres(*start)
    # For the test that takes Postgres away and brings it back.
    POSTGRES.update(stop=[PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], start=start)
    yield f"postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    """moto's S3 server with the bucket the nodes keep artifacts in."""
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                 region_name="us-east-1").create_bucket(Bucket="airlock")
    return s3_endpoint


def node_config(tmp_path, s3):
    config = tmp_path / "airlock.toml"
    config.write_text(f'[object_store]\naws_endpoint = "{s3}"\naws_allow_http = "true"\n\n'
                      '[artifacts]\nstore = "s3://airlock/artifacts"\n\n'
                      '[sync]\nsnapshot_store = "s3://airlock/snapshots"\n')
    return config


def refusal(airlock_bin, tmp_path, env, args=("serve",)):
    """The error of a node that must not start."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    environment.update({"AIRLOCK_DATA_DIR": str(tmp_path / "refused"), "AIRLOCK_HTTP_ADDR": "none",
                        "AIRLOCK_FLIGHT_ADDR": f"127.0.0.1:{free_port()}", "AIRLOCK_ADMIN_PASSWORD": PASSWORD,
                        **env})
    done = subprocess.run([airlock_bin, *args], env=environment, capture_output=True, timeout=120)
    assert done.returncode != 0, done
    return done.stderr.decode() + done.stdout.decode()


def test_a_node_on_shared_metadata_needs_shared_secrets_and_a_shared_artifact_store(airlock_bin, postgres, s3,
                                                                                    tmp_path):
    without_secrets = refusal(airlock_bin, tmp_path, {"AIRLOCK_META_URL": postgres})
    assert "AIRLOCK_JWT_SECRET and AIRLOCK_SECRETS_KEY" in without_secrets, without_secrets
    local_artifacts = refusal(airlock_bin, tmp_path, {"AIRLOCK_META_URL": postgres, **SHARED})
    assert "artifacts must live in a store every node reaches" in local_artifacts, local_artifacts
    artifacts_only = tmp_path / "artifacts-only.toml"
    artifacts_only.write_text(f'[object_store]\naws_endpoint = "{s3}"\naws_allow_http = "true"\n\n'
                              '[artifacts]\nstore = "s3://airlock/artifacts"\n')
    no_snapshots = refusal(airlock_bin, tmp_path, {"AIRLOCK_META_URL": postgres, **SHARED,
                                                   "AIRLOCK_CONFIG": str(artifacts_only), **CREDENTIALS})
    assert "set --snapshot-store" in no_snapshots, no_snapshots
    unreachable = refusal(airlock_bin, tmp_path, {
        "AIRLOCK_META_URL": f"postgres://postgres@127.0.0.1:{free_port()}/postgres?sslmode=disable", **SHARED,
        "AIRLOCK_CONFIG": str(node_config(tmp_path, s3)), **CREDENTIALS})
    assert "Postgres" in unreachable, unreachable


def test_a_second_node_serves_what_the_first_stored(airlock_bin, postgres, s3, tmp_path):
    env = {"AIRLOCK_META_URL": postgres, **SHARED, **CREDENTIALS}
    config = node_config(tmp_path, s3)
    first = Airlock(airlock_bin, tmp_path / "one", args=("serve", "--demo", "--config", str(config)), extra_env=env)
    try:
        client = first.flight_client()
        admin = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])
        call(client, admin, "grant.set", {"swarm": "ops", "tables": {"demo.orders": {"row_filter": "region = 'EU'"}}})
        agent = call(client, admin, "token.create", {"kind": "agent", "name": "a1", "swarm": "ops"})
    finally:
        first.stop()
    log = first.log_path.read_text()
    assert "metadata in Postgres" in log and "sslmode" not in log.split("metadata in Postgres")[1].split("\n")[0]

    # An empty data directory: everything but the replica comes from Postgres.
    second = Airlock(airlock_bin, tmp_path / "two", args=("serve", "--demo", "--config", str(config)), extra_env=env)
    try:
        client = second.flight_client()
        admin = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])
        grant = call(client, admin, "grant.get", {"swarm": "ops"})["grant"]
        assert grant["tables"]["demo.orders"]["row_filter"] == "region = 'EU'"
        tokens = {t["id"]: t for t in call(client, admin, "token.list")["tokens"]}
        assert tokens[agent["id"]]["active"], tokens
        # The token the first node issued works here, under the grant stored there.
        auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {agent['token']}"}
        with flightsql.connect(second.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT DISTINCT region FROM demo.orders")
            assert cur.fetch_arrow_table().to_pylist() == [{"region": "EU"}]
    finally:
        second.stop()


# --- Three nodes on one Postgres and one bucket ------------------------------------------------------------

ORDERS = 20_000
BOUND_SECONDS = 5  # the most a change may take to reach every node before the test fails


def readiness(node):
    try:
        with urllib.request.urlopen(f"{node.http_url}/readyz", timeout=5) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return json.loads(refused.read())
    except OSError:
        return None


def wait_until(what, predicate, seconds=60, every=0.02):
    """Polls until predicate() is truthy; returns (its value, seconds taken)."""
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s"
        time.sleep(every)


def put_orders(s3, batch):
    """The source every node's writer reads: Parquet files in the bucket."""
    table = pa.table({
        "id": pa.array(range(batch * ORDERS, (batch + 1) * ORDERS), pa.int64()),
        "region": pa.array(["EU" if i % 4 == 0 else "US" for i in range(ORDERS)]),
        "amount": pa.array([i % 1000 for i in range(ORDERS)], pa.decimal128(10, 2)),
    })
    put_parquet(s3, f"data/orders/part-{batch}.parquet", table)


def put_parquet(s3, key, table):
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    boto3.client("s3", endpoint_url=s3, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                 region_name="us-east-1").put_object(Bucket="airlock", Key=key, Body=buffer.getvalue())


class Cluster:
    def __init__(self, airlock_bin, postgres, s3, root):
        self.binary, self.root = airlock_bin, root
        self.env = {"AIRLOCK_META_URL": postgres, **SHARED, **CREDENTIALS}
        self.config = node_config(root, s3)
        self.nodes = [self.start(n) for n in range(3)]
        for node in self.nodes:
            wait_until("node ready", lambda node=node: (readiness(node) or {}).get("ready"))

    def start(self, n, port=None):
        return Airlock(self.binary, self.root / f"node{n}", args=("serve", "--config", str(self.config)),
                       extra_env=self.env, port=port)

    def roles(self):
        return [(readiness(node) or {}).get("role") for node in self.nodes]

    def writer(self):
        roles = self.roles()
        assert roles.count("writer") == 1, roles
        return self.nodes[roles.index("writer")]

    def readers(self):
        writer = self.writer()
        return [node for node in self.nodes if node is not writer]

    def admin(self, node):
        client = node.flight_client()
        return client, flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])

    def stop(self):
        for node in self.nodes:
            if node.process.poll() is None:
                node.stop()


@pytest.fixture(scope="module")
def cluster(airlock_bin, postgres, s3, tmp_path_factory):
    put_orders(s3, 0)
    nodes = Cluster(airlock_bin, postgres, s3, tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


def timings(**measured):
    """Propagation times, for the README's figures."""
    output = Path(os.environ.get("AIRLOCK_TEST_OUTPUT", "test-output"))
    output.mkdir(parents=True, exist_ok=True)
    path = output / "cluster-timings.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update(measured)
    path.write_text(json.dumps(known, indent=2))


def count(node, token, sql="SELECT count(*) AS n FROM sales.orders"):
    auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    with flightsql.connect(node.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()[0]["n"]


def test_one_writer_runs_the_sync_a_reader_started_and_every_node_serves_its_epoch(cluster):
    writer, readers = cluster.writer(), cluster.readers()
    reader = readers[0]
    client, admin = cluster.admin(reader)
    call(client, admin, "table.register", {"name": "sales.orders", "source": "s3://airlock/data/orders/*.parquet"})
    started = call(client, admin, "sync.start", {"table": "sales.orders"})
    job = wait_for_job(client, admin, started["job_id"])
    # Claimed and run by the writer, seen from the reader that started it.
    assert job["state"] == "succeeded", job
    assert job["node"] == readiness(writer)["node"], job
    epoch = job["epoch"]
    assert isinstance(epoch, int) and epoch >= 1, job
    call(client, admin, "grant.set", {"swarm": "ops", "tables": {"sales.orders": {}}})
    agent = call(client, admin, "token.create", {"kind": "agent", "name": "a1", "swarm": "ops"})
    for node in cluster.nodes:
        node_client, node_admin = cluster.admin(node)
        served = call(node_client, node_admin, "sync.wait_epoch",
                      {"table": "sales.orders", "epoch": epoch, "timeout_ms": 60000})
        assert served["epoch"] >= epoch and served["node"] == readiness(node)["node"], served
        assert count(node, agent["token"]) == ORDERS
        # Prometheus sees it too: the epoch each node serves, to spot one behind.
        scrape = urllib.request.Request(f"{node.http_url}/metrics",
                                        headers={"authorization": f"Bearer {admin_token(cluster, node)}"})
        with urllib.request.urlopen(scrape, timeout=10) as answer:
            metrics = answer.read().decode()
        assert f'airlock_replica_epoch{{table="sales.orders"}} {served["epoch"]}' in metrics, metrics[-2000:]
    # An epoch nobody published: a precise timeout, not a hang.
    with pytest.raises(flight.FlightTimedOutError, match="not yet"):
        call(client, admin, "sync.wait_epoch", {"table": "sales.orders", "epoch": epoch + 1000, "timeout_ms": 200})


def test_a_revocation_and_a_grant_change_reach_every_node_within_the_bound(cluster):
    first, *others = cluster.nodes
    client, admin = cluster.admin(first)
    call(client, admin, "grant.set", {"swarm": "ops", "tables": {"sales.orders": {}}})
    agent = call(client, admin, "token.create", {"kind": "agent", "name": "a2", "swarm": "ops"})
    for node in others:
        assert count(node, agent["token"]) == ORDERS

    # Only EU rows from now on, wherever the agent asks.
    call(client, admin, "grant.set", {"swarm": "ops", "tables": {"sales.orders": {"row_filter": "region = 'EU'"}}})
    grant_seconds = []
    for node in others:
        _, took = wait_until("grant change", lambda node=node: count(node, agent["token"]) == ORDERS // 4,
                             seconds=BOUND_SECONDS)
        grant_seconds.append(took)

    call(client, admin, "token.revoke", {"id": agent["id"]})
    revoke_seconds = []
    for node in others:
        def refused(node=node):
            try:
                count(node, agent["token"])
                return False
            except Exception as error:  # noqa: BLE001 - the driver's error names the status
                assert "revoked" in str(error).lower() or "unauthenticated" in str(error).lower(), error
                return True
        _, took = wait_until("revocation", refused, seconds=BOUND_SECONDS)
        revoke_seconds.append(took)
    timings(grant_change_seconds=max(grant_seconds), revocation_seconds=max(revoke_seconds))


def test_an_agents_max_concurrent_holds_across_nodes(cluster):
    first, second = cluster.nodes[0], cluster.nodes[1]
    client, admin = cluster.admin(first)
    call(client, admin, "grant.set", {"swarm": "busy", "tables": {"sales.orders": {}},
                                      "limits": {"max_concurrent": 1, "timeout_s": 4}})
    agent = call(client, admin, "token.create", {"kind": "agent", "name": "b1", "swarm": "busy"})
    outcome = {}

    def slow():
        try:  # a three-way self-join nothing can shortcut: runs until its 4 s timeout
            count(first, agent["token"], "SELECT count(*) AS n FROM sales.orders a, sales.orders b, "
                                         "sales.orders c WHERE a.id + b.id + c.id = -1")
        except Exception as error:  # noqa: BLE001
            outcome["slow"] = str(error)

    running = threading.Thread(target=slow)
    running.start()
    wait_until("the slow query running on the first node",
               lambda: call(client, admin, "query.running")["queries"], seconds=20)
    # The same agent on another node: its one slot is taken.
    with pytest.raises(Exception, match="already running across the cluster"):
        count(second, agent["token"])
    running.join(timeout=60)
    assert "timeout" in outcome.get("slow", "").lower() or "deadline" in outcome.get("slow", "").lower(), outcome
    # The slot came back when the query ended.
    wait_until("the slot given back", lambda: count(second, agent["token"]) > 0, seconds=BOUND_SECONDS)


def test_killing_the_writer_hands_over_and_nothing_committed_is_lost(cluster, s3):
    writer = cluster.writer()
    survivor = next(node for node in cluster.nodes if node is not writer)
    client, admin = cluster.admin(survivor)
    last = call(client, admin, "table.status", {"name": "sales.orders"})["last_success"]
    put_orders(s3, 1)
    call(client, admin, "sync.schedule", {"table": "sales.orders", "every": "2s"})
    # The writer syncs on its schedule: wait for a run that read both files.
    wait_until("a scheduled sync on the writer", lambda: call(client, admin, "table.status",
               {"name": "sales.orders"})["last_success"]["table_rows"] == 2 * ORDERS, seconds=60, every=0.2)
    committed = call(client, admin, "table.status", {"name": "sales.orders"})["last_success"]
    assert committed["epoch"] > last["epoch"] and committed["node"] == readiness(writer)["node"], committed

    writer.process.kill()  # kill -9: no goodbye, its advisory lock goes with its connection
    writer.process.wait()
    others = [node for node in cluster.nodes if node is not writer]
    new_writer, took_over = wait_until("a new writer", lambda: next(
        (node for node in others if (readiness(node) or {}).get("role") == "writer"), None), seconds=30)
    timings(writer_takeover_seconds=took_over)
    # The schedule goes on under the new writer, from what was committed.
    put_orders(s3, 2)
    after, _ = wait_until("a scheduled sync on the new writer", lambda: (lambda s: s if s["table_rows"] == 3 * ORDERS
                          and s["node"] == readiness(new_writer)["node"] else None)(
        call(client, admin, "table.status", {"name": "sales.orders"})["last_success"]), seconds=60, every=0.2)
    assert after["epoch"] > committed["epoch"], after
    call(client, admin, "sync.schedule", {"table": "sales.orders", "clear": True})

    # The killed node comes back on its data directory and port, as a reader.
    index = cluster.nodes.index(writer)
    cluster.nodes[index] = back = cluster.start(index, port=writer.port)
    wait_until("the old writer ready again", lambda: (readiness(back) or {}).get("ready"))
    assert readiness(back)["role"] == "reader"
    back_client, back_admin = cluster.admin(back)
    served = call(back_client, back_admin, "sync.wait_epoch",
                  {"table": "sales.orders", "epoch": after["epoch"], "timeout_ms": 60000})
    assert served["epoch"] >= after["epoch"]
    agent = call(back_client, back_admin, "token.create", {"kind": "agent", "name": "a3", "swarm": "ops"})
    call(back_client, back_admin, "grant.set", {"swarm": "ops", "tables": {"sales.orders": {}}})
    for node in cluster.nodes:
        wait_until("every node at the last epoch", lambda node=node: count(node, agent["token"]) == 3 * ORDERS,
                   seconds=30, every=0.2)


def put_events(s3, name, ids, updated=None):
    """An upserted source: `updated` is the cursor (the id itself unless
    given), `id` the key. Returns the rows by id."""
    cursor = [i if updated is None else updated for i in ids]
    table = pa.table({"id": pa.array(ids, pa.int64()),
                      "v": pa.array([i * 10 + c for i, c in zip(ids, cursor)], pa.int64()),
                      "updated": pa.array(cursor, pa.int64())})
    put_parquet(s3, f"data/events/{name}.parquet", table)
    return {i: (i * 10 + c, c) for i, c in zip(ids, cursor)}


def events(node, token):
    auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    with flightsql.connect(node.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v, updated FROM sales.events")
        return {row["id"]: (row["v"], row["updated"]) for row in cur.fetch_arrow_table().to_pylist()}


def test_incremental_syncs_publish_the_rows_they_read_and_every_node_applies_them(cluster, s3, tmp_path):
    client, admin = cluster.admin(cluster.writer())
    expected = put_events(s3, "base", list(range(0, 10_000)))
    call(client, admin, "table.register", {"name": "sales.events", "source": "s3://airlock/data/events/*.parquet",
                                           "strategy": "incremental", "cursor": "updated", "primary_key": ["id"]})
    call(client, admin, "grant.set", {"swarm": "ev", "tables": {"sales.events": {}}})
    agent = call(client, admin, "token.create", {"kind": "agent", "name": "ev1", "swarm": "ev"})

    def synced(job_id=None):
        job_id = job_id or call(client, admin, "sync.start", {"table": "sales.events"})["job_id"]
        job = wait_for_job(client, admin, job_id)
        assert job["state"] == "succeeded", job
        for node in cluster.nodes:
            node_client, node_admin = cluster.admin(node)
            call(node_client, node_admin, "sync.wait_epoch",
                 {"table": "sales.events", "epoch": job["epoch"], "timeout_ms": 60000})
            assert events(node, agent["token"]) == expected, f"node {readiness(node)['node']} differs"
        return job

    # Started on a reader, the job waits for the writer or runs there: the
    # reader still refuses to remove the table under it.
    reader_client, reader_admin = cluster.admin(cluster.readers()[0])
    queued = call(reader_client, reader_admin, "sync.start", {"table": "sales.events"})["job_id"]
    with pytest.raises(pa.ArrowInvalid, match=f"precondition failed.*'sales.events' is being synced by job {queued}"):
        call(reader_client, reader_admin, "table.remove", {"name": "sales.events"})
    first = synced(queued)
    assert first["published"]["kind"] == "full" and first["published"]["rows"] == 10_000, first
    # A node stopped now misses the deltas; it catches up from the epoch it serves when it comes back.
    away = cluster.readers()[0]
    away.stop()
    # 200 rows changed and 300 new: the delta holds what the sync read (the
    # rows at or past the watermark, 9 999), not the table.
    expected.update(put_events(s3, "change-1", list(range(9_800, 10_300)), updated=20_000))
    second = synced_without(cluster, away, synced)
    assert second["published"]["kind"] == "delta", second
    assert second["published"]["rows"] == second["rows"] < 1_000 < second["table_rows"], second
    expected.update(put_events(s3, "change-2", list(range(10_300, 10_400)), updated=30_000))
    third = synced_without(cluster, away, synced)
    assert third["published"] == {**third["published"], "kind": "delta", "rows": third["rows"]}, third
    index = cluster.nodes.index(away)
    cluster.nodes[index] = back = cluster.start(index, port=away.port)
    wait_until("the stopped node ready again", lambda: (readiness(back) or {}).get("ready"))
    assert events(back, agent["token"]) == expected

    # A node that starts empty loads the base and the whole chain before it is ready.
    fresh = Airlock(cluster.binary, tmp_path / "fresh", args=("serve", "--config", str(cluster.config)),
                    extra_env=cluster.env)
    try:
        wait_until("an empty node ready", lambda: (readiness(fresh) or {}).get("ready"))
        assert events(fresh, agent["token"]) == expected
    finally:
        fresh.stop()

    # More rows than the base holds: the chain is compacted into a new base.
    expected.update(put_events(s3, "change-3", list(range(20_000, 32_000)), updated=40_000))
    fourth = synced()
    assert fourth["published"]["kind"] == "full" and fourth["published"]["rows"] == len(expected), fourth


def proto_fields(data):
    """A protobuf message's fields as (number, value): varints as ints,
    length-delimited ones as bytes (the only two kinds tickets use)."""
    fields, i = [], 0

    def varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value
    while i < len(data):
        key = varint()
        if key & 7 == 0:
            fields.append((key >> 3, varint()))
        else:
            assert key & 7 == 2, f"wire type {key & 7}"
            size = varint()
            fields.append((key >> 3, bytes(data[i:i + size])))
            i += size
    return fields


def proto_encode(fields):
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    out = b""
    for number, value in fields:
        if isinstance(value, int):
            out += varint(number << 3) + varint(value)
        else:
            out += varint(number << 3 | 2) + varint(len(value)) + value
    return out


def statement_ticket(client, options, sql):
    """GetFlightInfo of a Flight SQL statement: the ticket's Any, and the
    statement handle inside it as fields."""
    command = any_pb2.Any(type_url="type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery",
                          value=proto_encode([(1, sql.encode())]))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command.SerializeToString()), options)
    ticket = any_pb2.Any.FromString(info.endpoints[0].ticket.ticket)
    [(number, handle)] = proto_fields(ticket.value)
    assert number == 1, number
    return ticket, proto_fields(handle)


def with_handle(ticket, handle):
    return flight.Ticket(any_pb2.Any(type_url=ticket.type_url,
                                     value=proto_encode([(1, proto_encode(handle))])).SerializeToString())


def test_a_ticket_carries_its_epochs_and_a_node_behind_them_refuses_it_retryably(cluster):
    writer, reader = cluster.writer(), cluster.readers()[0]
    client, admin = cluster.admin(writer)
    sql = "SELECT count(*) AS n FROM sales.orders"
    ticket, handle = statement_ticket(client, admin, sql)
    epochs = {proto_fields(entry)[0][1].decode(): proto_fields(entry)[1][1]
              for number, entry in handle if number == 5}
    served = call(client, admin, "table.status", {"name": "sales.orders"})["epoch"]
    assert epochs == {"sales.orders": served}, handle
    # Redeemed on another node at that epoch: the same answer.
    reader_client, reader_admin = cluster.admin(reader)
    rows = reader_client.do_get(with_handle(ticket, handle), reader_admin).read_all().to_pylist()
    assert rows == client.do_get(with_handle(ticket, handle), admin).read_all().to_pylist()
    # Planned at an epoch no node serves yet: refused retryably, after a short wait, naming both epochs.
    ahead = [(n, proto_encode([(1, b"sales.orders"), (2, served + 1000)]) if n == 5 else v) for n, v in handle]
    with pytest.raises(flight.FlightUnavailableError,
                       match=f"serves epoch {served} of 'sales.orders', older than epoch {served + 1000} "
                             r"the query was planned at \(waited 2\d\d\d ms\)"):
        reader_client.do_get(with_handle(ticket, ahead), reader_admin).read_all()


def synced_without(cluster, away, synced):
    """synced() over the nodes but `away`, which is stopped."""
    nodes = cluster.nodes
    cluster.nodes = [node for node in nodes if node is not away]
    try:
        return synced()
    finally:
        cluster.nodes = nodes


def test_a_running_syncs_progress_shows_on_every_node(cluster, s3):
    rows = 4_000_000
    ids = pa.array(range(rows), pa.int64())
    for part in range(4):
        put_parquet(s3, f"data/big/part-{part}.parquet",
                    pa.table({"id": ids.slice(part * rows // 4, rows // 4),
                              "v": pa.compute.multiply(ids.slice(part * rows // 4, rows // 4), 7)}))
    writer, reader = cluster.writer(), cluster.readers()[0]
    client, admin = cluster.admin(writer)
    call(client, admin, "table.register", {"name": "sales.big", "source": "s3://airlock/data/big/*.parquet"})
    job_id = call(client, admin, "sync.start", {"table": "sales.big"})["job_id"]
    reader_client, reader_admin = cluster.admin(reader)
    seen = []
    while True:
        status = call(reader_client, reader_admin, "sync.status", {"job_id": job_id})
        if status["state"] in ("succeeded", "failed", "cancelled"):
            break
        seen.append((status["state"], status["rows"]))
        time.sleep(0.1)
    assert status["state"] == "succeeded" and status["rows"] == rows, status
    # Counters recorded by the writer while it loaded, read on another node.
    assert any(state == "running" and 0 < counted for state, counted in seen), seen
    call(client, admin, "table.remove", {"name": "sales.big"})


def test_every_nodes_audit_records_are_queried_on_any_node(cluster):
    names = {readiness(node)["node"] for node in cluster.nodes}
    for node in cluster.nodes:
        client, admin = cluster.admin(node)
        call(client, admin, "whoami")
    node = cluster.nodes[-1]
    auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {admin_token(cluster, node)}"}

    def nodes_seen():
        with flightsql.connect(node.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT node, count(*) AS n FROM airlock.audit WHERE request = 'DoAction whoami' "
                        "GROUP BY node")
            return {row["node"] for row in cur.fetch_arrow_table().to_pylist()} >= names
    wait_until("every node's whoami in the trail", nodes_seen, seconds=BOUND_SECONDS, every=0.2)
    # Agents never see the trail, on any node.
    client, admin = cluster.admin(node)
    agent = call(client, admin, "token.create", {"kind": "agent", "name": "nosy", "swarm": "ops"})
    with pytest.raises(Exception, match="airlock.audit. does not exist or is not visible to you"):
        count(node, agent["token"], "SELECT count(*) AS n FROM airlock.audit")


def admin_token(cluster, node):
    client = node.flight_client()
    header = client.authenticate_basic_token("admin", PASSWORD)
    return header[1].decode().removeprefix("Bearer ")


def test_a_node_cut_off_from_postgres_refuses_tokens_then_recovers_and_loses_no_audit(cluster):
    node = cluster.nodes[0]
    token = admin_token(cluster, node)
    auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}

    def query(sql):
        with flightsql.connect(node.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table().to_pylist()

    rows = query("SELECT count(*) AS n FROM sales.orders")[0]["n"]
    as_postgres(*POSTGRES["stop"])
    try:
        # The replica is local, but revocations made meanwhile could not reach this node: past 5 s it refuses.
        def refused():
            try:
                query("SELECT 1 AS one")
                return None
            except Exception as error:  # noqa: BLE001
                return str(error)
        message, _ = wait_until("tokens refused without the feed", refused, seconds=20, every=0.5)
        assert "(Unavailable" in message and "retry on another node" in message, message
    finally:
        as_postgres(*POSTGRES["start"])
    def accepted():
        try:
            return query("SELECT count(*) AS n FROM sales.orders")[0]["n"] == rows
        except Exception:  # noqa: BLE001 - still reconnecting
            return False
    wait_until("tokens accepted again", accepted, seconds=60, every=0.5)
    # The refusals made while Postgres was away were kept and written once it came back.
    def refusals_recorded():
        found = query("SELECT count(*) AS n FROM airlock.audit WHERE status = 'Unavailable' "
                      "AND reason LIKE '%change feed%'")
        return found[0]["n"] > 0
    wait_until("the outage's refusals in the trail", refusals_recorded, seconds=30, every=0.5)
    for other in cluster.nodes:
        wait_until("every node ready again", lambda other=other: (readiness(other) or {}).get("ready"), seconds=60)
    # The nodes campaign again once Postgres is back: one of them wins.
    wait_until("one writer again", lambda: cluster.roles().count("writer") == 1, seconds=30, every=0.2)
    assert cluster.roles().count("writer") == 1
