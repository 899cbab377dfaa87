//! Agent context: what an agent (or the model behind it) needs to know to
//! write SQL against the warehouse — table and column descriptions,
//! business rules (instructions), questions answered before (golden SQL) —
//! and `context.search`, which ranks all of it for a question.
//!
//! Records live in `meta` ([`records`]); this service keeps them in memory
//! too, since every search reads them all. Everything leaves through one
//! filter, the caller's own catalog: a record about a table, a column or a
//! value the caller could not read with SQL is not shown (see
//! [`records`]), and search ranks only what is left ([`ranking`], [`search`]).

mod ranking;
pub mod records;
mod scan;
mod search;
mod sql_tables;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::jobs::{JobError, JobStore};
use crate::llm::Provider;
use crate::meta::{Collection, Meta, MetaError};
use crate::principal::Principal;
use crate::query::{QueryEngine, QueryError};
use crate::table_name::{RESERVED_SCHEMAS, TableName};
use records::{GoldenSql, Hidden, Instruction, TableNotes, Visible};

use ranking::IndexCache;
pub use scan::{ColumnScan, ForeignKey, ScanRequest, TableScan};
pub use search::{
    ColumnContext, GoldenMatch, SearchAnswer, SearchRequest, TableContext, TableDescription,
};
pub use sql_tables::ContextTables;
pub use store::{DescribeRequest, GoldenRequest, InstructionRequest};

/// Longest description, rule or question accepted.
const MAX_TEXT: usize = 4000;
/// Most results of one kind a search returns.
const MAX_K: usize = 50;

/// The `[context]` settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextSettings {
    /// How often tables whose scan a sync outdated are scanned again.
    #[serde(with = "crate::duration_text")]
    pub rescan_interval: std::time::Duration,
}

impl Default for ContextSettings {
    fn default() -> Self {
        Self {
            rescan_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// Context failures.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The request is malformed or names something that does not exist.
    #[error("{0}")]
    BadRequest(String),
    /// No such record, or not one the caller may see.
    #[error("{0}")]
    NotFound(String),
    /// The caller may see the record but not change it.
    #[error("{0}")]
    Forbidden(String),
    /// Golden SQL that does not plan for its author.
    #[error("the SQL does not plan: {0}")]
    Query(#[from] QueryError),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Starting or recording a scan job failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A server-side failure (a task that died, a cancelled scan).
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Default)]
struct State {
    notes: BTreeMap<String, TableNotes>,
    instructions: BTreeMap<String, Instruction>,
    golden: BTreeMap<String, GoldenSql>,
    scans: BTreeMap<String, TableScan>,
}

/// The context store and its search.
#[derive(Debug)]
pub struct ContextService {
    meta: Meta,
    query: Arc<QueryEngine>,
    state: RwLock<State>,
    /// Grows with every change (search indexes are keyed by it).
    version: AtomicU64,
    /// Serializes writes, so a read-modify-write never loses another's.
    writing: tokio::sync::Mutex<()>,
    indexes: IndexCache,
    jobs: Arc<JobStore>,
    /// The embeddings endpoint that makes search hybrid, if configured.
    embeddings: Option<Arc<Provider>>,
    /// Its weight in rank fusion (BM25's is 1).
    embeddings_weight: f32,
    /// Embeddings of indexed texts.
    vectors: RwLock<HashMap<String, Arc<Vec<f32>>>>,
    /// Until when a failed embeddings endpoint is not asked again.
    embeddings_down: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Document embeddings kept before the cache starts over.
const MAX_CACHED_VECTORS: usize = 50_000;

impl ContextService {
    /// Loads the stored context.
    pub async fn open(
        meta: Meta,
        query: Arc<QueryEngine>,
        jobs: Arc<JobStore>,
        embeddings: Option<(Arc<Provider>, f32)>,
    ) -> Result<Arc<Self>, ContextError> {
        let mut state = State::default();
        for collection in CONTEXT_COLLECTIONS {
            state.load(&meta, collection).await?;
        }
        Ok(Arc::new(Self {
            meta,
            query,
            state: RwLock::new(state),
            version: AtomicU64::new(1),
            writing: tokio::sync::Mutex::new(()),
            indexes: IndexCache::default(),
            jobs,
            embeddings_weight: embeddings.as_ref().map_or(1.0, |(_, w)| *w),
            embeddings: embeddings.map(|(provider, _)| provider),
            vectors: RwLock::new(HashMap::new()),
            embeddings_down: std::sync::Mutex::new(None),
        }))
    }

    fn read_vectors(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Vec<f32>>>> {
        // Entries are whole vectors; a poisoned lock holds no half-write.
        self.vectors.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_embeddings_down(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.embeddings_down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write_vectors(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Vec<f32>>>> {
        self.vectors.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The warehouse tables `principal` may query, with their columns as
    /// it sees them (artifacts and airlock's own tables are not context).
    pub fn visible(&self, principal: &Principal) -> Visible {
        self.query
            .visible_tables(principal)
            .tables()
            .filter(|(schema, _, _)| !RESERVED_SCHEMAS.contains(schema))
            .filter_map(|(schema, table, arrow)| {
                let name = TableName::from_parts(schema, table).ok()?;
                let columns = arrow
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().to_string()))
                    .collect();
                Some((name, columns))
            })
            .collect()
    }

    /// The visible warehouse tables `principal` reads with no row filter
    /// or mask: it sees their values as an admin does.
    /// What `principal`'s policy hides inside the tables it may query.
    fn hidden(&self, principal: &Principal) -> Hidden {
        let mut hidden = Hidden::default();
        if let crate::policy::Access::Restricted { tables, .. } = self.query.access(principal, None)
        {
            for (name, access) in tables {
                if !access.row_filters.is_empty() {
                    hidden.filtered.insert(name.clone());
                }
                if !access.masks.is_empty() {
                    hidden
                        .masked
                        .insert(name, access.masks.into_keys().collect());
                }
            }
        }
        hidden
    }

    fn plain_tables(&self, principal: &Principal) -> std::collections::BTreeSet<TableName> {
        let visible = self.query.visible_tables(principal);
        visible
            .tables()
            .filter_map(|(schema, table, _)| TableName::from_parts(schema, table).ok())
            .filter(|name| {
                !RESERVED_SCHEMAS.contains(&name.schema())
                    && visible.policy(name).is_some_and(|p| p.is_empty())
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.write().unwrap_or_else(|p| p.into_inner()));
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The collections the context lives in.
const CONTEXT_COLLECTIONS: [Collection; 4] = [
    Collection::ContextTables,
    Collection::Instructions,
    Collection::GoldenSql,
    Collection::ContextScans,
];

impl State {
    /// Replaces what `collection` holds with what the store holds now.
    async fn load(&mut self, meta: &Meta, collection: Collection) -> Result<(), MetaError> {
        match collection {
            Collection::ContextTables => {
                let notes: Vec<TableNotes> = meta.list(collection).await?;
                self.notes = notes.into_iter().map(|n| (n.table.clone(), n)).collect();
            }
            Collection::Instructions => {
                let instructions: Vec<Instruction> = meta.list(collection).await?;
                self.instructions = instructions
                    .into_iter()
                    .map(|i| (i.id.clone(), i))
                    .collect();
            }
            Collection::GoldenSql => {
                let golden: Vec<GoldenSql> = meta.list(collection).await?;
                self.golden = golden.into_iter().map(|g| (g.id.clone(), g)).collect();
            }
            Collection::ContextScans => {
                let scans: Vec<TableScan> = meta.list(collection).await?;
                self.scans = scans.into_iter().map(|s| (s.table.clone(), s)).collect();
            }
            _ => {}
        }
        Ok(())
    }
}

// Context written on other nodes is announced; a change reloads its
// collection (a search index is rebuilt on the next search).
#[async_trait::async_trait]
impl crate::meta::Cache for ContextService {
    fn name(&self) -> &'static str {
        "context"
    }

    fn collections(&self) -> &'static [Collection] {
        &CONTEXT_COLLECTIONS
    }

    async fn refresh(&self, collection: Collection, _: Option<&str>) -> Result<(), MetaError> {
        let mut fresh = State::default();
        fresh.load(&self.meta, collection).await?;
        self.changed(|state| match collection {
            Collection::ContextTables => state.notes = fresh.notes,
            Collection::Instructions => state.instructions = fresh.instructions,
            Collection::GoldenSql => state.golden = fresh.golden,
            Collection::ContextScans => state.scans = fresh.scans,
            _ => {}
        });
        Ok(())
    }
}

fn parse_table(table: &str) -> Result<TableName, ContextError> {
    TableName::parse(table).map_err(|e| ContextError::BadRequest(e.to_string()))
}

fn check_text(what: &str, text: &str, may_be_empty: bool) -> Result<(), ContextError> {
    if !may_be_empty && text.trim().is_empty() {
        return Err(ContextError::BadRequest(format!("\"{what}\" is empty")));
    }
    if text.len() > MAX_TEXT {
        return Err(ContextError::BadRequest(format!(
            "\"{what}\" is {} bytes; at most {MAX_TEXT} are accepted",
            text.len()
        )));
    }
    Ok(())
}
