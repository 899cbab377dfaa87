//! The catalog of actions: each one's wire name, what ListActions says
//! about it, and who may call it. Adding an action starts here; the
//! exhaustive matches make the compiler list every place that must know.

/// Who may call an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Admins only.
    Admin,
    /// Any authenticated principal (the handler may narrow further).
    Authenticated,
}

/// Every action airlock offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Mint a swarm or agent token.
    TokenCreate,
    /// Revoke a token (and the tokens it created).
    TokenRevoke,
    /// List tokens.
    TokenList,
    /// Describe the caller.
    Whoami,
    /// Register a table.
    TableRegister,
    /// List tables.
    TableList,
    /// Unregister a table and drop its replica.
    TableRemove,
    /// Start a sync.
    SyncStart,
    /// Job status.
    SyncStatus,
    /// List jobs.
    SyncJobs,
    /// Cancel a job.
    SyncCancel,
    /// Set or clear a table's schedule.
    SyncSchedule,
    /// Wait until this node serves a table's epoch.
    SyncWaitEpoch,
    /// Freshness and size of a table.
    TableStatus,
    /// List the tables of a Snowflake schema.
    SourcesListTables,
    /// Create a runtime connection.
    SourcesCreate,
    /// List connections.
    SourcesList,
    /// Read a connection.
    SourcesGet,
    /// Change a runtime connection.
    SourcesUpdate,
    /// Delete a runtime connection.
    SourcesDelete,
    /// Try a connection.
    SourcesTest,
    /// Create or replace a grant.
    GrantSet,
    /// Read a grant.
    GrantGet,
    /// List grants.
    GrantList,
    /// Delete a grant.
    GrantDelete,
    /// Show the plan of a query as a principal would run it.
    Explain,
    /// List the artifacts the caller may read.
    ArtifactList,
    /// An artifact's metadata and a download ticket.
    ArtifactGet,
    /// Change who may read an artifact.
    ArtifactShare,
    /// Delete an artifact and all its versions.
    ArtifactDelete,
    /// Move an artifact's expiry.
    ArtifactExtend,
    /// A sample of a table's rows, as a query to run.
    TableSample,
    /// Column statistics of a table.
    TableProfile,
    /// One table as the caller sees it: columns, descriptions, categories.
    TableDescribe,
    /// A query's plan shape, without expressions.
    QueryShape,
    /// Queries streaming now.
    QueryRunning,
    /// Stop a streaming query.
    QueryCancel,
    /// Write a query's result as an artifact (a durable job).
    QueryExport,
    /// A job's state and progress.
    JobGet,
    /// List jobs.
    JobList,
    /// Cancel a job.
    JobCancel,
    /// Describe a table and its columns.
    ContextDescribe,
    /// Add a business rule.
    ContextInstructionAdd,
    /// List business rules.
    ContextInstructionList,
    /// Change a business rule.
    ContextInstructionUpdate,
    /// Delete a business rule.
    ContextInstructionDelete,
    /// Add a question with the SQL that answers it.
    ContextGoldenAdd,
    /// List golden SQL.
    ContextGoldenList,
    /// Delete golden SQL.
    ContextGoldenDelete,
    /// The context most relevant to a question.
    ContextSearch,
    /// Scan tables for categories, examples and key guesses (a job).
    ContextScan,
    /// Generate SQL for a question.
    NlSql,
    /// Answer a question from a query's rows.
    NlAnswer,
    /// Evaluate generation against the golden set (a job).
    NlEvaluate,
    /// Prompts sent to models.
    NlPrompts,
    /// Generated SQL.
    NlGenerations,
    /// Write the golden set as chat JSONL.
    FinetuneExport,
    /// Fine-tune a model on the golden set (a job).
    FinetuneCreate,
    /// A fine-tune.
    FinetuneGet,
    /// List fine-tunes.
    FinetuneList,
    /// Cancel a fine-tune.
    FinetuneCancel,
    /// Forget a fine-tune.
    FinetuneDelete,
}

impl Action {
    /// All actions, in ListActions order.
    pub const ALL: [Action; 62] = [
        Action::TokenCreate,
        Action::TokenRevoke,
        Action::TokenList,
        Action::Whoami,
        Action::TableRegister,
        Action::TableList,
        Action::TableRemove,
        Action::SyncStart,
        Action::SyncStatus,
        Action::SyncJobs,
        Action::SyncCancel,
        Action::SyncSchedule,
        Action::SyncWaitEpoch,
        Action::TableStatus,
        Action::SourcesListTables,
        Action::SourcesCreate,
        Action::SourcesList,
        Action::SourcesGet,
        Action::SourcesUpdate,
        Action::SourcesDelete,
        Action::SourcesTest,
        Action::GrantSet,
        Action::GrantGet,
        Action::GrantList,
        Action::GrantDelete,
        Action::Explain,
        Action::ArtifactList,
        Action::ArtifactGet,
        Action::ArtifactShare,
        Action::ArtifactDelete,
        Action::ArtifactExtend,
        Action::TableSample,
        Action::TableProfile,
        Action::TableDescribe,
        Action::QueryShape,
        Action::QueryRunning,
        Action::QueryCancel,
        Action::QueryExport,
        Action::JobGet,
        Action::JobList,
        Action::JobCancel,
        Action::ContextDescribe,
        Action::ContextInstructionAdd,
        Action::ContextInstructionList,
        Action::ContextInstructionUpdate,
        Action::ContextInstructionDelete,
        Action::ContextGoldenAdd,
        Action::ContextGoldenList,
        Action::ContextGoldenDelete,
        Action::ContextSearch,
        Action::ContextScan,
        Action::NlSql,
        Action::NlAnswer,
        Action::NlEvaluate,
        Action::NlPrompts,
        Action::NlGenerations,
        Action::FinetuneExport,
        Action::FinetuneCreate,
        Action::FinetuneGet,
        Action::FinetuneList,
        Action::FinetuneCancel,
        Action::FinetuneDelete,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
            Action::TokenList => "token.list",
            Action::Whoami => "whoami",
            Action::TableRegister => "table.register",
            Action::TableList => "table.list",
            Action::TableRemove => "table.remove",
            Action::SyncStart => "sync.start",
            Action::SyncStatus => "sync.status",
            Action::SyncJobs => "sync.jobs",
            Action::SyncCancel => "sync.cancel",
            Action::SyncSchedule => "sync.schedule",
            Action::SyncWaitEpoch => "sync.wait_epoch",
            Action::TableStatus => "table.status",
            Action::SourcesListTables => "sources.list_tables",
            Action::SourcesCreate => "sources.create",
            Action::SourcesList => "sources.list",
            Action::SourcesGet => "sources.get",
            Action::SourcesUpdate => "sources.update",
            Action::SourcesDelete => "sources.delete",
            Action::SourcesTest => "sources.test",
            Action::GrantSet => "grant.set",
            Action::GrantGet => "grant.get",
            Action::GrantList => "grant.list",
            Action::GrantDelete => "grant.delete",
            Action::Explain => "explain",
            Action::ArtifactList => "artifact.list",
            Action::ArtifactGet => "artifact.get",
            Action::ArtifactShare => "artifact.share",
            Action::ArtifactDelete => "artifact.delete",
            Action::ArtifactExtend => "artifact.extend",
            Action::TableSample => "table.sample",
            Action::TableProfile => "table.profile",
            Action::TableDescribe => "table.describe",
            Action::QueryShape => "query.shape",
            Action::QueryRunning => "query.running",
            Action::QueryCancel => "query.cancel",
            Action::QueryExport => "query.export",
            Action::JobGet => "job.get",
            Action::JobList => "job.list",
            Action::JobCancel => "job.cancel",
            Action::ContextDescribe => "context.describe",
            Action::ContextInstructionAdd => "context.instruction.add",
            Action::ContextInstructionList => "context.instruction.list",
            Action::ContextInstructionUpdate => "context.instruction.update",
            Action::ContextInstructionDelete => "context.instruction.delete",
            Action::ContextGoldenAdd => "context.golden.add",
            Action::ContextGoldenList => "context.golden.list",
            Action::ContextGoldenDelete => "context.golden.delete",
            Action::ContextSearch => "context.search",
            Action::ContextScan => "context.scan",
            Action::NlSql => "nl.sql",
            Action::NlAnswer => "nl.answer",
            Action::NlEvaluate => "nl.evaluate",
            Action::NlPrompts => "nl.prompts",
            Action::NlGenerations => "nl.generations",
            Action::FinetuneExport => "finetune.export",
            Action::FinetuneCreate => "finetune.create",
            Action::FinetuneGet => "finetune.get",
            Action::FinetuneList => "finetune.list",
            Action::FinetuneCancel => "finetune.cancel",
            Action::FinetuneDelete => "finetune.delete",
        }
    }

    /// Looks an action up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Who may call it.
    pub fn permission(self) -> Permission {
        match self {
            Action::TokenCreate
            | Action::TokenRevoke
            | Action::TokenList
            | Action::Whoami
            | Action::TableList
            | Action::ArtifactList
            | Action::ArtifactGet
            | Action::ArtifactShare
            | Action::ArtifactDelete
            | Action::ArtifactExtend
            | Action::TableSample
            | Action::TableProfile
            | Action::TableDescribe
            | Action::QueryShape
            | Action::QueryRunning
            | Action::QueryCancel
            | Action::QueryExport
            | Action::JobGet
            | Action::JobList
            | Action::JobCancel
            | Action::ContextInstructionList
            | Action::ContextGoldenAdd
            | Action::ContextGoldenList
            | Action::ContextGoldenDelete
            | Action::ContextSearch
            | Action::NlSql
            | Action::NlAnswer
            | Action::NlEvaluate
            | Action::NlPrompts
            | Action::NlGenerations
            | Action::FinetuneExport
            | Action::FinetuneCreate
            | Action::FinetuneGet
            | Action::FinetuneList
            | Action::FinetuneCancel
            | Action::FinetuneDelete => Permission::Authenticated,
            Action::TableRegister
            | Action::TableRemove
            | Action::SyncStart
            | Action::SyncStatus
            | Action::SyncJobs
            | Action::SyncCancel
            | Action::SyncSchedule
            | Action::SyncWaitEpoch
            | Action::TableStatus
            | Action::SourcesListTables
            | Action::SourcesCreate
            | Action::SourcesList
            | Action::SourcesGet
            | Action::SourcesUpdate
            | Action::SourcesDelete
            | Action::SourcesTest
            | Action::GrantSet
            | Action::GrantGet
            | Action::GrantList
            | Action::GrantDelete
            | Action::Explain
            | Action::ContextDescribe
            | Action::ContextInstructionAdd
            | Action::ContextInstructionUpdate
            | Action::ContextInstructionDelete
            | Action::ContextScan => Permission::Admin,
        }
    }
}
