"""Questions in words (nl.sql, nl.answer, nl.evaluate, nl.prompts/generations) and fine-tuning,
against the scripted OpenAI-compatible server in openai_stub.py, which records every request, so
the tests can assert what a model was shown.

The swarm `emea` may query demo.orders, EU rows only, and not demo.customers; `apac` may query
demo.customers only. Generated SQL runs under the caller's policy; prompts carry nothing from
outside the caller's grants.
"""

import base64
import json
import time
import urllib.request

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import PASSWORD, Airlock, call
from openai_stub import OpenAIStub

KEY = "sk-stub-secret-5150"


def bearer(token):
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def fails(client, options, name, body):
    with pytest.raises((flight.FlightError, pa.ArrowException)) as error:
        call(client, options, name, body)
    return str(error.value)


def fenced(sql, prose="Here is the query:"):
    return {"content": f"{prose}\n\n```sql\n{sql}\n```\n\nThis should answer it."}


@pytest.fixture(scope="module")
def nl(airlock_bin, tmp_path_factory):
    stub = OpenAIStub(api_key=KEY)
    tmp = tmp_path_factory.mktemp("airlock-nl")
    config = tmp / "airlock.toml"
    config.write_text(
        f"""
[llm]
default_provider = "stub"
max_attempts = 3
generation_timeout = "30s"
finetune_poll_interval = "100ms"

[llm.providers.stub]
base_url = "{stub.base_url}"
model = "stub-model"
api_key_env = "STUB_KEY"
timeout = "2s"
retries = 2
retry_backoff = "50ms"

[llm.embeddings]
base_url = "{stub.base_url}"
model = "stub-embed"
api_key_env = "STUB_KEY"
timeout = "2s"
retries = 0

[llm.providers.badkey]
base_url = "{stub.base_url}"
model = "stub-model"
api_key_env = "STUB_WRONG_KEY"
timeout = "2s"
retries = 0
"""
    )
    server = Airlock(airlock_bin, tmp / "data", args=("serve", "--demo", "--config", str(config)),
                     extra_env={"STUB_KEY": KEY, "STUB_WRONG_KEY": "sk-wrong"})
    client, headers = server.admin_headers()
    admin = flight.FlightCallOptions(headers=headers)
    call(client, admin, "grant.set", {"swarm": "emea", "tables": {"demo.orders": {"row_filter": "region = 'EU'"}}})
    call(client, admin, "grant.set", {"swarm": "apac", "tables": {"demo.customers": {}}})
    agents = {}
    for swarm in ("emea", "apac"):
        token = call(client, admin, "token.create", {"kind": "agent", "name": f"{swarm}_nl", "swarm": swarm})["token"]
        agents[swarm] = (server.flight_client(), bearer(token))
    yield {"server": server, "stub": stub, "admin": (client, admin), "agents": agents}
    server.stop()
    stub.stop()
    assert KEY not in server.log_path.read_text()


def test_the_dashboard_lists_recent_generations_as_text(nl):
    stub = nl["stub"]
    stub.clear()
    client, options = nl["agents"]["emea"]
    question = "Orders per <b>region</b>? <script>window.__xss=1</script>"
    stub.script("chat", [fenced("SELECT region, count(*) AS n FROM demo.orders GROUP BY region")])
    assert call(client, options, "nl.sql", {"question": question})["status"] == "valid"
    admin_client, _ = nl["admin"]
    token = admin_client.authenticate_basic_token("admin", PASSWORD)[1].decode()
    server = nl["server"]
    page = urllib.request.Request(f"{server.http_url}/admin/context", headers={"authorization": token})
    with urllib.request.urlopen(page, timeout=30) as response:
        html = response.read().decode()
    generations = html[html.index('<table id="generations">'):]
    row = generations[: generations.index("</tr>", generations.index("<tbody>"))]
    assert "Orders per &#60;b&#62;region&#60;/b&#62;? &#60;script&#62;" in row, row
    assert "<script>window.__xss" not in html
    assert ">valid<" in row and ">1.00<" in row and "agent:emea_nl@emea" in row, row


def test_generation_retries_with_the_error_and_runs_under_policy(nl):
    stub = nl["stub"]
    stub.clear()
    client, options = nl["agents"]["emea"]
    stub.script("chat", [
        fenced("SELECT no_such_column FROM demo.orders"),
        fenced("SELECT region, count(*) AS n FROM demo.orders GROUP BY region;", prose="Sorry, fixed:"),
    ])
    generation = call(client, options, "nl.sql", {"question": "How many orders per region?"})
    assert generation["status"] == "valid", generation
    assert generation["sql"] == "SELECT region, count(*) AS n FROM demo.orders GROUP BY region"
    assert len(generation["attempts"]) == 2
    assert "no_such_column" in generation["attempts"][0]["error"]
    assert generation["tables"] == ["demo.orders"]
    assert generation["checks"] == {"plans": True, "runs": True, "returns_rows": True, "uses_ranked_tables": True}
    assert generation["confidence"] == 1.0
    assert generation["tokens"]["total_tokens"] > 0 and generation["latency_ms"] >= 0
    assert generation["provider"] == "stub" and generation["model"] == "stub-model"

    first, second = stub.chat_requests()
    system = first["messages"][0]["content"]
    assert "demo.orders" in system and "region" in system
    # Never a table or column outside the caller's grants.
    assert "customers" not in json.dumps(first) and "email" not in json.dumps(first)
    # The retry carries the error and the model's previous answer.
    assert second["messages"][-2]["role"] == "assistant"
    assert "no_such_column" in second["messages"][-1]["content"]
    for request in stub.requests:
        assert request["headers"]["authorization"] == f"Bearer {KEY}"

    # nl.answer runs the SQL as the caller: the model sees EU rows only.
    stub.script("chat", [{"content": "All orders you can see are in the EU."}])
    answer = call(client, options, "nl.answer", {"generation_id": generation["id"]})
    assert answer["answer"] == "All orders you can see are in the EU."
    assert [row["region"] for row in answer["rows"]] == ["EU"]
    shown = stub.chat_requests()[-1]["messages"][-1]["content"]
    assert "EU" in shown and "US" not in shown and "APAC" not in shown
    assert "max_rows" in fails(client, options, "nl.answer", {"generation_id": generation["id"], "max_rows": 0})

    # Durable, and visible to its owner and admins only.
    listed = call(client, options, "nl.generations", {})["items"]
    assert generation["id"] in [g["id"] for g in listed]
    prompt = call(client, options, "nl.prompts", {"id": generation["prompt_id"]})["items"][0]
    assert prompt["messages"][0]["content"] == system and prompt["context_tables"][0] == "demo.orders"
    admin_client, admin = nl["admin"]
    assert call(admin_client, admin, "nl.generations", {"id": generation["id"]})["items"][0]["sql"] == generation["sql"]
    other_client, other = nl["agents"]["apac"]
    assert "not yours" in fails(other_client, other, "nl.generations", {"id": generation["id"]})
    assert "not yours" in fails(other_client, other, "nl.prompts", {"id": generation["prompt_id"]})
    assert "not yours" in fails(other_client, other, "nl.answer", {"generation_id": generation["id"]})
    assert generation["id"] not in [g["id"] for g in call(other_client, other, "nl.generations", {})["items"]]


def test_a_forbidden_table_is_refused_and_never_shown_to_the_model(nl):
    stub = nl["stub"]
    stub.clear()
    client, options = nl["agents"]["emea"]
    stub.script("chat", [fenced("SELECT email FROM demo.customers")] * 3)
    generation = call(client, options, "nl.sql", {"question": "List the email of every customer"})
    assert generation["status"] == "invalid", generation
    assert len(generation["attempts"]) == 3
    assert "customers" in generation["error"] and generation["checks"]["plans"] is False
    assert generation["confidence"] == 0.0
    for request in stub.chat_requests():
        system = request["messages"][0]["content"]
        assert "demo.customers" not in system and "email" not in system


def test_placeholders_and_refusals_are_never_executed(nl):
    stub = nl["stub"]
    stub.clear()
    client, options = nl["agents"]["emea"]
    stub.script("chat", [
        {"content": "```sql\nSELECT * FROM <table_name>\n```"},
        {"content": "-- cannot answer: no table holds salaries"},
    ])
    generation = call(client, options, "nl.sql", {"question": "What is the average salary?"})
    assert generation["status"] == "invalid"
    assert [a["sql"] for a in generation["attempts"]] == [None, None]
    assert "placeholder" in generation["attempts"][0]["error"]
    assert generation["error"] == "the model could not answer: no table holds salaries"
    assert "placeholder" in stub.chat_requests()[1]["messages"][-1]["content"]


def test_provider_failures_give_clear_errors(nl):
    stub = nl["stub"]
    client, options = nl["agents"]["emea"]
    question = {"question": "How many orders are there?"}

    stub.clear()
    stub.script("chat", [{"status": 429, "retry_after": 0.1}, {"status": 503}, fenced("SELECT count(*) FROM demo.orders")])
    assert call(client, options, "nl.sql", question)["status"] == "valid"
    assert len(stub.chat_requests()) == 3

    stub.clear()
    stub.script("chat", [{"status": 429}] * 3)
    assert "rate limiting (HTTP 429) after 3 attempts" in fails(client, options, "nl.sql", question)
    stub.script("chat", [{"status": 500}] * 3)
    error = fails(client, options, "nl.sql", question)
    assert "unavailable" in error and "HTTP 500 after 3 attempts" in error
    stub.script("chat", [{"raw": "{not json"}])
    assert "malformed answer" in fails(client, options, "nl.sql", question)
    stub.script("chat", [{"json": {"choices": []}}])
    assert "no choices[0].message.content" in fails(client, options, "nl.sql", question)
    stub.script("chat", [{"delay": 3, "content": "too late"}])
    started = time.time()
    assert "did not answer within 2 s" in fails(client, options, "nl.sql", question)
    assert time.time() - started < 10
    error = fails(client, options, "nl.sql", {**question, "provider": "badkey"})
    assert "refused the request (HTTP 401): Incorrect API key provided" in error
    assert "sk-wrong" not in error
    assert "no LLM provider named 'nope'; configured: badkey, stub" in fails(
        client, options, "nl.sql", {**question, "provider": "nope"})
    assert "question must not be empty" in fails(client, options, "nl.sql", {"question": "  "})

    # The optional self-check asks the model a second question and counts its verdict.
    stub.clear()
    stub.script("chat", [fenced("SELECT count(*) FROM demo.orders"), {"content": "No."}])
    checked = call(client, options, "nl.sql", {**question, "self_check": True})
    assert checked["checks"]["model_agrees"] is False and checked["confidence"] == 0.9
    assert "Does this query answer the question" in stub.chat_requests()[1]["messages"][-1]["content"]
    assert "unknown field" in fails(client, options, "nl.sql", {"question": "x", "temperature": 2})


def test_evaluation_holds_each_golden_pair_out_and_compares_rows(nl):
    stub = nl["stub"]
    stub.clear()
    client, admin = nl["admin"]
    per_region = call(client, admin, "context.golden.add", {
        "question": "How many orders are there per region?",
        "sql": "SELECT region, count(*) AS orders FROM demo.orders GROUP BY region"})
    total = call(client, admin, "context.golden.add", {
        "question": "What is the total amount of all orders?",
        "sql": "SELECT sum(amount) FROM demo.orders"})

    def model(request):
        question = request["messages"][-1]["content"]
        if "per region" in question:
            # Right rows, other order, alias and a different numeric type.
            return fenced("SELECT region, CAST(count(*) AS DOUBLE) AS n FROM demo.orders GROUP BY region ORDER BY n")
        return fenced("SELECT sum(amount) FROM demo.orders WHERE status = 'shipped'")

    stub.default_chat = model
    try:
        job = call(client, admin, "nl.evaluate", {"wait": True})
    finally:
        stub.default_chat = None
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert (result["total"], result["correct"], result["accuracy"]) == (2, 1, 0.5)
    outcomes = {q["golden_id"]: q for q in result["questions"]}
    assert outcomes[per_region["id"]]["correct"] is True
    assert outcomes[total["id"]]["correct"] is False
    assert "differs" in outcomes[total["id"]]["error"]
    # Each question's own pair is held out of its prompt; the other pair may be an example.
    for request in stub.chat_requests():
        system = request["messages"][0]["content"]
        question = request["messages"][1]["content"]
        own = per_region if "per region" in question else total
        assert own["sql"] not in system

    assert "no golden SQL 'nope'" in fails(client, admin, "nl.evaluate", {"golden_ids": ["nope"]})
    # emea reads demo.orders through a row filter: golden text could name values of rows it
    # cannot read, so it sees no pair on orders, and none reaches its prompts.
    emea_client, emea = nl["agents"]["emea"]
    assert call(emea_client, emea, "context.golden.list", {})["golden_sql"] == []
    stub.clear()
    stub.script("chat", [fenced("SELECT region, count(*) FROM demo.orders GROUP BY region")])
    call(emea_client, emea, "nl.sql", {"question": "How many orders are there per region?"})
    assert per_region["sql"] not in json.dumps(stub.chat_requests())
    # apac may not see demo.orders, so neither these pairs: nothing to evaluate.
    other_client, other = nl["agents"]["apac"]
    assert "no golden SQL you may see" in fails(other_client, other, "nl.evaluate", {})


def download(client, options, name):
    got = call(client, options, "artifact.get", {"name": name})
    table = client.do_get(flight.Ticket(base64.b64decode(got["ticket"])), options).read_all()
    return b"".join(table.column("chunk").to_pylist())


def test_finetuning_exports_trains_and_serves_the_model(nl):
    stub = nl["stub"]
    stub.clear()
    client, admin = nl["admin"]
    golden = call(client, admin, "context.golden.list", {})["golden_sql"]
    assert len(golden) >= 2

    exported = call(client, admin, "finetune.export", {"name": "golden_chat"})
    assert exported["examples"] == len(golden)
    lines = [json.loads(line) for line in download(client, admin, "golden_chat").decode().splitlines()]
    assert len(lines) == len(golden)
    roles = [m["role"] for m in lines[0]["messages"]]
    assert roles == ["system", "user", "assistant"]
    by_question = {l["messages"][1]["content"]: l for l in lines}
    for pair in golden:
        example = by_question[pair["question"]]
        assert pair["sql"] in example["messages"][2]["content"]
        assert "demo.orders" in example["messages"][0]["content"]

    created = call(client, admin, "finetune.create", {"suffix": "orders"})
    assert created["status"] in ("uploading", "validating_files") and created["examples"] == len(golden)
    for _ in range(200):
        finetune = call(client, admin, "finetune.get", {"id": created["id"]})
        if finetune["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert finetune["status"] == "succeeded", finetune
    assert finetune["fine_tuned_model"].startswith("ft:stub-model:airlock:orders")
    upload = next(r for r in stub.requests if r["path"] == "/v1/files")
    assert upload["body"].count(b'"assistant"') == len(golden)
    for _ in range(100):
        job = call(client, admin, "job.get", {"job_id": created["id"]})
        if job["state"] == "succeeded":
            break
        time.sleep(0.05)
    assert job["state"] == "succeeded" and job["result"]["fine_tuned_model"] == finetune["fine_tuned_model"]

    # The resulting model serves nl.sql.
    stub.script("chat", [fenced("SELECT count(*) FROM demo.orders")])
    generation = call(client, admin, "nl.sql", {"question": "How many orders?", "model": finetune["fine_tuned_model"]})
    assert generation["model"] == finetune["fine_tuned_model"]
    assert stub.chat_requests()[-1]["model"] == finetune["fine_tuned_model"]
    # Another principal may not use it: it was trained on what only its owner may see.
    emea_client, emea = nl["agents"]["emea"]
    assert "fine-tuned model of yours" in fails(
        emea_client, emea, "nl.sql", {"question": "How many orders?", "model": finetune["fine_tuned_model"]})

    # A provider-side failure ends the job failed, with the provider's reason.
    stub.finetune_path = ["validating_files", "failed"]
    failed = call(client, admin, "finetune.create", {})
    for _ in range(200):
        failed = call(client, admin, "finetune.get", {"id": failed["id"]})
        if failed["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert failed["status"] == "failed" and "invalid_training_file" in failed["error"]

    # Cancelling reaches the provider.
    stub.finetune_path = ["validating_files", "queued"] + ["running"] * 10_000 + ["succeeded"]
    running = call(client, admin, "finetune.create", {})
    time.sleep(0.3)
    call(client, admin, "finetune.cancel", {"id": running["id"]})
    for _ in range(200):
        running = call(client, admin, "finetune.get", {"id": running["id"]})
        if running["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert running["status"] == "cancelled"
    assert any(r["path"].endswith("/cancel") for r in stub.requests)
    stub.finetune_path = ["validating_files", "queued", "running", "succeeded"]
    time.sleep(0.3)
    assert call(client, admin, "job.get", {"job_id": running["id"]})["state"] == "cancelled"

    # Fine-tunes are their owner's; an agent that may not read demo.orders trains on nothing.
    other_client, other = nl["agents"]["apac"]
    assert "not yours" in fails(other_client, other, "finetune.get", {"id": created["id"]})
    assert "no golden SQL you may see" in fails(other_client, other, "finetune.export", {"name": "mine"})
    listed = [f["id"] for f in call(client, admin, "finetune.list", {})["items"]]
    assert created["id"] in listed and failed["id"] in listed

    deleted = call(client, admin, "finetune.delete", {"id": created["id"]})
    assert deleted == {"id": created["id"], "deleted": True, "training_file_deleted": True}
    assert "not yours" in fails(client, admin, "finetune.get", {"id": created["id"]})


def test_search_is_hybrid_with_embeddings_and_embeds_only_what_the_caller_sees(nl):
    stub = nl["stub"]
    stub.clear()
    client, options = nl["agents"]["apac"]
    answer = call(client, options, "context.search", {"question": "people who signed up", "k": 3})
    assert answer["ranking"] == "hybrid" and "ranking_note" not in answer
    assert [t["table"] for t in answer["tables"]] == ["demo.customers"]
    embedded = [text for r in stub.requests if r["path"] == "/v1/embeddings" for text in r["json"]["input"]]
    assert "people who signed up" in embedded
    # apac may not query demo.orders: no text about it goes to the endpoint.
    assert not any("orders" in text for text in embedded), embedded

    # A failing endpoint degrades to BM25, and says so.
    stub.script("embeddings", [{"status": 400, "body": {"error": {"message": "input too long"}}}])
    answer = call(client, options, "context.search", {"question": "customers by region", "k": 3})
    assert answer["ranking"] == "bm25"
    assert "input too long" in answer["ranking_note"]
    assert answer["tables"][0]["table"] == "demo.customers"


def test_mcp_offers_the_language_tools_when_a_model_is_configured(nl):
    """generate_sql and answer_question over MCP: listed only with a model,
    and governed like nl.sql and nl.answer over Flight."""
    import asyncio

    from test_mcp import session, text

    stub = nl["stub"]
    stub.clear()
    admin_client, admin = nl["admin"]
    token = call(admin_client, admin, "token.create", {"kind": "agent", "name": "emea_mcp", "swarm": "emea"})["token"]
    url = f"{nl['server'].http_url}/mcp"
    stub.script("chat", [
        fenced("SELECT region, count(*) AS n FROM demo.orders GROUP BY region"),
        fenced("SELECT region, count(*) AS n FROM demo.orders GROUP BY region"),
        {"content": "Every order you can see is in the EU."},
    ])

    async def ask():
        async with session(url, token) as s:
            tools = {t.name for t in (await s.list_tools()).tools}
            generated = await s.call_tool("generate_sql", {"question": "Orders per region?"})
            answered = await s.call_tool("answer_question", {"question": "Which region has orders?"})
            return tools, generated, answered

    tools, generated, answered = asyncio.run(ask())
    assert {"generate_sql", "answer_question"} <= tools
    generation = json.loads(text(generated))
    assert generation["status"] == "valid" and generation["tables"] == ["demo.orders"]
    answer = json.loads(text(answered))
    assert answer["answer"] == "Every order you can see is in the EU."
    assert [row["region"] for row in answer["rows"]] == ["EU"]
