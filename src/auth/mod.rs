//! Authentication: who is calling, and which tokens they may mint or revoke.
//!
//! Every call presents credentials in the `authorization` header:
//! a bearer token (JWT), Basic `admin:<password>`, or Basic
//! `token:<jwt>`. [`Authenticator::authenticate`] turns them into a
//! [`Principal`]; the Flight handshake ([`Authenticator::handshake`])
//! additionally mints an admin session token for a password login.

mod credentials;
mod password;
mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use credentials::{Credentials, TOKEN_USER, basic_authorization, parse_authorization};
pub use password::{AdminPassword, Initialized};
pub use token::{IssuedToken, NewToken, TokenRecord, TokenService};

use crate::meta::MetaError;
use crate::principal::check_name;
use crate::principal::{Principal, TokenKind};

/// The only password user.
pub const ADMIN_USER: &str = "admin";

/// Authentication and token-permission failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error(
        "no credentials: log in with the Flight handshake (Basic admin:<password>) \
         or send 'authorization: Bearer <token>'"
    )]
    MissingCredentials,
    /// The header could not be parsed.
    #[error("malformed authorization header: {0}")]
    MalformedHeader(&'static str),
    /// Wrong user or password.
    #[error("invalid user or password")]
    BadPassword,
    /// A password on a call other than the handshake.
    #[error(
        "a password is accepted only in the Flight handshake; send the bearer token it returns \
         ('authorization: Bearer <token>', or Basic with user 'token')"
    )]
    PasswordOutsideHandshake,
    /// Signature, format or claims are wrong.
    #[error("invalid token: it is malformed or was not issued by this server")]
    InvalidToken,
    /// Past its expiry.
    #[error("token expired: ask for a new one (token.create, or the handshake for admins)")]
    Expired,
    /// Revoked by an admin or its swarm.
    #[error("token revoked")]
    Revoked,
    /// Signature fine but no record (purged, or from a wiped server).
    #[error("token unknown to this server: it was purged after expiry or the server was reset")]
    UnknownToken,
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// A token request is invalid.
    #[error("invalid token request: {0}")]
    InvalidRequest(String),
    /// A token id does not exist (or is not visible to the caller).
    #[error("no token with id '{0}'")]
    NotFound(String),
    /// Only admins may do this.
    #[error("permission denied: {0}")]
    NotAdmin(#[from] crate::principal::NotAdmin),
    /// Storage failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// This node may have missed revocations: it has not heard the
    /// cluster's change feed for a while.
    #[error(
        "this node has been cut off from the cluster's change feed for {seconds} s and cannot \
         confirm that the token is still valid; retry on another node"
    )]
    Unconfirmed {
        /// Seconds since the feed was lost.
        seconds: u64,
    },
    /// A bug or environment problem.
    #[error("internal authentication error: {0}")]
    Internal(String),
}

/// The principal a token record stands for.
pub(crate) fn principal_of_record(record: &TokenRecord) -> Principal {
    Principal {
        kind: record.kind,
        token_id: record.id.clone(),
        name: record.name.clone(),
        swarm: record.swarm.clone(),
        attributes: record.attributes.clone(),
        expires_at: record.expires_at,
    }
}

/// What `token.create` asks for.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `swarm` or `agent`.
    pub kind: TokenKind,
    /// Swarm or agent name.
    pub name: String,
    /// For agents created by an admin: the swarm they join.
    #[serde(default)]
    pub swarm: Option<String>,
    /// Lifetime in seconds; defaults to the configured default.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Agent attributes (e.g. `{"region": "EU"}`), used by row filters.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Token lifetimes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of the bearer token an admin gets from the handshake.
    #[serde(with = "crate::duration_text")]
    pub admin_session_ttl: Duration,
    /// Lifetime of swarm and agent tokens when `ttl_seconds` is not given.
    #[serde(with = "crate::duration_text")]
    pub default_token_ttl: Duration,
    /// Longest lifetime `token.create` grants.
    #[serde(with = "crate::duration_text")]
    pub max_token_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_session_ttl: Duration::from_secs(12 * 3600),
            default_token_ttl: Duration::from_secs(7 * 24 * 3600),
            max_token_ttl: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Checks credentials and applies the rules of who may mint and revoke what.
#[derive(Debug)]
pub struct Authenticator {
    tokens: Arc<TokenService>,
    password: AdminPassword,
    config: AuthConfig,
}

impl Authenticator {
    /// Builds an authenticator.
    pub fn new(tokens: Arc<TokenService>, password: AdminPassword, config: AuthConfig) -> Self {
        Self {
            tokens,
            password,
            config,
        }
    }

    /// The principal a token stands for, from its record (for `explain`).
    pub fn principal_of(&self, token_id: &str) -> Option<Principal> {
        self.tokens.get(token_id).as_ref().map(principal_of_record)
    }

    /// The token service (for listing and housekeeping).
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Authenticates an ordinary call.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let credentials = parse_authorization(header.ok_or(AuthError::MissingCredentials)?)?;
        match credentials {
            Credentials::Token(token) => self.tokens.verify(&token).await,
            // Argon2 is expensive on purpose; checking it on every call would
            // hand anyone a way to burn the server's CPU.
            Credentials::Password { .. } => Err(AuthError::PasswordOutsideHandshake),
        }
    }

    /// Authenticates a handshake and returns the bearer token the client
    /// should use from now on: a new admin session token for a password,
    /// or the presented token itself.
    pub async fn handshake(&self, header: Option<&str>) -> Result<(Principal, String), AuthError> {
        let credentials = parse_authorization(header.ok_or(AuthError::MissingCredentials)?)?;
        match credentials {
            Credentials::Token(token) => {
                let principal = self.tokens.verify(&token).await?;
                Ok((principal, token))
            }
            Credentials::Password { user, password } => {
                self.check_password(&user, &password).await?;
                let issued = self
                    .tokens
                    .issue(NewToken {
                        kind: TokenKind::Admin,
                        name: ADMIN_USER.to_string(),
                        swarm: None,
                        parent: None,
                        attributes: BTreeMap::new(),
                        ttl: self.config.admin_session_ttl,
                        not_after: None,
                    })
                    .await?;
                Ok((principal_of_record(&issued.record), issued.token))
            }
        }
    }

    async fn check_password(&self, user: &str, password: &str) -> Result<(), AuthError> {
        // Verify even for a wrong user name so both fail in the same time.
        let ok = self.password.verify(password).await?;
        if ok && user == ADMIN_USER {
            Ok(())
        } else {
            Err(AuthError::BadPassword)
        }
    }

    /// `token.create`: admins mint swarm and agent tokens; a swarm mints
    /// agent tokens for itself; agents mint nothing.
    pub async fn create_token(
        &self,
        caller: &Principal,
        request: TokenRequest,
    ) -> Result<IssuedToken, AuthError> {
        validate_name("name", &request.name)?;
        let ttl = self.ttl(request.ttl_seconds)?;
        let (swarm, not_after) = match (caller.kind, request.kind) {
            (_, TokenKind::Admin) => {
                return Err(AuthError::Forbidden(
                    "admin tokens come only from the password handshake".into(),
                ));
            }
            (TokenKind::Agent, _) => {
                return Err(AuthError::Forbidden("agents cannot create tokens".into()));
            }
            (TokenKind::Swarm, TokenKind::Swarm) => {
                return Err(AuthError::Forbidden(
                    "a swarm token can create agent tokens only; ask an admin for swarm tokens"
                        .into(),
                ));
            }
            (TokenKind::Admin, TokenKind::Swarm) => {
                if request.swarm.as_ref().is_some_and(|s| s != &request.name) {
                    return Err(AuthError::InvalidRequest(
                        "for a swarm token, 'name' is the swarm; omit 'swarm'".into(),
                    ));
                }
                (request.name.clone(), None)
            }
            (TokenKind::Admin, TokenKind::Agent) => {
                let swarm = request.swarm.clone().ok_or_else(|| {
                    AuthError::InvalidRequest(
                        "an admin creating an agent token must name its 'swarm'".into(),
                    )
                })?;
                validate_name("swarm", &swarm)?;
                (swarm, None)
            }
            (TokenKind::Swarm, TokenKind::Agent) => {
                let own = caller.swarm.clone().unwrap_or_default();
                if request.swarm.as_ref().is_some_and(|s| s != &own) {
                    return Err(AuthError::Forbidden(format!(
                        "a swarm token can create agents only in its own swarm '{own}'"
                    )));
                }
                // Attributes feed row filters, so only admins set them: a
                // swarm choosing its agents' attributes could choose their
                // rows. Its agents inherit the swarm token's attributes.
                if !request.attributes.is_empty() {
                    return Err(AuthError::Forbidden(
                        "only admins set attributes; an agent inherits its swarm token's".into(),
                    ));
                }
                // An agent never outlives the swarm token that made it.
                (own, Some(caller.expires_at))
            }
        };
        let attributes = if caller.kind == TokenKind::Swarm {
            caller.attributes.clone()
        } else {
            request.attributes
        };
        for (key, value) in &attributes {
            validate_name("attribute name", key)?;
            if value.len() > 1024 {
                return Err(AuthError::InvalidRequest(format!(
                    "attribute '{key}' is longer than 1024 bytes"
                )));
            }
        }
        self.tokens
            .issue(NewToken {
                kind: request.kind,
                name: request.name,
                swarm: Some(swarm),
                // Revoking a swarm token takes the agents it minted with it.
                // Admin sessions are not parents: logging out must not
                // revoke every token an admin created.
                parent: (caller.kind == TokenKind::Swarm).then(|| caller.token_id.clone()),
                attributes,
                ttl,
                not_after,
            })
            .await
    }

    /// `token.revoke`: admins revoke anything; a swarm revokes its own
    /// agents (and itself).
    pub async fn revoke_token(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<RevokeOutcome, AuthError> {
        let record = self
            .tokens
            .get(id)
            .filter(|r| self.may_manage(caller, r))
            .ok_or_else(|| AuthError::NotFound(id.to_string()))?;
        let revoked = self.tokens.revoke(&record.id).await?;
        let record = self.tokens.get(id).unwrap_or(record);
        Ok(RevokeOutcome { record, revoked })
    }

    /// `token.list`: what the caller may manage.
    pub fn list_tokens(&self, caller: &Principal) -> Vec<TokenRecord> {
        self.tokens
            .list()
            .into_iter()
            .filter(|r| self.may_manage(caller, r))
            .collect()
    }

    fn may_manage(&self, caller: &Principal, record: &TokenRecord) -> bool {
        match caller.kind {
            TokenKind::Admin => true,
            TokenKind::Swarm => {
                record.id == caller.token_id
                    || (record.kind == TokenKind::Agent && record.swarm == caller.swarm)
            }
            TokenKind::Agent => record.id == caller.token_id,
        }
    }

    fn ttl(&self, seconds: Option<u64>) -> Result<Duration, AuthError> {
        let ttl = seconds.map_or(self.config.default_token_ttl, Duration::from_secs);
        if ttl.is_zero() {
            return Err(AuthError::InvalidRequest(
                "ttl_seconds must be positive".into(),
            ));
        }
        if ttl > self.config.max_token_ttl {
            return Err(AuthError::InvalidRequest(format!(
                "ttl_seconds {} exceeds the maximum of {} (auth.max_token_ttl)",
                ttl.as_secs(),
                self.config.max_token_ttl.as_secs()
            )));
        }
        Ok(ttl)
    }
}

/// What `token.revoke` did.
#[derive(Debug, Clone)]
pub struct RevokeOutcome {
    /// The token asked for, after revocation.
    pub record: TokenRecord,
    /// Ids newly revoked (the token and those it created).
    pub revoked: Vec<String>,
}

fn validate_name(what: &str, name: &str) -> Result<(), AuthError> {
    check_name(what, name).map_err(AuthError::InvalidRequest)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::prelude::BASE64_STANDARD_NO_PAD;

    use super::*;
    use crate::meta::{DuckDbMetaStore, Meta};

    async fn authenticator(dir: &std::path::Path) -> Authenticator {
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir).unwrap()));
        let tokens = TokenService::open(meta.clone(), &dir.join("secrets"), None)
            .await
            .unwrap();
        let password = AdminPassword::initialize(&meta, Some("pw"))
            .await
            .unwrap()
            .password;
        Authenticator::new(tokens, password, AuthConfig::default())
    }

    fn basic(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            BASE64_STANDARD_NO_PAD.encode(format!("{user}:{pw}"))
        )
    }

    #[tokio::test]
    async fn handshake_issues_admin_session_usable_as_bearer_and_basic_token() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path()).await;
        let (principal, token) = auth.handshake(Some(&basic("admin", "pw"))).await.unwrap();
        assert!(principal.is_admin());
        let again = auth
            .authenticate(Some(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(again.token_id, principal.token_id);
        let via_basic = auth
            .authenticate(Some(&basic(TOKEN_USER, &token)))
            .await
            .unwrap();
        assert_eq!(via_basic.token_id, principal.token_id);
        assert!(matches!(
            auth.handshake(Some(&basic("admin", "wrong"))).await,
            Err(AuthError::BadPassword)
        ));
        assert!(matches!(
            auth.handshake(Some(&basic("root", "pw"))).await,
            Err(AuthError::BadPassword)
        ));
        assert!(matches!(
            auth.authenticate(None).await,
            Err(AuthError::MissingCredentials)
        ));
    }

    #[tokio::test]
    async fn who_may_mint_what() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path()).await;
        let (admin, _) = auth.handshake(Some(&basic("admin", "pw"))).await.unwrap();
        let swarm_req = TokenRequest {
            kind: TokenKind::Swarm,
            name: "emea".into(),
            ttl_seconds: Some(600),
            ..TokenRequest::default()
        };
        let swarm = auth.create_token(&admin, swarm_req.clone()).await.unwrap();
        let swarm_p = auth.tokens().verify(&swarm.token).await.unwrap();

        // A swarm mints agents in itself, not elsewhere, not swarms.
        let agent = auth
            .create_token(
                &swarm_p,
                TokenRequest {
                    kind: TokenKind::Agent,
                    name: "a1".into(),
                    ttl_seconds: Some(3600),
                    ..TokenRequest::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(agent.record.swarm.as_deref(), Some("emea"));
        assert!(
            agent.record.expires_at <= swarm.record.expires_at,
            "agent outlives its swarm token"
        );
        let elsewhere = TokenRequest {
            kind: TokenKind::Agent,
            name: "a2".into(),
            swarm: Some("apac".into()),
            ..TokenRequest::default()
        };
        assert!(matches!(
            auth.create_token(&swarm_p, elsewhere).await,
            Err(AuthError::Forbidden(_))
        ));
        assert!(matches!(
            auth.create_token(&swarm_p, swarm_req.clone()).await,
            Err(AuthError::Forbidden(_))
        ));
        let agent_p = auth.tokens().verify(&agent.token).await.unwrap();
        assert!(matches!(
            auth.create_token(&agent_p, swarm_req).await,
            Err(AuthError::Forbidden(_))
        ));
        // An admin must name the swarm of an agent.
        let no_swarm = TokenRequest {
            kind: TokenKind::Agent,
            name: "a3".into(),
            ..TokenRequest::default()
        };
        assert!(matches!(
            auth.create_token(&admin, no_swarm).await,
            Err(AuthError::InvalidRequest(_))
        ));
        // Names and lifetimes are checked.
        let bad_name = TokenRequest {
            kind: TokenKind::Swarm,
            name: "a b".into(),
            ..TokenRequest::default()
        };
        assert!(matches!(
            auth.create_token(&admin, bad_name).await,
            Err(AuthError::InvalidRequest(_))
        ));
        let too_long = TokenRequest {
            kind: TokenKind::Swarm,
            name: "x".into(),
            ttl_seconds: Some(u64::MAX / 4),
            ..TokenRequest::default()
        };
        assert!(matches!(
            auth.create_token(&admin, too_long).await,
            Err(AuthError::InvalidRequest(_))
        ));

        // Visibility: the swarm sees itself and its agent; the agent only itself.
        assert_eq!(auth.list_tokens(&swarm_p).len(), 2);
        assert_eq!(auth.list_tokens(&agent_p).len(), 1);
        // An agent cannot revoke its swarm, and gets not-found (no probing).
        assert!(matches!(
            auth.revoke_token(&agent_p, &swarm_p.token_id).await,
            Err(AuthError::NotFound(_))
        ));
        let outcome = auth
            .revoke_token(&swarm_p, &agent_p.token_id)
            .await
            .unwrap();
        assert_eq!(outcome.revoked, vec![agent_p.token_id.clone()]);
        assert!(matches!(
            auth.tokens().verify(&agent.token).await,
            Err(AuthError::Revoked)
        ));
    }
}
