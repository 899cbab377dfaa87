"""Agent context through pyarrow.flight actions, as two swarms see it.

`sales` may query demo.orders and demo.customers without the email
column; `support` may query demo.customers only, with email masked.
Descriptions, rules, golden SQL and search results never show either swarm
a table or column it could not query, and survive a restart."""

import tempfile
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import PASSWORD, Airlock, call


def bearer(token):
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def setup_swarms(server):
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(client, admin, "grant.set", {"swarm": "sales", "tables": {"demo.orders": {}, "demo.customers": {"columns": {"email": "deny"}}}})
    call(client, admin, "grant.set", {"swarm": "support", "tables": {"demo.customers": {"columns": {"email": {"mask": "'***'"}}}}})
    agents = {}
    for swarm in ("sales", "support"):
        token = call(client, admin, "token.create", {"kind": "agent", "name": f"{swarm}_ctx", "swarm": swarm})["token"]
        agents[swarm] = (server.flight_client(), bearer(token))
        agents[swarm + "_token"] = token
    return client, admin, agents


@pytest.fixture(scope="module")
def ctx():
    """A server of its own: the test restarts it."""
    import os

    binary = os.environ["AIRLOCK_BIN"]
    with tempfile.TemporaryDirectory(prefix="airlock-context-") as tmp:
        data = Path(tmp) / "data"
        server = Airlock(binary, data)
        client, admin, agents = setup_swarms(server)
        state = {"server": server, "admin": (client, admin), "agents": agents, "binary": binary, "data": data}
        yield state
        state["server"].stop()


def fails(client, options, name, body):
    with pytest.raises(Exception) as error:
        call(client, options, name, body)
    return str(error.value)


def test_descriptions_show_only_what_the_caller_may_query(ctx):
    client, admin = ctx["admin"]
    call(client, admin, "context.describe", {"table": "demo.orders", "description": "One row per order placed in the shop", "columns": {"amount": "Order total in EUR, refunds excluded"}})
    notes = call(client, admin, "context.describe", {"table": "demo.customers", "description": "People who bought something", "columns": {"email": "Contact address, personal data", "region": "Sales region of the customer"}})
    assert notes["columns"] == {"email": "Contact address, personal data", "region": "Sales region of the customer"}
    # An empty text removes a description.
    notes = call(client, admin, "context.describe", {"table": "demo.customers", "columns": {"region": ""}})
    assert notes["columns"] == {"email": "Contact address, personal data"}
    call(client, admin, "context.describe", {"table": "demo.customers", "columns": {"region": "Sales region of the customer"}})

    assert "does not exist" in fails(client, admin, "context.describe", {"table": "demo.nope", "description": "x"})
    assert "no column 'nope'" in fails(client, admin, "context.describe", {"table": "demo.orders", "columns": {"nope": "x"}})
    sales_client, sales = ctx["agents"]["sales"]
    assert "admin" in fails(sales_client, sales, "context.describe", {"table": "demo.orders", "description": "mine now"})

    answer = call(sales_client, sales, "context.search", {"question": "order total amount in EUR", "k": 5})
    tables = {t["table"]: t for t in answer["tables"]}
    assert answer["tables"][0]["table"] == "demo.orders"
    assert tables["demo.orders"]["description"] == "One row per order placed in the shop"
    amount = next(c for c in tables["demo.orders"]["columns"] if c["name"] == "amount")
    assert amount["description"] == "Order total in EUR, refunds excluded"
    # Sales may not query customers.email: neither the column nor its description exists for it.
    customers = call(sales_client, sales, "context.search", {"question": "customers region", "k": 5})["tables"]
    customers = next(t for t in customers if t["table"] == "demo.customers")
    assert "email" not in [c["name"] for c in customers["columns"]]
    assert "personal data" not in str(customers)

    support_client, support = ctx["agents"]["support"]
    answer = call(support_client, support, "context.search", {"question": "orders placed in the shop amount", "k": 5})
    assert [t["table"] for t in answer["tables"]] in ([], ["demo.customers"])
    assert "One row per order" not in str(answer) and "demo.orders" not in str(answer)
    # Support sees the masked email column, with its description.
    customers = call(support_client, support, "context.search", {"question": "contact address of customers", "k": 5})["tables"][0]
    email = next(c for c in customers["columns"] if c["name"] == "email")
    assert customers["table"] == "demo.customers" and email["description"] == "Contact address, personal data"


def test_rules_reach_only_who_sees_every_table_they_name(ctx):
    client, admin = ctx["admin"]
    everywhere = call(client, admin, "context.instruction.add", {"text": "Dates are in UTC"})
    on_orders = call(client, admin, "context.instruction.add", {"text": "Revenue excludes cancelled orders", "tables": ["demo.orders"]})
    on_both = call(client, admin, "context.instruction.add", {"text": "Join orders to customers on customer_id", "tables": ["demo.orders", "demo.customers"]})
    on_customers = call(client, admin, "context.instruction.add", {"text": "Regions are EU, US, APAC, LATAM", "tables": ["demo.customers"]})
    assert "does not exist" in fails(client, admin, "context.instruction.add", {"text": "x", "tables": ["demo.nope"]})
    assert "empty" in fails(client, admin, "context.instruction.add", {"text": "  "})

    def ids(c, o, body=None):
        return {i["id"] for i in call(c, o, "context.instruction.list", body)["instructions"]}

    sales_client, sales = ctx["agents"]["sales"]
    support_client, support = ctx["agents"]["support"]
    assert ids(sales_client, sales) >= {everywhere["id"], on_orders["id"], on_both["id"], on_customers["id"]}
    assert ids(support_client, support) == {everywhere["id"], on_customers["id"]}
    assert ids(sales_client, sales, {"table": "demo.customers"}) == {everywhere["id"], on_both["id"], on_customers["id"]}
    assert "admin" in fails(support_client, support, "context.instruction.add", {"text": "mine"})

    # Search brings the rules of the tables it returns, and global ones.
    answer = call(sales_client, sales, "context.search", {"question": "revenue of orders", "k": 1})
    assert [t["table"] for t in answer["tables"]] == ["demo.orders"]
    assert {i["id"] for i in answer["instructions"]} == {everywhere["id"], on_orders["id"]}

    updated = call(client, admin, "context.instruction.update", {"id": on_customers["id"], "text": "Regions: EU, US, APAC, LATAM"})
    assert updated["text"] == "Regions: EU, US, APAC, LATAM" and updated["tables"] == ["demo.customers"]
    call(client, admin, "context.instruction.delete", {"id": on_customers["id"]})
    assert ids(support_client, support) == {everywhere["id"]}
    assert "no instruction" in fails(client, admin, "context.instruction.delete", {"id": on_customers["id"]})


def test_golden_sql_is_planned_scoped_and_never_crosses_grants(ctx):
    client, admin = ctx["admin"]
    sales_client, sales = ctx["agents"]["sales"]
    support_client, support = ctx["agents"]["support"]
    revenue = call(client, admin, "context.golden.add", {"question": "What is the revenue per region?", "sql": "SELECT region, sum(amount) FROM demo.orders WHERE status <> 'cancelled' GROUP BY region"})
    assert set(revenue["reads"]["demo.orders"]) >= {"region", "amount", "status"}
    emails = call(client, admin, "context.golden.add", {"question": "Which customers signed up in 2024 and how do we reach them?", "sql": "SELECT name, email FROM demo.customers WHERE signup_date >= DATE '2024-01-01'"})
    regions = call(client, admin, "context.golden.add", {"question": "How many customers are in each region?", "sql": "SELECT region, count(*) FROM demo.customers GROUP BY region"})
    mine = call(sales_client, sales, "context.golden.add", {"question": "Largest orders this month", "sql": "SELECT order_id, amount FROM demo.orders ORDER BY amount DESC LIMIT 10"})
    assert mine["swarm"] == "sales"

    def listed(c, o):
        return {g["id"] for g in call(c, o, "context.golden.list")["golden_sql"]}

    # Sales cannot read customers.email; support cannot read orders at all, and
    # sees email masked: a pair quoting a value while reading a masked column is
    # not shown (its text could reveal what the mask hides).
    assert listed(sales_client, sales) == {revenue["id"], regions["id"], mine["id"]}
    assert listed(support_client, support) == {regions["id"]}
    assert listed(client, admin) >= {revenue["id"], emails["id"], regions["id"], mine["id"]}
    answer = call(support_client, support, "context.search", {"question": "revenue per region of the largest orders", "k": 10})
    assert {g["id"] for g in answer["golden_sql"]} <= {emails["id"], regions["id"]}
    assert "demo.orders" not in str(answer)
    answer = call(sales_client, sales, "context.search", {"question": "what is the revenue per region", "k": 1})
    assert answer["golden_sql"][0]["id"] == revenue["id"]

    # Planned as the author: what it cannot read does not exist for it.
    assert "does not exist" in fails(support_client, support, "context.golden.add", {"question": "Orders?", "sql": "SELECT * FROM demo.orders"})
    assert "email" in fails(sales_client, sales, "context.golden.add", {"question": "Emails?", "sql": "SELECT email FROM demo.customers"})
    assert "reads no table" in fails(client, admin, "context.golden.add", {"question": "One?", "sql": "SELECT 1"})
    assert "own swarm" in fails(sales_client, sales, "context.golden.add", {"question": "q", "sql": "SELECT 1 FROM demo.orders", "swarm": "support"})

    # Deleting: one's own swarm's; other swarms' do not exist; global ones are the admins'.
    assert "no golden SQL" in fails(support_client, support, "context.golden.delete", {"id": mine["id"]})
    assert "only admins" in fails(sales_client, sales, "context.golden.delete", {"id": revenue["id"]})
    call(sales_client, sales, "context.golden.delete", {"id": mine["id"]})
    assert mine["id"] not in listed(client, admin)


def sql(server, sql_text, token=None):
    if token is None:
        conn = flightsql.connect(server.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
    else:
        conn = flightsql.connect(server.uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}, autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute(sql_text)
        return cur.fetch_arrow_table().to_pylist()


def test_the_context_is_readable_in_sql_as_each_caller_may_see_it(ctx):
    client, admin = ctx["admin"]
    server = ctx["server"]
    call(client, admin, "context.describe", {"table": "demo.customers", "description": "People who bought something", "columns": {"email": "Contact address, personal data"}})
    call(client, admin, "context.instruction.add", {"text": "Only completed orders count as sales", "tables": ["demo.orders"]})
    call(client, admin, "context.golden.add", {"question": "How many orders per status?", "sql": "SELECT status, count(*) FROM demo.orders GROUP BY status"})
    sales, support = ctx["agents"]["sales_token"], ctx["agents"]["support_token"]

    def tables(token):
        return {(r["table_schema"], r["table_name"]) for r in sql(server, "SELECT table_schema, table_name FROM airlock.context_tables", token)}

    assert tables(support) == {("demo", "customers")}
    assert tables(sales) == {("demo", "customers"), ("demo", "orders")}
    described = sql(server, "SELECT description FROM airlock.context_tables WHERE table_name = 'customers'", support)
    assert described == [{"description": "People who bought something"}]
    columns = sql(server, "SELECT column_name, description FROM airlock.context_columns WHERE table_name = 'customers'", sales)
    assert "email" not in {c["column_name"] for c in columns} and "personal data" not in str(columns)
    columns = sql(server, "SELECT column_name, description FROM airlock.context_columns WHERE column_name = 'email'", support)
    assert columns == [{"column_name": "email", "description": "Contact address, personal data"}]

    rules = sql(server, "SELECT text, tables FROM airlock.instructions", support)
    assert "Only completed orders count as sales" not in str(rules)
    assert {"text": "Only completed orders count as sales", "tables": ["demo.orders"]} in sql(server, "SELECT text, tables FROM airlock.instructions", sales)
    golden = sql(server, "SELECT question, tables FROM airlock.golden_sql", sales)
    assert {"question": "How many orders per status?", "tables": ["demo.orders"]} in golden
    assert "How many orders per status?" not in str(sql(server, "SELECT question FROM airlock.golden_sql", support))
    # Admins see every table, described or not.
    assert ("demo", "orders") in {(r["table_schema"], r["table_name"]) for r in sql(server, "SELECT * FROM airlock.context_tables")}


def test_a_scan_shows_each_caller_only_values_it_may_read(ctx):
    client, admin = ctx["admin"]
    server = ctx["server"]
    call(client, admin, "grant.set", {"swarm": "eu_only", "tables": {
        "demo.customers": {"row_filter": "region = 'EU'", "columns": {"email": {"mask": "'***'"}}},
        "demo.orders": {"row_filter": "region = 'EU'"}}})
    token = call(client, admin, "token.create", {"kind": "agent", "name": "eu_ctx", "swarm": "eu_only"})["token"]
    agent = (server.flight_client(), bearer(token))

    job = call(client, admin, "context.scan", {"tables": ["demo.customers", "demo.orders"], "wait": True})
    assert (job["kind"], job["state"], job["result"]["tables"]) == ("scan", "succeeded", 2), job
    assert call(client, admin, "job.get", {"job_id": job["job_id"]})["state"] == "succeeded"
    assert "admin" in fails(agent[0], agent[1], "context.scan", {})

    def scanned(c, o, table):
        answer = call(c, o, "context.search", {"question": f"{table} region status", "k": 5})
        found = next(t for t in answer["tables"] if t["table"] == table)
        return found, {col["name"]: col for col in found["columns"]}

    customers, columns = scanned(client, admin, "demo.customers")
    regions = {r["region"] for r in sql(server, "SELECT DISTINCT region FROM demo.customers")}
    assert len(regions) > 1 and set(columns["region"]["categories"]) == regions
    assert customers["primary_key"] == "customer_id" and customers["scan"]["stale"] is False
    assert "categories" not in columns["email"]  # 1,000 distinct values
    orders, columns = scanned(client, admin, "demo.orders")
    assert orders["primary_key"] == "order_id"
    assert {"column": "customer_id", "references_table": "demo.customers", "references_column": "customer_id"} in orders["foreign_keys"]
    statuses = {r["status"] for r in sql(server, "SELECT DISTINCT status FROM demo.orders")}
    assert set(columns["status"]["categories"]) == statuses
    # Categories rank too: a value names its table.
    assert call(client, admin, "context.search", {"question": "anything delivered?", "k": 1})["tables"][0]["table"] == "demo.orders"

    # The EU agent: only values of rows it may read, masked values masked.
    customers, columns = scanned(*agent, "demo.customers")
    assert columns["region"]["categories"] == ["EU"]
    assert set(columns["email"]["examples"]) == {"***"}
    assert not (regions - {"EU"}) & set(str(customers).split("'"))
    # The same in SQL.
    in_sql = sql(server, "SELECT column_name, categories, examples FROM airlock.context_columns WHERE table_name = 'customers'", token)
    in_sql = {r["column_name"]: r for r in in_sql}
    assert in_sql["region"]["categories"] == ["EU"] and set(in_sql["email"]["examples"]) == {"***"}
    assert in_sql["email"]["categories"] == ["***"]  # masked: one value
    assert in_sql["customer_id"]["categories"] is None  # too many values
    orders, columns = scanned(*agent, "demo.orders")
    eu_statuses = {r["status"] for r in sql(server, "SELECT DISTINCT status FROM demo.orders", token)}
    assert set(columns["status"]["categories"]) == eu_statuses
    assert set(columns["region"]["categories"]) == {"EU"}
    # Sales cannot read customers.email: no examples of it, no key guess through it.
    sales_client, sales = ctx["agents"]["sales"]
    customers, columns = scanned(sales_client, sales, "demo.customers")
    assert "email" not in columns and "@example.com" not in str(customers)

    # A sync replaces the table: its scan is stale until scanned again.
    import time
    started = call(client, admin, "sync.start", {"table": "demo.orders"})["job_id"]
    while call(client, admin, "sync.status", {"job_id": started})["state"] not in ("succeeded", "failed"):
        time.sleep(0.1)
    orders, _ = scanned(client, admin, "demo.orders")
    assert orders["scan"]["stale"] is True
    call(client, admin, "context.scan", {"tables": ["demo.orders"], "wait": True})
    orders, _ = scanned(client, admin, "demo.orders")
    assert orders["scan"]["stale"] is False


def test_context_survives_a_restart(ctx):
    client, admin = ctx["admin"]
    call(client, admin, "context.describe", {"table": "demo.orders", "description": "Kept across restarts"})
    rule = call(client, admin, "context.instruction.add", {"text": "Kept rule"})
    golden = call(client, admin, "context.golden.add", {"question": "Kept question?", "sql": "SELECT count(*) FROM demo.orders"})
    ctx["server"].stop()
    ctx["server"] = Airlock(ctx["binary"], ctx["data"])
    client, headers = ctx["server"].admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    ctx["admin"] = (client, admin)
    answer = call(client, admin, "context.search", {"question": "kept question orders", "k": 1})
    assert answer["tables"][0]["description"] == "Kept across restarts"
    assert rule["id"] in {i["id"] for i in answer["instructions"]}
    assert answer["golden_sql"][0]["id"] == golden["id"]


def test_bad_bodies_are_refused_by_name(ctx):
    client, admin = ctx["admin"]
    assert "unknown field" in fails(client, admin, "context.search", {"question": "x", "colour": "red"})
    assert "between 1 and 50" in fails(client, admin, "context.search", {"question": "x", "k": 0})
    assert "empty" in fails(client, admin, "context.search", {"question": ""})
    assert "at most 4000" in fails(client, admin, "context.search", {"question": "x" * 5000})


def test_generation_without_a_model_says_how_to_configure_one(ctx):
    client, admin = ctx["admin"]
    assert "no LLM provider is configured; add [llm.providers.NAME]" in fails(
        client, admin, "nl.sql", {"question": "How many orders?"})
    # Search needs no model: BM25 alone.
    assert call(client, admin, "context.search", {"question": "orders"})["ranking"] == "bm25"


def test_the_scheduler_rescans_what_a_sync_outdated(tmp_path):
    """`context.rescan_interval` (1 s here): a table a sync replaced is scanned again unasked."""
    import os
    import time

    config = tmp_path / "airlock.toml"
    config.write_text('[context]\nrescan_interval = "1s"\n')
    server = Airlock(os.environ["AIRLOCK_BIN"], tmp_path / "data", args=("serve", "--demo", "--config", str(config)))
    try:
        client, headers = server.admin_headers()
        admin = flight.FlightCallOptions(headers=headers)
        call(client, admin, "context.scan", {"tables": ["demo.orders"], "wait": True})

        def scan_state():
            tables = call(client, admin, "context.search", {"question": "orders", "k": 5})["tables"]
            return next(t for t in tables if t["table"] == "demo.orders")["scan"]

        first = scan_state()
        job = call(client, admin, "sync.start", {"table": "demo.orders"})["job_id"]
        while call(client, admin, "sync.status", {"job_id": job})["state"] not in ("succeeded", "failed"):
            time.sleep(0.1)
        for _ in range(100):
            state = scan_state()
            if not state["stale"] and state["scanned_at"] != first["scanned_at"]:
                break
            time.sleep(0.1)
        assert state["stale"] is False and state["scanned_at"] > first["scanned_at"], (first, state)
        scans = call(client, admin, "job.list", {"kind": "scan"})["jobs"]
        assert any(j["owner"] == "admin:scheduler" for j in scans), scans
    finally:
        server.stop()
