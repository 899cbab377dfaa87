//! In-process server tests: a real airlock on 127.0.0.1:0, driven over gRPC
//! by the arrow-flight Flight SQL client.

mod harness;

mod actions;
mod audit;
mod auth;
mod execution;
mod governance;
mod limits;
mod metadata;
mod queries;
mod replication;
mod sqllogic;
