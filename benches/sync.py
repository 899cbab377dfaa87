"""Replication benchmark: airlock's sync vs DuckDB loading the same Parquet in-process.

Workloads (TPC-H lineitem, generated once under bench-data/):
  full         `sync.start` of a `full` table from Parquet vs DuckDB's
               `INSERT INTO t SELECT * FROM read_parquet(...)` into a fresh
               database file, both ending with a durable table;
  incremental  an `incremental` table (cursor updated_at, key
               l_orderkey+l_linenumber): a new Parquet file rewrites 10% of
               the rows with a later updated_at, then `sync.start` vs DuckDB
               reading the same files past the same watermark and upserting
               (DELETE matching keys + INSERT, one transaction).

Each side runs alone (never both at once: two cores are shared), repeated;
medians and ratios are printed and saved with airlock's peak RSS during
loads. Nothing here asserts a time: it measures and reports.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import duckdb

from tpch import Airlock, PeakRss, generate

KEY = ["l_orderkey", "l_linenumber"]
BASE_TS = "2024-01-01 00:00:00"


def sync(airlock, table):
    started = time.perf_counter()
    job = airlock.action("sync.start", {"table": table})["job_id"]
    while True:
        status = airlock.action("sync.status", {"job_id": job})
        if status["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if status["state"] != "succeeded":
        raise SystemExit(f"syncing {table} failed: {status['error']}")
    return elapsed, status


def prepare_incremental(data: Path, lineitem: Path, runs: int):
    """lineitem + updated_at as base files, and one change file per run,
    each rewriting a different 10% of rows (by l_orderkey % 10) with a
    changed l_quantity. updated_at grows with l_orderkey (one second per
    order) and each run's changes come after everything before, as rows
    written over time do; Parquet statistics then let a sync skip what it
    has seen."""
    target = data / "sync-incremental"
    done = target / f".done-{runs}"
    if done.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    (target / "base").mkdir(parents=True)
    (target / "changes").mkdir()
    con = duckdb.connect()
    span = con.execute(f"SELECT max(l_orderkey) + 1 FROM read_parquet('{lineitem}/*.parquet')").fetchone()[0]
    for i, part in enumerate(sorted(lineitem.glob("*.parquet"))):
        con.execute(
            f"""COPY (SELECT *, TIMESTAMP '{BASE_TS}' + to_seconds(l_orderkey) AS updated_at
                      FROM read_parquet('{part}'))
                TO '{target}/base/part-{i}.parquet' (FORMAT parquet)"""
        )
    for run in range(runs):
        con.execute(
            f"""COPY (SELECT * REPLACE (CAST(l_quantity + 1 AS DECIMAL(15, 2)) AS l_quantity,
                                        updated_at + to_seconds({(run + 1) * span}) AS updated_at)
                      FROM read_parquet('{target}/base/*.parquet')
                      WHERE l_orderkey % 10 = {run})
                TO '{target}/changes/change-{run}.parquet' (FORMAT parquet)"""
        )
    done.touch()
    return target


def duckdb_full(path: Path, files: str):
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(path))
    schema = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{files}')").fetchall()
    con.execute("CREATE TABLE t ({})".format(", ".join(f'"{c[0]}" {c[1]}' for c in schema)))
    con.execute(f"INSERT INTO t SELECT * FROM read_parquet('{files}')")
    con.close()
    return time.perf_counter() - started


def duckdb_upsert(con, files: str, watermark: str):
    started = time.perf_counter()
    keys = ", ".join(KEY)
    con.execute("BEGIN")
    con.execute(
        f"""CREATE TEMP TABLE delta AS SELECT * FROM read_parquet('{files}', union_by_name = true)
            WHERE updated_at >= TIMESTAMP '{watermark}'
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY updated_at DESC) = 1"""
    )
    con.execute(f"DELETE FROM t WHERE ({keys}) IN (SELECT ({keys}) FROM delta)")
    con.execute("INSERT INTO t SELECT * FROM delta")
    con.execute("DROP TABLE delta")
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airlock", required=True, help="path to the airlock binary (release build)")
    parser.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    parser.add_argument("--data", default="bench-data", help="working directory for generated data")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median reported)")
    parser.add_argument("--duckdb-memory-limit", help="airlock's DuckDB memory limit, e.g. 1GiB (default: airlock's)")
    args = parser.parse_args()

    data = Path(args.data).resolve()
    lineitem = generate(data, args.sf) / "lineitem"
    inc = prepare_incremental(data, lineitem, args.repeat)
    work = data / f"sync-sf{args.sf}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = {}

    # Full loads, alternating sides run by run.
    airlock = Airlock(args.airlock, work / "airlock", args.duckdb_memory_limit)
    try:
        airlock.action("table.register", {"name": "bench.lineitem", "source": f"file://{lineitem}/*.parquet"})
        ours, theirs, peak, rows = [], [], 0, 0
        for run in range(args.repeat):
            with PeakRss(airlock) as rss:
                elapsed, status = sync(airlock, "bench.lineitem")
            ours.append(elapsed)
            peak = max(peak, rss.peak)
            rows = status["rows"]
            theirs.append(duckdb_full(work / "reference-full.duckdb", f"{lineitem}/*.parquet"))
            print(f"  full run {run + 1}: airlock {ours[-1]:.2f}s, DuckDB {theirs[-1]:.2f}s", flush=True)
        results["full load lineitem"] = {
            "airlock_s": statistics.median(ours),
            "duckdb_in_process_s": statistics.median(theirs),
            "rows": rows,
            "airlock_peak_rss_mb": peak / 2**20,
        }

        # Incremental: both sides start from the same base table, then take
        # the same change files one run at a time.
        source = inc / "live"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir()
        for part in sorted((inc / "base").glob("*.parquet")):
            os.link(part, source / part.name)
        airlock.action(
            "table.register",
            {
                "name": "bench.lineitem_inc",
                "source": f"file://{source}/*.parquet",
                "strategy": "incremental",
                "cursor": "updated_at",
                "primary_key": KEY,
            },
        )
        sync(airlock, "bench.lineitem_inc")
        ref_path = work / "reference-inc.duckdb"
        ref = duckdb.connect(str(ref_path))
        ref.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{source}/*.parquet')")
        ref.execute("CHECKPOINT")
        ours, theirs, peak, changed = [], [], 0, 0
        watermark = BASE_TS
        for run in range(args.repeat):
            os.link(inc / "changes" / f"change-{run}.parquet", source / f"change-{run}.parquet")
            with PeakRss(airlock) as rss:
                elapsed, status = sync(airlock, "bench.lineitem_inc")
            ours.append(elapsed)
            peak = max(peak, rss.peak)
            changed = status["rows"]
            theirs.append(duckdb_upsert(ref, f"{source}/*.parquet", watermark))
            watermark = status["watermark_after"]
            print(
                f"  incremental run {run + 1}: {changed:,} changed rows; airlock {ours[-1]:.2f}s, DuckDB {theirs[-1]:.2f}s",
                flush=True,
            )
        total = ref.execute("SELECT count(*), sum(l_quantity) FROM t").fetchone()
        ref.close()
        results["incremental 10% lineitem"] = {
            "airlock_s": statistics.median(ours),
            "duckdb_in_process_s": statistics.median(theirs),
            "rows": changed,
            "table_rows": total[0],
            "airlock_peak_rss_mb": peak / 2**20,
        }
        # Both sides must hold the same table in the end.
        import adbc_driver_flightsql.dbapi as flightsql

        conn = flightsql.connect(airlock.uri, db_kwargs={"username": "admin", "password": "bench-password"})
        cur = conn.cursor()
        cur.execute("SELECT count(*), sum(l_quantity) FROM bench.lineitem_inc")
        mine = cur.fetchone()
        conn.close()
        if tuple(mine) != tuple(total):
            raise SystemExit(f"incremental: airlock holds {mine}, DuckDB {total}")
    finally:
        airlock.stop()

    # The measure: airlock's rate as a fraction of DuckDB's own.
    for r in results.values():
        r["rate_vs_duckdb"] = r["duckdb_in_process_s"] / r["airlock_s"]
    report = {
        "scale_factor": args.sf,
        "duckdb_memory_limit": args.duckdb_memory_limit,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    suffix = f"-duckdb-{args.duckdb_memory_limit}" if args.duckdb_memory_limit else ""
    out = data / f"sync-results-sf{args.sf}{suffix}.json"
    out.write_text(json.dumps(report, indent=2))
    print()
    print(f"{'workload':<26} {'airlock sync':>13} {'DuckDB in-proc':>15} {'rate':>7}  notes")
    for label, r in results.items():
        print(
            f"{label:<26} {r['airlock_s']:>11.2f} s {r['duckdb_in_process_s']:>13.2f} s {r['rate_vs_duckdb']:>6.2f}x"
            f"  {r['rows']:,} rows, server peak RSS {r['airlock_peak_rss_mb']:.0f} MB"
        )
    print(f"\nsaved {out}")


if __name__ == "__main__":
    sys.exit(main())
