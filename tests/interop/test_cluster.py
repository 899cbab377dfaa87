"""Nodes on shared metadata: `--meta-url` puts tokens, grants and
registrations in Postgres (a throwaway cluster of Debian's postgresql the
test starts), with artifacts in an object store (moto's S3 server). A node
started later with an empty data directory serves what the first stored.
The three-node cluster itself is in test_cluster_nodes.py."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import boto3
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

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

import io
import json
import threading
import time
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq

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
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    boto3.client("s3", endpoint_url=s3, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                 region_name="us-east-1").put_object(Bucket="airlock", Key=f"data/orders/part-{batch}.parquet",
                                                      Body=buffer.getvalue())


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
    assert cluster.roles().count("writer") == 1
