"""TPC-H benchmark: airlock over Flight SQL (ADBC) vs the same data in DuckDB in-process.

Steps (each cached under bench-data/ when possible):
  1. generate the eight TPC-H tables as Parquet with tpchgen-cli (only the
     ones missing: older runs generated lineitem and orders only);
  2. start airlock (release build), register the tables with table.register
     and load them with sync.start (load times are reported too), then
     restart it so loading leaves nothing in its memory;
  3. build two in-process references from the same Parquet, each in its own
     database file with the tables in a schema `tpch` (so every query's SQL
     is the same text on all sides): DuckDB 1.5.6, the version airlock
     embedded before 2.0.1 (this venv), and the newest DuckDB from PyPI,
     2.0.1, the one airlock embeds now (a second venv,
     benches/requirements-duckdb2.txt, created by benches/run). One
     process cannot load two duckdb versions, so both run
     benches/duckdb_worker.py as a subprocess and are timed the same way:
     the SQL to a whole Arrow table in the worker's process.

Measured, side by side in one run, one side at a time (two shared cores),
medians after a warm-up; nothing here asserts a time:
  * a full scan of lineitem to Arrow (result size; airlock's peak RSS);
  * the 22 TPC-H queries (tests/interop/tpch_queries.py), airlock as admin
    via ADBC vs each DuckDB; row counts must agree (else SystemExit);
    ratios per query and their geometric mean per reference. A query that
    fails on airlock is reported (and saved) and the run goes on;
  * point lookups on orders by random key (--lookups, default 1000);
  * governance: TPC-H Q1 (--pairs alternated admin/agent pairs, default
    20) and the point lookups as an agent under BENCH_GRANT (row filters
    and masks) vs as admin: medians, added %, and the spread of the
    per-pair agent/admin ratios (10th and 90th percentile);
  * concurrency: --agents (default 64) threads, each an agent with its own
    token and ADBC connection under BENCH_GRANT, running a mix of small
    queries (point lookup, a one-day count on orders, a LIMIT 10 select,
    Q6) for --concurrency-seconds (default 60): queries per second, p50
    and p99 latency, errors, and the server's RSS at start, middle and end.

Results print as tables and are saved to bench-data/results-sf<SF>.json.
"""

import argparse
import datetime
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "interop"))
from tpch_queries import QUERIES  # noqa: E402

PASSWORD = "bench-password"
SCHEMA = "tpch"
TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]
WORKER = HERE / "duckdb_worker.py"
DUCKDB2_VENV = Path(os.environ.get("AIRLOCK_BENCH_VENV_DUCKDB2", Path.home() / ".cache" / "airlock-bench-venv-duckdb2"))

Q1 = QUERIES[1].format(s=SCHEMA)
Q6 = QUERIES[6].format(s=SCHEMA)
SCAN = f"SELECT * FROM {SCHEMA}.lineitem"
LOOKUP = "SELECT * FROM tpch.orders WHERE o_orderkey = {key}"
# The small queries of the concurrency mix (besides LOOKUP and Q6).
DAY_COUNT = "SELECT count(*) FROM tpch.orders WHERE o_orderdate = DATE '{day}'"
LIMIT10 = "SELECT * FROM tpch.lineitem LIMIT 10"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, seconds):
    """Until something listens on 127.0.0.1:port, at most `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)


def generate(data: Path, sf: str, tables=("lineitem", "orders")):
    """TPC-H tables as Parquet under data/sf<sf>/<table>/*.parquet, each
    generated once (a `.done-<table>` marker; `.done` alone marks lineitem
    and orders, as older runs left them)."""
    target = data / f"sf{sf}"
    target.mkdir(parents=True, exist_ok=True)

    def done(table):
        return (target / f".done-{table}").exists() or (
            table in ("lineitem", "orders") and (target / ".done").exists()
        )

    missing = [t for t in tables if not done(t)]
    if missing:
        print(f"generating TPC-H sf{sf} {', '.join(missing)} as Parquet into {target} ...", flush=True)
        subprocess.run(
            ["tpchgen-cli", "parquet", "-s", sf, "--tables", ",".join(missing), "--parts", "4", "--output-dir", str(target)],
            check=True,
        )
        for table in missing:
            (target / f".done-{table}").touch()
    return target


class Airlock:
    def __init__(self, binary, data_dir: Path, duckdb_memory_limit=None, extra_args=()):
        self.port = free_port()
        self.uri = f"grpc://127.0.0.1:{self.port}"
        http_port = free_port()
        self.http_url = f"http://127.0.0.1:{http_port}"
        env = dict(os.environ, AIRLOCK_ADMIN_PASSWORD=PASSWORD, AIRLOCK_LOG="warn")
        if duckdb_memory_limit:
            env["AIRLOCK_DUCKDB_MEMORY_LIMIT"] = duckdb_memory_limit
        self.log = open(data_dir.parent / "airlock-bench.log", "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--data-dir", str(data_dir), "--flight-addr", f"127.0.0.1:{self.port}",
             "--http-addr", f"127.0.0.1:{http_port}", *extra_args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, 60)
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

    def cpu_seconds(self):
        """User + system CPU time the server has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def load(airlock: Airlock, parquet: Path, tables=TABLES):
    timings = {}
    listed = {t["name"] for t in airlock.action("table.list", {})["tables"]}
    for table in tables:
        name = f"{SCHEMA}.{table}"
        if name not in listed:
            airlock.action("table.register", {"name": name, "source": f"file://{parquet}/{table}/*.parquet"})
        started = time.perf_counter()
        job = airlock.action("sync.start", {"table": name})["job_id"]
        while True:
            status = airlock.action("sync.status", {"job_id": job})
            if status["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.1)
        if status["state"] != "succeeded":
            raise SystemExit(f"loading {name} failed: {status['error']}")
        timings[table] = {"seconds": time.perf_counter() - started, "rows": status["rows"]}
        print(f"  airlock loaded {name}: {status['rows']:,} rows in {timings[table]['seconds']:.1f}s", flush=True)
    return timings


class Reference:
    """A DuckDB version in its own process (benches/duckdb_worker.py)."""

    def __init__(self, python, db: Path, role):
        self.role = role
        self.db = db
        self.process = subprocess.Popen(
            [str(python), str(WORKER), "--db", str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self.call({"op": "hello"})
        self.version, self.api = hello["version"], hello["api"]
        self.label = f"DuckDB {self.version}"

    def call(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the DuckDB worker ({self.db.name}) exited (code {self.process.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"DuckDB {getattr(self, 'version', '?')} failed {request.get('op')}: {reply['error']}")
        return reply

    def close(self):
        try:
            if self.process.poll() is None:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
        except OSError:
            pass
        self.process.wait(timeout=60)


class PeakRss:
    """Samples the server's resident set size in the background (during
    untimed runs only, so the sampler never competes with a timed one)."""

    def __init__(self, airlock, every=0.005):
        self.airlock, self.every, self.peak = airlock, every, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.airlock.rss_bytes())
            time.sleep(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def percentile(values, p):
    """The p-th percentile (0-100) by linear interpolation."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


# An agent's grant for the governance comparison and the concurrency run:
# on each table a row filter using an agent attribute (keeping every row,
# so results match the admin's) and two masks; limits allowing 64 agents'
# queries at once.
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
    "limits": {"per_minute": 1000000, "max_concurrent": 64},
}


def agent_token(airlock, name):
    created = airlock.action(
        "token.create", {"kind": "agent", "name": name, "swarm": "bench", "attributes": {"hidden": "X"}}
    )
    return created["id"], created["token"]


def agent_connection(airlock, token):
    return flightsql.connect(
        airlock.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}, autocommit=True
    )


def spread(admin, agent):
    """Medians, added %, and the spread of the per-pair agent/admin ratios."""
    ratios = [g / a for a, g in zip(admin, agent)]
    a, g = statistics.median(admin), statistics.median(agent)
    return {
        "pairs": len(ratios),
        "admin_s": a,
        "agent_s": g,
        "added": g / a - 1,
        "pair_ratio_p10": percentile(ratios, 10),
        "pair_ratio_median": percentile(ratios, 50),
        "pair_ratio_p90": percentile(ratios, 90),
        "pair_ratio_min": min(ratios),
        "pair_ratio_max": max(ratios),
    }


def governance_overhead(airlock, via_admin, keys, pairs):
    """The same Q1 and point lookups as an agent under BENCH_GRANT vs as
    admin, in pairs run back to back (which side goes first alternates),
    so both see the same machine state."""
    token_id, token = agent_token(airlock, "bench")
    conn = agent_connection(airlock, token)
    try:
        return governed_pairs(conn.cursor(), via_admin, keys, pairs)
    finally:
        conn.close()
        airlock.action("token.revoke", {"id": token_id})


def governed_pairs(cur, via_admin, keys, pairs):
    def via_agent(sql):
        cur.execute(sql)
        return cur.fetch_arrow_table()

    def run_pairs(sqls):
        admin, agent = [], []
        for i, sql in enumerate(sqls):
            sides = ((via_admin, admin), (via_agent, agent))
            for side, times in sides if i % 2 == 0 else reversed(sides):
                started = time.perf_counter()
                side(sql)
                times.append(time.perf_counter() - started)
        return admin, agent

    via_admin(Q1), via_agent(Q1)
    if via_admin(Q1).to_pylist() != via_agent(Q1).to_pylist():
        raise SystemExit("TPC-H Q1 differs between admin and agent")
    out = {"governed Q1": spread(*run_pairs([Q1] * pairs))}
    lookups = [LOOKUP.format(key=key) for key in keys]
    for sql in lookups[:10]:
        if via_admin(sql).num_rows != via_agent(sql).num_rows:
            raise SystemExit(f"{sql}: rows differ between admin and agent")
    out["governed point lookup"] = spread(*run_pairs(lookups))
    return out


def concurrency(airlock, agents, seconds, keys, seed=7):
    """`agents` threads, each an agent with its own token and ADBC
    connection, running a mix of small queries for `seconds`."""
    tokens = [agent_token(airlock, f"bench-c{i}") for i in range(agents)]
    days = (datetime.date(1998, 8, 2) - datetime.date(1992, 1, 1)).days
    kinds = ["point lookup", "day count", "limit 10", "Q6"]
    clock = {}

    def start_clock():
        # Runs once every agent is connected, just before they all start.
        clock["rss"] = airlock.rss_bytes()
        clock["cpu"] = (airlock.cpu_seconds(), sum(os.times()[:2]))
        clock["started"] = time.perf_counter()
        clock["deadline"] = clock["started"] + seconds

    barrier = threading.Barrier(agents + 1, action=start_clock)
    per_thread = [([], [("thread", "ended without a result")])] * agents

    def pick(rng):
        kind = rng.choice(kinds)
        if kind == "point lookup":
            return kind, LOOKUP.format(key=rng.choice(keys))
        if kind == "day count":
            return kind, DAY_COUNT.format(day=datetime.date(1992, 1, 1) + datetime.timedelta(days=rng.randrange(days)))
        if kind == "limit 10":
            return kind, LIMIT10
        return kind, Q6

    def agent(i):
        rng = random.Random(seed * 1000 + i)
        latencies, errors = [], []
        conn = cur = None
        try:
            conn = agent_connection(airlock, tokens[i][1])
            cur = conn.cursor()
            cur.execute(LOOKUP.format(key=keys[i % len(keys)]))  # connect and authenticate before the clock
            cur.fetch_arrow_table()
        except Exception as e:
            errors.append(("setup", first_line(e)))
        barrier.wait()
        while conn is not None and time.perf_counter() < clock["deadline"]:
            kind, sql = pick(rng)
            started = time.perf_counter()
            try:
                cur.execute(sql)
                cur.fetch_arrow_table()
                latencies.append((kind, time.perf_counter() - started))
            except Exception as e:
                errors.append((kind, first_line(e)))
                try:
                    cur.close()
                except Exception:
                    pass
                cur = conn.cursor()
        try:
            if conn is not None:
                conn.close()
        except Exception as e:
            errors.append(("close", first_line(e)))
        per_thread[i] = (latencies, errors)

    threads = [threading.Thread(target=agent, args=(i,), daemon=True) for i in range(agents)]
    for t in threads:
        t.start()
    samples = []
    rss_stop = threading.Event()

    def sample_rss():
        while not rss_stop.is_set():
            samples.append((time.perf_counter(), airlock.rss_bytes()))
            rss_stop.wait(0.5)

    barrier.wait()
    rss_start = clock["rss"]
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    time.sleep(seconds / 2)
    rss_middle = airlock.rss_bytes()
    time.sleep(max(0.0, clock["deadline"] - time.perf_counter()))
    rss_end = airlock.rss_bytes()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - clock["started"]
    server_cpu = airlock.cpu_seconds() - clock["cpu"][0]
    client_cpu = sum(os.times()[:2]) - clock["cpu"][1]
    rss_stop.set()
    sampler.join()
    rss_after = airlock.rss_bytes()
    for token_id, _ in tokens:
        airlock.action("token.revoke", {"id": token_id})

    latencies = [x for lat, _ in per_thread for x in lat]
    errors = [x for _, err in per_thread for x in err]
    all_lat = [s for _, s in latencies]
    by_kind = {}
    for kind in kinds:
        lat = [s for k, s in latencies if k == kind]
        by_kind[kind] = {
            "queries": len(lat),
            "p50_s": percentile(lat, 50),
            "p99_s": percentile(lat, 99),
            "errors": sum(1 for k, _ in errors if k == kind),
        }
    distinct = []
    for kind, msg in errors:
        if (kind, msg) not in distinct:
            distinct.append((kind, msg))
    return {
        "agents": agents,
        "seconds": elapsed,
        "queries": len(all_lat),
        "qps": len(all_lat) / elapsed,
        "p50_s": percentile(all_lat, 50),
        "p99_s": percentile(all_lat, 99),
        "errors": len(errors),
        "first_errors": [f"{k}: {m}" for k, m in distinct[:5]],
        "by_kind": by_kind,
        # Where the two cores went: the server and this (client) process.
        "cpu_s": {"server": server_cpu, "client": client_cpu, "available": elapsed * (os.cpu_count() or 1)},
        "rss_mb": {
            "start": rss_start / 2**20,
            "middle": rss_middle / 2**20,
            "end": rss_end / 2**20,
            "max": max([b for _, b in samples] + [rss_start, rss_middle, rss_end]) / 2**20,
            "after": rss_after / 2**20,
        },
    }


def fmt_time(seconds):
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    ms = seconds * 1000
    if ms >= 1000:
        return f"{seconds:.2f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airlock", required=True, help="path to the airlock binary (release build)")
    parser.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    parser.add_argument("--data", default="bench-data", help="working directory for generated data")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query and side, after a warm-up (median reported)")
    parser.add_argument("--lookups", type=int, default=1000, help="point lookups per side")
    parser.add_argument("--pairs", type=int, default=20, help="alternated admin/agent pairs of Q1")
    parser.add_argument("--agents", type=int, default=64, help="concurrent agents")
    parser.add_argument("--concurrency-seconds", type=float, default=60, help="length of the concurrency run (0: skip)")
    parser.add_argument("--queries", default="1-22", help="TPC-H queries to time, e.g. 1,6,10-12 (default all)")
    parser.add_argument(
        "--duckdb2-python",
        default=str(DUCKDB2_VENV / "bin" / "python"),
        help="python of the venv with the newest DuckDB (default $AIRLOCK_BENCH_VENV_DUCKDB2/bin/python)",
    )
    parser.add_argument("--duckdb-memory-limit", help="airlock's DuckDB memory limit, e.g. 256MiB (default: airlock's)")
    args = parser.parse_args()
    numbers = []
    for part in args.queries.split(","):
        lo, _, hi = part.partition("-")
        numbers += range(int(lo), int(hi or lo) + 1)

    data = Path(args.data).resolve()
    parquet = generate(data, args.sf, TABLES)
    airlock_dir = data / f"airlock-sf{args.sf}"
    loader = Airlock(args.airlock, airlock_dir, args.duckdb_memory_limit)
    try:
        print("loading airlock (table.register + sync.start):", flush=True)
        load_times = load(loader, parquet)
    finally:
        loader.stop()

    # The references, each built (once) from the same Parquet into its own
    # file; 1.5.6 keeps the file older runs made.
    refs = []
    try:
        refs.append(Reference(sys.executable, data / f"reference-sf{args.sf}.duckdb", "embedded"))
        if not Path(args.duckdb2_python).exists():
            raise SystemExit(
                f"{args.duckdb2_python} is missing: benches/run creates that venv (or: python3 -m venv DIR && "
                "DIR/bin/pip install -r benches/requirements-duckdb2.txt, then AIRLOCK_BENCH_VENV_DUCKDB2=DIR)"
            )
        version2 = subprocess.run(
            [args.duckdb2_python, "-c", "import duckdb; print(duckdb.__version__)"], capture_output=True, text=True, check=True
        ).stdout.strip()
        refs.append(Reference(args.duckdb2_python, data / f"reference-sf{args.sf}-duckdb-{version2}.duckdb", "newest"))
        for ref in refs:
            print(f"reference {ref.label} ({ref.db.name}, timed as {ref.api}):", flush=True)
            ref.call({"op": "load", "parquet": str(parquet), "schema": SCHEMA, "tables": TABLES})
        # Random keys (the same every run): the first --lookups for the
        # lookups, all of them for the concurrency mix.
        sample = f"SELECT o_orderkey FROM tpch.orders ORDER BY hash(o_orderkey, 42) LIMIT {max(args.lookups, 100)}"
        keys = [r[0] for r in refs[0].call({"op": "rows", "sql": sample})["rows"]]

        # Serve from a fresh process, as after a deploy: memory the loads
        # left with the allocator must not count as query memory.
        airlock = Airlock(args.airlock, airlock_dir, args.duckdb_memory_limit)
        try:
            results, failures = run_workloads(airlock, refs, numbers, keys, args)
        finally:
            airlock.stop()
    finally:
        for ref in refs:
            ref.close()

    report = {
        "scale_factor": args.sf,
        "duckdb_memory_limit": args.duckdb_memory_limit,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {"repeat": args.repeat, "lookups": args.lookups, "pairs": args.pairs, "agents": args.agents,
                     "concurrency_seconds": args.concurrency_seconds, "queries": numbers},
        "references": [{"version": r.version, "role": r.role, "api": r.api, "db": str(r.db)} for r in refs],
        "load": load_times,
        **results,
        "airlock_failures": failures,
    }
    ok = [w for k, w in results["workloads"].items() if k.startswith("TPC-H Q") and w["airlock_s"] is not None]
    report["geomean_ratio"] = {r.version: geomean([w["reference"][r.version]["ratio"] for w in ok]) for r in refs}
    suffix = f"-duckdb-{args.duckdb_memory_limit}" if args.duckdb_memory_limit else ""
    out = data / f"results-sf{args.sf}{suffix}.json"
    out.write_text(json.dumps(report, indent=2))
    print_summary(report, refs)
    print(f"\nsaved {out}")
    if failures:
        print(f"WARNING: {len(failures)} TPC-H queries FAILED on airlock: {', '.join(failures)} (errors above)")
    if results.get("concurrency", {}).get("errors"):
        print(f"WARNING: {results['concurrency']['errors']} queries failed under concurrency (first errors above)")


def run_workloads(airlock, refs, numbers, keys, args):
    conn = flightsql.connect(airlock.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
    try:
        return admin_workloads(airlock, conn, refs, numbers, keys, args)
    finally:
        conn.close()


def admin_workloads(airlock, conn, refs, numbers, keys, args):
    cur = [conn.cursor()]

    def via_airlock(sql):
        cur[0].execute(sql)
        return cur[0].fetch_arrow_table()

    workloads = {}
    failures = {}
    plan = [("full scan lineitem", SCAN)] + [(f"TPC-H Q{n}", QUERIES[n].format(s=SCHEMA)) for n in numbers]
    for label, sql in plan:
        entry = {"reference": {}}
        # Warm-up (page cache, DuckDB buffers, plan cache), untimed, with
        # the server's peak RSS sampled during it.
        try:
            with PeakRss(airlock) as rss:
                warm = via_airlock(sql)
            entry["airlock_peak_rss_mb"] = rss.peak / 2**20
            entry["result_mb"] = warm.nbytes / 2**20
            del warm
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                table = via_airlock(sql)
                times.append(time.perf_counter() - started)
                rows = table.num_rows
                del table
            entry["airlock_s"] = statistics.median(times)
            entry["airlock_times"] = times
            entry["rows"] = rows
        except Exception as e:
            message = first_line(e)
            print(f"!! {label} FAILED on airlock: {message}", flush=True)
            failures[label] = message
            entry["airlock_error"] = message
            entry["airlock_s"] = None
            cur[0] = conn.cursor()
        for ref in refs:
            r = ref.call({"op": "run", "sql": sql, "repeat": args.repeat, "warmup": 1})
            entry["reference"][ref.version] = {"s": r["median_s"], "times": r["times"], "rows": r["rows"]}
            if entry["airlock_s"] is not None:
                if r["rows"] != entry["rows"]:
                    raise SystemExit(f"{label}: airlock returned {entry['rows']} rows, {ref.label} {r['rows']}")
                entry["reference"][ref.version]["ratio"] = entry["airlock_s"] / r["median_s"]
            entry.setdefault("rows", r["rows"])
        workloads[label] = entry
        line = f"  {label}: airlock {fmt_time(entry['airlock_s']) if entry['airlock_s'] else 'FAILED'}"
        for ref in refs:
            line += f", {ref.label} {fmt_time(entry['reference'][ref.version]['s'])}"
        print(line, flush=True)

    # Point lookups, one side at a time, so no side's threads compete with
    # the server for the CPU during another's lookups.
    lookups = [LOOKUP.format(key=key) for key in keys[: args.lookups]]
    for sql in lookups[:10]:
        via_airlock(sql)
    lat_a = []
    for sql in lookups:
        started = time.perf_counter()
        via_airlock(sql)
        lat_a.append(time.perf_counter() - started)
    entry = {
        "airlock_s": statistics.median(lat_a),
        "airlock_p95_s": percentile(lat_a, 95),
        "rows": 1,
        "lookups": len(lookups),
        "reference": {},
    }
    for ref in refs:
        r = ref.call({"op": "each", "sqls": lookups, "warmup": 10})
        if any(n != 1 for n in r["rows"]):
            raise SystemExit(f"point lookups: {ref.label} returned other than one row")
        m = statistics.median(r["times"])
        entry["reference"][ref.version] = {"s": m, "p95_s": percentile(r["times"], 95), "ratio": entry["airlock_s"] / m}
    workloads["point lookup orders"] = entry
    print(f"  point lookups: airlock {fmt_time(entry['airlock_s'])}", flush=True)

    # Governance and concurrency only involve airlock; the references sit idle.
    airlock.action("grant.set", BENCH_GRANT)
    governed = governance_overhead(airlock, via_airlock, keys[: args.lookups], args.pairs)
    print("  governed vs admin done", flush=True)
    results = {"workloads": workloads, "governed": governed}
    if args.concurrency_seconds > 0:
        print(f"  concurrency: {args.agents} agents for {args.concurrency_seconds:.0f}s ...", flush=True)
        results["concurrency"] = concurrency(airlock, args.agents, args.concurrency_seconds, keys)
    return results, failures


def print_summary(report, refs):
    workloads = report["workloads"]
    versions = [r.version for r in refs]
    print()
    header = f"{'workload':<20} {'airlock (ADBC)':>14}"
    for v in versions:
        header += f" {'DuckDB ' + v:>13} {'ratio':>7}"
    print(f"ratio = airlock's median / DuckDB's (above 1: airlock slower); the README's targets "
          f"are against the newest, DuckDB {versions[-1]}")
    print(header + "  notes")
    for label, r in workloads.items():
        a = r["airlock_s"]
        line = f"{label:<20} {fmt_time(a) if a is not None else 'FAILED':>14}"
        for v in versions:
            ref = r["reference"][v]
            ratio = f"{ref['ratio']:.2f}x" if "ratio" in ref else "-"
            line += f" {fmt_time(ref['s']):>13} {ratio:>7}"
        notes = ""
        if label == "full scan lineitem" and a is not None:
            notes = f"{r['rows']:,} rows, {r['result_mb']:.0f} MB; server peak RSS {r['airlock_peak_rss_mb']:.0f} MB"
        elif "airlock_p95_s" in r:
            notes = f"{r['lookups']} keys; p95 airlock {fmt_time(r['airlock_p95_s'])}, " + ", ".join(
                f"{v} {fmt_time(r['reference'][v]['p95_s'])}" for v in versions
            )
        elif a is None:
            notes = f"ERROR: {r['airlock_error'][:80]}"
        else:
            notes = f"{r['rows']:,} row{'s' if r['rows'] != 1 else ''}"
        print(f"{line}  {notes}")
    queries = {k: v for k, v in workloads.items() if k.startswith("TPC-H Q")}
    ok = {k: v for k, v in queries.items() if v["airlock_s"] is not None}
    line = f"{'geomean, ' + str(len(ok)) + ' queries':<20} {'':>14}"
    for v in versions:
        line += f" {'':>13} {report['geomean_ratio'][v]:>6.2f}x"
    print(line)
    peak = max((q.get("airlock_peak_rss_mb", 0) for q in queries.values()), default=0)
    print(f"server peak RSS over the TPC-H queries: {peak:.0f} MB")
    if report["airlock_failures"]:
        print()
        print(f"!!! {len(report['airlock_failures'])} of {len(queries)} TPC-H queries FAILED on airlock "
              f"(left out of the geometric mean):")
        for label, message in report["airlock_failures"].items():
            print(f"!!!   {label}: {message}")

    print()
    print(f"{'as agent vs admin':<22} {'admin':>10} {'agent':>10} {'added':>7}  per-pair agent/admin p10..p90 (min..max)")
    for label, r in report["governed"].items():
        print(
            f"{label:<22} {fmt_time(r['admin_s']):>10} {fmt_time(r['agent_s']):>10} {r['added'] * 100:>+6.1f}%  "
            f"{r['pair_ratio_p10']:.2f}..{r['pair_ratio_p90']:.2f} ({r['pair_ratio_min']:.2f}..{r['pair_ratio_max']:.2f}), "
            f"{r['pairs']} pairs"
        )

    c = report.get("concurrency")
    if c:
        print()
        print(
            f"concurrency: {c['agents']} agents, {c['seconds']:.0f}s, mix of point lookup / day count / limit 10 / Q6\n"
            f"  {c['qps']:.1f} queries/s ({c['queries']:,} ok), latency p50 {fmt_time(c['p50_s'])}, "
            f"p99 {fmt_time(c['p99_s'])}, errors {c['errors']}\n"
            f"  per kind p50/p99: "
            + ", ".join(f"{k} {fmt_time(v['p50_s'])}/{fmt_time(v['p99_s'])}" for k, v in c["by_kind"].items())
            + f"\n  server RSS start {c['rss_mb']['start']:.0f} MB, middle {c['rss_mb']['middle']:.0f} MB, "
            f"end {c['rss_mb']['end']:.0f} MB (max {c['rss_mb']['max']:.0f} MB)\n"
            f"  CPU: server {c['cpu_s']['server']:.0f} s, bench client {c['cpu_s']['client']:.0f} s "
            f"of {c['cpu_s']['available']:.0f} s ({os.cpu_count()} cores shared)"
        )
        for e in c["first_errors"]:
            print(f"  error: {e}")


if __name__ == "__main__":
    sys.exit(main())
