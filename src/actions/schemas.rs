//! The JSON Schema of each action's body, generated from the type the
//! action parses it into (so the OpenAPI document cannot drift from what
//! the actions accept). The match is exhaustive: a new action does not
//! compile until its body has a schema.

use schemars::{Schema, SchemaGenerator};

use super::{Action, Empty};

impl Action {
    /// The schema of the action's JSON body, its types collected in
    /// `generator`'s definitions.
    pub fn request_schema(self, generator: &mut SchemaGenerator) -> Schema {
        use crate::{auth, context, jobs, nl, policy, query, sync, tools};
        match self {
            Action::TokenCreate => generator.subschema_for::<auth::TokenRequest>(),
            Action::TokenRevoke => generator.subschema_for::<super::tokens::IdRequest>(),
            Action::TokenList
            | Action::Whoami
            | Action::TableList
            | Action::SourcesList
            | Action::GrantList
            | Action::QueryRunning
            | Action::ContextGoldenList => generator.subschema_for::<Empty>(),
            Action::TableRegister => generator.subschema_for::<sync::RegisterRequest>(),
            Action::TableRemove | Action::TableStatus => {
                generator.subschema_for::<super::tables::NameRequest>()
            }
            Action::SyncStart => generator.subschema_for::<super::sync::TableRequest>(),
            Action::SyncStatus | Action::SyncCancel => {
                generator.subschema_for::<super::sync::JobRequest>()
            }
            Action::SyncJobs => generator.subschema_for::<sync::JobQuery>(),
            Action::SyncSchedule => generator.subschema_for::<super::sync::ScheduleRequest>(),
            Action::SyncWaitEpoch => generator.subschema_for::<super::sync::WaitEpochRequest>(),
            Action::SourcesListTables => {
                generator.subschema_for::<super::sources::ListTablesRequest>()
            }
            Action::SourcesCreate | Action::SourcesUpdate | Action::SourcesTest => {
                generator.subschema_for::<sync::ConnectionRequest>()
            }
            Action::SourcesGet | Action::SourcesDelete => {
                generator.subschema_for::<super::sources::NameRequest>()
            }
            Action::GrantSet => generator.subschema_for::<policy::Grant>(),
            Action::GrantGet | Action::GrantDelete => {
                generator.subschema_for::<super::grants::GrantKey>()
            }
            Action::Explain => generator.subschema_for::<super::grants::ExplainRequest>(),
            Action::ArtifactList => generator.subschema_for::<tools::artifacts::ListFilter>(),
            Action::ArtifactGet => generator.subschema_for::<super::artifacts::GetRequest>(),
            Action::ArtifactShare => generator.subschema_for::<super::artifacts::ShareRequest>(),
            Action::ArtifactDelete => generator.subschema_for::<super::artifacts::IdRequest>(),
            Action::ArtifactExtend => generator.subschema_for::<super::artifacts::ExtendRequest>(),
            Action::TableSample => generator.subschema_for::<tools::sample::SampleRequest>(),
            Action::TableProfile => generator.subschema_for::<query::ProfileRequest>(),
            Action::TableDescribe => {
                generator.subschema_for::<super::tools::DescribeTableRequest>()
            }
            Action::QueryShape => generator.subschema_for::<super::tools::ShapeRequest>(),
            Action::QueryCancel => generator.subschema_for::<super::tools::QueryIdRequest>(),
            Action::QueryExport => generator.subschema_for::<tools::export::ExportRequest>(),
            Action::JobGet | Action::JobCancel => {
                generator.subschema_for::<super::jobs::JobIdRequest>()
            }
            Action::JobList => generator.subschema_for::<jobs::JobFilter>(),
            Action::ContextDescribe => generator.subschema_for::<context::DescribeRequest>(),
            Action::ContextInstructionAdd | Action::ContextInstructionUpdate => {
                generator.subschema_for::<context::InstructionRequest>()
            }
            Action::ContextInstructionList => {
                generator.subschema_for::<super::context::InstructionListRequest>()
            }
            Action::ContextInstructionDelete | Action::ContextGoldenDelete => {
                generator.subschema_for::<super::context::IdRequest>()
            }
            Action::ContextGoldenAdd => generator.subschema_for::<context::GoldenRequest>(),
            Action::ContextSearch => generator.subschema_for::<context::SearchRequest>(),
            Action::ContextScan => generator.subschema_for::<context::ScanRequest>(),
            Action::NlSql => generator.subschema_for::<nl::SqlRequest>(),
            Action::NlAnswer => generator.subschema_for::<nl::AnswerRequest>(),
            Action::NlEvaluate => generator.subschema_for::<nl::EvaluateRequest>(),
            Action::NlPrompts | Action::NlGenerations | Action::FinetuneList => {
                generator.subschema_for::<nl::RecordQuery>()
            }
            Action::FinetuneExport => generator.subschema_for::<nl::FinetuneExportRequest>(),
            Action::FinetuneCreate => generator.subschema_for::<nl::FinetuneRequest>(),
            Action::FinetuneGet | Action::FinetuneCancel | Action::FinetuneDelete => {
                generator.subschema_for::<nl::FinetuneId>()
            }
        }
    }
}
