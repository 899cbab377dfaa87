"""The binary itself: first-start password, restarts, and durable state."""

import re
from pathlib import Path

import pyarrow.flight as flight
import pytest

from conftest import Airlock


def login(server, password):
    client = flight.FlightClient(server.uri)
    return client.authenticate_basic_token("admin", password)


def test_first_start_prints_a_generated_password_once_and_stores_only_a_hash(airlock_bin, tmp_path):
    data = tmp_path / "data"
    first = Airlock(airlock_bin, data, args=("serve",), password=None)
    try:
        match = re.search(r"generated an admin password.*?\n\s*\n\s+(\S+)", first.output(), re.S)
        assert match, first.output()
        password = match.group(1)
        header = login(first, password)
        assert header[0] == b"authorization" and header[1].startswith(b"Bearer ")
        with pytest.raises(flight.FlightUnauthenticatedError):
            login(first, password + "x")
    finally:
        first.stop()
    # Only a hash is stored: the password appears in no file of the data dir.
    for path in Path(data).rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    second = Airlock(airlock_bin, data, args=("serve",), password=None)
    try:
        assert "generated an admin password" not in second.output()
        assert login(second, password)[1].startswith(b"Bearer ")
    finally:
        second.stop()


def test_bad_configuration_exits_with_a_clear_message(airlock_bin, tmp_path):
    import subprocess

    config = tmp_path / "airlock.toml"
    config.write_text("[query]\ntimeot = \"30s\"\n")
    result = subprocess.run([airlock_bin, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "timeot" in result.stderr


def test_demo_with_a_relative_data_directory(airlock_bin, tmp_path):
    import adbc_driver_flightsql.dbapi as flightsql

    from conftest import PASSWORD

    server = Airlock(airlock_bin, Path("relative-data"), args=("serve", "--demo"), cwd=tmp_path)
    try:
        conn = flightsql.connect(server.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM demo.orders")
            assert cur.fetch_arrow_table().column("n").to_pylist() == [20000]
        conn.close()
        assert (tmp_path / "relative-data" / "replica.duckdb").exists()
    finally:
        server.stop()
