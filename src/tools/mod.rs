//! Agent data tools beside SQL: artifacts (named blobs and tables agents
//! keep and share), and, built on the same grants, limits and audit as
//! queries, the exports, sampling and profiling that read through them.
//!
//! Tools sit above `query` (they plan and run queries as the caller) and
//! below the front ends, which only translate protocol into these calls.

pub mod artifacts;
pub mod export;
pub mod sample;
