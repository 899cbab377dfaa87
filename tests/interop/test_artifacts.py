"""Artifacts through stock clients: pyarrow.flight for DoPut, DoGet and the
artifact.* actions, ADBC for ingest, SQL and metadata.

One server with a small swarm quota. Swarm `art_a` has agents a1 and a2,
swarm `art_b` has agent b1; the tests check what each may see, that limits
hold at their exact byte, and that a refused or killed upload leaves nothing
in storage or in the listing.
"""

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import Airlock, call

MAX_BYTES = 50_000_000
QUOTA = 120_000_000
CHUNK = 1_000_000



class Principal:
    def __init__(self, server, token):
        self.token = token
        self.client = server.flight_client()
        self.options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
        self.uri = server.uri

    def act(self, name, body=None):
        return call(self.client, self.options, name, body or {})

    def put(self, name, table, options=None):
        """Uploads a table (or `chunk` batches); returns the PutResult JSON."""
        descriptor = flight.FlightDescriptor.for_path("artifact", name)
        writer, reader = self.client.do_put(descriptor, table.schema, self.options)
        rows_per_batch = 4 if table.schema.names == ["chunk"] else 65536
        batches = table.to_batches(max_chunksize=rows_per_batch) or [pa.RecordBatch.from_pylist([], schema=table.schema)]
        writer.write_with_metadata(batches[0], json.dumps(options or {}).encode())
        for batch in batches[1:]:
            writer.write_batch(batch)
        writer.done_writing()
        answer = reader.read()
        writer.close()
        return json.loads(answer.to_pybytes())

    def put_bytes(self, name, data, options=None):
        return self.put(name, bytes_table(data), options)

    def download(self, ticket):
        reader = self.client.do_get(flight.Ticket(base64.b64decode(ticket)), self.options)
        return reader.read_all()

    def connect(self):
        return flightsql.connect(
            self.uri,
            db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {self.token}"},
            autocommit=True,
        )


def bytes_table(data):
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    return pa.table({"chunk": pa.array(chunks, pa.binary())})


def joined(table):
    return b"".join(table.column("chunk").to_pylist())


@pytest.fixture(scope="module")
def world(airlock_bin):
    with tempfile.TemporaryDirectory(prefix="airlock-artifacts-") as tmp:
        config = Path(tmp) / "airlock.toml"
        config.write_text(f'[artifacts]\nswarm_quota = "{QUOTA} B"\n')
        server = Airlock(airlock_bin, Path(tmp) / "data", args=("serve", "--demo", "--config", str(config)))
        try:
            client, headers = server.admin_headers()
            options = flight.FlightCallOptions(headers=headers)
            tokens = {}
            for swarm in ("art_a", "art_b"):
                call(client, options, "grant.set", {"swarm": swarm, "tables": {"demo.*": {}}})
                tokens[swarm] = call(client, options, "token.create", {"kind": "swarm", "name": swarm})["token"]
            for agent, swarm in (("a1", "art_a"), ("a2", "art_a"), ("b1", "art_b")):
                tokens[agent] = call(
                    client, options, "token.create", {"kind": "agent", "name": agent, "swarm": swarm}
                )["token"]
            principals = {name: Principal(server, token) for name, token in tokens.items()}
            principals["admin"] = Principal(server, headers[0][1].decode().split(" ", 1)[1])
            yield {"server": server, **principals}
        finally:
            server.stop()


def stored_files(server):
    root = server.data_dir / "artifacts"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# How pyarrow words some gRPC codes in its exceptions.
PYARROW_WORDING = {"NOT_FOUND": "not found error", "PERMISSION_DENIED": "unauthorized error"}


def refused(fn, expected):
    """Runs fn, which must fail; `expected` is a gRPC code or message text."""
    with pytest.raises((flight.FlightError, pa.ArrowException)) as error:
        fn()
    message = str(error.value)
    assert PYARROW_WORDING.get(expected, expected) in message, message
    return message


def test_a_table_round_trips_and_is_queryable(world):
    a1 = world["a1"]
    table = pa.table({"id": pa.array(range(100_000), pa.int64()), "region": ["EU", "US"] * 50_000})
    put = a1.put("eu_orders", table, {"visibility": "swarm", "tags": ["q3"], "content_type": "application/x-parquet"})
    assert put["name"] == "eu_orders" and put["version"] == 1 and put["rows"] == 100_000
    got = a1.act("artifact.get", {"id": put["id"]})
    assert got["kind"] == "tabular" and got["rows"] == 100_000 and got["size"] == put["size"]
    assert got["table"] == "artifacts.eu_orders" and got["tags"] == ["q3"]
    assert got["content_type"] == "application/x-parquet" and got["owner"] == "agent:a1@art_a"
    assert a1.download(got["ticket"]).equals(table)
    # The stored object's sha256 is the one reported.
    objects = [f for f in stored_files(world["server"]) if "eu_orders" in f]
    assert len(objects) == 1
    data = (world["server"].data_dir / "artifacts" / objects[0]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == put["sha256"] and len(data) == put["size"]
    # SQL over the stored Parquet, by the owner and (shared) by its swarm.
    for who in ("a1", "a2", "art_a"):
        with world[who].connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT region, count(*) AS n FROM artifacts.eu_orders GROUP BY region ORDER BY region")
            assert cur.fetch_arrow_table().to_pylist() == [{"region": "EU", "n": 50_000}, {"region": "US", "n": 50_000}]


def test_files_round_trip_byte_for_byte(world):
    a1 = world["a1"]
    csv = io.BytesIO()
    pacsv.write_csv(pa.table({"x": list(range(1000)), "y": ["a,b"] * 1000}), csv)
    for name, data, content_type in [
        ("report_csv", csv.getvalue(), "text/csv"),
        ("chart_png", b"\x89PNG\r\n\x1a\n" + os.urandom(2_500_000), "image/png"),
        ("empty_file", b"", None),
    ]:
        put = a1.put_bytes(name, data, {"content_type": content_type} if content_type else {})
        assert put["sha256"] == hashlib.sha256(data).hexdigest() and put["size"] == len(data)
        got = a1.act("artifact.get", {"name": name})
        assert got["kind"] == "bytes" and got["table"] is None
        assert got["content_type"] == (content_type or "application/octet-stream")
        assert joined(a1.download(got["ticket"])) == data


def test_versions_keep_older_uploads_readable(world):
    a1 = world["a1"]
    first = a1.put_bytes("notes", b"version one")
    second = a1.put_bytes("notes", b"version two, longer")
    assert (first["id"], first["version"], second["version"]) == (second["id"], 1, 2)
    newest = a1.act("artifact.get", {"id": first["id"]})
    assert newest["version"] == 2 and newest["versions"] == [1, 2]
    assert joined(a1.download(newest["ticket"])) == b"version two, longer"
    older = a1.act("artifact.get", {"id": first["id"], "version": 1})
    assert joined(a1.download(older["ticket"])) == b"version one"
    # Another agent of the swarm may not take the name.
    refused(lambda: world["a2"].put_bytes("notes", b"mine"), "ALREADY_EXISTS")


def test_the_size_limit_holds_at_its_exact_byte(world):
    a2, server = world["a2"], world["server"]
    before = stored_files(server)
    message = refused(lambda: a2.put_bytes("too_big", b"x" * (MAX_BYTES + 1)), "artifacts.max_bytes")
    assert "RESOURCE_EXHAUSTED" in message or "resource" in message.lower()
    assert stored_files(server) == before
    names = [a["name"] for a in a2.act("artifact.list")["artifacts"]]
    assert "too_big" not in names
    put = a2.put_bytes("just_fits", b"y" * MAX_BYTES)
    assert put["size"] == MAX_BYTES
    a2.act("artifact.delete", {"id": put["id"]})
    assert stored_files(server) == before


def test_the_swarm_quota_holds(world):
    b1 = world["b1"]
    first = b1.put_bytes("big_one", b"1" * 45_000_000)
    second = b1.put_bytes("big_two", b"2" * 45_000_000)
    before = stored_files(world["server"])
    message = refused(lambda: b1.put_bytes("big_three", b"3" * 40_000_000), "swarm_quota")
    assert "art_b" in message
    assert stored_files(world["server"]) == before
    # The quota is per swarm: another swarm is not affected, and freeing
    # space lets the upload through.
    world["a2"].put_bytes("small_a", b"a" * 1000)
    b1.act("artifact.delete", {"id": first["id"]})
    third = b1.put_bytes("big_three", b"3" * 40_000_000)
    for artifact in (second, third):
        b1.act("artifact.delete", {"id": artifact["id"]})


def test_other_swarms_and_private_artifacts_do_not_exist(world):
    a1, a2, b1, swarm_a = world["a1"], world["a2"], world["b1"], world["art_a"]
    private = a1.put("private_rows", pa.table({"secret": ["s1", "s2"]}))
    shared = a1.act("artifact.get", {"name": "eu_orders"})
    mine = a1.act("artifact.get", {"id": private["id"]})
    for outsider, artifact in [(b1, shared), (b1, mine), (a2, mine), (swarm_a, mine)]:
        refused(lambda: outsider.act("artifact.get", {"id": artifact["id"]}), "NOT_FOUND")
        refused(lambda: outsider.download(artifact["ticket"]), "NOT_FOUND")
        refused(lambda: outsider.act("artifact.share", {"id": artifact["id"], "visibility": "swarm"}), "NOT_FOUND")
        refused(lambda: outsider.act("artifact.delete", {"id": artifact["id"]}), "NOT_FOUND")
        ids = [a["id"] for a in outsider.act("artifact.list", {"limit": 1000})["artifacts"]]
        assert artifact["id"] not in ids
    # An id that never existed looks exactly the same.
    never = refused(lambda: b1.act("artifact.get", {"id": "00000000-0000-0000-0000-000000000000"}), "NOT_FOUND")
    assert "not visible to you" in never
    # Not in SQL, not in metadata.
    with b1.connect() as conn:
        with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as error:
            cur.execute("SELECT * FROM artifacts.eu_orders")
        assert "does not exist or is not visible" in str(error.value)
        text = json.dumps(conn.adbc_get_objects(depth="all").read_all().to_pylist(), default=str)
        assert "eu_orders" not in text and "private_rows" not in text
    with a2.connect() as conn:
        text = json.dumps(conn.adbc_get_objects(depth="all").read_all().to_pylist(), default=str)
        assert "eu_orders" in text and "private_rows" not in text
    # Seeing a shared artifact is not owning it.
    refused(lambda: a2.act("artifact.delete", {"id": shared["id"]}), "PERMISSION_DENIED")
    # Admins see everything.
    admin_ids = [a["id"] for a in world["admin"].act("artifact.list", {"limit": 1000})["artifacts"]]
    assert private["id"] in admin_ids and shared["id"] in admin_ids


def test_listing_filters_and_pages(world):
    a1 = world["a1"]
    for i in range(5):
        a1.put_bytes(f"page_item_{i}", b"p", {"tags": ["paged"] if i % 2 == 0 else []})
    tagged = [a["name"] for a in a1.act("artifact.list", {"tag": "paged"})["artifacts"]]
    assert tagged == ["page_item_0", "page_item_2", "page_item_4"]
    seen, token = [], None
    while True:
        body = {"name_prefix": "page_item_", "limit": 2}
        if token:
            body["page_token"] = token
        page = a1.act("artifact.list", body)
        seen += [a["name"] for a in page["artifacts"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == [f"page_item_{i}" for i in range(5)]
    shared = [a["name"] for a in a1.act("artifact.list", {"visibility": "swarm"})["artifacts"]]
    assert shared == ["eu_orders"]


def test_sharing_and_expiry(world):
    a1, a2 = world["a1"], world["a2"]
    put = a1.put_bytes("handoff", b"for a2", {"ttl_seconds": 3600})
    refused(lambda: a2.act("artifact.get", {"id": put["id"]}), "NOT_FOUND")
    a1.act("artifact.share", {"id": put["id"], "visibility": "swarm"})
    got = a2.act("artifact.get", {"id": put["id"]})
    assert joined(a2.download(got["ticket"])) == b"for a2"
    short = a1.put("short_lived", pa.table({"v": [1]}), {"ttl_seconds": 1})
    ticket = a1.act("artifact.get", {"id": short["id"]})["ticket"]
    time.sleep(1.5)
    refused(lambda: a1.act("artifact.get", {"id": short["id"]}), "NOT_FOUND")
    refused(lambda: a1.download(ticket), "NOT_FOUND")
    with a1.connect() as conn, conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error):
        cur.execute("SELECT * FROM artifacts.short_lived")
    extended = a1.act("artifact.extend", {"id": put["id"], "ttl_seconds": 7200})
    assert extended["expires_at"] > got["expires_at"]
    refused(lambda: a1.act("artifact.extend", {"id": put["id"], "ttl_seconds": 10**12}), "ttl_seconds")


def test_adbc_ingest_creates_and_replaces(world):
    a1 = world["a1"]
    table = pa.table({"k": pa.array([1, 2, 3], pa.int64()), "v": ["x", "y", "z"]})
    with a1.connect() as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("ingested", table, mode="create", db_schema_name="artifacts") == 3
        with pytest.raises(adbc_driver_manager.Error) as exists:
            cur.adbc_ingest("ingested", table, mode="create", db_schema_name="artifacts")
        assert "already exists" in str(exists.value)
        bigger = pa.concat_tables([table, table])
        assert cur.adbc_ingest("ingested", bigger, mode="replace", db_schema_name="artifacts") == 6
        cur.execute("SELECT count(*) AS n FROM artifacts.ingested")
        assert cur.fetch_arrow_table().to_pylist() == [{"n": 6}]
        for mode, expected in (("create_append", "already exists"), ("append", "appending")):
            with pytest.raises(adbc_driver_manager.Error) as error:
                cur.adbc_ingest("ingested", table, mode=mode, db_schema_name="artifacts")
            assert expected in str(error.value), str(error.value)
        with pytest.raises(adbc_driver_manager.Error) as outside:
            cur.adbc_ingest("sneaky", table, mode="create", db_schema_name="demo")
        assert "not allowed" in str(outside.value) or "artifacts" in str(outside.value)
    versions = a1.act("artifact.get", {"name": "ingested"})["versions"]
    assert versions == [1, 2]


def test_bad_uploads_are_refused_precisely(world):
    a1 = world["a1"]
    refused(lambda: a1.put_bytes("bad-name", b"x"), "invalid artifact name")
    refused(lambda: a1.put_bytes("fine", b"x", {"visibility": "everyone"}), "upload options")
    refused(lambda: a1.put_bytes("fine", b"x", {"colour": "red"}), "unknown field")
    refused(lambda: a1.act("artifact.get", {}), "exactly one")


UPLOADER = textwrap.dedent(
    """
    import json, sys, time
    import pyarrow as pa, pyarrow.flight as flight
    uri, token = sys.argv[1], sys.argv[2]
    client = flight.FlightClient(uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", ("Bearer " + token).encode())])
    schema = pa.schema([("chunk", pa.binary())])
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("artifact", "killed_upload"), schema, options)
    batch = pa.record_batch([pa.array([b"k" * 1_000_000], pa.binary())], schema=schema)
    writer.write_with_metadata(batch, b"{}")
    print("started", flush=True)
    while True:
        writer.write_batch(batch)
        time.sleep(0.05)
    """
)


def test_a_killed_upload_leaves_nothing(world):
    a1, server = world["a1"], world["server"]
    before = stored_files(server)
    uploader = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, server.uri, a1.token], stdout=subprocess.PIPE, text=True
    )
    assert uploader.stdout.readline().strip() == "started"
    time.sleep(1.0)
    os.kill(uploader.pid, signal.SIGKILL)
    uploader.wait()
    deadline = time.time() + 10
    while time.time() < deadline and stored_files(server) != before:
        time.sleep(0.1)
    assert stored_files(server) == before
    names = [a["name"] for a in a1.act("artifact.list", {"limit": 1000})["artifacts"]]
    assert "killed_upload" not in names
