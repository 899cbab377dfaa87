//! Context actions: `context.describe`, `context.instruction.*`,
//! `context.golden.*` and `context.search`. The rules (who sees what) live
//! in `context`; this file parses bodies and shapes answers.

use serde::{Deserialize, Serialize};

use super::jobs::ToolJobView;
use super::{Action, ActionError, Actions, parse};
use crate::context::records::{GoldenSql, Instruction, TableNotes};
use crate::context::{
    DescribeRequest, GoldenRequest, InstructionRequest, ScanRequest, SearchAnswer, SearchRequest,
};
use crate::principal::Principal;

/// Bodies naming one record.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IdRequest {
    id: String,
}

/// The body of `context.instruction.list`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InstructionListRequest {
    /// Only rules that apply to this table (global ones included).
    #[serde(default)]
    table: Option<String>,
}

/// `context.instruction.list`.
#[derive(Debug, Serialize)]
pub(super) struct InstructionsView {
    instructions: Vec<Instruction>,
}

/// `context.golden.list`.
#[derive(Debug, Serialize)]
pub(super) struct GoldenListView {
    golden_sql: Vec<GoldenSql>,
}

/// What a delete answers.
#[derive(Debug, Serialize)]
pub(super) struct DeletedView {
    id: String,
    deleted: bool,
}

impl Actions {
    pub(super) async fn context_describe(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<TableNotes, ActionError> {
        let request: DescribeRequest = parse(Action::ContextDescribe, body)?;
        Ok(self.context.describe(principal, request).await?)
    }

    pub(super) async fn context_instruction_add(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Instruction, ActionError> {
        let request: InstructionRequest = parse(Action::ContextInstructionAdd, body)?;
        Ok(self.context.instruction_add(principal, request).await?)
    }

    pub(super) fn context_instruction_list(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<InstructionsView, ActionError> {
        let request: InstructionListRequest = parse(Action::ContextInstructionList, body)?;
        Ok(InstructionsView {
            instructions: self
                .context
                .instructions(principal, request.table.as_deref())?,
        })
    }

    pub(super) async fn context_instruction_update(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Instruction, ActionError> {
        let request: InstructionRequest = parse(Action::ContextInstructionUpdate, body)?;
        Ok(self.context.instruction_update(principal, request).await?)
    }

    pub(super) async fn context_instruction_delete(
        &self,
        body: &[u8],
    ) -> Result<DeletedView, ActionError> {
        let IdRequest { id } = parse(Action::ContextInstructionDelete, body)?;
        self.context.instruction_delete(&id).await?;
        Ok(DeletedView { id, deleted: true })
    }

    pub(super) async fn context_golden_add(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<GoldenSql, ActionError> {
        let request: GoldenRequest = parse(Action::ContextGoldenAdd, body)?;
        Ok(self.context.golden_add(principal, request).await?)
    }

    pub(super) fn context_golden_list(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<GoldenListView, ActionError> {
        let super::Empty {} = parse(Action::ContextGoldenList, body)?;
        Ok(GoldenListView {
            golden_sql: self.context.golden(principal),
        })
    }

    pub(super) async fn context_golden_delete(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<DeletedView, ActionError> {
        let IdRequest { id } = parse(Action::ContextGoldenDelete, body)?;
        self.context.golden_delete(principal, &id).await?;
        Ok(DeletedView { id, deleted: true })
    }

    pub(super) async fn context_search(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<SearchAnswer, ActionError> {
        let request: SearchRequest = parse(Action::ContextSearch, body)?;
        Ok(self.context.search(principal, &request).await?)
    }

    pub(super) async fn context_scan(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ToolJobView, ActionError> {
        let request: ScanRequest = parse(Action::ContextScan, body)?;
        Ok(self.context.scan(principal, request).await?.into())
    }
}
