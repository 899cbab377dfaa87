"""The JSON API on the HTTP port, driven with plain HTTP (urllib, as curl
would) beside pyarrow.flight: login, every action by name, queries streamed
as JSON, Arrow, Parquet and CSV. The same agent sees the same rows, gets the
same error codes and messages, and leaves the same audit records through
both front ends."""

import base64
import io
import json
import time
import urllib.error
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from adbc_driver_flightsql import DatabaseOptions

from conftest import PASSWORD, call


def post(url, body=None, token=None, headers=None, raw=None):
    """(status, headers, body bytes) of a POST."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class Api:
    def __init__(self, server, token):
        self.base = f"{server.http_url}/api/v1"
        self.token = token

    def action(self, name, body=None):
        return post(f"{self.base}/actions/{name}", body if body is not None else {}, self.token)

    def query(self, sql, **options):
        return post(f"{self.base}/query", {"sql": sql, **options}, self.token)


class Flight:
    """The same principal through stock Flight clients: pyarrow.flight for
    actions, ADBC for SQL."""

    def __init__(self, server, token):
        self.client = server.flight_client()
        self.options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
        self.uri, self.token = server.uri, token

    def action(self, name, body=None):
        return call(self.client, self.options, name, body if body is not None else {})

    def query(self, sql):
        auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {self.token}"}
        with flightsql.connect(self.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def error(self, fn, *args):
        with pytest.raises((flight.FlightError, adbc_driver_manager.Error, pa.ArrowException)) as raised:
            fn(*args)
        return str(raised.value)


@pytest.fixture(scope="module")
def people(server):
    status, _, body = post(f"{server.http_url}/api/v1/login", {"username": "admin", "password": PASSWORD})
    assert status == 200, body
    login = json.loads(body)
    assert login["kind"] == "admin"
    admin = Api(server, login["token"])
    status, _, body = admin.action(
        "grant.set",
        {
            "swarm": "apiswarm",
            "tables": {
                "demo.customers": {
                    "row_filter": "region = agent_attr('region')",
                    "columns": {"email": {"mask": "'***'"}, "signup_date": "deny"},
                },
                "demo.orders": {},
            },
            "limits": {"max_rows": 300},
        },
    )
    assert status == 200, body
    status, _, body = admin.action(
        "token.create", {"kind": "agent", "name": "api1", "swarm": "apiswarm", "attributes": {"region": "EU"}}
    )
    assert status == 200, body
    token = json.loads(body)["token"]
    yield {"admin": admin, "agent": Api(server, token), "agent_flight": Flight(server, token), "token": token}
    admin.action("grant.delete", {"swarm": "apiswarm"})


AGENT_SQL = "SELECT customer_id, name, email, region FROM demo.customers ORDER BY customer_id"


def test_login_gives_a_token_that_flight_accepts_too(server, people):
    token = people["admin"].token
    whoami = Flight(server, token).action("whoami")
    assert whoami["kind"] == "admin"
    # A Basic header works as the JSON body does.
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    status, _, body = post(f"{server.http_url}/api/v1/login", headers={"authorization": f"Basic {basic}"})
    assert status == 200 and json.loads(body)["kind"] == "admin"


def test_a_wrong_password_is_401_with_the_flight_message(server):
    status, headers, body = post(f"{server.http_url}/api/v1/login", {"username": "admin", "password": "nope"})
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    error = json.loads(body)
    assert error["code"] == "UNAUTHENTICATED"
    with pytest.raises(flight.FlightUnauthenticatedError) as raised:
        server.flight_client().authenticate_basic_token("admin", "nope")
    assert error["message"] in str(raised.value)
    # A body that is not a login says so.
    status, _, body = post(f"{server.http_url}/api/v1/login", {"user": "admin"})
    assert status == 400 and "invalid login body" in json.loads(body)["message"]


def test_no_token_no_answer(server):
    for path, body in [("actions/whoami", {}), ("query", {"sql": "SELECT 1"}), ("actions/table.list", {})]:
        status, headers, answer = post(f"{server.http_url}/api/v1/{path}", body)
        assert status == 401, path
        assert json.loads(answer)["code"] == "UNAUTHENTICATED"
    status, _, answer = post(f"{server.http_url}/api/v1/actions/whoami", {}, token="not-a-token")
    assert status == 401 and json.loads(answer)["code"] == "UNAUTHENTICATED"


def test_every_action_answers_as_its_flight_twin(people):
    agent, twin = people["agent"], people["agent_flight"]
    for name, body in [("whoami", {}), ("table.list", {}), ("artifact.list", {})]:
        status, headers, answer = agent.action(name, body)
        assert status == 200, answer
        assert headers["content-type"] == "application/json"
        assert json.loads(answer) == twin.action(name, body), name


@pytest.mark.parametrize(
    "name,body,http_status,code",
    [
        ("grant.list", {}, 403, "PERMISSION_DENIED"),
        ("no.such.action", {}, 404, "NOT_FOUND"),
        ("token.revoke", {"nope": 1}, 400, "INVALID_ARGUMENT"),
        ("table.profile", {"table": "demo.secret"}, 404, "NOT_FOUND"),
    ],
)
def test_action_errors_carry_the_flight_code_and_message(people, name, body, http_status, code):
    status, _, answer = people["agent"].action(name, body)
    error = json.loads(answer)
    assert (status, error["code"]) == (http_status, code), answer
    flight_error = people["agent_flight"].error(people["agent_flight"].action, name, body)
    assert error["message"] in flight_error


def test_json_rows_are_the_rows_flight_returns(people):
    expected = people["agent_flight"].query(AGENT_SQL).to_pylist()
    assert expected and all(r["region"] == "EU" and r["email"] == "***" for r in expected)
    status, headers, body = people["agent"].query(AGENT_SQL)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == expected


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "csv"])
def test_arrow_parquet_and_csv_carry_the_same_rows(people, fmt):
    expected = people["agent_flight"].query(AGENT_SQL)
    status, headers, body = people["agent"].query(AGENT_SQL, format=fmt)
    assert status == 200, body
    if fmt == "arrow":
        assert headers["content-type"] == "application/vnd.apache.arrow.stream"
        table = ipc.open_stream(body).read_all()
    elif fmt == "parquet":
        table = pq.read_table(io.BytesIO(body))
    else:
        assert headers["content-type"].startswith("text/csv")
        table = pacsv.read_csv(io.BytesIO(body))
    assert table.column_names == expected.column_names
    assert table.to_pydict() == expected.to_pydict()


def test_an_empty_csv_result_is_its_header(people):
    status, _, body = people["agent"].query("SELECT customer_id, name FROM demo.customers WHERE customer_id < 0", format="csv")
    assert status == 200 and body.decode().strip() == "customer_id,name"


def test_the_grant_row_cap_holds_and_a_caller_may_lower_it(people):
    status, headers, body = people["agent"].query("SELECT order_id FROM demo.orders")
    assert status == 200
    assert len(json.loads(body)) == 300 and headers["x-airlock-max-rows"] == "300"
    status, headers, body = people["agent"].query("SELECT order_id FROM demo.orders", max_rows=7, format="csv")
    assert len(body.decode().strip().splitlines()) == 1 + 7 and headers["x-airlock-max-rows"] == "7"
    # A caller cannot raise its grant's cap.
    status, headers, body = people["agent"].query("SELECT order_id FROM demo.orders", max_rows=100000)
    assert len(json.loads(body)) == 300


def test_parameters_bind_to_placeholders(people):
    status, _, body = people["agent"].query(
        "SELECT customer_id, region FROM demo.customers WHERE customer_id < $1 AND name <> $2 ORDER BY customer_id",
        params=[40, "nobody"],
    )
    assert status == 200, body
    rows = json.loads(body)
    expected = people["agent_flight"].query(
        "SELECT customer_id, region FROM demo.customers WHERE customer_id < 40 ORDER BY customer_id"
    ).to_pylist()
    assert rows == expected and rows
    status, _, body = people["agent"].query("SELECT $1", params=[[1, 2]])
    assert status == 400 and "params[0]" in json.loads(body)["message"]


@pytest.mark.parametrize(
    "sql,http_status,code",
    [
        ("SELECT signup_date FROM demo.customers", 400, "INVALID_ARGUMENT"),
        ("SELEC 1", 400, "INVALID_ARGUMENT"),
        ("DROP TABLE demo.orders", 403, "PERMISSION_DENIED"),
        ("SELECT * FROM demo.nothing", 404, "NOT_FOUND"),
    ],
)
def test_query_errors_carry_the_flight_code_and_message(people, sql, http_status, code):
    status, _, body = people["agent"].query(sql)
    error = json.loads(body)
    assert (status, error["code"]) == (http_status, code), body
    flight_error = people["agent_flight"].error(people["agent_flight"].query, sql)
    assert error["message"] in flight_error


def test_a_bad_query_body_is_400_naming_the_problem(people):
    status, _, body = people["agent"].query("SELECT 1", format="xlsx")
    assert status == 400 and "unknown variant `xlsx`" in json.loads(body)["message"]
    status, _, body = post(f"{people['agent'].base}/query", raw=b"{not json", token=people["token"])
    assert status == 400 and json.loads(body)["code"] == "INVALID_ARGUMENT"


def test_table_sample_answers_the_sql_to_query(people):
    status, _, body = people["agent"].action("table.sample", {"table": "demo.customers", "rows": 5})
    assert status == 200, body
    sample = json.loads(body)
    status, _, rows = people["agent"].query(sample["sql"])
    rows = json.loads(rows)
    assert 0 < len(rows) <= 5 and all(r["region"] == "EU" and r["email"] == "***" for r in rows)


def test_http_requests_are_audited_like_flight_calls(people):
    marker = "SELECT customer_id FROM demo.customers WHERE customer_id < 50 AND 'audit-http' <> ''"
    expected_rows = len(json.loads(people["agent"].query(marker)[2]))
    assert expected_rows > 0
    people["agent_flight"].query(marker)
    admin = people["admin"]
    for _ in range(100):
        status, _, body = admin.query(
            "SELECT request, principal, swarm, outcome, rows, tables FROM airlock.audit "
            "WHERE statement = $1 AND (request LIKE 'DoGet%' OR request LIKE 'POST%') ORDER BY request",
            params=[marker],
        )
        records = json.loads(body)
        if len(records) == 2:
            break
        time.sleep(0.1)
    assert [r["request"] for r in records] == ["DoGet CommandPreparedStatementQuery", "POST /api/v1/query"]
    for record in records:
        assert (record["principal"], record["swarm"], record["outcome"], record["tables"], record["rows"]) == (
            "api1", "apiswarm", "ok", "demo.customers", expected_rows
        )


def test_unknown_routes_answer_json_404(server):
    status, _, body = post(f"{server.http_url}/api/v2/nothing", {})
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"
