//! Writing and reading the records of the context store: descriptions,
//! business rules and golden SQL, each checked before it is stored and
//! filtered by the caller's catalog when read.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use serde::Deserialize;

use super::records::{GoldenSql, Instruction, TableNotes};
use super::{ContextError, ContextService, check_text, parse_table};
use crate::meta::{Collection, Expect, Labels};
use crate::principal::Principal;
use crate::table_name::TableName;

/// `context.describe`: set (or, with an empty text, clear) a table's
/// description and its columns' descriptions.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeRequest {
    /// `schema.table`.
    pub table: String,
    /// The table's description.
    #[serde(default)]
    pub description: Option<String>,
    /// Column → description.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

/// `context.instruction.add` and `.update`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstructionRequest {
    /// The instruction to change (update only).
    #[serde(default)]
    pub id: Option<String>,
    /// The rule.
    #[serde(default)]
    pub text: Option<String>,
    /// The tables it is about; omitted or empty for a global rule.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

/// `context.golden.add`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GoldenRequest {
    /// The question.
    pub question: String,
    /// The SQL that answers it.
    pub sql: String,
    /// For admins: the swarm it belongs to (none: everyone's).
    #[serde(default)]
    pub swarm: Option<String>,
}

impl ContextService {
    /// Sets descriptions of a table and its columns (admin); an empty text
    /// removes one. The table and columns must exist.
    pub async fn describe(
        &self,
        principal: &Principal,
        request: DescribeRequest,
    ) -> Result<TableNotes, ContextError> {
        let name = parse_table(&request.table)?;
        let visible = self.visible(principal);
        let Some(columns) = visible.get(&name) else {
            return Err(ContextError::NotFound(format!(
                "table '{name}' does not exist; register and sync it first (table.list shows the tables)"
            )));
        };
        if let Some(unknown) = request
            .columns
            .keys()
            .find(|c| !columns.iter().any(|(n, _)| n == *c))
        {
            return Err(ContextError::BadRequest(format!(
                "table '{name}' has no column '{unknown}'"
            )));
        }
        for text in request.description.iter().chain(request.columns.values()) {
            check_text("description", text, true)?;
        }
        let _writing = self.writing.lock().await;
        let mut notes = self
            .read()
            .notes
            .get(&name.to_string())
            .cloned()
            .unwrap_or_else(|| TableNotes {
                table: name.to_string(),
                ..TableNotes::default()
            });
        if let Some(description) = request.description {
            notes.description = (!description.trim().is_empty()).then_some(description);
        }
        for (column, description) in request.columns {
            if description.trim().is_empty() {
                notes.columns.remove(&column);
            } else {
                notes.columns.insert(column, description);
            }
        }
        notes.updated_at = Utc::now();
        notes.updated_by = principal.label();
        let key = name.to_string();
        self.meta
            .put_if(
                Collection::ContextTables,
                &key,
                &notes,
                Labels::new(),
                Expect::Any,
            )
            .await?;
        let stored = notes.clone();
        self.changed(|state| {
            state.notes.insert(key, stored);
        });
        Ok(notes)
    }

    /// Table notes `principal` may see, optionally of one table.
    pub fn descriptions(&self, principal: &Principal, table: Option<&str>) -> Vec<TableNotes> {
        let visible = self.visible(principal);
        self.read()
            .notes
            .values()
            .filter(|n| table.is_none_or(|t| n.table == t))
            .filter_map(|n| n.seen_by(&visible))
            .collect()
    }

    /// Adds a business rule (admin).
    pub async fn instruction_add(
        &self,
        principal: &Principal,
        request: InstructionRequest,
    ) -> Result<Instruction, ContextError> {
        if request.id.is_some() {
            return Err(ContextError::BadRequest(
                "a new instruction gets its id from airlock; leave \"id\" out".into(),
            ));
        }
        let text = request.text.ok_or_else(|| {
            ContextError::BadRequest("missing \"text\": the rule, in words".into())
        })?;
        check_text("text", &text, false)?;
        let tables = self
            .existing_tables(principal, &request.tables.unwrap_or_default())?
            .iter()
            .map(ToString::to_string)
            .collect();
        let now = Utc::now();
        let instruction = Instruction {
            id: uuid::Uuid::new_v4().to_string(),
            text,
            tables,
            created_at: now,
            updated_at: now,
            updated_by: principal.label(),
        };
        let _writing = self.writing.lock().await;
        self.store_instruction(&instruction, Expect::Absent).await?;
        Ok(instruction)
    }

    /// Changes a rule's text or tables (admin).
    pub async fn instruction_update(
        &self,
        principal: &Principal,
        request: InstructionRequest,
    ) -> Result<Instruction, ContextError> {
        let id = request
            .id
            .ok_or_else(|| ContextError::BadRequest("missing \"id\" of the instruction".into()))?;
        let tables = match request.tables {
            Some(tables) => Some(
                self.existing_tables(principal, &tables)?
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
            None => None,
        };
        if let Some(text) = &request.text {
            check_text("text", text, false)?;
        }
        let _writing = self.writing.lock().await;
        let mut instruction = self
            .read()
            .instructions
            .get(&id)
            .cloned()
            .ok_or_else(|| ContextError::NotFound(format!("no instruction '{id}'")))?;
        if let Some(text) = request.text {
            instruction.text = text;
        }
        if let Some(tables) = tables {
            instruction.tables = tables;
        }
        instruction.updated_at = Utc::now();
        instruction.updated_by = principal.label();
        self.store_instruction(&instruction, Expect::Any).await?;
        Ok(instruction)
    }

    async fn store_instruction(
        &self,
        instruction: &Instruction,
        expect: Expect,
    ) -> Result<(), ContextError> {
        self.meta
            .put_if(
                Collection::Instructions,
                &instruction.id,
                instruction,
                Labels::new(),
                expect,
            )
            .await?;
        let stored = instruction.clone();
        self.changed(|state| {
            state.instructions.insert(stored.id.clone(), stored);
        });
        Ok(())
    }

    /// Rules `principal` may see, optionally only global ones and those
    /// naming one table.
    pub fn instructions(
        &self,
        principal: &Principal,
        table: Option<&str>,
    ) -> Result<Vec<Instruction>, ContextError> {
        let visible = self.visible(principal);
        let about = table.map(parse_table).transpose()?;
        Ok(self
            .read()
            .instructions
            .values()
            .filter(|i| i.visible_to(&visible))
            .filter(|i| about.as_ref().is_none_or(|t| i.mentions(t)))
            .cloned()
            .collect())
    }

    /// Deletes a rule (admin).
    pub async fn instruction_delete(&self, id: &str) -> Result<(), ContextError> {
        let _writing = self.writing.lock().await;
        if !self.meta.delete(Collection::Instructions, id).await? {
            return Err(ContextError::NotFound(format!("no instruction '{id}'")));
        }
        self.changed(|state| {
            state.instructions.remove(id);
        });
        Ok(())
    }

    /// Stores a question and its SQL after planning the SQL as the caller:
    /// admins add pairs for everyone (or for one swarm), a swarm's
    /// principals for their swarm.
    pub async fn golden_add(
        &self,
        principal: &Principal,
        request: GoldenRequest,
    ) -> Result<GoldenSql, ContextError> {
        check_text("question", &request.question, false)?;
        let swarm = if principal.is_admin() {
            request.swarm
        } else {
            if request.swarm.is_some() && request.swarm != principal.swarm {
                return Err(ContextError::Forbidden(
                    "golden SQL can be added only for your own swarm".into(),
                ));
            }
            principal.swarm.clone()
        };
        let planned = self.query.plan(principal, &request.sql).await?;
        let reads: BTreeMap<String, BTreeSet<String>> = planned
            .columns_by_table()
            .into_iter()
            .map(|(t, c)| (t.to_string(), c))
            .collect();
        if reads.is_empty() {
            return Err(ContextError::BadRequest(
                "the SQL reads no table: golden SQL answers a question from the data".into(),
            ));
        }
        let golden = GoldenSql {
            id: uuid::Uuid::new_v4().to_string(),
            question: request.question,
            sql: request.sql,
            reads,
            swarm,
            created_at: Utc::now(),
            created_by: principal.label(),
        };
        let _writing = self.writing.lock().await;
        self.meta
            .put_if(
                Collection::GoldenSql,
                &golden.id,
                &golden,
                Labels::new(),
                Expect::Absent,
            )
            .await?;
        let stored = golden.clone();
        self.changed(|state| {
            state.golden.insert(stored.id.clone(), stored);
        });
        Ok(golden)
    }

    /// Golden pairs `principal` may see.
    pub fn golden(&self, principal: &Principal) -> Vec<GoldenSql> {
        let visible = self.visible(principal);
        let hidden = self.hidden(principal);
        self.read()
            .golden
            .values()
            .filter(|g| g.visible_to(principal, &visible, &hidden))
            .cloned()
            .collect()
    }

    /// Deletes a golden pair: admins any, a swarm's principals their
    /// swarm's. One the caller may not see does not exist for it.
    pub async fn golden_delete(&self, principal: &Principal, id: &str) -> Result<(), ContextError> {
        let visible = self.visible(principal);
        let hidden = self.hidden(principal);
        let _writing = self.writing.lock().await;
        let golden = self
            .read()
            .golden
            .get(id)
            .filter(|g| g.visible_to(principal, &visible, &hidden))
            .cloned()
            .ok_or_else(|| ContextError::NotFound(format!("no golden SQL '{id}'")))?;
        if !golden.deletable_by(principal) {
            return Err(ContextError::Forbidden(format!(
                "golden SQL '{id}' belongs to {}; only admins may delete it",
                golden
                    .swarm
                    .as_deref()
                    .map_or("everyone".to_string(), |s| format!("swarm '{s}'"))
            )));
        }
        self.meta.delete(Collection::GoldenSql, id).await?;
        self.changed(|state| {
            state.golden.remove(id);
        });
        Ok(())
    }

    /// Table names that exist for `principal` (an admin: every table),
    /// normalized; an unknown one is refused.
    pub(super) fn existing_tables(
        &self,
        principal: &Principal,
        tables: &[String],
    ) -> Result<Vec<TableName>, ContextError> {
        let visible = self.visible(principal);
        let mut out = Vec::new();
        for table in tables {
            let name = parse_table(table)?;
            if !visible.contains_key(&name) {
                return Err(ContextError::NotFound(format!(
                    "table '{name}' does not exist; table.list shows the tables"
                )));
            }
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }
}
