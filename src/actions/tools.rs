//! Data tool actions: `table.sample` answers with a query the caller runs
//! like any other; `table.profile` with column statistics computed through
//! the caller's own policy; `table.describe` with a table as the caller
//! sees it; `query.shape` with a plan's operators and no expressions;
//! `query.running` and `query.cancel` with the queries streaming now.
//! Grants, limits and audit apply to all.

use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Actions, parse};
use crate::context::TableDescription;
use crate::principal::Principal;
use crate::query::{ProfileRequest, RunningQuery, TableProfile};
use crate::tools::sample::{SamplePlan, SampleRequest, plan_sample};

/// `table.describe`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DescribeTableRequest {
    table: String,
}

/// `query.shape`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ShapeRequest {
    sql: String,
}

/// `query.cancel`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryIdRequest {
    /// The id `query.running` lists.
    query_id: String,
}

/// What `query.running` answers.
#[derive(Debug, Serialize)]
pub(super) struct RunningView {
    queries: Vec<RunningQuery>,
}

/// What `query.cancel` answers.
#[derive(Debug, Serialize)]
pub(super) struct CancelView {
    /// Whether a query the caller may stop was streaming under that id.
    cancelled: bool,
}

/// What `query.shape` answers.
#[derive(Debug, Serialize)]
pub(super) struct ShapeView {
    /// One operator per line, indented by depth.
    shape: String,
    /// The tables the query reads.
    tables: Vec<String>,
}

impl Actions {
    pub(super) fn table_sample(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<(String, SamplePlan), ActionError> {
        let request: SampleRequest = parse(Action::TableSample, body)?;
        let plan = plan_sample(&self.query, principal, request)?;
        Ok((plan.sql.clone(), plan))
    }
}

impl Actions {
    pub(super) async fn table_profile(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<TableProfile, ActionError> {
        let request: ProfileRequest = parse(Action::TableProfile, body)?;
        Ok(self.query.profile(principal, &request).await?)
    }
}

impl Actions {
    pub(super) async fn table_describe(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<TableDescription, ActionError> {
        let request: DescribeTableRequest = parse(Action::TableDescribe, body)?;
        Ok(self
            .context
            .table_context(principal, &request.table)
            .await?)
    }

    pub(super) async fn query_shape(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ShapeView, ActionError> {
        let request: ShapeRequest = parse(Action::QueryShape, body)?;
        let planned = self.query.plan(principal, &request.sql).await?;
        Ok(ShapeView {
            shape: planned.shape(),
            tables: planned.tables().iter().map(ToString::to_string).collect(),
        })
    }
}

impl Actions {
    pub(super) fn query_running(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<RunningView, ActionError> {
        let super::Empty {} = parse(Action::QueryRunning, body)?;
        Ok(RunningView {
            queries: self.query.running_for(principal),
        })
    }

    pub(super) fn query_cancel(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<CancelView, ActionError> {
        let request: QueryIdRequest = parse(Action::QueryCancel, body)?;
        Ok(CancelView {
            cancelled: self.query.cancel(&request.query_id, principal),
        })
    }
}
