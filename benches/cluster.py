"""Cluster benchmark: what shared state costs, and how fast a sync reaches every node.

Workloads (TPC-H SF1 Parquet, generated once under bench-data/):
  overhead    one node with its embedded metadata vs one node on Postgres
              (`--meta-url`), same data, same agent (a grant with limits, so
              every query takes a cluster-wide slot and draws from the shared
              rate budget): median point-lookup latency over ADBC, and
              queries/s of a mixed workload (lookups and small aggregates)
              from 8 client threads; side by side, one node at a time.
  visibility  three nodes on one Postgres and one snapshot directory: the
              writer syncs lineitem, publishes it, and each reader loads it;
              the time from the job's end (commit and publish) to each
              reader serving the epoch, and the sync itself beside the same
              sync on a single node (the publishing cost). Then an append
              of 1 % more rows (lineitem is registered `append` on
              l_orderkey): the writer publishes only those rows (a delta),
              so sync and visibility follow the rows read, not the table.

Postgres comes from Debian's packages (a throwaway cluster under a temp
dir), the artifact store from moto's S3 server. Three nodes on one 2-core
machine show coordination cost, not read scaling. Nothing here asserts a
time: it measures and reports.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import boto3
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
from adbc_driver_flightsql import DatabaseOptions

from tpch import Airlock, free_port, generate, wait_for_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARED = {"AIRLOCK_JWT_SECRET": "cluster-bench-jwt-secret-0123456789abcdef", "AIRLOCK_SECRETS_KEY": "00" * 32,
          "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


def as_postgres(*command):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *map(str, command)], check=True, capture_output=True)


class Postgres:
    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="airlock-bench-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.port = free_port()
        self.data = self.directory / "data"
        as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.directory / "log", "-w", "-o",
                    f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1", "start")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def stop(self):
        as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


class Moto:
    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for_port(self.port, 30)
        boto3.client("s3", endpoint_url=self.url, aws_access_key_id="bench", aws_secret_access_key="bench",
                     region_name="us-east-1").create_bucket(Bucket="airlock")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def with_env(extra):
    """Airlock (from tpch.py) reads os.environ: set what a cluster node needs for one start."""
    saved = dict(os.environ)
    os.environ.update(extra)
    return saved


def start_node(binary, data_dir, env, config=None):
    saved = with_env(env)
    try:
        args = ("--config", str(config)) if config else ()
        return Airlock(binary, data_dir, extra_args=args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_job(node, job_id):
    while True:
        status = node.action("sync.status", {"job_id": job_id})
        if status["state"] in ("succeeded", "failed", "cancelled"):
            if status["state"] != "succeeded":
                raise SystemExit(f"sync failed: {status['error']}")
            return status
        time.sleep(0.05)


def load(node, name, files, **registration):
    node.action("table.register", {"name": name, "source": f"file://{files}/*.parquet", **registration})
    return sync(node, name)


def sync(node, name):
    started = time.perf_counter()
    job = node.action("sync.start", {"table": name})["job_id"]
    status = wait_job(node, job)
    return time.perf_counter() - started, status


def wait_readers(readers, name, status):
    """Seconds from now (the job's end) until every reader serves its epoch."""
    finished = time.time()
    seen = []
    for reader in readers:
        reader.action("sync.wait_epoch", {"table": name, "epoch": status["epoch"], "timeout_ms": 300000})
        seen.append(time.time() - finished)
    return seen


def agent(node):
    node.action("grant.set", {"swarm": "bench", "tables": {"tpch.*": {}},
                              "limits": {"max_concurrent": 64, "per_minute": 10_000_000}})
    token = node.action("token.create", {"kind": "agent", "name": "a1", "swarm": "bench"})["token"]
    auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    return lambda: flightsql.connect(node.uri, db_kwargs=auth, autocommit=True)


def lookups(connect, keys):
    latencies = []
    with connect() as conn, conn.cursor() as cur:
        for key in keys:
            started = time.perf_counter()
            cur.execute("SELECT o_orderstatus, o_totalprice FROM tpch.orders WHERE o_orderkey = ?", parameters=(key,))
            cur.fetchall()
            latencies.append(time.perf_counter() - started)
    return latencies


def mixed(connect, keys, seconds, threads=8):
    done = []
    stop = time.time() + seconds

    def worker(n):
        count = 0
        with connect() as conn, conn.cursor() as cur:
            i = n
            while time.time() < stop:
                if i % 4 == 0:
                    cur.execute("SELECT o_orderpriority, count(*) FROM tpch.orders WHERE o_orderkey < ? "
                                "GROUP BY o_orderpriority", parameters=(keys[i % len(keys)],))
                else:
                    cur.execute("SELECT * FROM tpch.orders WHERE o_orderkey = ?", parameters=(keys[i % len(keys)],))
                cur.fetchall()
                count += 1
                i += threads
        done.append(count)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / seconds


def overhead(binary, data, root, args, pg, moto):
    results = {}
    keys = [1 + 32 * i for i in range(args.lookups)]
    config = root / "cluster.toml"
    for label, env, cfg in [("embedded", {}, None),
                            ("postgres", {"AIRLOCK_META_URL": pg.url, **SHARED}, config)]:
        node = start_node(binary, root / f"overhead-{label}", env, cfg)
        try:
            load(node, "tpch.orders", data / "orders")
            connect = agent(node)
            lookups(connect, keys[:50])  # warm up
            latencies = lookups(connect, keys)
            qps = mixed(connect, keys, args.seconds)
            results[label] = {"lookup_median_ms": statistics.median(latencies) * 1000,
                              "lookup_p99_ms": sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000,
                              "mixed_qps": qps}
            print(f"  {label:9} lookup median {results[label]['lookup_median_ms']:.2f} ms, "
                  f"p99 {results[label]['lookup_p99_ms']:.2f} ms, mixed {qps:.0f} q/s", flush=True)
        finally:
            node.stop()
    results["lookup_median_ratio"] = results["postgres"]["lookup_median_ms"] / results["embedded"]["lookup_median_ms"]
    results["mixed_qps_ratio"] = results["postgres"]["mixed_qps"] / results["embedded"]["mixed_qps"]
    return results


def visibility(binary, data, root, pg, config):
    env = {"AIRLOCK_META_URL": pg.url, **SHARED}
    nodes = [start_node(binary, root / f"node{n}", env, config) for n in range(3)]
    try:
        time.sleep(3)  # the election
        roles = [json.loads(urlopen(f"{n.http_url}/readyz"))["role"] for n in nodes]
        writer = nodes[roles.index("writer")]
        readers = [n for n in nodes if n is not writer]
        # The source directory the append below adds a file to.
        source = root / "lineitem-source"
        source.mkdir(exist_ok=True)
        for file in sorted((data / "lineitem").glob("*.parquet")):
            (source / file.name).symlink_to(file)
        seconds, status = load(writer, "tpch.lineitem", source, strategy="append", cursor="l_orderkey")
        seen = wait_readers(readers, "tpch.lineitem", status)
        result = {"rows": status["table_rows"], "sync_seconds": seconds, "epoch": status["epoch"],
                  "published": status["published"], "visible_on_all_readers_seconds": max(seen),
                  "per_reader_seconds": seen}
        # 1 % more rows, past the watermark: published as a delta.
        first = pq.read_table(sorted(source.glob("*.parquet"))[0])
        extra = first.slice(0, status["table_rows"] // 100)
        top = status["watermark_after"]
        keys = pa.compute.add(extra.column("l_orderkey"), pa.scalar(int(top), extra.schema.field("l_orderkey").type))
        pq.write_table(extra.set_column(extra.schema.get_field_index("l_orderkey"), "l_orderkey", keys),
                       source / "zz-append.parquet")
        seconds, status = sync(writer, "tpch.lineitem")
        seen = wait_readers(readers, "tpch.lineitem", status)
        result["append"] = {"rows": status["rows"], "table_rows": status["table_rows"], "sync_seconds": seconds,
                            "published": status["published"], "visible_on_all_readers_seconds": max(seen)}
        return result
    finally:
        for node in nodes:
            node.stop()


def urlopen(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airlock", required=True)
    parser.add_argument("--sf", default="1")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20, help="length of the mixed workload")
    parser.add_argument("--data", default="bench-data")
    args = parser.parse_args()
    data = generate(Path(args.data), args.sf, tables=("lineitem", "orders")).resolve()
    root = Path(tempfile.mkdtemp(prefix="airlock-bench-cluster-"))
    pg, moto = Postgres(), Moto()
    try:
        config = root / "cluster.toml"
        config.write_text(f'[object_store]\naws_endpoint = "{moto.url}"\naws_allow_http = "true"\n\n'
                          '[artifacts]\nstore = "s3://airlock/artifacts"\n\n'
                          f'[sync]\nsnapshot_store = "{root / "snapshots"}"\n')
        print("overhead of shared metadata (one node):", flush=True)
        report = {"overhead": overhead(args.airlock, data, root, args, pg, moto)}
        # A fresh database for the cluster: the overhead run's tables and grants stay behind.
        pg.stop()
        pg = Postgres()
        print("sync to visibility on three nodes:", flush=True)
        report["visibility"] = visibility(args.airlock, data, root, pg, config)
        single = start_node(args.airlock, root / "single", {})
        try:
            report["visibility"]["single_node_sync_seconds"], _ = load(single, "tpch.lineitem", data / "lineitem")
        finally:
            single.stop()
        v = report["visibility"]
        print(f"  lineitem {v['rows']:,} rows: sync + publish {v['sync_seconds']:.1f} s (one node without "
              f"publishing: {v['single_node_sync_seconds']:.1f} s); on every reader "
              f"{v['visible_on_all_readers_seconds']:.1f} s after", flush=True)
        a = v["append"]
        print(f"  append of {a['rows']:,} rows: sync + publish {a['sync_seconds']:.2f} s, published "
              f"{a['published']['kind']} of {a['published']['rows']:,} rows; on every reader "
              f"{a['visible_on_all_readers_seconds']:.2f} s after", flush=True)
        o = report["overhead"]
        print(f"  lookup median ratio (postgres / embedded) {o['lookup_median_ratio']:.2f}, "
              f"mixed throughput ratio {o['mixed_qps_ratio']:.2f}", flush=True)
        out = Path(args.data) / f"cluster-results-sf{args.sf}.json"
        out.write_text(json.dumps(report, indent=2))
        print(f"saved {out}")
    finally:
        pg.stop()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
