"""Query airlock from Python: ADBC, pandas and polars, plus a Flight action.

Start the server first (from the repository root):

    AIRLOCK_ADMIN_PASSWORD=change-me cargo run --release -- serve --demo

then, with `pip install adbc-driver-flightsql pyarrow pandas polars`:

    python examples/quickstart.py
"""

import json
import os

import adbc_driver_flightsql.dbapi as flightsql
import pandas as pd
import polars as pl
import pyarrow.flight as flight

URI = os.environ.get("AIRLOCK_URI", "grpc://127.0.0.1:50051")
PASSWORD = os.environ.get("AIRLOCK_ADMIN_PASSWORD", "change-me")

conn = flightsql.connect(URI, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)

# Arrow straight from the cursor.
with conn.cursor() as cur:
    cur.execute("SELECT region, count(*) AS orders, sum(amount) AS revenue FROM demo.orders GROUP BY region ORDER BY region")
    print(cur.fetch_arrow_table())

# Parameters bind through a prepared statement.
with conn.cursor() as cur:
    cur.execute("SELECT name, email FROM demo.customers WHERE customer_id = ?", parameters=(42,))
    print(cur.fetchall())

# pandas and polars on the same connection.
print(pd.read_sql("SELECT status, count(*) AS n FROM demo.orders GROUP BY status", conn))
print(pl.read_database("SELECT * FROM demo.customers LIMIT 5", connection=conn))
conn.close()

# Actions are JSON over Flight DoAction: mint a swarm token for your agents.
client = flight.FlightClient(URI)
options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])
body = json.dumps({"kind": "swarm", "name": "analysts", "ttl_seconds": 3600}).encode()
result = next(client.do_action(flight.Action("token.create", body), options))
swarm = json.loads(result.body.to_pybytes())
print("swarm token id:", swarm["id"], "expires", swarm["expires_at"])
