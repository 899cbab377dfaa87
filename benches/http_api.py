"""The HTTP port beside Flight, in one run on the same server and data:

  * the full scan of TPC-H lineitem through Flight SQL (ADBC, Arrow) and
    through POST /api/v1/query as an Arrow IPC stream (read with
    pyarrow.ipc) and as CSV (bytes received): medians after a warm-up,
    rows/s and MB/s, and the ratio of each to Flight;
  * a point lookup on orders by random key through the MCP `query` tool
    (the official `mcp` client over streamable HTTP, one session) and
    through Flight (ADBC): median and p95 round trip; the target for MCP
    is 5 ms on loopback.

Uses benches/tpch.py's data and airlock directory (loading what is
missing). Nothing here asserts a time. Results print and are saved to
bench-data/results-http-sf<SF>.json.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import httpx2
import pyarrow.ipc as ipc
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tpch import LOOKUP, PASSWORD, SCAN, SCHEMA, Airlock, fmt_time, generate, load, percentile  # noqa: E402

TABLES = ["lineitem", "orders"]


def post(url, body, token):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    request.add_header("authorization", f"Bearer {token}")
    return urllib.request.urlopen(request, timeout=600)


def timed(fn, repeat):
    fn()  # warm-up
    times, size = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        size = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, size


async def mcp_lookups(url, token, sqls):
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                for sql in sqls[:10]:
                    await session.call_tool("query", {"sql": sql})
                times = []
                for sql in sqls:
                    started = time.perf_counter()
                    result = await session.call_tool("query", {"sql": sql})
                    times.append(time.perf_counter() - started)
                    if result.is_error:
                        raise SystemExit(f"MCP query failed: {result.content[0].text}")
                return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airlock", required=True, help="path to the airlock binary (release build)")
    parser.add_argument("--sf", default="1", help="TPC-H scale factor (default 1)")
    parser.add_argument("--data", default="bench-data", help="working directory for generated data")
    parser.add_argument("--repeat", type=int, default=5, help="timed scans per side after a warm-up")
    parser.add_argument("--lookups", type=int, default=500, help="point lookups per side")
    args = parser.parse_args()

    data = Path(args.data).resolve()
    parquet = generate(data, args.sf, TABLES)
    airlock_dir = data / f"airlock-sf{args.sf}"
    airlock = Airlock(args.airlock, airlock_dir)
    try:
        listed = {t["name"] for t in airlock.action("table.list", {})["tables"]}
        missing = [t for t in TABLES if f"{SCHEMA}.{t}" not in listed]
        if missing:
            print("loading airlock:", flush=True)
            load(airlock, parquet, missing)
        token = json.load(post(f"{airlock.http_url}/api/v1/login", {"username": "admin", "password": PASSWORD}, ""))["token"]
        conn = flightsql.connect(airlock.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
        cur = conn.cursor()

        def flight_scan():
            cur.execute(SCAN)
            table = cur.fetch_arrow_table()
            return table.num_rows, table.nbytes

        def arrow_scan():
            with post(f"{airlock.http_url}/api/v1/query", {"sql": SCAN, "format": "arrow"}, token) as response:
                table = ipc.open_stream(response).read_all()
            return table.num_rows, table.nbytes

        def csv_scan():
            received = 0
            with post(f"{airlock.http_url}/api/v1/query", {"sql": SCAN, "format": "csv"}, token) as response:
                while chunk := response.read(1 << 20):
                    received += len(chunk)
            return None, received

        scans = {}
        for label, fn in [("Flight (ADBC)", flight_scan), ("HTTP arrow", arrow_scan), ("HTTP csv", csv_scan)]:
            median, times, (rows, size) = timed(fn, args.repeat)
            scans[label] = {"s": median, "times": times, "rows": rows, "bytes": size}
            print(f"  scan lineitem, {label}: {fmt_time(median)}", flush=True)
        rows = scans["Flight (ADBC)"]["rows"]
        if scans["HTTP arrow"]["rows"] != rows:
            raise SystemExit(f"HTTP arrow returned {scans['HTTP arrow']['rows']} rows, Flight {rows}")
        for entry in scans.values():
            entry["rows_per_s"] = rows / entry["s"]
            entry["mb_per_s"] = entry["bytes"] / entry["s"] / 2**20
            entry["ratio_to_flight"] = entry["s"] / scans["Flight (ADBC)"]["s"]

        cur.execute(f"SELECT o_orderkey FROM {SCHEMA}.orders ORDER BY (o_orderkey * 2654435761) % 1000003 LIMIT {args.lookups}")
        keys = [r[0] for r in cur.fetchall()]
        random.Random(7).shuffle(keys)
        sqls = [LOOKUP.format(key=k) for k in keys]
        flight_times = []
        for sql in sqls[:10]:
            cur.execute(sql)
            cur.fetch_arrow_table()
        for sql in sqls:
            started = time.perf_counter()
            cur.execute(sql)
            cur.fetch_arrow_table()
            flight_times.append(time.perf_counter() - started)
        conn.close()
        mcp_times = asyncio.run(mcp_lookups(f"{airlock.http_url}/mcp", token, sqls))
        lookups = {
            "Flight (ADBC)": {"s": statistics.median(flight_times), "p95_s": percentile(flight_times, 95)},
            "MCP query tool": {"s": statistics.median(mcp_times), "p95_s": percentile(mcp_times, 95)},
        }
    finally:
        airlock.stop()

    print()
    print(f"{'lineitem scan':<16} {'median':>10} {'rows/s':>12} {'MB/s':>8} {'vs Flight':>10}")
    for label, entry in scans.items():
        print(f"{label:<16} {fmt_time(entry['s']):>10} {entry['rows_per_s']:>12,.0f} {entry['mb_per_s']:>8.0f} {entry['ratio_to_flight']:>9.2f}x")
    print(f"  ({rows:,} rows; MB/s counts Arrow bytes for Flight and arrow, bytes received for csv)")
    print()
    print(f"{'point lookup':<16} {'median':>10} {'p95':>10}")
    for label, entry in lookups.items():
        print(f"{label:<16} {fmt_time(entry['s']):>10} {fmt_time(entry['p95_s']):>10}")
    print(f"  ({len(sqls)} keys; target for MCP: 5 ms)")
    report = {
        "scale_factor": args.sf,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "scan": scans,
        "lookups": lookups,
    }
    out = data / f"results-http-sf{args.sf}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
