//! Snowflake as a source.
//!
//! So far: [`decode`], Snowflake's Arrow result encoding decoded into the
//! replica's types. The client (login, queries with long-running polling,
//! chunked results streamed with bounded memory) comes next; see the
//! project notes for why it is written here rather than taken from the
//! `snowflake-api` crate (results held whole in memory, no polling of
//! long-running queries, a second Arrow major version).

pub mod decode;
