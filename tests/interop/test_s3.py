"""Sources on an S3-compatible object store (moto's S3 server, run locally)."""

import json
import time

import boto3
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import PASSWORD, Airlock

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}


def test_parquet_prefix_and_glob_on_s3(airlock_bin, s3_endpoint, tmp_path):
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="lake")
    parts = []
    for i in range(3):
        part = pa.table({"id": pa.array(range(i * 1000, (i + 1) * 1000), pa.int64()), "part": [i] * 1000})
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(part, path)
        s3.upload_file(str(path), "lake", f"events/part-{i}.parquet")
        parts.append(part)
    s3.put_object(Bucket="lake", Key="events/notes.txt", Body=b"not data")

    config = tmp_path / "airlock.toml"
    config.write_text(f'[object_store]\naws_endpoint = "{s3_endpoint}"\naws_allow_http = "true"\n')
    server = Airlock(airlock_bin, tmp_path / "data", args=("serve", "--config", str(config)), extra_env=CREDENTIALS)
    try:
        client = flight.FlightClient(server.uri)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", PASSWORD)])

        def call(name, body):
            result = next(client.do_action(flight.Action(name, json.dumps(body).encode()), options))
            return json.loads(result.body.to_pybytes())

        def sync(table):
            job = call("sync.start", {"table": table})["job_id"]
            for _ in range(300):
                status = call("sync.status", {"job_id": job})
                if status["state"] in ("succeeded", "failed"):
                    return status
                time.sleep(0.05)
            raise AssertionError("sync did not finish")

        call("table.register", {"name": "lake.events", "source": "s3://lake/events/", "format": "parquet"})
        status = sync("lake.events")
        assert status["state"] == "succeeded", status
        assert status["files"] == 3 and status["rows"] == 3000

        call("table.register", {"name": "lake.first_two", "source": "s3://lake/events/part-[01].parquet"})
        assert sync("lake.first_two")["rows"] == 2000

        expected = pa.concat_tables(parts)
        conn = flightsql.connect(server.uri, db_kwargs={"username": "admin", "password": PASSWORD}, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n, sum(id) AS s, max(part) AS p FROM lake.events")
            row = cur.fetch_arrow_table().to_pylist()[0]
        conn.close()
        assert row == {"n": 3000, "s": sum(expected.column("id").to_pylist()), "p": 2}

        # Wrong credentials are a clear failure at registration, not a hang.
        with pytest.raises(Exception) as missing:
            call("table.register", {"name": "lake.nothing", "source": "s3://no-such-bucket/x.parquet"})
        assert "no-such-bucket" in str(missing.value)
    finally:
        server.stop()
