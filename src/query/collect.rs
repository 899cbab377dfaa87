//! Running a query to its first rows, for callers that need a result in
//! memory rather than a stream (checks of generated SQL, answers grounded
//! in rows, evaluation). Same path as any query: the caller's policy,
//! limits and admission apply.

use std::collections::BTreeSet;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::StreamExt;

use super::{PlannedQuery, QueryEngine, QueryError};
use crate::principal::Principal;
use crate::table_name::TableName;

/// The first rows of a query.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The tables the query reads.
    pub tables: BTreeSet<TableName>,
    /// The result's columns.
    pub schema: SchemaRef,
    /// At most the rows asked for.
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`.
    pub rows: usize,
    /// Whether the result had more rows than collected.
    pub truncated: bool,
}

impl QueryEngine {
    /// Runs a query planned for `principal` and collects at most
    /// `max_rows` rows.
    pub async fn first_rows(
        &self,
        principal: &Principal,
        planned: PlannedQuery,
        max_rows: usize,
    ) -> Result<Collected, QueryError> {
        let tables = planned.columns_by_table().into_keys().collect();
        let schema = planned.schema();
        // One row past the cap tells a full result from a cut one.
        let planned = planned.capped(max_rows as u64 + 1)?;
        let query_id = format!("collect:{}", uuid::Uuid::new_v4());
        let mut stream = self.execute(planned, &query_id, principal).await?;
        let (mut batches, mut rows, mut truncated) = (Vec::new(), 0, false);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let room = max_rows - rows;
            if batch.num_rows() > room {
                truncated = true;
                batches.push(batch.slice(0, room));
                rows = max_rows;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok(Collected {
            tables,
            schema,
            batches,
            rows,
            truncated,
        })
    }
}
