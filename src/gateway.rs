//! What every front end does around a request, in one place: open its
//! audit record, authenticate its `Authorization` header, and run a query
//! or an action as the principal — so Flight, the HTTP API and MCP give one
//! principal the same rows, the same errors and the same audit records.
//! Front ends only translate their protocol to these calls and back.
//!
//! Failures come back as the [`Status`] [`crate::status`] classifies; each
//! front end turns its code into its own protocol's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use datafusion::common::ScalarValue;
use serde_json::Value;
use tonic::Status;

use crate::actions::{Actions, Answer};
use crate::audit::{AuditHandle, AuditLog};
use crate::auth::{Authenticator, parse_authorization};
use crate::principal::Principal;
use crate::query::{PlannedQuery, QueryEngine, QueryStream};
use crate::status;
use crate::sync::SyncService;
use crate::telemetry::RequestLabels;
use crate::tools::artifacts::ArtifactService;

/// How long redeeming a ticket waits for this node to serve the epochs it
/// was planned at.
const EPOCH_PATIENCE: Duration = Duration::from_secs(2);

/// The services a front end reaches through.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Credentials and tokens.
    pub auth: Arc<Authenticator>,
    /// Planning and running queries.
    pub query: Arc<QueryEngine>,
    /// JSON actions.
    pub actions: Arc<Actions>,
    /// Artifacts (reads and writes under the caller's grants).
    pub artifacts: Arc<ArtifactService>,
    /// Where audit records go.
    pub audit: Arc<AuditLog>,
    /// Replicas: the epochs this node serves (in a cluster).
    pub sync: Arc<SyncService>,
}

impl Gateway {
    /// Opens the audit record of a request arriving now, named like the
    /// Flight ones (`POST /api/v1/query`, `MCP query`, …) and counted in
    /// metrics as `frontend` / `method` / `operation`.
    pub fn begin(
        &self,
        request: impl Into<String>,
        labels: RequestLabels,
        remote: Option<SocketAddr>,
    ) -> AuditHandle {
        AuditHandle::begin(
            Arc::clone(&self.audit),
            request.into(),
            labels,
            remote.map(|a| a.to_string()),
        )
    }

    /// The principal an `Authorization` header (bearer token) names; the
    /// audit record learns who it is.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        audit: &AuditHandle,
    ) -> Result<Principal, Status> {
        let principal = self.auth.authenticate(header).await.map_err(status::auth)?;
        tracing::Span::current().record("principal", principal.label());
        audit.principal(&principal);
        Ok(principal)
    }

    /// Exchanges credentials (Basic `admin:<password>`, or a token) for a
    /// bearer token, as the Flight handshake does.
    pub async fn login(
        &self,
        header: Option<&str>,
        audit: &AuditHandle,
    ) -> Result<(Principal, String), Status> {
        match self.auth.handshake(header).await {
            Ok((principal, token)) => {
                audit.principal(&principal);
                Ok((principal, token))
            }
            Err(error) => {
                let tried = header.and_then(|h| parse_authorization(h).ok());
                if let Some(user) = tried.as_ref().and_then(|c| c.user()) {
                    audit.attempted_user(user);
                }
                Err(status::auth(error))
            }
        }
    }

    /// Plans `sql` with `values` bound to its placeholders, as `principal`.
    pub async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
        values: Vec<ScalarValue>,
        audit: Option<&AuditHandle>,
    ) -> Result<PlannedQuery, Status> {
        let planned = self.query.plan_bound(principal, sql, values).await;
        audit_planned(audit, sql, planned.as_ref().ok());
        planned.map_err(status::query)
    }

    /// The epochs of the tables `planned` reads, as this node serves them:
    /// what a ticket carries, so the node redeeming it never answers from
    /// an older version (empty outside a cluster).
    pub fn epochs(&self, planned: &PlannedQuery) -> BTreeMap<String, u64> {
        self.sync.served_epochs(planned.tables())
    }

    /// Refuses, retryably, a ticket planned at epochs newer than this node
    /// serves, after waiting a moment for them (a node a little behind
    /// the one that planned catches up within a second or two).
    pub async fn require_epochs(&self, epochs: &BTreeMap<String, u64>) -> Result<(), Status> {
        if epochs.is_empty() {
            return Ok(());
        }
        self.sync
            .require_epochs(epochs, EPOCH_PATIENCE)
            .await
            .map_err(status::sync)
    }

    /// Starts a planned query; the audit record counts the rows it streams.
    pub async fn execute(
        &self,
        principal: &Principal,
        planned: PlannedQuery,
        query_id: &str,
        audit: Option<&AuditHandle>,
    ) -> Result<QueryStream, Status> {
        let stream = self
            .query
            .execute(planned, query_id, principal)
            .await
            .map_err(status::query)?;
        if let Some(audit) = audit {
            audit.columns(stream.columns().to_vec());
            audit.track_result(stream.returned(), stream.truncated());
        }
        Ok(stream)
    }

    /// Runs the JSON action `name` as `principal`. Answers that count rows
    /// (a profile, an export, a table artifact) put them in the audit
    /// record, as queries do.
    pub async fn action(
        &self,
        principal: &Principal,
        name: &str,
        body: &[u8],
        audit: Option<&AuditHandle>,
    ) -> Result<Answer, Status> {
        let answer = self
            .actions
            .run(principal, name, body)
            .await
            .map_err(status::action)?;
        let rows = match &answer {
            Answer::Json(value) | Answer::Query { answer: value, .. } => {
                value.get("rows").and_then(serde_json::Value::as_u64)
            }
        };
        if let (Some(audit), Some(rows)) = (audit, rows) {
            audit.track_result(
                Arc::new(AtomicU64::new(rows)),
                Arc::new(AtomicBool::new(false)),
            );
        }
        Ok(answer)
    }
}

/// Writes a query's SQL, and when it planned, its tables and policy, into
/// the request's audit record.
pub fn audit_planned(audit: Option<&AuditHandle>, sql: &str, planned: Option<&PlannedQuery>) {
    if let Some(audit) = audit {
        audit.statement(sql);
        if let Some(planned) = planned {
            audit.tables(planned.tables(), Some(planned.policy().to_string()));
        }
    }
}

/// A JSON parameter as the value bound to placeholder `$i+1`.
pub fn json_parameter(i: usize, value: &Value) -> Result<ScalarValue, Status> {
    Ok(match value {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ScalarValue::Int64(Some(i)),
            (None, Some(u), _) => ScalarValue::UInt64(Some(u)),
            (None, None, Some(f)) => ScalarValue::Float64(Some(f)),
            (None, None, None) => {
                return Err(status::bad_request(format!(
                    "params[{i}]: {n} is out of range"
                )));
            }
        },
        Value::Array(_) | Value::Object(_) => {
            return Err(status::bad_request(format!(
                "params[{i}] must be a string, number, boolean or null"
            )));
        }
    })
}

/// An action or tool name as a metrics label: itself when airlock knows
/// it, `unknown` otherwise (names are the caller's to choose, and labels
/// must stay few).
pub fn operation_label(name: &str) -> &str {
    if crate::actions::Action::from_name(name).is_some() || name == "CancelFlightInfo" {
        name
    } else {
        "unknown"
    }
}
