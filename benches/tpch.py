"""TPC-H benchmark: airlock over Flight SQL (ADBC) vs the same data in DuckDB in-process.

Steps (each cached under bench-data/ when possible):
  1. generate TPC-H lineitem and orders as Parquet with tpchgen-cli;
  2. start airlock (release build), register both tables with table.register
     and load them with sync.start (load time is reported too);
  3. build the in-process reference: DuckDB (same version airlock embeds)
     loading the same Parquet files;
  4. time each workload on both sides in the same run and report medians,
     ratios, and airlock's peak RSS during the full scan.

Nothing here asserts a time: it measures and reports.
"""

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow as pa
import pyarrow.flight as flight

PASSWORD = "bench-password"

Q1 = """
SELECT l_returnflag, l_linestatus,
       sum(l_quantity) AS sum_qty,
       sum(l_extendedprice) AS sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       avg(l_quantity) AS avg_qty,
       avg(l_extendedprice) AS avg_price,
       avg(l_discount) AS avg_disc,
       count(*) AS count_order
FROM {lineitem}
WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus
"""

Q6 = """
SELECT sum(l_extendedprice * l_discount) AS revenue
FROM {lineitem}
WHERE l_shipdate >= DATE '1994-01-01'
  AND l_shipdate < DATE '1995-01-01'
  AND l_discount BETWEEN 0.05 AND 0.07
  AND l_quantity < 24
"""

SCAN = "SELECT * FROM {lineitem}"
LOOKUP = "SELECT * FROM {orders} WHERE o_orderkey = {key}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(data: Path, sf: str):
    target = data / f"sf{sf}"
    done = target / ".done"
    if done.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    print(f"generating TPC-H sf{sf} Parquet into {target} ...", flush=True)
    subprocess.run(
        ["tpchgen-cli", "parquet", "-s", sf, "--tables", "lineitem,orders", "--parts", "4", "--output-dir", str(target)],
        check=True,
    )
    done.touch()
    return target


class Airlock:
    def __init__(self, binary, data_dir: Path, duckdb_memory_limit=None, extra_args=()):
        self.port = free_port()
        self.uri = f"grpc://127.0.0.1:{self.port}"
        env = dict(os.environ, AIRLOCK_ADMIN_PASSWORD=PASSWORD, AIRLOCK_LOG="warn")
        if duckdb_memory_limit:
            env["AIRLOCK_DUCKDB_MEMORY_LIMIT"] = duckdb_memory_limit
        self.log = open(data_dir.parent / "airlock-bench.log", "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--data-dir", str(data_dir), "--flight-addr", f"127.0.0.1:{self.port}", *extra_args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        client = flight.FlightClient(self.uri)
        self.client = client
        self.options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])

    def action(self, name, body):
        results = list(self.client.do_action(flight.Action(name, json.dumps(body).encode()), self.options))
        return json.loads(results[0].body.to_pybytes())

    def rss_bytes(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def load(airlock: Airlock, parquet: Path):
    timings = {}
    for table in ["lineitem", "orders"]:
        name = f"tpch.{table}"
        listed = airlock.action("table.list", {})
        if not any(t["name"] == name for t in listed["tables"]):
            airlock.action("table.register", {"name": name, "source": f"file://{parquet}/{table}/*.parquet"})
        started = time.perf_counter()
        job = airlock.action("sync.start", {"table": name})["job_id"]
        while True:
            status = airlock.action("sync.status", {"job_id": job})
            if status["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        if status["state"] != "succeeded":
            raise SystemExit(f"loading {name} failed: {status['error']}")
        timings[table] = {"seconds": time.perf_counter() - started, "rows": status["rows"]}
        print(f"  airlock loaded {name}: {status['rows']:,} rows in {timings[table]['seconds']:.1f}s", flush=True)
    return timings


def reference_db(data: Path, parquet: Path, sf: str):
    path = data / f"reference-sf{sf}.duckdb"
    con = duckdb.connect(str(path))
    existing = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    for table in ["lineitem", "orders"]:
        if table not in existing:
            started = time.perf_counter()
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{parquet}/{table}/*.parquet')")
            print(f"  duckdb loaded {table} in {time.perf_counter() - started:.1f}s", flush=True)
    return con


def timed(fn, repeat):
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


# An agent's grant for the governance comparison: on each table a row
# filter using an agent attribute (keeping every row, so results match the
# admin's) and two masks.
BENCH_GRANT = {
    "swarm": "bench",
    "tables": {
        "tpch.lineitem": {
            "row_filter": "l_returnflag <> agent_attr('hidden')",
            "columns": {"l_comment": {"mask": "'***'"}, "l_shipinstruct": {"mask": "left(l_shipinstruct, 2) || '***'"}},
        },
        "tpch.orders": {
            "row_filter": "o_orderstatus <> agent_attr('hidden')",
            "columns": {"o_clerk": {"mask": "'***'"}, "o_comment": {"mask": "left(o_comment, 2) || '***'"}},
        },
    },
    "limits": {"per_minute": 1000000, "max_concurrent": 8},
}


def governance_overhead(airlock, via_admin, keys, repeat):
    """The same Q1 and point lookups as an agent under BENCH_GRANT vs as
    admin, alternating run by run so both see the same machine state."""
    airlock.action("grant.set", BENCH_GRANT)
    token = airlock.action(
        "token.create", {"kind": "agent", "name": "bench", "swarm": "bench", "attributes": {"hidden": "X"}}
    )["token"]
    conn = flightsql.connect(
        airlock.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}, autocommit=True
    )
    cur = conn.cursor()

    def via_agent(sql):
        cur.execute(sql)
        return cur.fetch_arrow_table()

    out = {}
    q1 = Q1.format(lineitem="tpch.lineitem")
    admin_q1, agent_q1 = [], []
    via_admin(q1), via_agent(q1)
    for _ in range(repeat):
        for side, times in ((via_admin, admin_q1), (via_agent, agent_q1)):
            started = time.perf_counter()
            side(q1)
            times.append(time.perf_counter() - started)
    if via_admin(q1).to_pylist() != via_agent(q1).to_pylist():
        raise SystemExit("TPC-H Q1 differs between admin and agent")
    admin_lookup, agent_lookup = [], []
    for key in keys:
        sql = LOOKUP.format(orders="tpch.orders", key=key)
        for side, times in ((via_admin, admin_lookup), (via_agent, agent_lookup)):
            started = time.perf_counter()
            side(sql)
            times.append(time.perf_counter() - started)
    for label, admin, agent in (("Q1", admin_q1, agent_q1), ("point lookup", admin_lookup, agent_lookup)):
        a, g = statistics.median(admin), statistics.median(agent)
        out[f"governed {label}"] = {"admin_s": a, "agent_s": g, "added": g / a - 1}
    conn.close()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airlock", required=True, help="path to the airlock binary (release build)")
    parser.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    parser.add_argument("--data", default="bench-data", help="working directory for generated data")
    parser.add_argument("--repeat", type=int, default=7, help="runs per workload (median reported)")
    parser.add_argument("--lookups", type=int, default=200, help="point lookups per side")
    parser.add_argument("--duckdb-memory-limit", help="airlock's DuckDB memory limit, e.g. 256MiB (default: airlock's)")
    args = parser.parse_args()

    data = Path(args.data).resolve()
    parquet = generate(data, args.sf)
    airlock_dir = data / f"airlock-sf{args.sf}"
    loader = Airlock(args.airlock, airlock_dir, args.duckdb_memory_limit)
    try:
        print("loading airlock (table.register + sync.start):", flush=True)
        load_times = load(loader, parquet)
    finally:
        loader.stop()
    # Serve from a fresh process, as after a deploy: memory the loads left
    # with the allocator must not count as query memory.
    airlock = Airlock(args.airlock, airlock_dir, args.duckdb_memory_limit)
    try:
        ref = reference_db(data, parquet, args.sf)
        conn = flightsql.connect(airlock.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
        cur = conn.cursor()

        def via_airlock(sql):
            cur.execute(sql)
            return cur.fetch_arrow_table()

        def in_process(sql):
            return ref.execute(sql).to_arrow_table()

        results = {}
        workloads = [
            ("full scan lineitem", SCAN),
            ("TPC-H Q1", Q1),
            ("TPC-H Q6", Q6),
        ]
        for label, sql in workloads:
            ours = sql.format(lineitem="tpch.lineitem")
            theirs = sql.format(lineitem="lineitem")
            # Warm both sides once (page cache, DuckDB buffers).
            via_airlock(ours)
            in_process(theirs)
            t_airlock, table_a = timed(lambda: via_airlock(ours), args.repeat)
            rows_a = table_a.num_rows
            del table_a
            t_ref, table_r = timed(lambda: in_process(theirs), args.repeat)
            rows_r = table_r.num_rows
            del table_r
            if rows_a != rows_r:
                raise SystemExit(f"{label}: airlock returned {rows_a} rows, DuckDB {rows_r}")
            # Peak server memory, sampled during one more (untimed) run so the
            # sampling thread does not compete with the timed runs.
            peak = [0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], airlock.rss_bytes())
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            table_a = via_airlock(ours)
            stop.set()
            sampler.join()
            results[label] = {
                "airlock_s": t_airlock,
                "duckdb_in_process_s": t_ref,
                "ratio": t_airlock / t_ref,
                "rows": rows_a,
                "result_mb": table_a.nbytes / 2**20,
                "airlock_peak_rss_mb": peak[0] / 2**20,
            }
            del table_a

        all_keys = [r[0] for r in ref.execute(f"SELECT o_orderkey FROM orders USING SAMPLE {args.lookups} ROWS").fetchall()]
        keys = all_keys
        lat_a, lat_r = [], []
        for key in keys[:10]:
            via_airlock(LOOKUP.format(orders="tpch.orders", key=key))
            in_process(LOOKUP.format(orders="orders", key=key))
        # One side at a time, so DuckDB's in-process threads never compete
        # with the server for the CPU during the other side's lookups.
        for key in keys:
            t0 = time.perf_counter()
            via_airlock(LOOKUP.format(orders="tpch.orders", key=key))
            lat_a.append(time.perf_counter() - t0)
        for key in keys:
            t0 = time.perf_counter()
            in_process(LOOKUP.format(orders="orders", key=key))
            lat_r.append(time.perf_counter() - t0)
        results["point lookup orders"] = {
            "airlock_s": statistics.median(lat_a),
            "duckdb_in_process_s": statistics.median(lat_r),
            "ratio": statistics.median(lat_a) / statistics.median(lat_r),
            "airlock_p95_s": sorted(lat_a)[int(len(lat_a) * 0.95) - 1],
            "rows": 1,
        }
        results.update(governance_overhead(airlock, via_airlock, keys, args.repeat))
        conn.close()
    finally:
        airlock.stop()

    report = {
        "scale_factor": args.sf,
        "duckdb_memory_limit": args.duckdb_memory_limit,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load": load_times,
        "results": results,
    }
    suffix = f"-duckdb-{args.duckdb_memory_limit}" if args.duckdb_memory_limit else ""
    out = data / f"results-sf{args.sf}{suffix}.json"
    out.write_text(json.dumps(report, indent=2))
    print()
    print(f"{'workload':<22} {'airlock (ADBC)':>15} {'DuckDB in-proc':>15} {'ratio':>7}  notes")
    for label, r in results.items():
        if "admin_s" in r:
            continue
        notes = ""
        if "airlock_peak_rss_mb" in r:
            notes = f"result {r['result_mb']:.0f} MB, server peak RSS {r['airlock_peak_rss_mb']:.0f} MB"
        if "airlock_p95_s" in r:
            notes = f"p95 {r['airlock_p95_s'] * 1000:.2f} ms"
        print(f"{label:<22} {r['airlock_s'] * 1000:>12.1f} ms {r['duckdb_in_process_s'] * 1000:>12.1f} ms {r['ratio']:>6.2f}x  {notes}")
    print()
    print(f"{'as agent vs admin':<22} {'admin':>15} {'agent':>15} {'added':>7}")
    for label, r in results.items():
        if "admin_s" in r:
            print(f"{label:<22} {r['admin_s'] * 1000:>12.1f} ms {r['agent_s'] * 1000:>12.1f} ms {r['added'] * 100:>6.1f}%")
    print(f"\nsaved {out}")


if __name__ == "__main__":
    sys.exit(main())
