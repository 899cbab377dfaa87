//! What ListActions says about each action: its body, its answer and its
//! errors, for a human or an agent reading the list.

use super::catalog::Action;

impl Action {
    /// What ListActions says about it.
    pub fn description(self) -> &'static str {
        match self {
            Action::TokenCreate => {
                "Mint a token. Body: {\"kind\":\"swarm\",\"name\":\"emea\",\"ttl_seconds\":86400} (admin) or \
                 {\"kind\":\"agent\",\"name\":\"a1\",\"attributes\":{\"region\":\"EU\"}} (admin with \"swarm\", or a swarm token for its own swarm). \
                 Returns {\"id\",\"token\",\"expires_at\"}; the token is shown only once."
            }
            Action::TokenRevoke => {
                "Revoke a token and every token it created. Body: {\"id\":\"…\"}. Admins revoke any token, a swarm its agents."
            }
            Action::TokenList => {
                "List the tokens you may manage (never their secrets). Body: empty or {}."
            }
            Action::Whoami => {
                "Describe the calling principal: kind, name, swarm, token id, expiry. Body: empty."
            }
            Action::TableRegister => {
                "Register a table (admin). Body: {\"name\":\"schema.table\",\"source\":\"file:///data/*.parquet\"} \
                 plus optional \"format\" (parquet|csv|json), \"csv\" {\"has_header\",\"delimiter\"}, \"primary_key\" [columns], \
                 \"strategy\" (full|incremental|append), \"cursor\" (column), \"overlap\" (\"10m\" or a number), \
                 \"on_schema_change\" (fail|full_refresh), \"every\" (\"15m\") or \"cron\" (\"0 */2 * * *\", UTC). \
                 The source is any object_store URL (file, s3, gs, az, https: one file, a directory ending in '/' or a glob) \
                 or snowflake://CONNECTION/DATABASE.SCHEMA.TABLE; a file source may add \"connection\" (a runtime object-store \
                 connection from sources.create). The source's columns are checked now."
            }
            Action::TableList => {
                "List tables: registrations with replica status for admins, queryable tables for others."
            }
            Action::TableRemove => {
                "Unregister a table and drop its replica (admin). Body: {\"name\":\"schema.table\"}."
            }
            Action::SyncStart => {
                "Start a sync of a registered table with its strategy (admin). Body: {\"table\":\"schema.table\"}. Returns {\"job_id\"}; \
                 if a sync of the table is already queued or running, returns that job with \"already_running\": true."
            }
            Action::SyncStatus => {
                "Status of a sync job (admin): state, rows, bytes, watermark before/after, error, attempt, timings. Body: {\"job_id\":\"…\"}."
            }
            Action::SyncJobs => {
                "List sync jobs, newest first (admin). Body: {} or {\"table\":\"schema.table\",\"state\":\"failed\",\"limit\":50,\
                 \"page_token\":\"…\"}. Returns {\"jobs\":[…],\"next_page_token\"}."
            }
            Action::SyncCancel => {
                "Cancel a queued or running sync job (admin); the replica keeps its previous version. Body: {\"job_id\":\"…\"}."
            }
            Action::SyncSchedule => {
                "Set or clear a table's schedule (admin). Body: {\"table\":\"schema.table\",\"every\":\"15m\"}, \
                 {\"table\":…,\"cron\":\"0 */2 * * *\"} (UTC) or {\"table\":…,\"clear\":true}. Returns the next run."
            }
            Action::SyncWaitEpoch => {
                "Wait until this node serves a table's epoch (admin; in a cluster, the epoch a sync published, \
                 from sync.status). Body: {\"table\":\"schema.table\",\"epoch\":7,\"timeout_ms\":30000}. \
                 Returns {\"table\",\"epoch\",\"node\"}; DEADLINE_EXCEEDED if not served in time."
            }
            Action::TableStatus => {
                "Freshness of a table (admin): rows and bytes on disk of the replica (bytes count once DuckDB checkpoints), last sync, last success, watermark, \
                 schedule and next run. Body: {\"name\":\"schema.table\"}."
            }
            Action::SourcesListTables => {
                "List the tables of a Snowflake schema with row counts and bytes (admin). \
                 Body: {\"connection\":\"prod\",\"database\":\"DB\",\"schema\":\"PUBLIC\"}."
            }
            Action::SourcesCreate => {
                "Create a connection at run time (admin); secrets are encrypted at rest and never shown again. Body: \
                 {\"name\":\"wh\",\"type\":\"snowflake\",\"account\":\"myorg-acct\",\"user\":\"LOADER\",\"password\":\"…\"} \
                 (or \"private_key\": PEM; optional role, warehouse, database, url) or \
                 {\"name\":\"lake\",\"type\":\"object_store\",\"url\":\"s3://bucket/\",\"options\":{\"aws_region\":\"eu-west-1\",\
                 \"aws_access_key_id\":\"…\",\"aws_secret_access_key\":\"…\"}}. Use it in table.register: \
                 snowflake://wh/DB.SCHEMA.TABLE, or a file source under its url with \"connection\":\"lake\"."
            }
            Action::SourcesList => {
                "List connections (admin): the config file's (read-only) and runtime ones, with their settings and which \
                 secrets are set, never their values. Body: empty or {}."
            }
            Action::SourcesGet => "Read one connection (admin). Body: {\"name\":\"wh\"}.",
            Action::SourcesUpdate => {
                "Change a runtime connection (admin): given fields replace stored ones; for options, \"\" removes a key. \
                 Body: {\"name\":\"wh\",\"password\":\"…\"}."
            }
            Action::SourcesDelete => {
                "Delete a runtime connection no registered table uses (admin). Body: {\"name\":\"wh\"}."
            }
            Action::SourcesTest => {
                "Try a connection (admin): logs in to Snowflake or lists the object store. Body: {\"name\":\"wh\"}, or \
                 unsaved settings as for sources.create. Answers {\"ok\",\"code\",\"message\",\"elapsed_ms\"}; codes: ok, \
                 invalid_uri, invalid_config, auth_failed, permission_denied, not_found, unreachable, secrets_unavailable, \
                 unexpected_response."
            }
            Action::GrantSet => {
                "Create or replace a grant (admin). Body: {\"swarm\":\"emea\",\"agent\":null,\"tables\":{\"sales.orders\":\
                 {\"row_filter\":\"region = agent_attr('region')\",\"columns\":{\"email\":{\"mask\":\"'***'\"},\"ssn\":\"deny\"}},\
                 \"sales.*\":{}},\"limits\":{\"max_rows\":10000,\"timeout_s\":30,\"max_concurrent\":4,\"per_minute\":600}}. \
                 Applies from the next query."
            }
            Action::GrantGet => {
                "Read a grant (admin). Body: {\"swarm\":\"emea\"} or {\"swarm\":\"emea\",\"agent\":\"a1\"}."
            }
            Action::GrantList => "List all grants (admin). Body: empty or {}.",
            Action::GrantDelete => {
                "Delete a grant (admin). Body: {\"swarm\":\"emea\"} or {\"swarm\":\"emea\",\"agent\":\"a1\"}."
            }
            Action::Explain => {
                "Show how a query runs for a principal, policies applied (admin). Body: {\"sql\":\"SELECT …\",\
                 \"as\":{\"token_id\":\"…\"}} or \"as\":{\"kind\":\"agent\",\"swarm\":\"emea\",\"name\":\"a1\",\"attributes\":{}}; \
                 without \"as\", for the caller. Optional \"grant\":{…} plans as if that grant (checked like grant.set, \
                 not stored) replaced the one with its key: a preview before grant.set. Returns the principal's access \
                 and the logical and physical plans."
            }
            Action::ArtifactList => {
                "List the artifacts you may read. Body (all optional): {\"tag\":\"q3\",\"owner\":\"a1\",                 \"visibility\":\"private|swarm\",\"name_prefix\":\"eu_\",\"created_after\":\"2026-01-01T00:00:00Z\",                 \"created_before\":\"…\",\"limit\":100,\"page_token\":\"…\"}."
            }
            Action::ArtifactGet => {
                "An artifact's metadata and a DoGet ticket (base64). Body: {\"id\":\"…\"} or {\"name\":\"eu_orders\"},                  optionally \"version\":N for an older version. Upload with DoPut, descriptor path [\"artifact\", name]."
            }
            Action::ArtifactShare => {
                "Change who may read your artifact. Body: {\"id\":\"…\",\"visibility\":\"private|swarm\"}."
            }
            Action::ArtifactDelete => {
                "Delete your artifact and all its versions. Body: {\"id\":\"…\"}."
            }
            Action::QueryExport => {
                "Write a query's result as an artifact, as a job. Body: {\"sql\":\"SELECT …\",\"format\":\"parquet|csv|jsonl\",\
                 \"name\":\"eu_orders\"}, optional \"visibility\", \"tags\", \"ttl_seconds\", \"wait\":true (answer when done). \
                 Answers the job; its result names the artifact, rows and bytes."
            }
            Action::JobGet => {
                "A job's state and progress (yours; admins: any, syncs too). Body: {\"job_id\":\"…\"}."
            }
            Action::JobList => {
                "List jobs (yours; admins: all). Body (optional): {\"kind\":\"export|sync\",\"state\":\"running\",\
                 \"limit\":50,\"page_token\":\"…\"}."
            }
            Action::JobCancel => {
                "Cancel a running job; a cancelled export leaves no artifact. Body: {\"job_id\":\"…\"}."
            }
            Action::TableProfile => {
                "Column statistics of a table as you see it (filtered rows, masked values). Body: \
                 {\"table\":\"sales.orders\"}, optional \"columns\":[…], \"sample\":N (rows) and \"top_k\":N (≤ 100). Per column: type, count, \
                 nulls, approx_distinct, min, max, mean, stddev, quartiles, string lengths, top values, histogram. \
                 In SQL: SELECT * FROM airlock.profile('sales.orders')."
            }
            Action::TableDescribe => {
                "One table you may query, as you see it: its columns with types, descriptions, categories and examples \
                 (from the last context.scan, computed through your policy), key guesses and the rules that apply. \
                 Body: {\"table\":\"sales.orders\"}."
            }
            Action::QueryShape => {
                "The shape of a query's plan as it would run for you: one operator per line (joins, aggregates, sorts, \
                 table scans) with no expressions. Body: {\"sql\":\"SELECT …\"}. Admins see the full plan with explain."
            }
            Action::QueryRunning => {
                "Queries streaming results now (yours; admins: all): query_id, principal, swarm, sql, started, \
                 seconds, rows and bytes so far. Body: empty or {}."
            }
            Action::QueryCancel => {
                "Stop a streaming query (yours; admins: any), from any front end. Body: {\"query_id\":\"…\"} \
                 (from query.running). Answers {\"cancelled\":true|false}."
            }
            Action::TableSample => {
                "A sample of the rows you may see. Body: {\"table\":\"sales.orders\",\"rows\":100} or \
                 {\"table\":…,\"fraction\":0.01,\"method\":\"bernoulli|system\"}, optional \"seed\":N and (with rows) \
                 \"stratify_by\":\"column\". Answers {\"table\",\"method\",\"seed\",\"sql\",\"ticket\"}: DoGet the ticket for the rows."
            }
            Action::ArtifactExtend => {
                "Set your artifact to expire ttl_seconds from now. Body: {\"id\":\"…\",\"ttl_seconds\":86400}."
            }
            Action::ContextDescribe => {
                "Describe a table and its columns (admin); an empty text removes a description. Body: \
                 {\"table\":\"sales.orders\",\"description\":\"One row per order\",\"columns\":{\"amount\":\"Net of refunds, EUR\"}}. \
                 Principals see descriptions only of tables and columns they may query."
            }
            Action::ContextInstructionAdd => {
                "Add a business rule for writing SQL (admin), global or about some tables. Body: \
                 {\"text\":\"Revenue excludes cancelled orders\",\"tables\":[\"sales.orders\"]}. Shown only to principals \
                 who may query every table it names, and only with context about those tables."
            }
            Action::ContextInstructionList => {
                "List the business rules you may see. Body (optional): {\"table\":\"sales.orders\"} for the rules that apply to it."
            }
            Action::ContextInstructionUpdate => {
                "Change a business rule (admin). Body: {\"id\":\"…\",\"text\":\"…\"} and/or \"tables\":[…]."
            }
            Action::ContextInstructionDelete => {
                "Delete a business rule (admin). Body: {\"id\":\"…\"}."
            }
            Action::ContextGoldenAdd => {
                "Store a question with the SQL that answers it; the SQL is planned as you first. Admins add pairs for everyone \
                 (or \"swarm\":\"…\"), others for their own swarm. Body: {\"question\":\"Revenue per region last quarter?\",\
                 \"sql\":\"SELECT …\"}. Shown only to principals who may read every table and column it reads."
            }
            Action::ContextGoldenList => "List the golden SQL you may see. Body: empty or {}.",
            Action::ContextGoldenDelete => {
                "Delete golden SQL: admins any, others their swarm's. Body: {\"id\":\"…\"}."
            }
            Action::ContextScan => {
                "Scan tables (admin), as a job: per column the null fraction, distinct estimate, categories (every value \
                 of a column with at most 100) and examples, and primary- and foreign-key guesses. Body: {} for every table \
                 or {\"tables\":[\"demo.orders\"]}, optional \"wait\":true. Principals see categories and examples computed \
                 from the rows and values they may read."
            }
            Action::NlSql => {
                "Generate SQL for a question with the configured model, from the context you may see; the SQL is planned and run \
                 under your policy, and errors are fed back to the model (bounded attempts). Body: {\"question\":\"Revenue per region?\"}, \
                 optional \"provider\", \"model\" (e.g. a fine-tuned one), \"k\", \"self_check\":true. Answers the generation: \
                 id, sql, status (valid|invalid), error, attempts, tokens, latency_ms, confidence and its checks."
            }
            Action::NlAnswer => {
                "Run SQL under your policy and ask the model for a short answer grounded in the rows (at most max_rows, default 50, \
                 ≤ 200, shown to the model). Body: {\"generation_id\":\"…\"} or {\"sql\":\"SELECT …\",\"question\":\"…\"}, optional \"provider\"."
            }
            Action::NlEvaluate => {
                "Evaluate generation on the golden SQL you may see, as a job: each question is answered by nl.sql with its own pair held \
                 out, and rows are compared with the golden SQL's (order-insensitive unless it orders). Body: {} or \
                 {\"provider\":\"…\",\"golden_ids\":[…],\"wait\":true}. The job's result: accuracy, per-question outcomes, attempts, tokens."
            }
            Action::NlPrompts => {
                "Prompts sent for your nl.sql calls (admins: all). Body: {} or {\"limit\":50,\"page_token\":\"…\"} or {\"id\":\"…\"}."
            }
            Action::NlGenerations => {
                "Your nl.sql generations (admins: all), oldest first. Body: {} or {\"limit\":50,\"page_token\":\"…\",\
                 \"newest_first\":true} or {\"id\":\"…\"}."
            }
            Action::FinetuneExport => {
                "Write the golden SQL you may see as a chat-format JSONL artifact (system: the schema context, user: the question, \
                 assistant: the SQL). Body: {\"name\":\"golden_jsonl\"}, optional \"golden_ids\", \"visibility\"."
            }
            Action::FinetuneCreate => {
                "Fine-tune a model on the golden SQL you may see, through the provider's files and fine-tuning API, as a job that \
                 polls until the provider is done. Body: {} or {\"provider\",\"base_model\",\"golden_ids\",\"suffix\"}. \
                 Answers the fine-tune; finetune.get shows its status and, once succeeded, fine_tuned_model for nl.sql's \"model\"."
            }
            Action::FinetuneGet => {
                "A fine-tune of yours (admins: any): provider status, fine_tuned_model, error. Body: {\"id\":\"…\"}."
            }
            Action::FinetuneList => {
                "Your fine-tunes (admins: all). Body: {} or {\"limit\",\"page_token\"}."
            }
            Action::FinetuneCancel => {
                "Cancel a running fine-tune (at the provider too). Body: {\"id\":\"…\"}."
            }
            Action::FinetuneDelete => {
                "Forget an ended fine-tune and delete its training file at the provider. Body: {\"id\":\"…\"}."
            }
            Action::ContextSearch => {
                "The context most relevant to a question, from what you may query: tables with their columns and \
                 descriptions, the rules that apply, and similar golden SQL, ranked by BM25. Body: \
                 {\"question\":\"revenue by region\",\"k\":5}."
            }
        }
    }
}
