//! `GET /admin/artifacts`: artifacts by swarm with sizes, quota use and
//! expiry. `GET /admin/context`: table descriptions, business rules and
//! golden SQL (editable), and recent NL→SQL generations with their status
//! and confidence.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Status;

use super::session::Admin;
use super::{Chrome, Dashboard, View, view};

/// How the artifacts of admins (no swarm) are grouped.
const ADMINS: &str = "(admins)";

#[derive(Template)]
#[template(path = "dashboard/artifacts.html")]
struct ArtifactsPage {
    chrome: Chrome,
    quota: String,
    swarms: Vec<SwarmArtifacts>,
}

struct SwarmArtifacts {
    swarm: String,
    /// Bytes stored, every version counted.
    used: String,
    /// Percent of the quota, for the meter (none for admins).
    percent: Option<u64>,
    artifacts: Vec<ArtifactRow>,
}

#[derive(Deserialize)]
struct Artifacts {
    artifacts: Vec<Artifact>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Artifact {
    id: String,
    name: String,
    owner: String,
    swarm: Option<String>,
    visibility: String,
    #[serde(default)]
    tags: Vec<String>,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    versions: Vec<u32>,
    kind: Option<String>,
}

struct ArtifactRow {
    name: String,
    owner: String,
    visibility: String,
    tags: String,
    kind: String,
    size: String,
    versions: usize,
    expires: String,
    delete: String,
}

pub(super) async fn artifacts(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
) -> Response {
    let made = build_artifacts(&dashboard, &admin, &view).await;
    view.render(&admin, made)
}

async fn build_artifacts(
    dashboard: &Dashboard,
    admin: &Admin,
    view: &View,
) -> Result<ArtifactsPage, Status> {
    let now = Utc::now();
    let quota = dashboard
        .services
        .gateway
        .artifacts
        .settings()
        .swarm_quota
        .as_u64();
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    // Pages of 1000; a node holds far fewer artifacts than that many pages.
    for _ in 0..50 {
        let body = json!({ "limit": 1000, "page_token": token });
        let page: Artifacts = dashboard.call(admin, "artifact.list", body).await?;
        all.extend(page.artifacts);
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    let mut by_swarm: BTreeMap<String, Vec<Artifact>> = BTreeMap::new();
    for artifact in all {
        let swarm = artifact.swarm.clone().unwrap_or_else(|| ADMINS.into());
        by_swarm.entry(swarm).or_default().push(artifact);
    }
    // What counts against a quota: every version, as uploads count it.
    let stored = dashboard.services.gateway.artifacts.bytes_by_swarm();
    let swarms = by_swarm
        .into_iter()
        .map(|(swarm, artifacts)| {
            let key = (swarm != ADMINS).then(|| swarm.clone());
            let used = stored.get(&key).copied().unwrap_or_default();
            SwarmArtifacts {
                used: view::bytes(used),
                // Admins' artifacts have no quota.
                percent: key.map(|_| (used.saturating_mul(100) / quota.max(1)).min(100)),
                swarm,
                artifacts: artifacts
                    .into_iter()
                    .map(|a| ArtifactRow {
                        delete: json!({ "id": a.id }).to_string(),
                        name: a.name,
                        owner: a.owner,
                        visibility: a.visibility,
                        tags: a.tags.join(", "),
                        kind: a.kind.unwrap_or_default(),
                        size: view::bytes(a.size),
                        versions: a.versions.len(),
                        expires: view::relative(&a.expires_at, now),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(ArtifactsPage {
        chrome: view.chrome("artifacts", admin),
        quota: view::bytes(quota),
        swarms,
    })
}

#[derive(Template)]
#[template(path = "dashboard/context.html")]
struct ContextPage {
    chrome: Chrome,
    tables: Vec<TableNote>,
    instructions: Vec<InstructionRow>,
    golden: Vec<GoldenRow>,
    generations: Vec<GenerationRow>,
}

struct TableNote {
    name: String,
    description: String,
    target: String,
}

#[derive(Deserialize)]
struct Instructions {
    instructions: Vec<Instruction>,
}

#[derive(Deserialize)]
struct Instruction {
    id: String,
    text: String,
    #[serde(default)]
    tables: Vec<String>,
    updated_by: String,
}

struct InstructionRow {
    id: String,
    text: String,
    tables: String,
    updated_by: String,
    target: String,
}

#[derive(Deserialize)]
struct Golden {
    golden_sql: Vec<GoldenSql>,
}

#[derive(Deserialize)]
struct GoldenSql {
    id: String,
    question: String,
    sql: String,
    swarm: Option<String>,
    created_by: String,
}

struct GoldenRow {
    question: String,
    sql: String,
    swarm: String,
    created_by: String,
    delete: String,
}

#[derive(Deserialize)]
struct Generations {
    items: Vec<Generation>,
}

#[derive(Deserialize)]
struct Generation {
    question: String,
    sql: Option<String>,
    status: String,
    error: Option<String>,
    confidence: f64,
    latency_ms: u64,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    owner: Option<crate::principal::Owner>,
}

struct GenerationRow {
    question: String,
    sql: String,
    status: String,
    error: String,
    confidence: String,
    latency: String,
    when: String,
    who: String,
}

/// Recent generations shown.
const GENERATIONS: usize = 50;

pub(super) async fn context(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
) -> Response {
    let made = build_context(&dashboard, &admin, &view).await;
    view.render(&admin, made)
}

async fn build_context(
    dashboard: &Dashboard,
    admin: &Admin,
    view: &View,
) -> Result<ContextPage, Status> {
    #[derive(Deserialize)]
    struct Registered {
        tables: Vec<Named>,
    }
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let registered: Registered = dashboard.call(admin, "table.list", json!({})).await?;
    let mut tables = Vec::new();
    for table in registered.tables {
        let described: Value = dashboard
            .call(admin, "table.describe", json!({ "table": table.name }))
            .await
            .unwrap_or(Value::Null);
        tables.push(TableNote {
            description: described
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            target: json!({ "table": table.name }).to_string(),
            name: table.name,
        });
    }
    let instructions: Instructions = dashboard
        .call(admin, "context.instruction.list", json!({}))
        .await?;
    let golden: Golden = dashboard
        .call(admin, "context.golden.list", json!({}))
        .await?;
    let recent: Generations = dashboard
        .call(
            admin,
            "nl.generations",
            json!({ "limit": GENERATIONS, "newest_first": true }),
        )
        .await?;
    Ok(ContextPage {
        chrome: view.chrome("context", admin),
        tables,
        instructions: instructions
            .instructions
            .into_iter()
            .map(|i| InstructionRow {
                target: json!({ "id": i.id }).to_string(),
                id: i.id,
                text: i.text,
                tables: if i.tables.is_empty() {
                    "every table".into()
                } else {
                    i.tables.join(", ")
                },
                updated_by: i.updated_by,
            })
            .collect(),
        golden: golden
            .golden_sql
            .into_iter()
            .map(|g| GoldenRow {
                delete: json!({ "id": g.id }).to_string(),
                question: g.question,
                sql: g.sql,
                swarm: g.swarm.unwrap_or_else(|| "everyone".into()),
                created_by: g.created_by,
            })
            .collect(),
        generations: recent
            .items
            .into_iter()
            .map(|g| GenerationRow {
                question: g.question,
                sql: g.sql.unwrap_or_default(),
                status: g.status,
                error: g.error.unwrap_or_default(),
                confidence: format!("{:.2}", g.confidence),
                latency: view::duration_ms(g.latency_ms as i64),
                when: view::maybe_time(g.created_at.as_ref()),
                who: g.owner.map(|o| o.label()).unwrap_or_default(),
            })
            .collect(),
    })
}
