//! The messages sent to a model: built only from a [`SearchAnswer`], which
//! holds nothing the caller could not read with SQL — so a prompt never
//! names a table, column or value outside the caller's grants. Only the
//! rules that apply to the tables in the answer go in (not every rule of
//! the catalog), and golden pairs come as worked examples.

use std::fmt::Write;

use crate::context::SearchAnswer;
use crate::llm::Message;

/// Category values listed per column; the rest are summarized.
const MAX_CATEGORIES: usize = 20;

const SYSTEM: &str = "You write SQL for Apache DataFusion (a PostgreSQL-like dialect). \
Answer a question with exactly one read-only query: one SELECT (WITH is allowed), in one ```sql code block. \
Use only the tables and columns listed in the context, with table names qualified by their schema \
(schema.table), and quote identifiers that are not lower-case with double quotes. \
Never invent tables, columns or values and never leave placeholders. \
Follow the business rules. \
If the question cannot be answered from these tables, answer only: -- cannot answer: <the reason>";

/// The first messages for `question`.
pub fn messages(question: &str, context: &SearchAnswer) -> Vec<Message> {
    vec![
        Message::new("system", format!("{SYSTEM}\n\n{}", schema_text(context))),
        Message::new("user", question.trim()),
    ]
}

/// What the model is told when its query failed.
pub fn feedback(error: &str) -> Message {
    Message::new(
        "user",
        format!(
            "That query failed: {error}\nCorrect it. Answer with one ```sql block holding the whole corrected query."
        ),
    )
}

/// The context as text: tables with columns, keys and values, rules and
/// examples.
pub fn schema_text(context: &SearchAnswer) -> String {
    let mut out = String::from("Tables:\n");
    if context.tables.is_empty() {
        out.push_str("(none: you may not query any table)\n");
    }
    for table in &context.tables {
        let _ = write!(out, "\n{}", table.table);
        if let Some(description) = &table.description {
            let _ = write!(out, " -- {}", one_line(description));
        }
        out.push('\n');
        for column in &table.columns {
            let _ = write!(out, "  {} {}", column.name, column.data_type);
            if table.primary_key.as_deref() == Some(column.name.as_str()) {
                out.push_str(" PRIMARY KEY");
            }
            if let Some(fk) = table.foreign_keys.iter().find(|f| f.column == column.name) {
                let _ = write!(
                    out,
                    " REFERENCES {}({})",
                    fk.references_table, fk.references_column
                );
            }
            if let Some(description) = &column.description {
                let _ = write!(out, " -- {}", one_line(description));
            }
            match &column.categories {
                Some(values) if !values.is_empty() => {
                    let shown: Vec<String> = values
                        .iter()
                        .take(MAX_CATEGORIES)
                        .map(|v| quote(v))
                        .collect();
                    let more = values.len().saturating_sub(MAX_CATEGORIES);
                    let _ = write!(out, " -- values: {}", shown.join(", "));
                    if more > 0 {
                        let _ = write!(out, " and {more} more");
                    }
                }
                _ if !column.examples.is_empty() => {
                    let shown: Vec<String> = column.examples.iter().map(|v| quote(v)).collect();
                    let _ = write!(out, " -- e.g. {}", shown.join(", "));
                }
                _ => {}
            }
            out.push('\n');
        }
    }
    if !context.instructions.is_empty() {
        out.push_str("\nBusiness rules:\n");
        for rule in &context.instructions {
            let _ = writeln!(out, "- {}", one_line(&rule.text));
        }
    }
    if !context.golden_sql.is_empty() {
        out.push_str("\nExamples of questions answered before:\n");
        for golden in &context.golden_sql {
            let _ = write!(
                out,
                "\nQuestion: {}\n```sql\n{}\n```\n",
                one_line(&golden.question),
                golden.sql.trim()
            );
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{ColumnContext, GoldenMatch, TableContext};

    #[test]
    fn the_prompt_holds_exactly_the_context() {
        let context = SearchAnswer {
            question: "revenue by region".into(),
            tables: vec![TableContext {
                table: "demo.orders".into(),
                score: 1.0,
                description: Some("One row per\norder".into()),
                columns: vec![
                    ColumnContext {
                        name: "region".into(),
                        data_type: "Utf8".into(),
                        description: None,
                        categories: Some(vec!["EU".into(), "O'Hare".into()]),
                        examples: vec![],
                    },
                    ColumnContext {
                        name: "amount".into(),
                        data_type: "Decimal128(12, 2)".into(),
                        description: Some("net".into()),
                        categories: None,
                        examples: vec!["10.50".into()],
                    },
                ],
                primary_key: None,
                foreign_keys: vec![],
                scan: None,
            }],
            instructions: vec![],
            golden_sql: vec![GoldenMatch {
                id: "g1".into(),
                question: "orders per region".into(),
                sql: "SELECT region, count(*) FROM demo.orders GROUP BY region".into(),
                score: 1.0,
            }],
            ranking: "bm25",
            ranking_note: None,
        };
        let messages = messages(" How much revenue per region? ", &context);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].content, "How much revenue per region?");
        let system = &messages[0].content;
        assert!(
            system.contains("demo.orders -- One row per order"),
            "{system}"
        );
        assert!(
            system.contains("region Utf8 -- values: 'EU', 'O''Hare'"),
            "{system}"
        );
        assert!(
            system.contains("amount Decimal128(12, 2) -- net -- e.g. '10.50'"),
            "{system}"
        );
        assert!(system.contains("Question: orders per region"), "{system}");
        assert!(!system.contains("Business rules"), "no rules, no section");
    }
}
