"""The operator dashboard in a real browser: Debian's chromium driven by
Playwright for Python (the test command installs both). Logs in, watches a
sync's progress and cancels it, sees a denied query in the audit view,
revokes a token and sees the agent refused, checks that text agents write
is shown and never run, that other sites cannot act through an admin's
browser, that agents get 403, and that paging holds with 10,000 jobs and
1,000,000 audit records seeded straight into the files. Screenshots of
every page go to $AIRLOCK_TEST_OUTPUT/dashboard."""

import asyncio
import http.server
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import duckdb
import httpx2
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pytest
from adbc_driver_flightsql import DatabaseOptions
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from playwright.sync_api import expect, sync_playwright

from conftest import PASSWORD, Airlock, call

CHROMIUM = os.environ.get("AIRLOCK_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("AIRLOCK_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output")) / "dashboard"

# Markup an agent could write; it must come out as text.
PAYLOAD = '"><img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script>'
# The same within an artifact tag's 64 characters.
TAG = '"><img src=x onerror=alert(1)><script>window.__xss=3</script>'

PAGES = {
    "now": ("/admin", "Now"),
    "syncs": ("/admin/syncs", "Syncs"),
    "access": ("/admin/access", "Access"),
    "artifacts": ("/admin/artifacts", "Artifacts"),
    "context": ("/admin/context", "Context"),
    "audit": ("/admin/audit", "Audit"),
}


def request(url, method="GET", token=None, data=None, headers=None):
    """(status, headers, body text) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token:
        req.add_header("authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=60) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


class Principal:
    """A token and stock Flight clients using it."""

    def __init__(self, server, token):
        self.server, self.token = server, token
        self.options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])

    def action(self, name, body=None):
        return call(self.server.flight_client(), self.options, name, body or {})

    def query(self, sql):
        auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {self.token}"}
        with flightsql.connect(self.server.uri, db_kwargs=auth, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def query_error(self, sql):
        with pytest.raises((flight.FlightError, adbc_driver_manager.Error)) as raised:
            self.query(sql)
        return str(raised.value)


def admin_of(server):
    client = server.flight_client()
    header = client.authenticate_basic_token("admin", PASSWORD)
    return Principal(server, header[1].decode().removeprefix("Bearer "))


@pytest.fixture(scope="module")
def site(airlock_bin, tmp_path_factory):
    """A server with a swarm, an agent and a grant whose expression holds
    agent-shaped markup."""
    tmp = tmp_path_factory.mktemp("dashboard")
    server = Airlock(airlock_bin, tmp / "data")
    admin = admin_of(server)
    admin.action(
        "grant.set",
        {
            "swarm": "ops",
            "tables": {"demo.customers": {"row_filter": f"name <> '{PAYLOAD.replace(chr(39), chr(39) * 2)}'"}},
            "limits": {"max_rows": 1000},
        },
    )
    swarm = admin.action("token.create", {"kind": "swarm", "name": "ops"})
    agent = admin.action("token.create", {"kind": "agent", "name": "a1", "swarm": "ops"})
    yield {
        "server": server,
        "base": server.http_url,
        "admin": admin,
        "swarm": Principal(server, swarm["token"]),
        "agent": Principal(server, agent["token"]),
        "agent_id": agent["id"],
        "tmp": tmp,
    }
    server.stop()


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Watched:
    """A page with every dialog and CSP complaint recorded."""

    def __init__(self, page):
        self.page, self.dialogs, self.csp = page, [], []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: "Content Security Policy" in m.text and self.csp.append(m.text))


@pytest.fixture
def admin_page(browser, site):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    watched = Watched(context.new_page())
    login(watched.page, site["base"])
    yield watched
    context.close()


def login(page, base, password=PASSWORD):
    page.goto(f"{base}/admin")
    assert page.url.endswith("/admin/login"), page.url
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/admin")


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_agents_and_swarms_get_403_on_every_route(site):
    base = site["base"]
    routes = [("GET", path) for path, _ in PAGES.values()] + [
        ("GET", "/admin/access/grant?swarm=ops"),
        ("POST", "/admin/actions/token.list"),
        ("POST", "/admin/logout"),
    ]
    for who in ("agent", "swarm"):
        for method, path in routes:
            status, _, body = request(base + path, method, token=site[who].token, data=b"" if method == "POST" else None)
            assert status == 403, (who, method, path, status)
            assert "PERMISSION_DENIED" in body and "admin" in body, body
    # Without credentials a page sends the browser to the login form.
    status, headers, _ = request(base + "/admin/audit")
    assert (status, headers["location"]) == (303, "/admin/login")
    # An agent's token on the login form is refused too.
    form = urllib.parse.urlencode({"token": site["agent"].token}).encode()
    status, _, body = request(base + "/admin/login", "POST", data=form,
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert status == 403 and "set-cookie" not in body.lower(), (status, body)
    # Made-up action names are refused too, and counted under the route,
    # not the name (metric labels stay few).
    status, _, _ = request(base + "/admin/actions/made-up-4711", "POST", token=site["agent"].token, data=b"")
    assert status == 403
    # The refusals are audited as dashboard requests of that agent.
    time.sleep(0.5)
    rows = site["admin"].query(
        "SELECT request, outcome FROM airlock.audit WHERE principal = 'a1' AND request LIKE '% /admin%'"
    ).to_pylist()
    assert {"request": "GET /admin/audit", "outcome": "denied"} in rows, rows
    assert {"request": "POST /admin/actions/made-up-4711", "outcome": "denied"} in rows, rows
    metrics = request(base + "/metrics", token=site["admin"].token)[2]
    assert 'method="POST /admin/actions/{name}"' in metrics and "made-up-4711" not in metrics
    # A bearer request is audited even when it claims to be a refresh.
    request(base + "/admin/syncs?state=failed", token=site["admin"].token, headers={"x-airlock-refresh": "1"})
    time.sleep(0.5)
    seen = site["admin"].query(
        "SELECT count(*) AS n FROM airlock.audit WHERE request = 'GET /admin/syncs' AND statement = '/admin/syncs?state=failed'"
    ).column("n")[0].as_py()
    assert seen == 1, seen


def test_a_wrong_password_stays_on_the_login_form(browser, site):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site['base']}/admin/login")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("password")
    assert not context.cookies()
    context.close()


def test_login_sets_a_strict_session_cookie_and_every_page_renders(admin_page, site):
    page = admin_page.page
    cookie = {c["name"]: c for c in page.context.cookies()}["airlock_admin"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert not cookie["secure"]  # plain HTTP here; test_tls-style TLS sets Secure and __Host-
    for name, (path, heading) in PAGES.items():
        response = page.goto(site["base"] + path)
        assert response.status == 200, (path, response.status)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        shot(page, name)
    page.goto(f"{site['base']}/admin/access/grant?swarm=ops&sql=SELECT+customer_id,+name+FROM+demo.customers+LIMIT+5")
    expect(page.get_by_role("heading", name="Explain as swarm:ops")).to_be_visible()
    expect(page.locator("section.explain")).to_contain_text("demo.customers")
    shot(page, "grant")
    assert admin_page.csp == [] and admin_page.dialogs == []

    def admin_sessions():
        tokens = site["admin"].action("token.list")["tokens"]
        return sum(1 for t in tokens if t["kind"] == "admin" and t["active"])

    # Logging in again replaces the browser's session (and its token).
    before = admin_sessions()
    page.goto(site["base"] + "/admin/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site['base']}/admin")
    assert admin_sessions() == before
    # Logging out ends the session and revokes its token.
    page.click("header form.logout button")
    page.wait_for_url("**/admin/login")
    assert admin_sessions() == before - 1
    page.goto(site["base"] + "/admin/syncs")
    assert page.url.endswith("/admin/login")


def test_editing_a_grant_previews_its_explain_before_saving(admin_page, site):
    admin = site["admin"]
    admin.action("grant.set", {"swarm": "preview", "tables": {"demo.customers": {}}})
    page = admin_page.page
    page.goto(f"{site['base']}/admin/access/grant?swarm=preview")
    edited = {"swarm": "preview", "tables": {"demo.customers": {"row_filter": "region = 'EU'",
                                                                "columns": {"email": "deny"}}}}
    page.fill("textarea[name=body]", json.dumps(edited))
    page.fill("textarea[name=sql]", "SELECT name, region FROM demo.customers")
    page.get_by_role("button", name="Preview with this grant").click()
    explain = page.locator("section.explain")
    expect(explain).to_contain_text("with the grant above, not saved")
    expect(explain).to_contain_text("region = 'EU'")
    expect(explain).to_contain_text('"email"')
    shot(page, "grant-preview")
    # Previewing stored nothing.
    assert admin.action("grant.get", {"swarm": "preview"})["grant"]["tables"] == {"demo.customers": {}}
    # A grant that names a missing column is refused in the preview, as grant.set would.
    page.fill("textarea[name=body]", json.dumps({"swarm": "preview", "tables": {"demo.customers": {"row_filter": "nope = 1"}}}))
    page.get_by_role("button", name="Preview with this grant").click()
    expect(explain).to_contain_text("refused:")
    page.fill("textarea[name=body]", json.dumps(edited))
    page.get_by_role("button", name="Save grant").click()
    expect(page.locator(".flash.ok")).to_contain_text("grant.set")
    assert page.url.endswith("/admin/access/grant?swarm=preview"), page.url
    saved = admin.action("grant.get", {"swarm": "preview"})["grant"]["tables"]["demo.customers"]
    assert saved["row_filter"] == "region = 'EU'", saved


def test_a_running_query_appears_by_itself_and_cancel_stops_it(admin_page, site):
    page = admin_page.page
    page.goto(site["base"] + "/admin")
    expect(page.get_by_text("No query is running.")).to_be_visible()
    outcome = {}

    def slow_query():
        # 8 × 10^11 rows to look at: it runs until cancelled.
        sql = (f"SELECT count(*) /* {PAYLOAD} */ FROM demo.orders a, demo.orders b, demo.customers c "
               "WHERE length(a.status || b.status || c.name) = 1")
        try:
            site["admin"].query(sql)
            outcome["error"] = None
        except Exception as error:  # noqa: BLE001 - the error is the result
            outcome["error"] = str(error)

    worker = threading.Thread(target=slow_query)
    worker.start()
    # The page refreshes itself: the query shows up without a reload.
    row = page.locator("#running tbody tr")
    expect(row).to_have_count(1, timeout=15_000)
    expect(row).to_contain_text("admin:admin")
    expect(row.locator("code.sql")).to_contain_text("<script>window.__xss=2</script>")
    shot(page, "now-running")
    # The charts have drawn this test's traffic (the sessions and queries so far).
    requests_line = page.locator("figure.chart").first.locator("polyline.a")
    assert requests_line.count() >= 1 and requests_line.first.get_attribute("points")
    row.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flash.ok")).to_contain_text("query.cancel: cancelled: true")
    worker.join(60)
    assert outcome["error"] and "cancel" in outcome["error"].lower(), outcome
    assert page.evaluate("window.__xss") is None and admin_page.dialogs == [] and admin_page.csp == []


def test_an_open_mcp_session_is_listed_with_its_principal(admin_page, site):
    opened, release = threading.Event(), threading.Event()

    async def hold():
        headers = {"Authorization": f"Bearer {site['agent'].token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as client:
            async with streamable_http_client(f"{site['base']}/mcp", http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    opened.set()
                    while not release.is_set():
                        await asyncio.sleep(0.05)

    worker = threading.Thread(target=lambda: asyncio.run(hold()))
    worker.start()
    try:
        assert opened.wait(30)
        page = admin_page.page
        page.goto(site["base"] + "/admin")
        expect(page.locator("#mcp-sessions tbody tr")).to_contain_text("agent:a1@ops")
    finally:
        release.set()
        worker.join(30)


def test_a_running_sync_shows_progress_and_cancels(admin_page, site):
    source = site["tmp"] / "big.csv"
    rows = 6_000_000
    pacsv.write_csv(pa.table({"id": pa.array(range(rows)), "name": pa.array([f"n{i % 1000}" for i in range(rows)])}), source)
    admin = site["admin"]
    admin.action("table.register", {"name": "s.big", "source": str(source)})
    job = admin.action("sync.start", {"table": "s.big"})["job_id"]
    page = admin_page.page
    page.goto(f"{site['base']}/admin/syncs?table=s.big")
    job_row = page.locator(f'#jobs tr[data-job-id="{job}"]')
    expect(job_row.locator("td.state")).to_have_text("running", timeout=30_000)
    seen = []
    for _ in range(100):
        page.reload()
        text = job_row.locator("span.rows").inner_text()
        if not seen or text != seen[-1]:
            seen.append(text)
        if len(seen) >= 3:
            break
        time.sleep(0.2)
    assert len(seen) >= 3, f"progress did not move: {seen}"
    shot(page, "syncs-running")
    job_row.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flash.ok")).to_contain_text("sync.cancel")
    for _ in range(100):
        if admin.action("sync.status", {"job_id": job})["state"] == "cancelled":
            break
        time.sleep(0.1)
    page.reload()
    expect(job_row.locator("td.state")).to_have_text("cancelled")
    # A cancelled job offers a retry; the table offers a start.
    expect(job_row.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.locator('#tables tr[data-table="s.big"]').get_by_role("button", name="Start")).to_be_visible()
    # The button was audited like the same action over Flight.
    time.sleep(0.5)
    audited = admin.query(
        "SELECT request, outcome, statement FROM airlock.audit WHERE request = 'POST /admin/actions/sync.cancel'"
    ).to_pylist()
    assert audited and audited[-1]["outcome"] == "ok" and job in audited[-1]["statement"], audited


def test_a_denied_query_appears_in_the_audit_view_as_text(admin_page, site):
    agent = site["agent"]
    # Table functions are not granted to agents: refused by policy.
    error = agent.query_error(f"SELECT '{PAYLOAD.replace(chr(39), chr(39) * 2)}' AS x FROM range(3)")
    assert "table function 'range' is not available" in error, error
    golden = agent.action("context.golden.add", {"question": PAYLOAD, "sql": "SELECT name FROM demo.customers"})
    assert golden["id"]
    export = agent.action("query.export", {"sql": "SELECT name FROM demo.customers", "format": "csv",
                                           "name": "names", "tags": [TAG], "wait": True})
    assert export["state"] == "succeeded", export
    time.sleep(0.5)
    page = admin_page.page
    page.goto(f"{site['base']}/admin/audit?outcome=denied&principal=a1")
    row = page.locator("#audit tbody tr").first
    expect(row).to_contain_text("denied")
    expect(row.locator("summary code")).to_contain_text("<script>window.__xss=2</script>")
    row.locator("summary").click()
    expect(row.locator("dl")).to_contain_text("PermissionDenied")
    shot(page, "audit-denied")
    page.goto(site["base"] + "/admin/artifacts")
    swarm = page.locator('section.swarm[data-swarm="ops"]')
    expect(swarm.locator("tbody tr")).to_contain_text("names")
    expect(swarm.locator("tbody tr")).to_contain_text("<script>window.__xss=3</script>")
    expect(swarm.locator("meter")).to_have_attribute("max", "100")
    shot(page, "artifacts-ops")
    for path in ("/admin/audit?principal=a1", "/admin/context", "/admin/access", "/admin/artifacts"):
        page.goto(site["base"] + path)
        expect(page.get_by_text("<script>window.__xss=", exact=False).first).to_be_visible()
        raw = request(site["base"] + path, token=site["admin"].token)[2]
        assert "<script>window.__xss" not in raw and "&#60;script&#62;window.__xss" in raw, path
    assert page.evaluate("window.__xss") is None
    assert admin_page.dialogs == [] and admin_page.csp == [], (admin_page.dialogs, admin_page.csp)


def test_a_description_is_saved_and_cleared_from_the_context_page(admin_page, site):
    page = admin_page.page
    page.goto(site["base"] + "/admin/context")
    described = page.locator("#descriptions tr", has_text="demo.customers")
    described.locator("textarea").fill("Customers & their <regions>")
    described.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_contain_text("context.describe")
    assert site["admin"].action("table.describe", {"table": "demo.customers"})["description"] == "Customers & their <regions>"
    expect(described.locator("textarea")).to_have_value("Customers & their <regions>")
    described.locator("textarea").fill("")
    described.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_contain_text("context.describe")
    assert not site["admin"].action("table.describe", {"table": "demo.customers"}).get("description")


def test_revoking_a_token_refuses_the_agents_next_query(admin_page, site, airlock_bin):
    admin = site["admin"]
    victim = admin.action("token.create", {"kind": "agent", "name": "a2", "swarm": "ops"})
    agent = Principal(site["server"], victim["token"])
    assert agent.query("SELECT count(*) AS n FROM demo.customers").column("n")[0].as_py() > 0
    page = admin_page.page
    page.goto(site["base"] + "/admin/access")
    row = page.locator(f'#tokens tr[data-token-id="{victim["id"]}"]')
    expect(row.locator("td.state")).to_have_text("active")
    assert victim["token"] not in page.content()
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".flash.ok")).to_contain_text("token.revoke")
    expect(row.locator("td.state")).to_have_text("revoked")
    error = agent.query_error("SELECT count(*) FROM demo.customers")
    assert "revoked" in error.lower(), error


def test_other_sites_cannot_act_through_the_admins_browser(admin_page, site):
    page = admin_page.page
    base = site["base"]
    target = site["agent_id"]
    # No form token: refused.
    refused = page.request.post(f"{base}/admin/actions/token.revoke", form={"body": json.dumps({"id": target})},
                                max_redirects=0)
    assert refused.status == 403, refused.status
    # The right token from another origin: refused.
    page.goto(base + "/admin/access")
    csrf = page.locator("header form.logout input[name=csrf]").get_attribute("value")
    foreign = page.request.post(f"{base}/admin/actions/token.revoke", max_redirects=0,
                                form={"csrf": csrf, "body": json.dumps({"id": target})},
                                headers={"origin": "http://evil.example"})
    assert foreign.status == 403, foreign.status
    time.sleep(0.5)
    refusals = site["admin"].query(
        "SELECT reason FROM airlock.audit WHERE request = 'POST /admin/actions/token.revoke' AND outcome = 'denied'"
    ).column("reason").to_pylist()
    assert any("form token" in r for r in refusals) and any("another origin" in r for r in refusals), refusals

    # A page on another port of the same host (same-site, so the SameSite
    # cookie is sent) auto-submitting a form: refused by Sec-Fetch-Site.
    form = f"""<form id=f method=post action="{base}/admin/actions/token.revoke">
<input name=body value='{json.dumps({"id": target})}'></form><script>document.getElementById('f').submit()</script>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(form.encode())

        def log_message(self, *args):
            pass

    evil = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with page.expect_navigation(url=re.compile(r".*/admin/actions/token.revoke")) as navigation:
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        assert navigation.value.status == 403
    finally:
        evil.shutdown()
    # The agent still works.
    assert site["agent"].query("SELECT count(*) AS n FROM demo.customers").column("n")[0].as_py() > 0


def test_paging_holds_with_ten_thousand_jobs_and_a_million_audit_records(browser, airlock_bin, tmp_path):
    data = tmp_path / "data"
    server = Airlock(airlock_bin, data)
    admin = admin_of(server)
    source = tmp_path / "small.csv"
    source.write_text("id\n1\n2\n")
    admin.action("table.register", {"name": "s.small", "source": str(source)})
    job = admin.action("sync.start", {"table": "s.small"})["job_id"]
    for _ in range(200):
        if admin.action("sync.status", {"job_id": job})["state"] == "succeeded":
            break
        time.sleep(0.05)
    server.stop()

    # Seed straight into the files, not through requests.
    meta = duckdb.connect(str(data / "meta.duckdb"))
    doc = json.loads(meta.execute("SELECT doc FROM documents WHERE collection = 'jobs' AND key = ?", [job]).fetchone()[0])
    # Recent, so the retention purge at start leaves them.
    start = datetime.now(timezone.utc) - timedelta(days=8)
    docs = []
    for i in range(10_000):
        seeded = dict(doc, job_id=f"seed-{i:05d}", state="failed" if i % 10 == 0 else "succeeded",
                      error=f"seeded failure {i}" if i % 10 == 0 else None,
                      created_at=(start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"))
        docs.append(("jobs", seeded["job_id"], json.dumps(seeded), 1))
    meta.executemany("INSERT INTO documents (collection, key, doc, version) VALUES (?, ?, ?, ?)", docs)
    meta.close()
    replica = duckdb.connect(str(data / "replica.duckdb"))
    replica.execute("""
        INSERT INTO main.__airlock_audit (time, request, principal_kind, principal, swarm, statement,
                                          outcome, status, bytes, duration_ms, truncated)
        SELECT now() - INTERVAL 2 HOUR + to_microseconds(i * 1000),
               'DoGet', 'agent', 'seeder', 'bulk', 'SELECT seeded ' || lpad(i::VARCHAR, 7, '0'),
               CASE WHEN i % 100 = 0 THEN 'denied' ELSE 'ok' END,
               CASE WHEN i % 100 = 0 THEN 'PermissionDenied' ELSE 'Ok' END, 0, 1.0, false
        FROM range(1000000) t(i)""")
    replica.close()

    server = Airlock(airlock_bin, data, args=("serve",))
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        login(page, server.http_url)
        timings = {}

        def timed(name, url):
            started = time.perf_counter()
            page.goto(url)
            timings[name] = round(time.perf_counter() - started, 3)

        timed("audit, first page of 1,000,000", server.http_url + "/admin/audit?principal=seeder")
        seen = []
        for n in range(3):
            statements = page.locator("#audit tbody tr summary code").all_inner_texts()
            assert len(statements) == 50, len(statements)
            seen.extend(statements)
            if n == 0:
                shot(page, "audit-million")
            started = time.perf_counter()
            page.get_by_role("link", name="Older →").click()
            page.wait_for_load_state()
            timings[f"audit, page {n + 2}"] = round(time.perf_counter() - started, 3)
        numbers = [int(s.removeprefix("SELECT seeded ")) for s in seen]
        # Newest first, no gap and no repeat across pages.
        assert numbers == list(range(999_999, 999_999 - 150, -1)), numbers[:5]
        timed("audit, filtered", server.http_url + "/admin/audit?principal=seeder&outcome=denied&text=seeded+0999")
        assert page.locator("#audit tbody tr summary code").all_inner_texts() == [
            f"SELECT seeded 0999{d}00" for d in range(9, -1, -1)
        ]

        # A time range: the last 1,000 seeded records span one second.
        newest = datetime.now(timezone.utc)
        window = (newest - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
        page.goto(server.http_url + f"/admin/audit?principal=seeder&to={window}")
        expect(page.get_by_text("No record matches.")).to_be_visible()
        timed("syncs, 10,000 jobs", server.http_url + "/admin/syncs?state=failed")
        ids = page.locator("#jobs tbody tr[data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
        assert ids[:2] == ["seed-09990", "seed-09980"] and len(ids) == 50, ids[:3]
        page.get_by_role("link", name="Older →").click()
        ids = page.locator("#jobs tbody tr[data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
        assert ids[0] == "seed-09490", ids[:3]
        shot(page, "syncs-ten-thousand")
        timed("now", server.http_url + "/admin")
        (SHOTS / "timings.json").write_text(json.dumps(timings, indent=1))
        context.close()
    finally:
        server.stop()
