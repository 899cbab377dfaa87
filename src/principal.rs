//! Who is calling: the [`Principal`] every request runs as, its
//! [`TokenKind`], and the rule for the names principals carry.
//!
//! A leaf module: `auth` produces principals, `policy`, `query`, `audit` and
//! the tools read them, and none of those need to know how a token is
//! checked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who a token speaks for.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Full control; from the password handshake.
    Admin,
    /// A group of agents; may mint agent tokens for itself.
    Swarm,
    /// One agent of a swarm; the least privileged kind, hence the default.
    #[default]
    Agent,
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenKind::Admin => "admin",
            TokenKind::Swarm => "swarm",
            TokenKind::Agent => "agent",
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    /// Admin, swarm or agent.
    pub kind: TokenKind,
    /// Id of the presented token (the JWT `jti`).
    pub token_id: String,
    /// Subject name.
    pub name: String,
    /// Swarm, for swarm and agent principals.
    pub swarm: Option<String>,
    /// Agent attributes given at token creation.
    pub attributes: BTreeMap<String, String>,
    /// When the presented token expires.
    pub expires_at: DateTime<Utc>,
}

/// A principal asked for something only admins may do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} needs an admin token (you are {kind} '{name}')")]
pub struct NotAdmin {
    /// What was asked for.
    pub what: String,
    /// The caller's kind.
    pub kind: TokenKind,
    /// The caller's name.
    pub name: String,
}

impl Principal {
    /// A principal described rather than authenticated (for `explain`).
    pub fn described(
        kind: TokenKind,
        swarm: Option<String>,
        name: String,
        attributes: BTreeMap<String, String>,
    ) -> Self {
        Self {
            token_id: format!("described:{kind}:{}:{name}", swarm.as_deref().unwrap_or("")),
            kind,
            name,
            swarm,
            attributes,
            expires_at: Utc::now(),
        }
    }

    /// Whether this principal is an admin.
    pub fn is_admin(&self) -> bool {
        self.kind == TokenKind::Admin
    }

    /// Fails unless the principal is an admin.
    pub fn require_admin(&self, what: &str) -> Result<(), NotAdmin> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(NotAdmin {
                what: what.to_string(),
                kind: self.kind,
                name: self.name.clone(),
            })
        }
    }

    /// A short description for logs and audit, e.g. `agent:a1@emea`.
    pub fn label(&self) -> String {
        match &self.swarm {
            Some(swarm) if self.kind == TokenKind::Agent => {
                format!("{}:{}@{}", self.kind, self.name, swarm)
            }
            _ => format!("{}:{}", self.kind, self.name),
        }
    }
}

/// The rule for swarm, agent and attribute names (grants name swarms and
/// agents too): 1-64 letters, digits, `_`, `-` or `.`; the error says so.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{name}' must be 1-64 characters of letters, digits, '_', '-' or '.'"
        ))
    }
}

/// A principal as the owner of something it made (an artifact, a job):
/// its kind, name and swarm, without its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Admin, swarm or agent.
    pub kind: TokenKind,
    /// Its name.
    pub name: String,
    /// Its swarm (none for admins).
    pub swarm: Option<String>,
}

impl Owner {
    /// The owner identity of a principal.
    pub fn of(principal: &Principal) -> Self {
        Self {
            kind: principal.kind,
            name: principal.name.clone(),
            swarm: principal.swarm.clone(),
        }
    }

    /// Whether `principal` is this owner.
    pub fn is(&self, principal: &Principal) -> bool {
        self.kind == principal.kind && self.name == principal.name && self.swarm == principal.swarm
    }

    /// `agent:a1@emea`, as principals label themselves.
    pub fn label(&self) -> String {
        match &self.swarm {
            Some(swarm) if self.kind == TokenKind::Agent => {
                format!("{}:{}@{}", self.kind, self.name, swarm)
            }
            _ => format!("{}:{}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(check_name("swarm", "emea-1.x_y").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name("swarm", bad).is_err(), "{bad:?}");
        }
        let agent = Principal::described(
            TokenKind::Agent,
            Some("emea".into()),
            "a1".into(),
            BTreeMap::new(),
        );
        assert_eq!(agent.label(), "agent:a1@emea");
        let err = agent.require_admin("grant.set").unwrap_err();
        assert_eq!(
            err.to_string(),
            "grant.set needs an admin token (you are agent 'a1')"
        );
    }
}
