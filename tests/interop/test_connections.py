"""Connections made at run time: sources.create|list|get|update|delete|test.

Snowflake connections run against the fakesnow emulator (its shim refuses one password, so a
refused login can be tested), object-store connections against moto's S3 server. Secrets go in
through the API and must never come back out: not in answers, the log, the audit or the
metadata documents.
"""

import json

import boto3
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from conftest import Airlock, free_port
from test_snowflake import Admin as SnowflakeAdmin
from test_snowflake import REJECTED_PASSWORD, emulator, snow  # noqa: F401  (fixtures)

SNOW_SECRET = "rt-snow-secret-7781"
S3_SECRET = "rt-s3-secret-9923"


class Admin(SnowflakeAdmin):
    """test_snowflake's admin client, plus expected failures and the audit trail."""

    def fails(self, name, body, error=pa.ArrowException):
        with pytest.raises(error) as info:
            self.call(name, body)
        return str(info.value)

    def audit_text(self):
        return json.dumps(self.query("SELECT * FROM airlock.audit").to_pylist(), default=str)


@pytest.fixture(scope="module")
def server(airlock_bin, emulator, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("airlock-connections")
    config = tmp / "airlock.toml"
    config.write_text(
        f"""
[snowflake.emu]
account = "fakesnow"
user = "SYNC_USER"
database = "AIRDB"
password_env = "EMU_PASSWORD"
url = "{emulator}"
"""
    )
    args = ("serve", "--config", str(config))
    env = {"EMU_PASSWORD": "config-secret"}
    state = {"server": Airlock(airlock_bin, tmp / "data", args=args, extra_env=env)}

    def restart():
        state["server"].stop()
        state["server"] = Airlock(airlock_bin, tmp / "data", args=args, extra_env=env)
        return state["server"]

    state["restart"] = restart
    yield state
    state["server"].stop()
    log = state["server"].log_path.read_text()
    for secret in (SNOW_SECRET, S3_SECRET, "config-secret"):
        assert secret not in log


def snowflake_body(name, emulator, password=SNOW_SECRET, **extra):
    return {"name": name, "type": "snowflake", "account": "fakesnow", "user": "RT_USER",
            "database": "AIRDB", "url": emulator, "password": password, **extra}


def test_runtime_snowflake_connection_end_to_end(server, emulator, snow):  # noqa: F811
    admin = Admin(server["server"])
    listed = admin.call("sources.list", {})["connections"]
    assert [(c["name"], c["origin"], c["read_only"]) for c in listed] == [("emu", "config", True)]
    assert listed[0]["secrets_set"] == ["password"]

    # A config name is read-only and cannot be shadowed at run time.
    assert "read-only" in admin.fails("sources.create", snowflake_body("emu", emulator))
    assert "read-only" in admin.fails("sources.update", {"name": "emu", "password": "x"})
    assert "read-only" in admin.fails("sources.delete", {"name": "emu"})

    created = admin.call("sources.create", snowflake_body("rt", emulator))
    assert created["origin"] == "runtime" and created["secrets_set"] == ["password"]
    assert SNOW_SECRET not in json.dumps(created)
    got = admin.call("sources.get", {"name": "rt"})
    assert got["account"] == "fakesnow" and SNOW_SECRET not in json.dumps(got)
    assert "already exists" in admin.fails("sources.create", snowflake_body("rt", emulator))

    # sources.test: stored connections by name, unsaved settings as they would be created.
    ok = admin.call("sources.test", {"name": "rt"})
    assert (ok["ok"], ok["code"], ok["name"]) == (True, "ok", "rt"), ok
    refused = admin.call("sources.test", snowflake_body("draft", emulator, password=REJECTED_PASSWORD))
    assert (refused["ok"], refused["code"]) == (False, "auth_failed"), refused
    assert "Incorrect username or password" in refused["message"]
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = admin.call("sources.test", snowflake_body("draft", closed))
    assert unreachable["code"] == "unreachable", unreachable
    bad_uri = admin.call("sources.test", snowflake_body("draft", "not a url"))
    assert bad_uri["code"] == "invalid_uri", bad_uri
    assert admin.call("sources.test", {"name": "nope"})["code"] == "not_found"
    assert "not an http(s) URL" in admin.fails("sources.create", snowflake_body("bad", "ftp://x"))

    # The runtime connection serves snowflake:// sources like a config one.
    snow.execute("create or replace table AIRDB.PUB.RT_ORDERS (ID number(38,0), AMOUNT number(12,2))")
    snow.execute("insert into AIRDB.PUB.RT_ORDERS values (1, 10.50), (2, 20.25), (3, 30.00)")
    tables = admin.call("sources.list_tables", {"connection": "rt", "database": "AIRDB", "schema": "PUB"})
    assert "AIRDB.PUB.RT_ORDERS" in [t["table"] for t in tables["tables"]]
    admin.call("table.register", {"name": "rt.orders", "source": "snowflake://rt/AIRDB.PUB.RT_ORDERS"})
    status = admin.sync("rt.orders")
    assert (status["state"], status["rows"]) == ("succeeded", 3), status

    # A used connection stays; a wrong password after update shows in the next test.
    assert "rt.orders" in admin.fails("sources.delete", {"name": "rt"})
    admin.call("sources.update", {"name": "rt", "password": REJECTED_PASSWORD})
    assert admin.call("sources.test", {"name": "rt"})["code"] == "auth_failed"
    admin.call("sources.update", {"name": "rt", "password": SNOW_SECRET, "role": "SYNC_ROLE"})
    assert admin.call("sources.get", {"name": "rt"})["role"] == "SYNC_ROLE"

    # Persisted with the secret sealed: after a restart it still logs in.
    admin = Admin(server["restart"]())
    assert admin.call("sources.test", {"name": "rt"})["ok"] is True
    status = admin.sync("rt.orders")
    assert status["state"] == "succeeded", status

    admin.call("table.remove", {"name": "rt.orders"})
    assert admin.call("sources.delete", {"name": "rt"}) == {"name": "rt", "deleted": True}
    assert "no connection named 'rt'" in admin.fails("sources.get", {"name": "rt"})
    assert "no connection named 'rt'" in admin.fails(
        "table.register", {"name": "rt.again", "source": "snowflake://rt/AIRDB.PUB.RT_ORDERS"})

    # Secrets never reach the audit trail, whose records hold the action bodies.
    audit = admin.audit_text()
    assert "sources.create" in audit
    assert SNOW_SECRET not in audit and REJECTED_PASSWORD not in audit


def test_object_store_connection_reads_files_with_its_own_credentials(server, s3_endpoint, tmp_path):  # noqa: F811
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test-key",
                      aws_secret_access_key="test-secret", region_name="us-east-1")
    s3.create_bucket(Bucket="conn-lake")
    table = pa.table({"id": pa.array(range(500), pa.int64()), "v": [f"v{i}" for i in range(500)]})
    pq.write_table(table, tmp_path / "part.parquet")
    s3.upload_file(str(tmp_path / "part.parquet"), "conn-lake", "events/part.parquet")

    admin = Admin(server["server"])
    body = {"name": "lake", "type": "object_store", "url": "s3://conn-lake/events/",
            "options": {"aws_endpoint": s3_endpoint, "aws_allow_http": "true", "aws_region": "us-east-1",
                        "aws_access_key_id": "test-key", "aws_secret_access_key": S3_SECRET}}
    created = admin.call("sources.create", body)
    assert created["options"] == {"aws_allow_http": "true", "aws_endpoint": s3_endpoint, "aws_region": "us-east-1"}
    assert created["secrets_set"] == ["aws_access_key_id", "aws_secret_access_key"]
    assert S3_SECRET not in json.dumps(admin.call("sources.list", {}))
    assert "not an option" in admin.fails(
        "sources.create", {**body, "name": "typo", "options": {"aws_regoin": "x"}})
    # Runtime connections cannot reach the server's files or move where credentials come from.
    assert "file://" in admin.fails("sources.create", {"name": "local", "type": "object_store", "url": "file:///etc/"})
    for url, key in [("az://c/", "azure_federated_token_file"), ("az://c/", "azure_authority_host"),
                     ("gs://b/", "google_application_credentials"), ("s3://b/", "aws_metadata_endpoint")]:
        error = admin.fails("sources.create", {"name": "sneaky", "type": "object_store", "url": url,
                                                "options": {key: "/data/secrets/connections.key"}})
        assert key in error and "connections.key" not in error
    assert admin.call("sources.test", {"name": "x", "type": "object_store", "url": "file:///etc/"})["code"] == "invalid_uri"

    tested = admin.call("sources.test", {"name": "lake"})
    assert tested["ok"] is True and "1 objects" in tested["message"], tested
    missing = admin.call("sources.test", {**body, "name": "draft", "url": "s3://no-such-bucket/"})
    assert missing["code"] == "not_found", missing

    # The server has no [object_store] settings and no AWS variables: only the connection
    # knows the endpoint, so a sync that succeeds read through it.
    admin.call("table.register", {"name": "lake.events", "source": "s3://conn-lake/events/part.parquet",
                                  "connection": "lake"})
    status = admin.sync("lake.events")
    assert (status["state"], status["rows"]) == ("succeeded", 500), status
    listed = [t for t in admin.call("table.list", {})["tables"] if t["name"] == "lake.events"]
    assert listed[0]["connection"] == "lake"

    outside = admin.fails("table.register", {"name": "lake.other", "source": "s3://conn-lake/other/x.parquet",
                                             "connection": "lake"})
    assert "not under" in outside
    assert "is an object store connection" in admin.fails(
        "table.register", {"name": "lake.sf", "source": "snowflake://lake/DB.S.T"})
    admin.call("table.remove", {"name": "lake.events"})
    admin.call("sources.delete", {"name": "lake"})
    assert S3_SECRET not in admin.audit_text()
