"""Data tools benchmark: exports and profiles, side by side with DuckDB in-process.

Workloads (TPC-H lineitem, generated once under bench-data/):
  export parquet  `query.export` of 1,000,000 lineitem rows to a Parquet
                  artifact (wait: true, so the time covers the query, the
                  encoding and the durable write) vs DuckDB's
                  `COPY (SELECT … LIMIT 1000000) TO '…' (FORMAT parquet)`;
  export csv      the same to CSV vs `COPY … (FORMAT csv)`;
  profile         `table.profile` of the whole of lineitem vs DuckDB's
                  `SUMMARIZE lineitem`. Profiles are cached per table
                  version and policy, so each run asks for the columns in a
                  different order (a different request): no run is served
                  from the cache.

Each side runs alone (two cores are shared), alternating run by run;
medians and ratios are printed and saved. Nothing here asserts a time.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tpch import Airlock, generate

EXPORT_ROWS = 1_000_000
EXPORT_SQL = f"SELECT * FROM bench.lineitem LIMIT {EXPORT_ROWS}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airlock", required=True, help="path to the airlock binary (release build)")
    parser.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    parser.add_argument("--data", default="bench-data", help="working directory for generated data")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median reported)")
    args = parser.parse_args()

    import duckdb

    data = Path(args.data).resolve()
    lineitem = generate(data, args.sf) / "lineitem"
    work = data / f"tools-sf{args.sf}"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "airlock.toml"
    # Exports of a million wide rows are bigger than the default 50 MB limit.
    config.write_text('[artifacts]\nmax_bytes = 2000000000\nswarm_quota = "100 GiB"\n')
    airlock_dir = Path(tempfile.mkdtemp(prefix="airlock-", dir=work))
    airlock = Airlock(args.airlock, airlock_dir, extra_args=("--config", str(config)))
    reference = duckdb.connect(str(work / "reference.duckdb"))
    if not reference.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'lineitem'").fetchone()[0]:
        reference.execute(f"CREATE TABLE lineitem AS SELECT * FROM read_parquet('{lineitem}/*.parquet')")
        reference.execute("CHECKPOINT")
    results = {}
    try:
        airlock.action("table.register", {"name": "bench.lineitem", "source": f"file://{lineitem}/*.parquet"})
        job = airlock.action("sync.start", {"table": "bench.lineitem"})["job_id"]
        while airlock.action("sync.status", {"job_id": job})["state"] not in ("succeeded", "failed"):
            time.sleep(0.2)

        for fmt in ("parquet", "csv"):
            ours, theirs, size, their_size = [], [], 0, 0
            for run in range(args.repeat):
                started = time.perf_counter()
                done = airlock.action(
                    "query.export",
                    {"sql": EXPORT_SQL, "format": fmt, "name": f"export_{fmt}_{run}", "wait": True},
                )
                ours.append(time.perf_counter() - started)
                if done["state"] != "succeeded":
                    raise SystemExit(f"export failed: {done['error']}")
                assert done["result"]["rows"] == EXPORT_ROWS, done
                size = done["result"]["bytes"]
                target = work / f"duckdb-export.{fmt}"
                target.unlink(missing_ok=True)
                started = time.perf_counter()
                reference.execute(
                    f"COPY (SELECT * FROM lineitem LIMIT {EXPORT_ROWS}) TO '{target}' (FORMAT {fmt})"
                )
                theirs.append(time.perf_counter() - started)
                their_size = target.stat().st_size
                print(f"  export {fmt} run {run + 1}: airlock {ours[-1]:.2f}s, DuckDB {theirs[-1]:.2f}s", flush=True)
            results[f"export 1M rows {fmt}"] = {
                "airlock_s": statistics.median(ours),
                "duckdb_in_process_s": statistics.median(theirs),
                "airlock_bytes": size,
                "duckdb_bytes": their_size,
            }

        columns = [r[0] for r in reference.execute("DESCRIBE lineitem").fetchall()]
        ours, theirs = [], []
        for run in range(args.repeat):
            order = columns[run % len(columns):] + columns[: run % len(columns)]
            started = time.perf_counter()
            profile = airlock.action("table.profile", {"table": "bench.lineitem", "columns": order})
            ours.append(time.perf_counter() - started)
            assert profile["rows"] == reference.execute("SELECT count(*) FROM lineitem").fetchone()[0]
            started = time.perf_counter()
            reference.execute("SUMMARIZE lineitem").fetchall()
            theirs.append(time.perf_counter() - started)
            print(f"  profile run {run + 1}: airlock {ours[-1]:.2f}s, DuckDB SUMMARIZE {theirs[-1]:.2f}s", flush=True)
        results["profile lineitem"] = {
            "airlock_s": statistics.median(ours),
            "duckdb_in_process_s": statistics.median(theirs),
            "columns": len(columns),
        }
    finally:
        airlock.stop()
        reference.close()

    for r in results.values():
        r["ratio"] = r["airlock_s"] / r["duckdb_in_process_s"]
    report = {
        "scale_factor": args.sf,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    out = data / f"tools-results-sf{args.sf}.json"
    out.write_text(json.dumps(report, indent=2))
    print()
    print(f"{'workload':<24} {'airlock':>10} {'DuckDB in-proc':>15} {'ratio':>7}")
    for label, r in results.items():
        print(f"{label:<24} {r['airlock_s']:>8.2f} s {r['duckdb_in_process_s']:>13.2f} s {r['ratio']:>6.2f}x")
    print(f"\nsaved {out}")


if __name__ == "__main__":
    sys.exit(main())
