"""Nodes on shared metadata: `--meta-url` puts tokens, grants and
registrations in Postgres (a throwaway cluster of Debian's postgresql the
test starts), with artifacts in an object store (moto's S3 server). A node
started later with an empty data directory serves what the first stored.
This is the first part of the cluster suite (caches, the writer election
and snapshots come with the rest of issue 15)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import boto3
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import PASSWORD, Airlock, call, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}
SHARED = {"AIRLOCK_JWT_SECRET": "cluster-test-jwt-secret-0123456789abcdef",
          "AIRLOCK_SECRETS_KEY": "00" * 32}


def as_postgres(*command):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *map(str, command)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def postgres():
    directory = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    port = free_port()
    data = directory / "data"
    as_postgres(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    as_postgres(PG_BIN / "pg_ctl", "-D", data, "-l", directory / "log", "-w", "-o",
                f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    yield f"postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    """moto's S3 server with the bucket the nodes keep artifacts in."""
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                 region_name="us-east-1").create_bucket(Bucket="airlock")
    return s3_endpoint


def node_config(tmp_path, s3):
    config = tmp_path / "airlock.toml"
    config.write_text(f'[object_store]\naws_endpoint = "{s3}"\naws_allow_http = "true"\n\n'
                      '[artifacts]\nstore = "s3://airlock/artifacts"\n')
    return config


def refusal(airlock_bin, tmp_path, env, args=("serve",)):
    """The error of a node that must not start."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    environment.update({"AIRLOCK_DATA_DIR": str(tmp_path / "refused"), "AIRLOCK_HTTP_ADDR": "none",
                        "AIRLOCK_FLIGHT_ADDR": f"127.0.0.1:{free_port()}", "AIRLOCK_ADMIN_PASSWORD": PASSWORD,
                        **env})
    done = subprocess.run([airlock_bin, *args], env=environment, capture_output=True, timeout=120)
    assert done.returncode != 0, done
    return done.stderr.decode() + done.stdout.decode()


def test_a_node_on_shared_metadata_needs_shared_secrets_and_a_shared_artifact_store(airlock_bin, postgres, s3,
                                                                                    tmp_path):
    without_secrets = refusal(airlock_bin, tmp_path, {"AIRLOCK_META_URL": postgres})
    assert "AIRLOCK_JWT_SECRET and AIRLOCK_SECRETS_KEY" in without_secrets, without_secrets
    local_artifacts = refusal(airlock_bin, tmp_path, {"AIRLOCK_META_URL": postgres, **SHARED})
    assert "artifacts must live in a store every node reaches" in local_artifacts, local_artifacts
    unreachable = refusal(airlock_bin, tmp_path, {
        "AIRLOCK_META_URL": f"postgres://postgres@127.0.0.1:{free_port()}/postgres?sslmode=disable", **SHARED,
        "AIRLOCK_CONFIG": str(node_config(tmp_path, s3)), **CREDENTIALS})
    assert "Postgres" in unreachable, unreachable


def test_a_second_node_serves_what_the_first_stored(airlock_bin, postgres, s3, tmp_path):
    env = {"AIRLOCK_META_URL": postgres, **SHARED, **CREDENTIALS}
    config = node_config(tmp_path, s3)
    first = Airlock(airlock_bin, tmp_path / "one", args=("serve", "--demo", "--config", str(config)), extra_env=env)
    try:
        client = first.flight_client()
        admin = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])
        call(client, admin, "grant.set", {"swarm": "ops", "tables": {"demo.orders": {"row_filter": "region = 'EU'"}}})
        agent = call(client, admin, "token.create", {"kind": "agent", "name": "a1", "swarm": "ops"})
    finally:
        first.stop()
    log = first.log_path.read_text()
    assert "metadata in Postgres" in log and "sslmode" not in log.split("metadata in Postgres")[1].split("\n")[0]

    # An empty data directory: everything but the replica comes from Postgres.
    second = Airlock(airlock_bin, tmp_path / "two", args=("serve", "--demo", "--config", str(config)), extra_env=env)
    try:
        client = second.flight_client()
        admin = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])
        grant = call(client, admin, "grant.get", {"swarm": "ops"})["grant"]
        assert grant["tables"]["demo.orders"]["row_filter"] == "region = 'EU'"
        tokens = {t["id"]: t for t in call(client, admin, "token.list")["tokens"]}
        assert tokens[agent["id"]]["active"], tokens
        # The token the first node issued works here, under the grant stored there.
        auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {agent['token']}"}
        with flightsql.connect(second.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT DISTINCT region FROM demo.orders")
            assert cur.fetch_arrow_table().to_pylist() == [{"region": "EU"}]
    finally:
        second.stop()
