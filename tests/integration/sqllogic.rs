//! Runs the `.slt` files in tests/sql through the wire: readable files that
//! pin SQL behaviour (query → rows, or statement → refusal).

use std::path::{Path, PathBuf};

use crate::harness::{Client, TestServer, query, rows};

enum Record {
    Query {
        sql: String,
        expected: Vec<String>,
        line: usize,
    },
    Error {
        sql: String,
        code: String,
        text: String,
        line: usize,
    },
}

fn parse(text: &str) -> Vec<Record> {
    let mut records = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let start = i + 1;
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "query" {
            let mut sql = Vec::new();
            while i < lines.len() && lines[i].trim_end() != "----" {
                sql.push(lines[i]);
                i += 1;
            }
            i += 1; // ----
            let mut expected = Vec::new();
            while i < lines.len() && !lines[i].trim_end().is_empty() {
                expected.push(lines[i].trim_end().to_string());
                i += 1;
            }
            records.push(Record::Query {
                sql: sql.join("\n"),
                expected,
                line: start,
            });
        } else if let Some(rest) = line.strip_prefix("error ") {
            let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let mut sql = Vec::new();
            while i < lines.len() && !lines[i].trim_end().is_empty() {
                sql.push(lines[i]);
                i += 1;
            }
            records.push(Record::Error {
                sql: sql.join("\n"),
                code: code.to_string(),
                text: text.to_string(),
                line: start,
            });
        } else {
            panic!("line {start}: expected 'query' or 'error <Code> <text>', got {line:?}");
        }
    }
    records
}

async fn load_fixtures(server: &TestServer, admin: &mut Client, dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let status = server
            .load(
                admin,
                &format!("fixtures.{name}"),
                &path.display().to_string(),
            )
            .await;
        assert_eq!(status["state"], "succeeded", "{status}");
    }
}

#[tokio::test]
async fn sql_files_hold() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    load_fixtures(&server, &mut admin, &root.join("fixtures")).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for record in parse(&std::fs::read_to_string(&file).unwrap()) {
            match record {
                Record::Query {
                    sql,
                    expected,
                    line,
                } => {
                    let (_, batches) = query(&mut admin, &sql)
                        .await
                        .unwrap_or_else(|e| panic!("{name}:{line}: {sql}\n{e}"));
                    assert_eq!(rows(&batches), expected, "{name}:{line}: {sql}");
                }
                Record::Error {
                    sql,
                    code,
                    text,
                    line,
                } => {
                    let err = query(&mut admin, &sql).await.err().unwrap_or_else(|| {
                        panic!("{name}:{line}: {sql} succeeded, expected {code}")
                    });
                    assert!(
                        err.starts_with(&code) && err.contains(&text),
                        "{name}:{line}: {sql}\n{err}"
                    );
                }
            }
        }
    }
}
