"""Hostile input from an agent, through the stock ADBC Flight SQL driver
against the real binary.

The agent's swarm may read `hr.people` with a row filter (its region only),
a denied column (`ssn`) and a masked one (`email`), plus `demo.*`. Every
value it must never see contains the marker FORBIDDEN: rows of other
regions, the denied and masked columns, a table it has no grant on, a file
on disk, the JWT secret and the admin password. Each case asserts the
refusal (or the cap), that no forbidden value appears in any result or
error text, and that the server still answers afterwards.
"""

import json
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import PASSWORD, Airlock

MARKER = "FORBIDDEN"
JWT_SECRET = "FORBIDDEN-jwt-secret-0123456789abcdef0123456789abcdef"
EU_ROWS = 3


def call(client, options, name, body):
    results = list(client.do_action(flight.Action(name, json.dumps(body).encode()), options))
    return json.loads(results[0].body.to_pybytes())


@pytest.fixture(scope="module")
def world(airlock_bin):
    with tempfile.TemporaryDirectory(prefix="airlock-hostile-") as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        people = pa.table(
            {
                "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
                "region": ["EU", "EU", "EU", "US", "US", "APAC"],
                "name": ["ana", "bo", "cy", "FORBIDDEN-name-4", "FORBIDDEN-name-5", "FORBIDDEN-name-6"],
                "email": [f"FORBIDDEN-email-{i}@example.com" for i in range(1, 7)],
                "ssn": [f"FORBIDDEN-ssn-{i}" for i in range(1, 7)],
                "salary": pa.array([100, 200, 300, 400000, 500000, 600000], pa.int64()),
            }
        )
        pq.write_table(people, files / "people.parquet")
        pq.write_table(pa.table({"k": ["key"], "v": ["FORBIDDEN-vault"]}), files / "vault.parquet")
        (files / "secret.csv").write_text("a\nFORBIDDEN-file-contents\n")

        server = Airlock(airlock_bin, Path(tmp) / "data", extra_env={"AIRLOCK_JWT_SECRET": JWT_SECRET})
        try:
            client, headers = server.admin_headers()
            options = flight.FlightCallOptions(headers=headers)
            for name, source in [("hr.people", "people.parquet"), ("secret.vault", "vault.parquet")]:
                call(client, options, "table.register", {"name": name, "source": f"file://{files / source}"})
                job = call(client, options, "sync.start", {"table": name})["job_id"]
                for _ in range(600):
                    state = call(client, options, "sync.status", {"job_id": job})["state"]
                    if state in ("succeeded", "failed"):
                        break
                    time.sleep(0.05)
                assert state == "succeeded"
            call(
                client,
                options,
                "grant.set",
                {
                    "swarm": "hostile",
                    "tables": {
                        "hr.people": {
                            "row_filter": "region = agent_attr('region')",
                            "columns": {"ssn": "deny", "email": {"mask": "'***'"}},
                        },
                        "demo.*": {},
                    },
                    "limits": {"timeout_s": 4, "max_rows": 5000, "max_concurrent": 4, "per_minute": 100000},
                },
            )
            agent = call(
                client,
                options,
                "token.create",
                {"kind": "agent", "name": "mallory", "swarm": "hostile", "attributes": {"region": "EU"}},
            )
            conn = flightsql.connect(
                server.uri,
                db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {agent['token']}"},
                autocommit=True,
            )
            yield {"server": server, "conn": conn, "files": files, "token": agent["token"]}
            conn.close()
        finally:
            server.stop()
            # Nothing secret reached the server's own log either.
            log = server.log_path.read_text()
            assert JWT_SECRET not in log and PASSWORD not in log


def forbidden_in(text: str) -> list:
    return [m for m in (MARKER, JWT_SECRET, PASSWORD) if m.lower() in text.lower()]


def run(world, sql, params=None):
    """Runs `sql` as the agent: ("ok", rows) or ("error", message). Either
    way, nothing forbidden may appear, and the server must answer after."""
    outcome = None
    try:
        with world["conn"].cursor() as cur:
            if params is None:
                cur.execute(sql)
            else:
                cur.execute(sql, params)
            outcome = ("ok", cur.fetch_arrow_table().to_pylist())
    except adbc_driver_manager.Error as e:
        outcome = ("error", str(e))
    text = json.dumps(outcome[1], default=str)
    assert not forbidden_in(text), f"{sql!r} leaked: {text[:2000]}"
    assert still_serving(world), f"server stopped answering after {sql!r}"
    return outcome


def still_serving(world) -> bool:
    with world["conn"].cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM demo.customers")
        return cur.fetch_arrow_table().column("n").to_pylist() == [1000]


def refused(world, sql, *expected):
    kind, message = run(world, sql)
    assert kind == "error", f"{sql!r} was accepted: {message}"
    for text in expected:
        assert text.lower() in message.lower(), f"{sql!r}: {message}"
    return message


FILE_AND_NETWORK = [
    "SELECT * FROM read_csv('{f}/secret.csv')",
    "SELECT * FROM read_csv_auto('{f}/secret.csv')",
    "SELECT * FROM read_parquet('{f}/vault.parquet')",
    "SELECT * FROM parquet_scan('{f}/vault.parquet')",
    "SELECT * FROM parquet_metadata('{f}/vault.parquet')",
    "SELECT * FROM parquet_schema('{f}/vault.parquet')",
    "SELECT * FROM read_json('{f}/secret.csv')",
    "SELECT * FROM read_json_auto('{f}/secret.csv')",
    "SELECT * FROM read_ndjson('{f}/secret.csv')",
    "SELECT * FROM read_text('{f}/secret.csv')",
    "SELECT * FROM read_blob('{f}/secret.csv')",
    "SELECT * FROM sniff_csv('{f}/secret.csv')",
    "SELECT * FROM glob('{f}/*')",
    "SELECT * FROM iceberg_scan('{f}')",
    "SELECT * FROM delta_scan('{f}')",
    "SELECT * FROM sqlite_scan('{f}/x.db', 't')",
    "SELECT * FROM postgres_scan('host=localhost', 'public', 't')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    "SELECT * FROM query('SELECT * FROM secret.vault')",
    "SELECT * FROM query_table('secret.vault')",
    "SELECT * FROM '{f}/secret.csv'",
    "SELECT * FROM \"{f}/vault.parquet\"",
    "SELECT * FROM 'file://{f}/secret.csv'",
    "SELECT * FROM 'https://example.com/x.parquet'",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM pragma_table_info('secret.vault')",
    "SELECT * FROM range(10)",
    "SELECT * FROM generate_series(1, 10)",
    "SELECT * FROM TABLE(range(10))",
    "SELECT read_text('{f}/secret.csv')",
    "SELECT getenv('HOME')",
    "SELECT current_setting('allowed_directories')",
    "SELECT which_secret('s3://x', 's3')",
    "SELECT load_extension('httpfs')",
    "SELECT * FROM demo.customers WHERE id IN (SELECT a FROM read_csv('{f}/secret.csv'))",
]


@pytest.mark.parametrize("template", FILE_AND_NETWORK)
def test_file_network_and_settings_functions_are_refused(world, template):
    refused(world, template.format(f=world["files"]))


STATEMENTS = {
    "INSERT INTO hr.people (id) VALUES (7)": "INSERT",
    "UPDATE hr.people SET salary = 0": "UPDATE",
    "DELETE FROM hr.people": "DELETE",
    "MERGE INTO hr.people USING demo.customers ON false WHEN MATCHED THEN DELETE": "MERGE",
    "TRUNCATE hr.people": "TRUNCATE",
    "CREATE TABLE x AS SELECT * FROM hr.people": "CREATE TABLE",
    "CREATE VIEW v AS SELECT * FROM secret.vault": "CREATE VIEW",
    "CREATE MACRO m(x) AS x": "not allowed",
    "CREATE FUNCTION f(x INT) RETURNS INT RETURN x": "CREATE FUNCTION",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')": "not allowed",
    "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'": "CREATE EXTERNAL TABLE",
    "DROP TABLE hr.people": "DROP TABLE",
    "ALTER TABLE hr.people ADD COLUMN x INT": "ALTER TABLE",
    "COPY hr.people TO '/tmp/out.csv'": "COPY",
    "COPY (SELECT * FROM secret.vault) TO '/tmp/out.csv'": "COPY",
    "EXPORT DATABASE '/tmp/export'": "not allowed",
    "IMPORT DATABASE '/tmp/export'": "not allowed",
    "SET allowed_directories = ['/']": "SET",
    "SET enable_external_access = true": "SET",
    "RESET ALL": "not allowed",
    "PRAGMA database_list": "not allowed",
    "ATTACH '/tmp/other.db' AS other": "ATTACH",
    "DETACH other": "not allowed",
    "INSTALL httpfs": "INSTALL",
    "LOAD httpfs": "LOAD",
    "CALL duckdb_settings()": "CALL",
    "CHECKPOINT": "not allowed",
    "VACUUM": "not allowed",
    "BEGIN TRANSACTION": "not allowed",
    "COMMIT": "COMMIT",
    "ROLLBACK": "ROLLBACK",
    "USE secret": "USE",
    "SHOW ALL": "SHOW",
    "SHOW search_path": "SHOW",
    "SHOW FUNCTIONS": "SHOW",
    "EXPLAIN SELECT * FROM hr.people": "EXPLAIN",
    "EXPLAIN ANALYZE SELECT * FROM hr.people": "EXPLAIN",
    "PREPARE p AS SELECT * FROM secret.vault": "PREPARE",
    "EXECUTE p": "EXECUTE",
    "GRANT SELECT ON hr.people TO mallory": "GRANT",
    "SELECT 1; DROP TABLE hr.people": "2 statements",
    "SELECT 1; SELECT * FROM secret.vault": "2 statements",
    "SELECT 1 /* ; */ ; ATTACH '/tmp/x.db' AS x": "2 statements",
    "SELECT ';' AS a; DROP TABLE hr.people": "2 statements",
    "SELECT 1 --\n; COPY hr.people TO '/tmp/o.csv'": "2 statements",
    "SELECT $$;$$; DROP TABLE hr.people": "",
    "SELECT 'a'';DROP TABLE hr.people;--' AS a; SELECT ssn FROM hr.people": "2 statements",
    "/* comment */ DROP TABLE hr.people": "DROP TABLE",
    "-- comment\nINSERT INTO hr.people (id) VALUES (1)": "INSERT",
    "WITH x AS (DELETE FROM hr.people RETURNING *) SELECT * FROM x": "",
    "SELECT * INTO newtable FROM hr.people": "",
}


@pytest.mark.parametrize("sql", list(STATEMENTS))
def test_statements_other_than_one_query_are_refused(world, sql):
    refused(world, sql, STATEMENTS[sql])


def test_refused_statements_changed_nothing(world):
    # After every statement above (module order runs them first), the data
    # the agent may see is intact.
    kind, rows = run(world, "SELECT id, name FROM hr.people ORDER BY id")
    assert (kind, rows) == ("ok", [{"id": 1, "name": "ana"}, {"id": 2, "name": "bo"}, {"id": 3, "name": "cy"}])


BYPASS = [
    # Plain reads: only EU rows, email masked, no ssn column.
    ("SELECT * FROM hr.people", EU_ROWS),
    ("SELECT * FROM airlock.hr.people", EU_ROWS),
    ('SELECT * FROM "hr"."people"', EU_ROWS),
    ("SELECT * FROM HR.PEOPLE", EU_ROWS),
    ("SELECT * FROM hr.people WHERE region = 'US' OR 1 = 1", EU_ROWS),
    ("SELECT * FROM hr.people WHERE true OR region <> 'EU'", EU_ROWS),
    # Subqueries in every position.
    ("SELECT * FROM demo.customers WHERE name IN (SELECT name FROM hr.people)", None),
    ("SELECT name FROM demo.customers WHERE name IN (SELECT name FROM hr.people WHERE region = 'US')", 0),
    ("SELECT (SELECT max(name) FROM hr.people) AS n", 1),
    ("SELECT (SELECT max(email) FROM hr.people) AS n", 1),
    ("SELECT customer_id FROM demo.customers WHERE EXISTS (SELECT 1 FROM hr.people WHERE region = 'US')", 0),
    ("SELECT customer_id FROM demo.customers WHERE NOT EXISTS (SELECT 1 FROM hr.people WHERE region = 'EU')", 0),
    ("SELECT customer_id FROM demo.customers c WHERE customer_id IN (SELECT id FROM hr.people WHERE salary > 1000)", 0),
    (
        "SELECT c.customer_id, (SELECT max(p.name) FROM hr.people p WHERE p.id = c.customer_id) AS n "
        "FROM demo.customers c WHERE c.customer_id IN (1, 2, 3, 4, 5, 6)",
        None,
    ),
    ("SELECT name FROM (SELECT * FROM hr.people) p", EU_ROWS),
    ("SELECT * FROM (SELECT * FROM (SELECT * FROM hr.people) a) b", EU_ROWS),
    # CTEs, including ones named like the table.
    ("WITH p AS (SELECT * FROM hr.people) SELECT * FROM p", EU_ROWS),
    ("WITH people AS (SELECT * FROM hr.people) SELECT * FROM people", EU_ROWS),
    ("WITH vault AS (SELECT * FROM hr.people) SELECT * FROM vault", EU_ROWS),
    ("WITH RECURSIVE r AS (SELECT id, name FROM hr.people UNION SELECT id, name FROM r) SELECT * FROM r", EU_ROWS),
    # Joins, self-joins, unions, lateral.
    ("SELECT a.name, b.name FROM hr.people a JOIN hr.people b ON a.id <> b.id", 6),
    ("SELECT a.name FROM hr.people a LEFT JOIN hr.people b ON a.id = b.id + 3", EU_ROWS),
    ("SELECT a.name FROM hr.people a FULL JOIN hr.people b ON a.id = b.id", EU_ROWS),
    ("SELECT p.name FROM demo.customers c CROSS JOIN hr.people p LIMIT 10", 10),
    ("SELECT name FROM hr.people UNION ALL SELECT name FROM hr.people", 2 * EU_ROWS),
    ("SELECT name FROM hr.people UNION SELECT region FROM hr.people", EU_ROWS + 1),
    ("SELECT name FROM hr.people INTERSECT SELECT name FROM hr.people", EU_ROWS),
    ("SELECT name FROM hr.people EXCEPT SELECT 'ana'", EU_ROWS - 1),
    (
        "SELECT x.name FROM (SELECT min(customer_id) AS id FROM demo.customers) c CROSS JOIN LATERAL "
        "(SELECT name FROM hr.people) x",
        EU_ROWS,
    ),
    # Aggregates see only permitted rows.
    ("SELECT count(*) AS n, sum(salary) AS s, max(name) AS m FROM hr.people", 1),
    ("SELECT region, count(*) AS n FROM hr.people GROUP BY region", 1),
    ("SELECT name, row_number() OVER (ORDER BY salary DESC) AS r FROM hr.people", EU_ROWS),
    ("SELECT string_agg(email, ',') AS s FROM hr.people", 1),
    # Masked column in predicates sees the mask, not the value.
    ("SELECT id FROM hr.people WHERE email LIKE 'FORBIDDEN%'", 0),
    ("SELECT id FROM hr.people WHERE starts_with(email, 'F')", 0),
    ("SELECT id FROM hr.people WHERE length(email) > 3", 0),
    # Probing filtered rows by errors: the filter applies before anything.
    ("SELECT CASE WHEN (SELECT max(salary) FROM hr.people) > 1000 THEN 1 / 0 ELSE 0 END AS x", 1),
    ("SELECT id FROM hr.people WHERE CASE WHEN salary > 1000 THEN 1 / 0 ELSE 1 END = 1", EU_ROWS),
    ("SELECT CAST(name AS BIGINT) AS x FROM hr.people WHERE id > 3", 0),
    ("SELECT 1 / (salary - 400000) AS x FROM hr.people WHERE region = 'US'", 0),
    ("SELECT id FROM hr.people WHERE id = 4", 0),
    ("SELECT id AS ssn, name AS \"hr.people.ssn\" FROM hr.people", EU_ROWS),
]


@pytest.mark.parametrize("sql,expected_rows", BYPASS)
def test_policy_holds_in_every_query_position(world, sql, expected_rows):
    kind, rows = run(world, sql)
    assert kind == "ok", f"{sql}: {rows}"
    if expected_rows is not None:
        assert len(rows) == expected_rows, f"{sql}: {rows}"
    for row in rows:
        if "AS ssn" not in sql:
            assert "ssn" not in row
        for key, value in row.items():
            if key == "email":
                assert value == "***"
    if sql.startswith("SELECT count(*) AS n, sum(salary)"):
        assert rows[0]["n"] == EU_ROWS and rows[0]["s"] == 600


def test_one_over_zero_does_not_fire_on_hidden_rows(world):
    # Had the filter run after the division, US salaries would raise.
    kind, rows = run(world, "SELECT 1 / (salary - 400000) AS x FROM hr.people")
    assert kind == "ok" and len(rows) == EU_ROWS


DENIED = [
    "SELECT ssn FROM hr.people",
    "SELECT people.ssn FROM hr.people",
    "SELECT hr.people.ssn FROM hr.people",
    'SELECT "ssn" FROM hr.people',
    'SELECT "SSN" FROM hr.people',
    "SELECT id FROM hr.people WHERE ssn = 'FORBIDDEN-ssn-1'",
    "SELECT id FROM hr.people WHERE ssn IS NOT NULL",
    "SELECT id FROM hr.people ORDER BY ssn",
    "SELECT count(*) FROM hr.people GROUP BY ssn",
    "SELECT count(ssn) FROM hr.people",
    "SELECT a.id FROM hr.people a JOIN hr.people b ON a.ssn = b.ssn",
    "SELECT id FROM hr.people p WHERE EXISTS (SELECT 1 FROM hr.people q WHERE q.ssn = p.name)",
    "SELECT * FROM hr.people USING SAMPLE 10",
    "SELECT * FROM secret.vault",
    "SELECT v FROM secret.vault",
    "SELECT * FROM demo.customers WHERE name IN (SELECT v FROM secret.vault)",
    "WITH x AS (SELECT * FROM secret.vault) SELECT * FROM x",
    'SELECT * FROM "secret"."vault"',
    'SELECT * FROM "secret.vault"',
    'SELECT * FROM hr."people$1"',
    'SELECT * FROM "hr"."people$1$loading"',
    "SELECT * FROM main.__airlock_retired",
    "SELECT * FROM information_schema.df_settings",
    "DESCRIBE secret.vault",
    "SHOW COLUMNS FROM secret.vault",
    "SELECT * FROM datafusion.public.people",
    "SELECT * FROM airlock.audit",
    "SELECT * FROM hr.people AS vault JOIN secret.vault AS people ON true",
]


@pytest.mark.parametrize("sql", DENIED)
def test_denied_columns_and_ungranted_tables_do_not_exist(world, sql):
    message = refused(world, sql)
    assert "ssn" not in message.lower() or "ssn" in sql.lower()


def test_discovery_shows_nothing_hidden(world):
    kind, tables = run(world, "SHOW TABLES")
    assert kind == "ok"
    assert ("hr", "people") in {(t["table_schema"], t["table_name"]) for t in tables}
    assert all(t["table_schema"] != "secret" for t in tables)
    for sql in [
        "SELECT * FROM information_schema.tables WHERE table_schema = 'secret'",
        "SELECT * FROM information_schema.columns WHERE column_name = 'ssn'",
    ]:
        assert run(world, sql) == ("ok", [])
    kind, described = run(world, "DESCRIBE hr.people")
    assert [c["column_name"] for c in described] == ["id", "region", "name", "email", "salary"]


def test_prepared_statements_get_the_policy_too(world):
    kind, rows = run(world, "SELECT name, email FROM hr.people WHERE id > ? ORDER BY id", (0,))
    assert kind == "ok" and [r["name"] for r in rows] == ["ana", "bo", "cy"]
    assert {r["email"] for r in rows} == {"***"}
    kind, rows = run(world, "SELECT name FROM hr.people WHERE region = ?", ("US",))
    assert (kind, rows) == ("ok", [])
    kind, message = run(world, "SELECT ssn FROM hr.people WHERE id = ?", (1,))
    assert kind == "error"


def test_metadata_shows_only_granted_tables_and_columns(world):
    conn = world["conn"]
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    text = json.dumps(objects, default=str)
    assert "vault" not in text and "ssn" not in text and "people$" not in text
    assert "people" in text and "email" in text
    schema = conn.adbc_get_table_schema("people", db_schema_filter="hr")
    assert schema.names == ["id", "region", "name", "email", "salary"]


EXHAUSTION = [
    # Cross joins of everything: 20 000^3 rows.
    ("SELECT count(*) FROM demo.orders a, demo.orders b, demo.orders c", "time limit"),
    ("SELECT * FROM demo.orders a, demo.orders b", None),
    # Unbounded recursion.
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", ""),
    # Giant values.
    ("SELECT repeat('x', 2000000000) AS s", "repeat"),
    ("SELECT lpad('x', 2000000000, 'y') AS s", "lpad"),
    ("SELECT rpad('x', 2000000000) AS s", "rpad"),
    ("SELECT length(repeat(name, 100000000)) FROM hr.people", "repeat"),
    ("SELECT array_repeat(1, 2000000000) AS a", "array_repeat"),
    ("SELECT range(1000000000000) AS r", "range"),
    ("SELECT generate_series(1, 1000000000000) AS r", "generate_series"),
    (
        "WITH RECURSIVE r(s, n) AS (SELECT 'xx', 1 UNION ALL SELECT s || s, n + 1 FROM r WHERE n < 64) "
        "SELECT max(length(s)) FROM r",
        "",
    ),
    # Non-equi joins: 20 000^3 comparisons, far past the 4 s limit in any
    # build (a single 20 000^2 join finishes in time in a release build).
    (
        "SELECT count(*) FROM demo.orders a JOIN demo.orders b ON a.amount > b.amount "
        "JOIN demo.orders c ON b.amount > c.amount",
        "time limit",
    ),
    ("SELECT string_agg(a.status, ',') FROM demo.orders a, demo.orders b", ""),
    # Deep and long text.
    ("SELECT " + " + ".join(["1"] * 5000), "nested deeper"),
    ("SELECT " + "(" * 3000 + "1" + ")" * 3000, ""),
    ("SELECT 1 WHERE " + " OR ".join(["id = 1"] * 3000), "nested deeper"),
    ("SELECT '" + "x" * 300_000 + "'", "over the limit"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sql,expected", EXHAUSTION, ids=[f"case{i}" for i in range(len(EXHAUSTION))])
def test_exhaustion_ends_with_a_clear_error_or_cap(world, sql, expected):
    started = time.time()
    kind, result = run(world, sql)
    if expected is None:
        # A huge result is cut at the grant's max_rows.
        assert kind == "ok" and len(result) == 5000
    else:
        assert kind == "error", f"{sql[:200]} returned {str(result)[:200]}"
        assert expected.lower() in result.lower(), result[:500]
        assert len(result) < 5000, "error message echoes the whole input"
    assert time.time() - started < 60


def test_other_agents_are_served_while_one_exhausts(world):
    import threading

    def hog():
        run(world, "SELECT count(*) FROM demo.orders a, demo.orders b, demo.orders c")

    thread = threading.Thread(target=hog)
    thread.start()
    time.sleep(0.5)
    admin = flightsql.connect(world["server"].uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
    started = time.time()
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM hr.people")
        assert cur.fetch_arrow_table().column("n").to_pylist() == [6]
    assert time.time() - started < 3
    admin.close()
    thread.join()
