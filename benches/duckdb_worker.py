"""A DuckDB reference side for benches/tpch.py, run as a subprocess.

One Python process can load only one duckdb version, so benches/tpch.py
starts this script once per reference version, each from its own venv
(DuckDB 1.5.6, which airlock embedded before 2.0.1, from the bench venv;
the newest DuckDB from PyPI, which airlock embeds, from a second venv that
benches/run creates), each on its
own database file (database files are not shared across versions). Both
sides run this same code, so they are timed the same way.

Protocol: one JSON object per line on stdin, one JSON answer per line on
stdout (nothing else is written to stdout; messages go to stderr):

  {"op": "hello"}                               -> {"version", "api"}
  {"op": "load", "parquet": DIR, "schema": "tpch", "tables": [...]}
                                                -> {"loaded": {table: seconds}}
  {"op": "run", "sql": SQL, "repeat": N, "warmup": 1}
                                                -> {"median_s", "times", "rows", "nbytes"}
  {"op": "each", "sqls": [SQL, ...], "warmup": K}
                                                -> {"times": [...], "rows": [...]}
  {"op": "rows", "sql": SQL}                    -> {"rows": [[...], ...]} (small results)
  {"op": "quit"}

A failing request answers {"error": "..."} and the worker carries on.
Timed: running the SQL and materialising its whole result as an Arrow
table in this process (what a Python client of DuckDB would do).
"""

import argparse
import json
import statistics
import sys
import time

import duckdb


def arrow_fetcher(con):
    """The way this duckdb version turns a query's result into an Arrow
    table without needless copies. DuckDB 2.x warns that Arrow output of a
    DB-API result (`con.execute(sql).to_arrow_table()`) copies the rows
    once more and recommends `con.sql(sql).to_arrow_table()`; 1.x has
    `execute(...).to_arrow_table()` (`fetch_arrow_table()` before 1.4)."""
    major = int(duckdb.__version__.split(".")[0])
    if major >= 2:
        return "con.sql(sql).to_arrow_table()", lambda sql: con.sql(sql).to_arrow_table()
    probe = con.execute("SELECT 1")
    if hasattr(probe, "to_arrow_table"):
        return "con.execute(sql).to_arrow_table()", lambda sql: con.execute(sql).to_arrow_table()
    return "con.execute(sql).fetch_arrow_table()", lambda sql: con.execute(sql).fetch_arrow_table()


def load(con, parquet, schema, tables):
    loaded = {}
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    existing = {(r[0], r[1]) for r in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()}
    for table in tables:
        if (schema, table) in existing:
            continue
        if ("main", table) in existing:
            # Earlier versions of the bench kept lineitem and orders in
            # the main schema; DuckDB cannot move a table between schemas.
            con.execute(f"DROP TABLE main.{table}")
            con.execute("CHECKPOINT")
        started = time.perf_counter()
        con.execute(f"CREATE TABLE {schema}.{table} AS SELECT * FROM read_parquet('{parquet}/{table}/*.parquet')")
        con.execute("CHECKPOINT")
        loaded[table] = time.perf_counter() - started
        print(f"  duckdb {duckdb.__version__} loaded {schema}.{table} in {loaded[table]:.1f}s", file=sys.stderr, flush=True)
    return {"loaded": loaded}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True, help="the reference database file (one per DuckDB version)")
    args = parser.parse_args()
    con = duckdb.connect(args.db)
    api, fetch = arrow_fetcher(con)

    def answer(request):
        op = request["op"]
        if op == "hello":
            return {"version": duckdb.__version__, "api": api}
        if op == "load":
            return load(con, request["parquet"], request["schema"], request["tables"])
        if op == "rows":
            return {"rows": [list(r) for r in con.execute(request["sql"]).fetchall()]}
        if op == "run":
            sql = request["sql"]
            for _ in range(request.get("warmup", 1)):
                fetch(sql)
            times = []
            rows = nbytes = 0
            for _ in range(request["repeat"]):
                started = time.perf_counter()
                table = fetch(sql)
                times.append(time.perf_counter() - started)
                rows, nbytes = table.num_rows, table.nbytes
                del table
            return {"median_s": statistics.median(times), "times": times, "rows": rows, "nbytes": nbytes}
        if op == "each":
            sqls = request["sqls"]
            for sql in sqls[: request.get("warmup", 0)]:
                fetch(sql)
            times, rows = [], []
            for sql in sqls:
                started = time.perf_counter()
                table = fetch(sql)
                times.append(time.perf_counter() - started)
                rows.append(table.num_rows)
            return {"times": times, "rows": rows}
        raise ValueError(f"unknown op {op!r}")

    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            reply = answer(request)
        except Exception as e:  # reported to the caller, which decides
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply, default=str) + "\n")
        sys.stdout.flush()
    con.close()


if __name__ == "__main__":
    main()
