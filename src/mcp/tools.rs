//! The MCP tools. Each is described for a model (short, precise, one
//! example) and runs as an action or a query through the [`Gateway`], so
//! it enforces exactly what the same call over Flight does.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BinaryArray, RecordBatch};
use futures::StreamExt;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};
use tonic::Status;

use super::render::{self, Budget};
use crate::actions::Answer;
use crate::audit::AuditHandle;
use crate::gateway::Gateway;
use crate::principal::Principal;
use crate::status;
use crate::tools::artifacts::{ArtifactKind, UploadOptions};

/// Rows `query` and `sample_rows` show unless asked for fewer.
const DEFAULT_ROWS: u64 = 200;
/// Most rows `query` shows, whatever is asked.
const MAX_ROWS: u64 = 1000;
/// Characters of a table shown to a model.
const MAX_CHARS: usize = 40_000;
/// Characters of one cell.
const MAX_CELL: usize = 300;
/// Rows of a tabular artifact `read_artifact` previews.
const PREVIEW_ROWS: u64 = 50;
/// Largest text `save_artifact` accepts (a model's output, not a dataset).
const MAX_SAVE_BYTES: usize = 1024 * 1024;

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    let schema = match schema {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    };
    Tool::new(name, description, Arc::new(schema))
}

fn read_only(tool: Tool) -> Tool {
    tool.with_annotations(ToolAnnotations::new().read_only(true))
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// The tools, as `tools/list` shows them.
pub(super) fn catalog(nl: bool) -> Vec<Tool> {
    let table = json!({"type": "string", "description": "schema.table, e.g. \"sales.orders\""});
    let sql = json!({"type": "string", "description": "One read-only SELECT (or WITH … SELECT), e.g. \"SELECT region, count(*) FROM sales.orders GROUP BY region\""});
    let mut tools = vec![
        read_only(tool(
            "list_tables",
            "List the tables you may query, with their descriptions, columns and when their data was last synced. Example: {}",
            object(json!({}), &[]),
        )),
        read_only(tool(
            "describe_table",
            "Describe one table as you see it: columns with types and descriptions, category values and examples, key guesses, business rules. Example: {\"table\": \"sales.orders\"}",
            object(json!({"table": table}), &["table"]),
        )),
        read_only(tool(
            "sample_rows",
            "A random sample of a table's rows (as you may see them), as a CSV table. Example: {\"table\": \"sales.orders\", \"rows\": 20}",
            object(
                json!({"table": table, "rows": {"type": "integer", "minimum": 1, "maximum": 200, "description": "How many rows (default 20)"}}),
                &["table"],
            ),
        )),
        read_only(tool(
            "profile_table",
            "Column statistics of a table: nulls, distinct counts, min/max, mean, top values. Example: {\"table\": \"sales.orders\", \"columns\": [\"amount\"]}",
            object(
                json!({"table": table, "columns": {"type": "array", "items": {"type": "string"}, "description": "Only these columns (default all)"}}),
                &["table"],
            ),
        )),
        read_only(tool(
            "search_context",
            "Find the tables, columns, business rules and example SQL most relevant to a question. Example: {\"question\": \"revenue by region last quarter\"}",
            object(
                json!({"question": {"type": "string"}, "k": {"type": "integer", "minimum": 1, "maximum": 50, "description": "How many tables and examples (default 5)"}}),
                &["question"],
            ),
        )),
        read_only(tool(
            "query",
            "Run SQL and get the rows as a CSV table: at most max_rows rows (default 200) and 40,000 characters, long cells cut; a note says what was cut. For whole results use export_query. Placeholders $1, $2… take params. Example: {\"sql\": \"SELECT * FROM sales.orders WHERE id = $1\", \"params\": [42]}",
            object(
                json!({
                    "sql": sql,
                    "params": {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}, "description": "Values for $1, $2, …"},
                    "max_rows": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "description": "Rows to show (default 200)"}
                }),
                &["sql"],
            ),
        )),
        tool(
            "export_query",
            "Write a query's whole result to an artifact (Parquet, CSV or JSONL) and return its id and row count; the rows do not pass through this conversation. Example: {\"sql\": \"SELECT * FROM sales.orders\", \"name\": \"all_orders\"}",
            object(
                json!({
                    "sql": sql,
                    "name": {"type": "string", "description": "Artifact name: letters, digits, _ and -"},
                    "format": {"type": "string", "enum": ["parquet", "csv", "jsonl"], "description": "Default parquet"}
                }),
                &["sql", "name"],
            ),
        ),
        read_only(tool(
            "explain_query",
            "Show how a query would run: the plan's operators and the tables it reads. Example: {\"sql\": \"SELECT count(*) FROM sales.orders\"}",
            object(json!({"sql": sql}), &["sql"]),
        )),
        read_only(tool(
            "list_artifacts",
            "List the artifacts you may read (yours and those your swarm shares). Example: {\"name_prefix\": \"eu_\"}",
            object(
                json!({"tag": {"type": "string"}, "name_prefix": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}),
                &[],
            ),
        )),
        read_only(tool(
            "read_artifact",
            "Read an artifact: the text of a file, or the first rows of a table as CSV. Example: {\"name\": \"all_orders\"}",
            object(
                json!({"name": {"type": "string", "description": "Artifact name or id"}}),
                &["name"],
            ),
        )),
        tool(
            "save_artifact",
            "Save text (notes, a report, SQL, CSV) as an artifact, private unless shared with your swarm. Example: {\"name\": \"q3_summary\", \"text\": \"Revenue grew…\"}",
            object(
                json!({
                    "name": {"type": "string", "description": "Letters, digits, _ and -"},
                    "text": {"type": "string"},
                    "visibility": {"type": "string", "enum": ["private", "swarm"]},
                    "content_type": {"type": "string", "description": "Default text/plain"}
                }),
                &["name", "text"],
            ),
        ),
    ];
    if nl {
        tools.push(read_only(tool(
            "generate_sql",
            "Write SQL for a question in words, from the tables and rules you may see; the SQL is checked by planning it as you. Example: {\"question\": \"orders per region this year\"}",
            object(json!({"question": {"type": "string"}}), &["question"]),
        )));
        tools.push(read_only(tool(
            "answer_question",
            "Answer a question in words: SQL is generated, run as you, and the answer grounded in its rows. Example: {\"question\": \"which region had the most orders?\"}",
            object(json!({"question": {"type": "string"}}), &["question"]),
        )));
    }
    tools
}

/// Every tool's name.
const NAMES: &[&str] = &[
    "list_tables",
    "describe_table",
    "sample_rows",
    "profile_table",
    "search_context",
    "query",
    "export_query",
    "explain_query",
    "list_artifacts",
    "read_artifact",
    "save_artifact",
    "generate_sql",
    "answer_question",
];

/// A tool name as a metrics label: itself when it is one, else `unknown`.
pub(super) fn operation_label(name: &str) -> &str {
    if NAMES.contains(&name) {
        name
    } else {
        "unknown"
    }
}

/// Runs tool `name` with `arguments` as `principal`; the text a model reads.
pub(super) async fn call(
    gateway: &Gateway,
    principal: &Principal,
    name: &str,
    arguments: &JsonObject,
    nl: bool,
    audit: &AuditHandle,
) -> Result<String, Status> {
    let args = Value::Object(arguments.clone());
    let action = |action: &'static str, body: Value| async move {
        let body = body.to_string();
        gateway
            .action(principal, action, body.as_bytes(), Some(audit))
            .await
            .map(answer_text)
    };
    match name {
        "list_tables" => action("table.list", json!({})).await,
        "describe_table" => action("table.describe", pick(&args, &["table"])).await,
        "profile_table" => action("table.profile", pick(&args, &["table", "columns"])).await,
        "search_context" => action("context.search", pick(&args, &["question", "k"])).await,
        "list_artifacts" => action("artifact.list", args).await,
        "explain_query" if principal.is_admin() => action("explain", pick(&args, &["sql"])).await,
        "explain_query" => action("query.shape", pick(&args, &["sql"])).await,
        "sample_rows" => {
            let mut body = pick(&args, &["table", "rows"]);
            if body.get("rows").is_none() {
                body["rows"] = json!(20);
            }
            let body = body.to_string();
            match gateway
                .action(principal, "table.sample", body.as_bytes(), Some(audit))
                .await?
            {
                Answer::Query { sql, .. } => {
                    rows(gateway, principal, &sql, Vec::new(), DEFAULT_ROWS, audit).await
                }
                Answer::Json(value) => Ok(value.to_string()),
            }
        }
        "query" => {
            let sql = string(&args, "sql")?;
            let params = match args.get("params") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(values)) => values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| crate::gateway::json_parameter(i, v))
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(status::bad_request(
                        "params must be an array of values for $1, $2, …",
                    ));
                }
            };
            let max_rows = match args.get("max_rows") {
                None | Some(Value::Null) => DEFAULT_ROWS,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=MAX_ROWS).contains(n))
                    .ok_or_else(|| {
                        status::bad_request(format!("max_rows must be between 1 and {MAX_ROWS}"))
                    })?,
            };
            rows(gateway, principal, &sql, params, max_rows, audit).await
        }
        "export_query" => {
            let mut body = pick(&args, &["sql", "name", "format"]);
            if body.get("format").is_none() {
                body["format"] = json!("parquet");
            }
            body["wait"] = json!(true);
            action("query.export", body).await
        }
        "read_artifact" => read_artifact(gateway, principal, &string(&args, "name")?, audit).await,
        "save_artifact" => save_artifact(gateway, principal, &args).await,
        "generate_sql" if nl => action("nl.sql", pick(&args, &["question"])).await,
        "answer_question" if nl => {
            let question = pick(&args, &["question"]).to_string();
            let generated = gateway
                .action(principal, "nl.sql", question.as_bytes(), Some(audit))
                .await?;
            let generation = answer_text(generated);
            let id = serde_json::from_str::<Value>(&generation)
                .ok()
                .and_then(|g| g["id"].as_str().map(str::to_string))
                .ok_or_else(|| status::internal("nl.sql answered no generation id"))?;
            action("nl.answer", json!({"generation_id": id})).await
        }
        other => Err(status::not_found(format!(
            "no tool '{other}'; tools/list shows the available ones"
        ))),
    }
}

/// An action's answer as compact JSON.
pub(super) fn answer_text(answer: Answer) -> String {
    match answer {
        Answer::Json(value) | Answer::Query { answer: value, .. } => value.to_string(),
    }
}

/// The given keys of the arguments, as an action body: a model's extra
/// keys are not errors, and only these reach the action.
fn pick(args: &Value, keys: &[&str]) -> Value {
    let mut body = serde_json::Map::new();
    for key in keys {
        if let Some(value) = args.get(*key).filter(|v| !v.is_null()) {
            body.insert((*key).to_string(), value.clone());
        }
    }
    Value::Object(body)
}

fn string(args: &Value, key: &str) -> Result<String, Status> {
    args.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| status::bad_request(format!("\"{key}\" (a string) is required")))
}

/// Runs `sql` as the caller and renders at most `max_rows` rows.
async fn rows(
    gateway: &Gateway,
    principal: &Principal,
    sql: &str,
    params: Vec<datafusion::common::ScalarValue>,
    max_rows: u64,
    audit: &AuditHandle,
) -> Result<String, Status> {
    let planned = gateway.plan(principal, sql, params, Some(audit)).await?;
    let planned = planned.at_most(max_rows);
    let schema = planned.schema();
    let query_id = format!("mcp:{}", uuid::Uuid::new_v4());
    let mut stream = gateway
        .execute(principal, planned, &query_id, Some(audit))
        .await?;
    let mut budget = Budget::new(&schema, max_rows, MAX_CHARS, MAX_CELL);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(status::query)?;
        if !budget.add(&batch) {
            break;
        }
    }
    // The engine stops at the lower of this cap and the grant's, and
    // says whether the result went on.
    let cut_at = stream
        .truncated()
        .load(std::sync::atomic::Ordering::Acquire)
        .then(|| stream.max_rows())
        .flatten();
    drop(stream);
    Ok(budget.finish(cut_at))
}

/// The text of a file artifact, or the first rows of a tabular one.
async fn read_artifact(
    gateway: &Gateway,
    principal: &Principal,
    name: &str,
    audit: &AuditHandle,
) -> Result<String, Status> {
    let download = gateway
        .artifacts
        .download(principal, name, None)
        .await
        .map_err(status::artifact)?;
    let artifact = &download.artifact;
    let mut batches = download.batches;
    match download.version.kind {
        ArtifactKind::Tabular => {
            let mut budget = Budget::new(&download.schema, PREVIEW_ROWS, MAX_CHARS, MAX_CELL);
            while let Some(batch) = batches.next().await {
                if !budget.add(&batch.map_err(status::artifact)?) {
                    break;
                }
            }
            let mut text = format!(
                "Table artifact '{}' (id {}, version {}, {} bytes).\n",
                artifact.name, artifact.id, download.version.version, download.version.size
            );
            text.push_str(&budget.finish(None));
            text.push_str(&format!(
                "\nQuery all of it with SQL: SELECT * FROM artifacts.{}",
                artifact.name
            ));
            audit.statement(artifact.name.clone());
            Ok(text)
        }
        ArtifactKind::Bytes => {
            let mut bytes = Vec::new();
            while let Some(batch) = batches.next().await {
                let batch: RecordBatch = batch.map_err(status::artifact)?;
                if let Some(chunks) = batch.column(0).as_any().downcast_ref::<BinaryArray>() {
                    for i in 0..chunks.len() {
                        bytes.extend_from_slice(chunks.value(i));
                    }
                }
                if bytes.len() > MAX_CHARS * 4 {
                    break;
                }
            }
            let whole = bytes.len() as u64 >= download.version.size;
            let text = match String::from_utf8(bytes) {
                Ok(text) => text,
                // Read to its end and still not UTF-8: not text.
                Err(_) if whole => {
                    return Ok(format!(
                        "'{}' is a binary file ({} bytes, {}); download it with artifact.get's ticket over Flight.",
                        artifact.name, download.version.size, download.version.content_type
                    ));
                }
                // Cut inside a character: keep the whole ones.
                Err(e) => {
                    let valid = e.utf8_error().valid_up_to();
                    let mut bytes = e.into_bytes();
                    bytes.truncate(valid);
                    String::from_utf8(bytes).unwrap_or_default()
                }
            };
            Ok(render::cut_text(&text, MAX_CHARS))
        }
    }
}

/// Saves a model's text as a file artifact.
async fn save_artifact(
    gateway: &Gateway,
    principal: &Principal,
    args: &Value,
) -> Result<String, Status> {
    let name = string(args, "name")?;
    let text = string(args, "text")?;
    if text.len() > MAX_SAVE_BYTES {
        return Err(status::bad_request(format!(
            "text is {} bytes; save_artifact takes at most {MAX_SAVE_BYTES} (use export_query for results)",
            text.len()
        )));
    }
    let options: UploadOptions =
        serde_json::from_value(pick(args, &["visibility", "content_type"]))
            .map_err(|e| status::bad_request(format!("save_artifact: {e}")))?;
    let options = UploadOptions {
        content_type: options
            .content_type
            .or_else(|| Some("text/plain; charset=utf-8".into())),
        ..options
    };
    let uploaded = gateway
        .artifacts
        .upload_bytes(principal, &name, options, text.into_bytes())
        .await
        .map_err(status::artifact)?;
    Ok(uploaded.summary().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_metrics_label() {
        let listed: Vec<String> = catalog(true).iter().map(|t| t.name.to_string()).collect();
        assert_eq!(listed, NAMES);
        assert_eq!(operation_label("query"), "query");
        assert_eq!(operation_label("drop_everything"), "unknown");
        assert_eq!(catalog(false).len(), NAMES.len() - 2);
    }
}
