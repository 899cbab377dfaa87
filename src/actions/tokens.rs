//! Token actions: `token.create`, `token.revoke`, `token.list` and `whoami`.
//!
//! Who may mint, revoke or see which token is decided by `auth`; this file
//! parses the bodies and shapes the answers. A token's secret appears in
//! one answer only: the [`IssuedTokenView`] of the `token.create` that
//! minted it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Actions, Empty, parse};
use crate::auth::{IssuedToken, TokenRecord, TokenRequest};
use crate::principal::{Principal, TokenKind};

/// The body of `token.revoke`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IdRequest {
    id: String,
}

/// `token.create`: the new token, its secret shown this once.
///
/// No `Debug`, so the secret cannot reach a log through `{:?}`.
#[derive(Serialize)]
pub(super) struct IssuedTokenView {
    id: String,
    token: String,
    kind: TokenKind,
    name: String,
    swarm: Option<String>,
    expires_at: DateTime<Utc>,
}

impl From<IssuedToken> for IssuedTokenView {
    fn from(issued: IssuedToken) -> Self {
        Self {
            id: issued.record.id,
            token: issued.token,
            kind: issued.record.kind,
            name: issued.record.name,
            swarm: issued.record.swarm,
            expires_at: issued.record.expires_at,
        }
    }
}

/// `token.revoke`: the token asked for and every id the call revoked.
#[derive(Debug, Serialize)]
pub(super) struct RevokedView {
    id: String,
    /// Always true: the token is revoked now, by this call or an earlier one.
    revoked: bool,
    revoked_at: Option<DateTime<Utc>>,
    /// Ids this call revoked (the token and those it created); empty when
    /// the token was revoked already.
    newly_revoked: Vec<String>,
}

/// One token as `token.list` shows it (never its secret).
#[derive(Debug, Serialize)]
pub(super) struct TokenView {
    id: String,
    kind: TokenKind,
    name: String,
    swarm: Option<String>,
    parent: Option<String>,
    attributes: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    /// Neither revoked nor expired, as of the call.
    active: bool,
}

impl From<TokenRecord> for TokenView {
    fn from(record: TokenRecord) -> Self {
        let active = record.revoked_at.is_none() && record.expires_at > Utc::now();
        Self {
            id: record.id,
            kind: record.kind,
            name: record.name,
            swarm: record.swarm,
            parent: record.parent,
            attributes: record.attributes,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            active,
        }
    }
}

/// `token.list`.
#[derive(Debug, Serialize)]
pub(super) struct TokenListView {
    tokens: Vec<TokenView>,
}

/// `whoami`: the calling principal.
#[derive(Debug, Serialize)]
pub(super) struct WhoamiView<'a> {
    kind: TokenKind,
    name: &'a str,
    swarm: Option<&'a str>,
    token_id: &'a str,
    expires_at: DateTime<Utc>,
    attributes: &'a BTreeMap<String, String>,
}

/// `whoami`: describes the caller.
pub(super) fn whoami<'a>(
    principal: &'a Principal,
    body: &[u8],
) -> Result<WhoamiView<'a>, ActionError> {
    let Empty {} = parse(Action::Whoami, body)?;
    Ok(WhoamiView {
        kind: principal.kind,
        name: &principal.name,
        swarm: principal.swarm.as_deref(),
        token_id: &principal.token_id,
        expires_at: principal.expires_at,
        attributes: &principal.attributes,
    })
}

impl Actions {
    /// `token.create`: mints a swarm or agent token.
    pub(super) async fn token_create(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<IssuedTokenView, ActionError> {
        let request: TokenRequest = parse(Action::TokenCreate, body)?;
        let issued = self.auth.create_token(principal, request).await?;
        Ok(issued.into())
    }

    /// `token.revoke`: revokes a token and the tokens it created.
    pub(super) async fn token_revoke(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<RevokedView, ActionError> {
        let IdRequest { id } = parse(Action::TokenRevoke, body)?;
        let outcome = self.auth.revoke_token(principal, &id).await?;
        Ok(RevokedView {
            id: outcome.record.id,
            revoked: true,
            revoked_at: outcome.record.revoked_at,
            newly_revoked: outcome.revoked,
        })
    }

    /// `token.list`: the tokens the caller may manage.
    pub(super) fn token_list(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<TokenListView, ActionError> {
        let Empty {} = parse(Action::TokenList, body)?;
        let tokens = self
            .auth
            .list_tokens(principal)
            .into_iter()
            .map(TokenView::from)
            .collect();
        Ok(TokenListView { tokens })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;

    fn record() -> TokenRecord {
        let created_at = Utc::now();
        TokenRecord {
            id: "t1".into(),
            kind: TokenKind::Agent,
            name: "a1".into(),
            swarm: Some("emea".into()),
            parent: None,
            attributes: BTreeMap::from([("region".into(), "EU".into())]),
            created_at,
            expires_at: created_at + Duration::hours(1),
            revoked_at: None,
        }
    }

    #[test]
    fn token_view_keeps_every_key_and_nulls() {
        let record = record();
        let view = serde_json::to_value(TokenView::from(record.clone())).unwrap();
        assert_eq!(
            view,
            json!({
                "id": "t1",
                "kind": "agent",
                "name": "a1",
                "swarm": "emea",
                "parent": null,
                "attributes": {"region": "EU"},
                "created_at": record.created_at,
                "expires_at": record.expires_at,
                "revoked_at": null,
                "active": true,
            })
        );
    }

    #[test]
    fn revoked_and_expired_tokens_are_inactive() {
        let mut revoked = record();
        revoked.revoked_at = Some(Utc::now());
        assert!(!TokenView::from(revoked).active);
        let mut expired = record();
        expired.expires_at = Utc::now() - Duration::seconds(1);
        assert!(!TokenView::from(expired).active);
    }

    #[test]
    fn whoami_shows_the_principal() {
        let principal = Principal::described(
            TokenKind::Swarm,
            Some("emea".into()),
            "emea".into(),
            BTreeMap::new(),
        );
        let view = serde_json::to_value(whoami(&principal, b"").unwrap()).unwrap();
        assert_eq!(
            view,
            json!({
                "kind": "swarm",
                "name": "emea",
                "swarm": "emea",
                "token_id": principal.token_id,
                "expires_at": principal.expires_at,
                "attributes": {},
            })
        );
    }
}
