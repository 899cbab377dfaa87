//! Ranking for `context.search`: BM25 over what one principal may see.
//!
//! Each principal's search runs over an index of exactly its own context:
//! its visible tables (names, its visible columns, descriptions, the golden
//! questions it may see that read them) and its visible golden questions.
//! Building the index per catalog, rather than filtering one shared index,
//! keeps hidden tables out of the term statistics too, so not even a score
//! depends on something the caller cannot read. Indexes are cached by a
//! fingerprint of their contents; a catalog of 1,000 tables builds in
//! milliseconds.
//!
//! With an embeddings endpoint configured, ranking is hybrid: documents and
//! the question are embedded (document vectors cached by text), and the
//! BM25 ranking and the cosine-similarity ranking are fused by reciprocal
//! rank (score = Σ 1/(60 + rank)), which needs no calibration between the
//! two scales.
//!
//! BM25 comes from the `bm25` crate (tokenizing, English stemming, stop
//! words, the scorer): a light in-memory engine fits a corpus this small
//! better than a persistent full-text index such as tantivy, which would be
//! rebuilt for every catalog anyway.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use bm25::{Document, Language, SearchEngine, SearchEngineBuilder};

use super::records::{GoldenSql, TableNotes, Visible};
use super::scan::TableScan;
use crate::table_name::TableName;

/// Indexes kept (one per distinct catalog recently searched).
const CACHED_INDEXES: usize = 64;

/// What one principal's search ranks.
#[derive(Debug)]
pub(super) struct Corpus<'a> {
    pub(super) visible: &'a Visible,
    pub(super) notes: &'a BTreeMap<String, TableNotes>,
    pub(super) golden: Vec<&'a GoldenSql>,
    /// Scans whose categories the caller reads exactly as stored: those of
    /// tables it reads with no row filter or mask. (A governed table's
    /// categories differ per caller and are not ranked on.)
    pub(super) scans: BTreeMap<&'a TableName, &'a TableScan>,
}

impl Corpus<'_> {
    fn fingerprint(&self, context_version: u64) -> u64 {
        let mut hasher = DefaultHasher::new();
        context_version.hash(&mut hasher);
        self.visible.hash(&mut hasher);
        for golden in &self.golden {
            golden.id.hash(&mut hasher);
        }
        for table in self.scans.keys() {
            table.hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// A question's embedding and those of the documents, by position.
type Vectors<'a> = (&'a [f32], &'a [Arc<Vec<f32>>], f32);

/// The constant of reciprocal rank fusion (the usual 60).
const RRF_K: f32 = 60.0;

/// A built index: tables and golden questions, by position, with the text
/// each was indexed by (what embeddings embed).
pub(super) struct SearchIndex {
    tables: Vec<TableName>,
    table_texts: Vec<String>,
    table_engine: SearchEngine<usize>,
    golden: Vec<String>,
    golden_texts: Vec<String>,
    golden_engine: SearchEngine<usize>,
}

/// Embeddings of a question and of an index's documents (by position),
/// and how much their ranking counts against BM25's.
#[derive(Debug)]
pub(super) struct Semantic {
    pub(super) weight: f32,
    pub(super) question: Arc<Vec<f32>>,
    pub(super) tables: Vec<Arc<Vec<f32>>>,
    pub(super) golden: Vec<Arc<Vec<f32>>>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("tables", &self.tables.len())
            .field("golden", &self.golden.len())
            .finish()
    }
}

impl SearchIndex {
    fn build(corpus: &Corpus<'_>) -> Self {
        let tables: Vec<TableName> = corpus.visible.keys().cloned().collect();
        let table_texts: Vec<String> = tables
            .iter()
            .map(|name| {
                let mut text = words(&format!("{} {}", name.schema(), name.table()));
                let notes = corpus.notes.get(&name.to_string());
                if let Some(description) = notes.and_then(|n| n.description.as_deref()) {
                    text.push(' ');
                    text.push_str(description);
                }
                let scan = corpus.scans.get(name);
                for (column, _) in corpus.visible.get(name).into_iter().flatten() {
                    text.push(' ');
                    text.push_str(&words(column));
                    if let Some(description) = notes.and_then(|n| n.columns.get(column)) {
                        text.push(' ');
                        text.push_str(description);
                    }
                    let categories = scan
                        .and_then(|s| s.columns.iter().find(|c| &c.name == column))
                        .and_then(|c| c.categories.as_ref());
                    for category in categories.into_iter().flatten() {
                        text.push(' ');
                        text.push_str(&words(category));
                    }
                }
                // A golden question names the table in the words people use.
                for golden in &corpus.golden {
                    if golden.tables().any(|t| &t == name) {
                        text.push(' ');
                        text.push_str(&golden.question);
                    }
                }
                text
            })
            .collect();
        let table_engine = engine(documents(&table_texts));
        let golden: Vec<String> = corpus.golden.iter().map(|g| g.id.clone()).collect();
        let golden_texts: Vec<String> = corpus.golden.iter().map(|g| words(&g.question)).collect();
        let golden_engine = engine(documents(&golden_texts));
        Self {
            tables,
            table_texts,
            table_engine,
            golden,
            golden_texts,
            golden_engine,
        }
    }

    /// The texts of its tables, then of its golden questions.
    pub(super) fn texts(&self) -> impl Iterator<Item = &String> {
        self.table_texts.iter().chain(&self.golden_texts)
    }

    /// How many table documents it holds.
    pub(super) fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// The `k` best tables for `question`, best first, with scores (BM25,
    /// or fused ranks with `semantic`).
    pub(super) fn tables(
        &self,
        question: &str,
        k: usize,
        semantic: Option<&Semantic>,
    ) -> Vec<(TableName, f32)> {
        let vectors = semantic.map(|s| (s.question.as_slice(), s.tables.as_slice(), s.weight));
        rank(&self.table_engine, question, k, vectors)
            .into_iter()
            .filter_map(|(i, score)| Some((self.tables.get(i)?.clone(), score)))
            .collect()
    }

    /// The ids of the `k` golden questions most like `question`.
    pub(super) fn golden(
        &self,
        question: &str,
        k: usize,
        semantic: Option<&Semantic>,
    ) -> Vec<(String, f32)> {
        let vectors = semantic.map(|s| (s.question.as_slice(), s.golden.as_slice(), s.weight));
        rank(&self.golden_engine, question, k, vectors)
            .into_iter()
            .filter_map(|(i, score)| Some((self.golden.get(i)?.clone(), score)))
            .collect()
    }
}

/// The `k` best documents: by BM25 alone, or fused with the ranking by
/// cosine similarity of `vectors` (the question's, the documents').
fn rank(
    engine: &SearchEngine<usize>,
    question: &str,
    k: usize,
    vectors: Option<Vectors<'_>>,
) -> Vec<(usize, f32)> {
    let Some((question_vector, documents, weight)) = vectors else {
        return engine
            .search(&words(question), k)
            .into_iter()
            .map(|r| (r.document.id, r.score))
            .collect();
    };
    let mut fused: BTreeMap<usize, f32> = BTreeMap::new();
    let lexical = engine.search(&words(question), documents.len().max(1));
    for (rank, result) in lexical.iter().enumerate() {
        *fused.entry(result.document.id).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
    }
    let mut dense: Vec<(usize, f32)> = documents
        .iter()
        .enumerate()
        .map(|(i, v)| (i, cosine(question_vector, v)))
        .collect();
    dense.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (rank, (i, _)) in dense.iter().enumerate() {
        *fused.entry(*i).or_default() += weight / (RRF_K + rank as f32 + 1.0);
    }
    let mut ranked: Vec<(usize, f32)> = fused.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let norms = norm(a) * norm(b);
    if norms == 0.0 { 0.0 } else { dot / norms }
}

fn documents(texts: &[String]) -> Vec<Document<usize>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| Document::new(i, text.clone()))
        .collect()
}

fn engine(documents: Vec<Document<usize>>) -> SearchEngine<usize> {
    SearchEngineBuilder::<usize>::with_documents(Language::English, documents).build()
}

/// Recently built indexes, by fingerprint.
#[derive(Debug, Default)]
pub(super) struct IndexCache {
    entries: Mutex<Vec<(u64, Arc<SearchIndex>)>>,
}

impl IndexCache {
    /// The index of `corpus`, built if no cached one matches.
    pub(super) fn index(&self, corpus: &Corpus<'_>, context_version: u64) -> Arc<SearchIndex> {
        let key = corpus.fingerprint(context_version);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = entries.iter().position(|(k, _)| *k == key) {
            let entry = entries.remove(i);
            let index = Arc::clone(&entry.1);
            entries.insert(0, entry);
            return index;
        }
        drop(entries);
        let index = Arc::new(SearchIndex::build(corpus));
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(0, (key, Arc::clone(&index)));
        entries.truncate(CACHED_INDEXES);
        index
    }
}

/// Text with identifiers split into words: `l_shipdate` → `l shipdate`,
/// `orderDate` → `order Date`, `sales.orders` → `sales orders`.
pub(super) fn words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut previous: Option<char> = None;
    for c in text.chars() {
        if c == '_' || c == '.' {
            out.push(' ');
        } else {
            if c.is_uppercase() && previous.is_some_and(char::is_lowercase) {
                out.push(' ');
            }
            out.push(c);
        }
        previous = Some(c);
    }
    out
}

/// Term counts, for tests of the tokenizer's effect.
#[cfg(test)]
fn tokens(text: &str) -> std::collections::HashMap<String, usize> {
    use bm25::{DefaultTokenizer, Tokenizer};
    let tokenizer = DefaultTokenizer::new(Language::English);
    let mut counts = std::collections::HashMap::new();
    for token in tokenizer.tokenize(&words(text)) {
        *counts.entry(token).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn identifiers_split_into_words() {
        assert_eq!(words("l_shipdate"), "l shipdate");
        assert_eq!(words("orderDate"), "order Date");
        assert_eq!(words("sales.orders"), "sales orders");
        assert!(tokens("customer_orders").contains_key("order"));
    }

    fn visible(tables: &[(&str, &[&str])]) -> Visible {
        tables
            .iter()
            .map(|(t, cols)| {
                (
                    TableName::parse(t).unwrap(),
                    cols.iter()
                        .map(|c| (c.to_string(), "Utf8".to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn ranks_by_names_descriptions_and_golden_questions() {
        let visible = visible(&[
            (
                "tpch.lineitem",
                &["l_shipdate", "l_extendedprice", "l_discount"],
            ),
            ("tpch.nation", &["n_name", "n_regionkey"]),
            ("demo.customers", &["id", "region", "lifetime_value"]),
        ]);
        let mut notes = BTreeMap::new();
        notes.insert(
            "tpch.nation".to_string(),
            TableNotes {
                table: "tpch.nation".into(),
                description: Some("Countries of the world".into()),
                updated_at: Utc::now(),
                updated_by: "admin".into(),
                ..TableNotes::default()
            },
        );
        let golden = GoldenSql {
            id: "g1".into(),
            question: "What was the revenue from shipped items last year?".into(),
            sql: "SELECT 1".into(),
            reads: [("tpch.lineitem".to_string(), Default::default())].into(),
            swarm: None,
            created_at: Utc::now(),
            created_by: "admin".into(),
        };
        let nations = TableName::parse("tpch.nation").unwrap();
        let scan = TableScan {
            table: "tpch.nation".into(),
            version: "v".into(),
            scanned_at: Utc::now(),
            rows: 25,
            columns: vec![crate::context::ColumnScan {
                name: "n_name".into(),
                data_type: "Utf8".into(),
                null_fraction: 0.0,
                approx_distinct: Some(25),
                categories: Some(vec!["GERMANY".into(), "FRANCE".into()]),
                examples: vec![],
            }],
            primary_key: None,
            foreign_keys: vec![],
        };
        let corpus = Corpus {
            visible: &visible,
            notes: &notes,
            golden: vec![&golden],
            scans: [(&nations, &scan)].into(),
        };
        let index = SearchIndex::build(&corpus);
        assert_eq!(
            index.tables("which countries", 1, None)[0].0.to_string(),
            "tpch.nation"
        );
        assert_eq!(
            index.tables("revenue by ship date", 1, None)[0]
                .0
                .to_string(),
            "tpch.lineitem"
        );
        assert_eq!(
            index.tables("customers per region", 1, None)[0]
                .0
                .to_string(),
            "demo.customers"
        );
        assert_eq!(index.golden("revenue last year", 1, None)[0].0, "g1");
        assert!(index.golden("countries", 1, None).is_empty());
    }

    #[test]
    fn embeddings_lift_tables_words_miss() {
        let visible = visible(&[
            ("tpch.nation", &["n_name"]),
            ("tpch.orders", &["o_totalprice"]),
            ("tpch.part", &["p_name"]),
        ]);
        let notes = BTreeMap::new();
        let corpus = Corpus {
            visible: &visible,
            notes: &notes,
            golden: vec![],
            scans: BTreeMap::new(),
        };
        let index = SearchIndex::build(&corpus);
        // No word of the question is in any document: BM25 finds nothing.
        assert!(index.tables("which countries", 3, None).is_empty());
        // Documents in key order: nation, orders, part. The question's
        // vector is closest to nation's.
        let semantic = Semantic {
            weight: 1.0,
            question: Arc::new(vec![1.0, 0.1]),
            tables: vec![
                Arc::new(vec![0.9, 0.0]),
                Arc::new(vec![0.0, 1.0]),
                Arc::new(vec![0.5, 0.5]),
            ],
            golden: vec![],
        };
        let ranked: Vec<String> = index
            .tables("which countries", 3, Some(&semantic))
            .into_iter()
            .map(|(t, _)| t.to_string())
            .collect();
        assert_eq!(ranked, ["tpch.nation", "tpch.part", "tpch.orders"]);
        // A lexical match still counts: fused, "orders price" puts orders
        // first although its vector is farther.
        let top = index.tables("orders totalprice", 1, Some(&semantic));
        assert_eq!(top[0].0.to_string(), "tpch.orders");
    }
}
