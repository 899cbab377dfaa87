//! `context.search`: a question in, the context most relevant to it out,
//! ranked ([`super::ranking`]) over what the caller may query.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::ranking::{Corpus, SearchIndex, Semantic};
use super::records::Visible;
use super::records::{GoldenSql, Instruction, TableNotes};
use super::scan::{ColumnScan, ForeignKey, TableScan, profile_request};
use super::{ContextError, ContextService, MAX_CACHED_VECTORS, MAX_K, check_text};
use crate::principal::Principal;
use crate::table_name::TableName;

/// Longest a search waits for embeddings before ranking by BM25 alone.
const EMBEDDING_WAIT: Duration = Duration::from_secs(10);
/// How long a failed embeddings endpoint is left alone.
const EMBEDDING_BACKOFF: Duration = Duration::from_secs(60);

/// `context.search`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The question, in words.
    pub question: String,
    /// How many tables and golden pairs (default 5, at most 50).
    #[serde(default)]
    pub k: Option<usize>,
    /// Golden pairs to leave out of the ranking and the answer (`nl.evaluate`
    /// holds out the pair it asks about); not part of the wire body.
    #[serde(skip)]
    pub exclude_golden: BTreeSet<String>,
}

/// One column in a search answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnContext {
    /// Name.
    pub name: String,
    /// Arrow type as the caller sees it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Its description, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every value it holds, for a scanned column with at most 100, as the
    /// caller sees them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// A few values of a scanned column, as the caller sees them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// One table in a search answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableContext {
    /// `schema.table`.
    pub table: String,
    /// BM25 score (higher is more relevant).
    pub score: f32,
    /// Its description, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The columns the caller may see.
    pub columns: Vec<ColumnContext>,
    /// The scan's primary-key guess, if the caller sees that column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    /// The scan's foreign-key guesses between columns the caller sees.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKey>,
    /// When the table was last scanned, and whether a sync replaced it
    /// since (`context.scan` refreshes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanState>,
}

/// Whether a table's scan is current.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScanState {
    /// When it ran.
    pub scanned_at: chrono::DateTime<chrono::Utc>,
    /// Whether the table changed since.
    pub stale: bool,
}

/// A golden pair in a search answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GoldenMatch {
    /// Its id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The SQL.
    pub sql: String,
    /// BM25 score of the question against the asked one.
    pub score: f32,
}

/// What `context.search` answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchAnswer {
    /// The question asked.
    pub question: String,
    /// The most relevant tables, best first.
    pub tables: Vec<TableContext>,
    /// Rules that apply to those tables (and global ones).
    pub instructions: Vec<Instruction>,
    /// The most similar questions answered before.
    pub golden_sql: Vec<GoldenMatch>,
    /// `bm25`, or `hybrid` (BM25 fused with embedding similarity).
    pub ranking: &'static str,
    /// Why ranking fell back to BM25 although embeddings are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranking_note: Option<String>,
}

/// `table.describe`: one table and the rules about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableDescription {
    /// The table as the caller sees it.
    #[serde(flatten)]
    pub table: TableContext,
    /// Rules that apply to it (and global ones).
    pub instructions: Vec<Instruction>,
}

impl ContextService {
    /// The context most relevant to a question, from what `principal` may
    /// see: tables with their visible columns and descriptions, the rules
    /// that apply to them, and the most similar golden pairs.
    pub async fn search(
        self: &Arc<Self>,
        principal: &Principal,
        request: &SearchRequest,
    ) -> Result<SearchAnswer, ContextError> {
        let (index, visible) = self.search_index(principal, request)?;
        let (semantic, note) = match self.semantic(&index, &request.question).await {
            Ok(semantic) => (semantic, None),
            Err(e) => {
                tracing::warn!(error = %e, "embeddings failed; ranking by BM25 alone");
                (None, Some(format!("embeddings unavailable: {e}")))
            }
        };
        let mut answer = self.rank(request, &index, &visible, semantic.as_ref());
        answer.ranking_note = note;
        for table in &mut answer.tables {
            self.add_scan(principal, table).await?;
        }
        Ok(answer)
    }

    /// The caller's search index (cached by content) and its catalog.
    fn search_index(
        &self,
        principal: &Principal,
        request: &SearchRequest,
    ) -> Result<(Arc<SearchIndex>, Visible), ContextError> {
        check_text("question", &request.question, false)?;
        let k = request.k.unwrap_or(5);
        if k == 0 || k > MAX_K {
            return Err(ContextError::BadRequest(format!(
                "k must be between 1 and {MAX_K}"
            )));
        }
        let visible = self.visible(principal);
        let hidden = self.hidden(principal);
        let state = self.read();
        let golden: Vec<&GoldenSql> = state
            .golden
            .values()
            .filter(|g| {
                g.visible_to(principal, &visible, &hidden)
                    && !request.exclude_golden.contains(&g.id)
            })
            .collect();
        let plain = self.plain_tables(principal);
        let scans = state
            .scans
            .values()
            .filter_map(|scan| {
                let name = TableName::parse(&scan.table).ok()?;
                let (name, _) = visible.get_key_value(&name)?;
                plain.contains(name).then_some((name, scan))
            })
            .collect();
        let corpus = Corpus {
            visible: &visible,
            notes: &state.notes,
            golden,
            scans,
        };
        let index = self
            .indexes
            .index(&corpus, self.version.load(Ordering::Acquire));
        Ok((index, visible))
    }

    /// Embeddings of the question and the index's documents, when an
    /// endpoint is configured; document vectors are cached by text. A
    /// failing endpoint is skipped for a minute, and a slow one costs at
    /// most `EMBEDDING_WAIT`, so search stays fast with BM25 meanwhile.
    async fn semantic(
        &self,
        index: &SearchIndex,
        question: &str,
    ) -> Result<Option<Semantic>, String> {
        let Some(provider) = &self.embeddings else {
            return Ok(None);
        };
        if let Some(until) = *self.lock_embeddings_down()
            && Instant::now() < until
        {
            return Err("the embeddings endpoint failed recently; retrying after a minute".into());
        }
        // This index's vectors, held here: the shared cache may be cleared
        // by another search meanwhile.
        let mut vectors: HashMap<&str, Arc<Vec<f32>>> = HashMap::new();
        {
            let cache = self.read_vectors();
            for text in index.texts() {
                if let Some(vector) = cache.get(text.as_str()) {
                    vectors.insert(text.as_str(), Arc::clone(vector));
                }
            }
        }
        let mut seen = BTreeSet::new();
        let missing: Vec<String> = index
            .texts()
            .filter(|t| !vectors.contains_key(t.as_str()) && seen.insert(t.as_str()))
            .cloned()
            .collect();
        let mut inputs = missing.clone();
        inputs.push(question.to_string());
        let embedded = match tokio::time::timeout(EMBEDDING_WAIT, provider.embed(&inputs)).await {
            Ok(Ok(embedded)) => embedded,
            failed => {
                *self.lock_embeddings_down() = Some(Instant::now() + EMBEDDING_BACKOFF);
                return Err(match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} s", EMBEDDING_WAIT.as_secs()),
                });
            }
        };
        let mut embedded: Vec<Arc<Vec<f32>>> = embedded.into_iter().map(Arc::new).collect();
        let question = embedded.pop().unwrap_or_default();
        {
            let mut cache = self.write_vectors();
            if cache.len() + missing.len() > MAX_CACHED_VECTORS {
                cache.clear();
            }
            for (text, vector) in missing.iter().zip(&embedded) {
                cache.insert(text.clone(), Arc::clone(vector));
            }
        }
        for (text, vector) in missing.iter().zip(embedded) {
            vectors.insert(text.as_str(), vector);
        }
        let lookup = |text: &String| vectors.get(text.as_str()).cloned().unwrap_or_default();
        let texts: Vec<&String> = index.texts().collect();
        let (tables, golden) = texts.split_at(index.table_count().min(texts.len()));
        Ok(Some(Semantic {
            weight: self.embeddings_weight,
            question,
            tables: tables.iter().map(|t| lookup(t)).collect(),
            golden: golden.iter().map(|t| lookup(t)).collect(),
        }))
    }

    /// The ranked answer, without scans.
    fn rank(
        &self,
        request: &SearchRequest,
        index: &SearchIndex,
        visible: &Visible,
        semantic: Option<&Semantic>,
    ) -> SearchAnswer {
        let k = request.k.unwrap_or(5);
        let state = self.read();
        let tables: Vec<TableContext> = index
            .tables(&request.question, k, semantic)
            .into_iter()
            .map(|(name, score)| {
                let notes = state
                    .notes
                    .get(&name.to_string())
                    .and_then(|n| n.seen_by(visible));
                let columns = visible.get(&name).map(Vec::as_slice).unwrap_or_default();
                context_of(&name, columns, notes.as_ref(), score)
            })
            .collect();
        let chosen: BTreeSet<TableName> = tables
            .iter()
            .filter_map(|t| TableName::parse(&t.table).ok())
            .collect();
        let instructions = state
            .instructions
            .values()
            .filter(|i| i.visible_to(visible) && i.applies_to(&chosen))
            .cloned()
            .collect();
        let golden_sql = index
            .golden(&request.question, k, semantic)
            .into_iter()
            .filter_map(|(id, score)| {
                let g = state.golden.get(&id)?;
                Some(GoldenMatch {
                    id,
                    question: g.question.clone(),
                    sql: g.sql.clone(),
                    score,
                })
            })
            .collect();
        SearchAnswer {
            question: request.question.clone(),
            tables,
            instructions,
            golden_sql,
            ranking: if semantic.is_some() { "hybrid" } else { "bm25" },
            ranking_note: None,
        }
    }

    /// The descriptions of the tables `principal` may query, by table.
    pub fn table_descriptions(&self, principal: &Principal) -> BTreeMap<TableName, String> {
        let visible = self.visible(principal);
        let state = self.read();
        visible
            .keys()
            .filter_map(|name| {
                let notes = state.notes.get(&name.to_string())?.seen_by(&visible)?;
                Some((name.clone(), notes.description?))
            })
            .collect()
    }

    /// One table as `principal` sees it: its visible columns with their
    /// types, descriptions, categories and examples, key guesses, and the
    /// rules that apply to it. A table it may not query is NOT_FOUND, like
    /// one that does not exist.
    pub async fn table_context(
        self: &Arc<Self>,
        principal: &Principal,
        table: &str,
    ) -> Result<TableDescription, ContextError> {
        let unknown = || ContextError::NotFound(format!("no table '{table}' you may query"));
        let name = TableName::parse(table).map_err(|_| unknown())?;
        let visible = self.visible(principal);
        let (name, columns) = visible.get_key_value(&name).ok_or_else(unknown)?;
        let mut context = {
            let state = self.read();
            let notes = state
                .notes
                .get(&name.to_string())
                .and_then(|n| n.seen_by(&visible));
            context_of(name, columns, notes.as_ref(), 0.0)
        };
        let chosen = BTreeSet::from([name.clone()]);
        let instructions = self
            .read()
            .instructions
            .values()
            .filter(|i| i.visible_to(&visible) && i.applies_to(&chosen))
            .cloned()
            .collect();
        self.add_scan(principal, &mut context).await?;
        Ok(TableDescription {
            table: context,
            instructions,
        })
    }

    /// Adds what the table's scan says, as `principal` sees it: admins the
    /// stored scan; others categories and examples from their own profile
    /// of the table (cached per compiled policy), so no value appears that
    /// their row filter hides, and masked columns show masked values.
    async fn add_scan(
        self: &Arc<Self>,
        principal: &Principal,
        table: &mut TableContext,
    ) -> Result<(), ContextError> {
        let Ok(name) = TableName::parse(&table.table) else {
            return Ok(());
        };
        let Some((stored, seen)) = self.scan_seen_by(principal, &name).await? else {
            return Ok(());
        };
        for column in &mut table.columns {
            if let Some(scan) = seen.iter().find(|s| s.name == column.name) {
                column.categories = scan.categories.clone();
                column.examples = scan.examples.clone();
            }
        }
        let visible = self.visible(principal);
        let sees = |t: &str, c: &str| {
            TableName::parse(t)
                .ok()
                .and_then(|t| visible.get(&t))
                .is_some_and(|cols| cols.iter().any(|(n, _)| n == c))
        };
        table.primary_key = stored
            .primary_key
            .clone()
            .filter(|pk| sees(&table.table, pk));
        table.foreign_keys = stored
            .foreign_keys
            .iter()
            .filter(|fk| {
                sees(&table.table, &fk.column) && sees(&fk.references_table, &fk.references_column)
            })
            .cloned()
            .collect();
        table.scan = Some(ScanState {
            scanned_at: stored.scanned_at,
            stale: self.query.table_version(&name).as_deref() != Some(stored.version.as_str()),
        });
        Ok(())
    }

    /// A table's stored scan and its columns as `principal` sees them:
    /// admins the stored values; others categories and examples from their
    /// own profile of the table. None for a table never scanned.
    pub(super) async fn scan_seen_by(
        self: &Arc<Self>,
        principal: &Principal,
        name: &TableName,
    ) -> Result<Option<(TableScan, Vec<ColumnScan>)>, ContextError> {
        let Some(stored) = self.read().scans.get(&name.to_string()).cloned() else {
            return Ok(None);
        };
        let seen = if principal.is_admin() {
            stored.columns.clone()
        } else {
            self.query
                .profile_within(principal, &profile_request(name))
                .await?
                .columns
                .iter()
                .map(ColumnScan::from_profile)
                .collect()
        };
        Ok(Some((stored, seen)))
    }
}

/// A table's context from its visible columns and the notes the caller
/// may see, before its scan is added.
fn context_of(
    name: &TableName,
    columns: &[(String, String)],
    notes: Option<&TableNotes>,
    score: f32,
) -> TableContext {
    TableContext {
        table: name.to_string(),
        score,
        description: notes.and_then(|n| n.description.clone()),
        columns: columns
            .iter()
            .map(|(column, data_type)| ColumnContext {
                name: column.clone(),
                data_type: data_type.clone(),
                description: notes.and_then(|n| n.columns.get(column).cloned()),
                categories: None,
                examples: Vec::new(),
            })
            .collect(),
        primary_key: None,
        foreign_keys: Vec::new(),
        scan: None,
    }
}
