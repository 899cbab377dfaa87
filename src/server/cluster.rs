//! What a node of a cluster adds to the wiring: its name, and the audit
//! table every node reads from Postgres.

use std::sync::Arc;

use super::Settings;
use crate::audit::{AuditLog, AuditTable};

/// `airlock.audit` of a cluster, read from Postgres: for admins only, as
/// on a single node.
#[derive(Debug)]
pub(super) struct SharedAudit(pub(super) Arc<AuditTable>);

impl crate::query::ExtraTables for SharedAudit {
    fn version(&self) -> u64 {
        0
    }

    fn tables_for(
        &self,
        principal: &crate::principal::Principal,
    ) -> Vec<(
        crate::table_name::TableName,
        datafusion::arrow::datatypes::SchemaRef,
        Arc<dyn datafusion::datasource::TableProvider>,
    )> {
        if !principal.is_admin() {
            return vec![];
        }
        let table = Arc::clone(&self.0);
        vec![(
            AuditLog::table_name(),
            datafusion::datasource::TableProvider::schema(table.as_ref()),
            table,
        )]
    }
}

/// How this node is named in the jobs it runs and the writer's record:
/// its host and Flight port.
pub(super) fn node_name(settings: &Settings) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "airlock".into());
    format!("{host}:{}", settings.flight_addr.port())
}
