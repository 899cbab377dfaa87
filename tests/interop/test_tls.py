"""TLS with --tls-cert/--tls-key: Flight SQL (ADBC) and the HTTP port (the
JSON API, /mcp, health) both serve the certificate, and refuse plaintext;
`airlock healthcheck` follows."""

import datetime
import ipaddress
import json
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import pytest
from adbc_driver_flightsql import DatabaseOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import PASSWORD, Airlock


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(airlock_bin, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory)
    server = Airlock(airlock_bin, directory / "data", extra_env={"AIRLOCK_TLS_CERT": str(cert), "AIRLOCK_TLS_KEY": str(key)})
    yield server, cert
    server.stop()


def test_flight_and_http_serve_the_certificate(tls_server):
    server, cert = tls_server
    https = server.http_url.replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(cert))
    login = urllib.request.Request(f"{https}/api/v1/login", method="POST",
                                   data=json.dumps({"username": "admin", "password": PASSWORD}).encode())
    with urllib.request.urlopen(login, context=context, timeout=30) as response:
        token = json.load(response)["token"]
    query = urllib.request.Request(f"{https}/api/v1/query", method="POST",
                                   data=json.dumps({"sql": "SELECT count(*) AS n FROM demo.orders"}).encode(),
                                   headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(query, context=context, timeout=30) as response:
        assert json.load(response) == [{"n": 20000}]
    uri = server.uri.replace("grpc://", "grpc+tls://")
    options = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}",
               DatabaseOptions.TLS_ROOT_CERTS.value: cert.read_text()}
    with flightsql.connect(uri, db_kwargs=options, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM demo.orders")
        assert cur.fetch_arrow_table().to_pylist() == [{"n": 20000}]


def test_the_dashboard_cookie_is_secure_and_host_bound_under_tls(tls_server):
    server, cert = tls_server
    https = server.http_url.replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(cert))

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
    login = urllib.request.Request(f"{https}/admin/login", method="POST",
                                   data=urllib.parse.urlencode({"password": PASSWORD}).encode())
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(login, timeout=30)
    assert redirected.value.code == 303
    cookie = redirected.value.headers["set-cookie"]
    assert cookie.startswith("__Host-airlock_admin="), cookie
    assert all(part in cookie for part in ("; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/")), cookie


def test_plaintext_gets_no_answer(tls_server):
    server, _ = tls_server
    with pytest.raises(Exception):
        urllib.request.urlopen(f"{server.http_url}/healthz", timeout=10).read()
    # The server still answers TLS after a plaintext attempt.
    context = ssl.create_default_context(cafile=str(tls_server[1]))
    with urllib.request.urlopen(server.http_url.replace("http://", "https://") + "/healthz", context=context, timeout=10) as r:
        assert r.read() == b"ok\n"


def test_healthcheck_speaks_tls(tls_server, airlock_bin):
    server, cert = tls_server
    addr = server.http_url.removeprefix("http://")
    env = {"AIRLOCK_HTTP_ADDR": addr, "AIRLOCK_TLS_CERT": str(cert), "AIRLOCK_TLS_KEY": str(cert.parent / "key.pem"),
           "AIRLOCK_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"}
    assert subprocess.run([airlock_bin, "healthcheck"], env=env, capture_output=True, timeout=30).returncode == 0
