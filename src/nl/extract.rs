//! Getting one SQL query out of a model's answer, whatever it wraps it in:
//! a fenced code block (```sql, ```SQL, ``` or ~~~), prose before and
//! after, a trailing semicolon, an answer that is nothing but SQL. What is
//! not a query (an apology, a template with placeholders) is said so, so
//! that it is never executed and the model is asked again.

/// Why an answer holds no usable query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSql {
    /// The model says the question cannot be answered from the context.
    Declined(String),
    /// No SQL found, or SQL with template placeholders in it.
    Unusable(String),
}

/// The single query in `answer`.
pub fn extract_sql(answer: &str) -> Result<String, NoSql> {
    if let Some(reason) = declined(answer) {
        return Err(NoSql::Declined(reason));
    }
    let candidates = fenced_blocks(answer);
    let sql = candidates
        .iter()
        .map(|block| block.trim())
        .find(|block| starts_query(block))
        .map(str::to_string)
        .or_else(|| bare_query(answer))
        .ok_or_else(|| {
            NoSql::Unusable("the answer holds no SELECT query; answer with one ```sql block".into())
        })?;
    let sql = strip_terminator(&sql);
    if let Some(placeholder) = placeholder(&sql) {
        return Err(NoSql::Unusable(format!(
            "the query has a placeholder ({placeholder}) instead of real names or values; use only the tables, \
             columns and values given"
        )));
    }
    Ok(sql)
}

/// `-- cannot answer: …`, the answer the prompt asks for when the context
/// does not hold what the question needs.
fn declined(answer: &str) -> Option<String> {
    let lower = answer.to_ascii_lowercase();
    let at = lower.find("cannot answer:")?;
    let reason = answer[at + "cannot answer:".len()..]
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches("```")
        .trim();
    Some(if reason.is_empty() {
        "the model says the question cannot be answered from the tables you may query".into()
    } else {
        reason.to_string()
    })
}

/// The contents of fenced code blocks, in order, `sql`-tagged ones first.
fn fenced_blocks(text: &str) -> Vec<String> {
    let mut tagged = Vec::new();
    let mut other = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let fence = if trimmed.starts_with("```") {
            "```"
        } else if trimmed.starts_with("~~~") {
            "~~~"
        } else {
            continue;
        };
        let info = trimmed[fence.len()..].trim().to_ascii_lowercase();
        // A one-line block: ```SELECT 1```.
        if let Some(inner) = trimmed[fence.len()..].strip_suffix(fence) {
            other.push(inner.to_string());
            continue;
        }
        let mut body = Vec::new();
        for inner in lines.by_ref() {
            if inner.trim_start().starts_with(fence) {
                break;
            }
            body.push(inner);
        }
        let body = body.join("\n");
        if matches!(
            info.as_str(),
            "sql" | "postgresql" | "postgres" | "sqlite" | "duckdb"
        ) {
            tagged.push(body);
        } else {
            other.push(body);
        }
    }
    tagged.extend(other);
    tagged
}

fn starts_query(text: &str) -> bool {
    let head: String = text
        .trim_start()
        .chars()
        .take(6)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("select") || head.starts_with("with") || head.starts_with('(')
}

/// Unfenced SQL: from the first line that starts a query to a blank line
/// or a line of prose after a terminating semicolon.
fn bare_query(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| starts_query(l))?;
    let mut out = Vec::new();
    for line in &lines[start..] {
        if line.trim().is_empty() && !out.is_empty() {
            break;
        }
        out.push(*line);
        if line.trim_end().ends_with(';') {
            break;
        }
    }
    Some(out.join("\n"))
}

fn strip_terminator(sql: &str) -> String {
    sql.trim().trim_end_matches(';').trim_end().to_string()
}

/// Template text a model sometimes leaves in: `<table_name>`, `{{x}}`,
/// `your_table`, `...`.
fn placeholder(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    if let Some(start) = lower.find('<') {
        let rest = &lower[start + 1..];
        if let Some(end) = rest.find('>') {
            let inner = &rest[..end];
            if !inner.is_empty()
                && inner.len() <= 40
                && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && inner.chars().any(|c| c.is_ascii_alphabetic())
            {
                return Some(format!("<{}>", &sql[start + 1..start + 1 + end]));
            }
        }
    }
    for marker in ["{{", "your_table", "your_column", "table_name_here", "..."] {
        if lower.contains(marker) {
            return Some(marker.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_sql_is_taken_out_of_prose() {
        let answer = "Sure! Here is the query:\n\n```sql\nSELECT region, sum(amount)\nFROM demo.orders\nGROUP BY region;\n```\n\nThis sums amounts per region.";
        assert_eq!(
            extract_sql(answer).unwrap(),
            "SELECT region, sum(amount)\nFROM demo.orders\nGROUP BY region"
        );
        let untagged = "```\nWITH x AS (SELECT 1 AS a) SELECT a FROM x\n```";
        assert_eq!(
            extract_sql(untagged).unwrap(),
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x"
        );
        let tilde = "~~~SQL\nselect 2\n~~~";
        assert_eq!(extract_sql(tilde).unwrap(), "select 2");
        // A sql block wins over an explanatory block before it.
        let two = "```text\nplan: sum it\n```\n```sql\nSELECT 3\n```";
        assert_eq!(extract_sql(two).unwrap(), "SELECT 3");
    }

    #[test]
    fn bare_sql_and_one_line_fences_are_found() {
        assert_eq!(extract_sql("SELECT 1;").unwrap(), "SELECT 1");
        let prose = "The answer is\nSELECT count(*) FROM demo.orders;\nHope it helps.";
        assert_eq!(
            extract_sql(prose).unwrap(),
            "SELECT count(*) FROM demo.orders"
        );
        assert_eq!(extract_sql("```SELECT 4```").unwrap(), "SELECT 4");
    }

    #[test]
    fn placeholders_apologies_and_refusals_are_not_sql() {
        assert!(matches!(
            extract_sql("```sql\nSELECT * FROM <table_name>\n```"),
            Err(NoSql::Unusable(m)) if m.contains("<table_name>")
        ));
        assert!(matches!(
            extract_sql("SELECT * FROM your_table"),
            Err(NoSql::Unusable(_))
        ));
        assert!(matches!(
            extract_sql("I'm sorry, I can't help with that."),
            Err(NoSql::Unusable(_))
        ));
        assert_eq!(
            extract_sql("-- cannot answer: no table holds salaries"),
            Err(NoSql::Declined("no table holds salaries".into()))
        );
        // Comparisons are not placeholders.
        assert!(extract_sql("SELECT 1 WHERE 2 < 3 AND 4 > 1").is_ok());
    }
}
