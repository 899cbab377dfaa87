//! airlock: a governed Arrow Flight SQL server that gives AI agents fast,
//! read-only access to DuckDB replicas of warehouse data.
//!
//! ```text
//!  agents / BI / notebooks (ADBC, JDBC, pyarrow, polars, pandas)
//!    │ Flight SQL over gRPC
//!    ▼
//!  flight    protocol only: decode, authenticate each call, encode
//!  http, mcp, dashboard   the HTTP port's front ends (JSON API, MCP, /admin):
//!            the same path through gateway, translated to their protocol
//!    ├─► audit     one record per call, written to airlock.audit
//!    ├─► auth      Basic → bearer JWT; token records, revocation
//!    ├─► actions   JSON actions: tokens, tables, syncs, grants, tools, context, nl
//!    │     ├─► sync      connections, sources (files, Snowflake) → staging → swap
//!    │     ├─► tools     artifacts, exports, sampling, profiling → query
//!    │     ├─► nl        question → SQL, answers, evaluation, fine-tuning → context, query, llm
//!    │     └─► context   descriptions, rules, golden SQL, search → query (llm: embeddings)
//!    └─► query     parse (one SELECT) → plan (DataFusion) → stream
//!          ├─► policy    grants → per-principal catalog: filters, masks, limits
//!          └─► replica   DuckDB: hardened; scans get generated SQL only
//!  jobs      durable jobs beside syncs (exports, scans, evaluations, fine-tunes)
//!  llm       OpenAI-compatible chat, embeddings, files and fine-tuning
//!  meta      durable documents: tokens, registrations, jobs, settings
//!  secrets   keys beside the metadata; connection secrets sealed at rest
//! ```
//!
//! Agent SQL is parsed and planned by DataFusion; DuckDB only ever sees SQL
//! that airlock generates from typed plan fragments (projection, filters,
//! limit). [`server::App::open`] wires the modules; [`server::run`] serves.

pub mod actions;
pub mod audit;
pub mod auth;
pub mod config;
pub mod context;
pub mod dashboard;
pub mod demo;
mod duckdb_setup;
mod duration_text;
pub mod flight;
pub mod gateway;
pub mod http;
pub mod jobs;
pub mod llm;
pub mod mcp;
pub mod meta;
pub mod nl;
pub mod object_stores;
pub mod policy;
pub mod principal;
pub mod query;
pub mod redact;
pub mod replica;
pub mod secrets;
pub mod server;
mod status;
pub mod sync;
pub mod table_name;
pub mod telemetry;
pub mod tools;
