//! Natural-language actions: `nl.sql`, `nl.answer`, `nl.evaluate`,
//! `nl.prompts`, `nl.generations` and `finetune.*`. The behaviour lives in
//! `nl`; this file parses bodies and shapes answers.

use super::jobs::ToolJobView;
use super::{Action, ActionError, Actions, parse};
use crate::nl::finetune::{Finetune, FinetuneId};
use crate::nl::{
    AnswerRequest, EvaluateRequest, FinetuneExportRequest, FinetuneRequest, Generation, NlAnswer,
    PromptRecord, RecordPage, RecordQuery, SqlRequest,
};
use crate::principal::Principal;

impl Actions {
    /// `nl.sql`.
    pub(super) async fn nl_sql(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Generation, ActionError> {
        let request: SqlRequest = parse(Action::NlSql, body)?;
        Ok(self.nl.sql(principal, request).await?)
    }

    /// `nl.answer`.
    pub(super) async fn nl_answer(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<NlAnswer, ActionError> {
        let request: AnswerRequest = parse(Action::NlAnswer, body)?;
        Ok(self.nl.answer(principal, request).await?)
    }

    /// `nl.evaluate` (a job).
    pub(super) async fn nl_evaluate(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ToolJobView, ActionError> {
        let request: EvaluateRequest = parse(Action::NlEvaluate, body)?;
        Ok(self.nl.evaluate(principal, request).await?.into())
    }

    /// `nl.prompts`.
    pub(super) async fn nl_prompts(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<RecordPage<PromptRecord>, ActionError> {
        let request: RecordQuery = parse(Action::NlPrompts, body)?;
        Ok(self.nl.prompts(principal, request).await?)
    }

    /// `nl.generations`.
    pub(super) async fn nl_generations(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<RecordPage<Generation>, ActionError> {
        let request: RecordQuery = parse(Action::NlGenerations, body)?;
        Ok(self.nl.generations(principal, request).await?)
    }

    /// `finetune.export`.
    pub(super) async fn finetune_export(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<serde_json::Value, ActionError> {
        let request: FinetuneExportRequest = parse(Action::FinetuneExport, body)?;
        Ok(self.nl.finetune_export(principal, request).await?)
    }

    /// `finetune.create`.
    pub(super) async fn finetune_create(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Finetune, ActionError> {
        let request: FinetuneRequest = parse(Action::FinetuneCreate, body)?;
        Ok(self.nl.finetune_create(principal, request).await?)
    }

    /// `finetune.get`.
    pub(super) async fn finetune_get(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Finetune, ActionError> {
        let FinetuneId { id } = parse(Action::FinetuneGet, body)?;
        Ok(self.nl.finetune_get(principal, &id).await?)
    }

    /// `finetune.list`.
    pub(super) async fn finetune_list(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<RecordPage<Finetune>, ActionError> {
        let request: RecordQuery = parse(Action::FinetuneList, body)?;
        Ok(self.nl.finetune_list(principal, request).await?)
    }

    /// `finetune.cancel`.
    pub(super) async fn finetune_cancel(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Finetune, ActionError> {
        let FinetuneId { id } = parse(Action::FinetuneCancel, body)?;
        Ok(self.nl.finetune_cancel(principal, &id).await?)
    }

    /// `finetune.delete`.
    pub(super) async fn finetune_delete(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<serde_json::Value, ActionError> {
        let FinetuneId { id } = parse(Action::FinetuneDelete, body)?;
        Ok(self.nl.finetune_delete(principal, &id).await?)
    }
}
