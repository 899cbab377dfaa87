//! Rows as a model reads them: a CSV table (header first, RFC 4180
//! quoting) within a row and character budget, long cells cut, and a note
//! saying what was cut and how to get all of it.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// A table being rendered.
#[derive(Debug)]
pub(super) struct Budget {
    text: String,
    rows: u64,
    max_rows: u64,
    max_chars: usize,
    max_cell: usize,
    /// Why rendering stopped early, if it did.
    cut: Option<Cut>,
    cells_cut: usize,
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    Rows,
    Chars,
    /// A column's values could not be formatted.
    Unrenderable,
}

impl Budget {
    /// An empty table with `schema`'s header.
    pub(super) fn new(
        schema: &SchemaRef,
        max_rows: u64,
        max_chars: usize,
        max_cell: usize,
    ) -> Self {
        let header: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
        let mut text = header.join(",");
        text.push('\n');
        Self {
            text,
            rows: 0,
            max_rows,
            max_chars,
            max_cell,
            cut: None,
            cells_cut: 0,
        }
    }

    /// Adds a batch's rows while the budget lasts; false once it is spent.
    pub(super) fn add(&mut self, batch: &RecordBatch) -> bool {
        if self.cut.is_some() {
            return false;
        }
        let options = FormatOptions::default().with_null("NULL");
        let formatters: Result<Vec<_>, _> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect();
        let Ok(formatters) = formatters else {
            self.cut = Some(Cut::Unrenderable);
            return false;
        };
        for row in 0..batch.num_rows() {
            if self.rows == self.max_rows {
                self.cut = Some(Cut::Rows);
                return false;
            }
            let mut line = String::new();
            for (i, formatter) in formatters.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let mut cell = formatter.value(row).to_string();
                if cell.chars().count() > self.max_cell {
                    cell = cell.chars().take(self.max_cell).collect::<String>() + "…";
                    self.cells_cut += 1;
                }
                line.push_str(&quote(&cell));
            }
            line.push('\n');
            if self.text.len() + line.len() > self.max_chars {
                self.cut = Some(Cut::Chars);
                return false;
            }
            self.text.push_str(&line);
            self.rows += 1;
        }
        true
    }

    /// The table and its note. `cut_at` is where the engine stopped the
    /// result (the lower of the caller's `max_rows` and its grant's cap)
    /// when it had more rows.
    pub(super) fn finish(mut self, cut_at: Option<u64>) -> String {
        let mut notes = Vec::new();
        match (self.cut, cut_at) {
            (Some(Cut::Chars), _) => notes.push(format!(
                "showing the first {} rows, as many as fit in {} characters; the result has more",
                self.rows, self.max_chars
            )),
            (Some(Cut::Unrenderable), _) => notes.push(format!(
                "showing the first {} rows; a value of the next could not be shown as text",
                self.rows
            )),
            (Some(Cut::Rows), _) | (None, Some(_)) => notes.push(format!(
                "showing the first {} rows; the result has more",
                self.rows
            )),
            (None, None) => notes.push(format!("{} rows", self.rows)),
        }
        if let Some(cap) = cut_at.filter(|cap| *cap < self.max_rows) {
            notes.push(format!("your grant caps results at {cap} rows"));
        }
        if self.cells_cut > 0 {
            notes.push(format!(
                "{} cells longer than {} characters were cut (…)",
                self.cells_cut, self.max_cell
            ));
        }
        if self.cut.is_some() || cut_at.is_some() || self.cells_cut > 0 {
            notes.push("export_query writes the whole result to an artifact".into());
        }
        self.text.push_str(&format!("({})", notes.join("; ")));
        self.text
    }
}

/// A CSV field, quoted when it must be.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// At most `max` characters of `text`, with a note when cut.
pub(super) fn cut_text(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max).collect();
    format!(
        "{kept}…\n(cut at {max} characters of {}; download the artifact for all of it)",
        text.chars().count()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
        ]));
        let ids: Vec<i64> = (0..n).collect();
        let notes: Vec<Option<String>> = (0..n)
            .map(|i| (i % 3 != 0).then(|| format!("a,\"b\" {i}")))
            .collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(notes)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_are_csv_with_a_note() {
        let b = batch(2);
        let mut budget = Budget::new(&b.schema(), 10, 1000, 100);
        assert!(budget.add(&b));
        assert_eq!(
            budget.finish(None),
            "id,note\n0,NULL\n1,\"a,\"\"b\"\" 1\"\n(2 rows)"
        );
    }

    #[test]
    fn the_row_budget_cuts_and_says_so() {
        let b = batch(10);
        let mut budget = Budget::new(&b.schema(), 3, 1000, 100);
        assert!(!budget.add(&b));
        let text = budget.finish(None);
        assert_eq!(text.lines().count(), 1 + 3 + 1, "{text}");
        assert!(text.contains("showing the first 3 rows") && !text.contains("grant"));
        assert!(text.contains("export_query"));
        // The engine cut the result at a grant's cap below what was asked.
        let mut budget = Budget::new(&b.schema(), 100, 10_000, 100);
        assert!(budget.add(&b.slice(0, 5)));
        let text = budget.finish(Some(5));
        assert!(
            text.contains("showing the first 5 rows; the result has more"),
            "{text}"
        );
        assert!(text.contains("your grant caps results at 5 rows"), "{text}");
    }

    #[test]
    fn the_character_budget_and_long_cells_cut() {
        let b = batch(100);
        let mut budget = Budget::new(&b.schema(), 100, 60, 4);
        assert!(!budget.add(&b));
        let text = budget.finish(None);
        let table: String = text
            .lines()
            .filter(|l| !l.starts_with('('))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(table.len() <= 60, "{text}");
        assert!(
            text.contains("as many as fit in 60 characters")
                && text.contains("cells longer than 4")
        );
    }
}
