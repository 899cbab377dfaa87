//! Tokens: signed JWTs backed by durable records.
//!
//! A token is an HS256 JWT carrying its id (`jti`), kind, subject, swarm and
//! expiry. The signature proves airlock issued it; the record in the
//! metadata store (mirrored in memory) is what makes it valid *now*: a token
//! whose record is missing or revoked is refused on every call, so
//! revocation takes effect at once and survives restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::meta::{Cache, Collection, Meta, MetaError};
use crate::principal::{Principal, TokenKind};

const ISSUER: &str = "airlock";
const SECRET_FILE: &str = "jwt.key";
const MIN_SECRET_LEN: usize = 32;
/// How long a node may miss the cluster's change feed and still accept
/// tokens (a revocation may be among what it missed).
const MAX_FEED_LAG: Duration = Duration::from_secs(5);

/// The durable record of an issued token. The token text itself is never
/// stored: whoever holds it proves possession by its signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique id, also the JWT `jti`.
    pub id: String,
    /// Kind.
    pub kind: TokenKind,
    /// Subject name (swarm name for swarms, agent name for agents).
    pub name: String,
    /// Swarm the token belongs to (none for admins).
    pub swarm: Option<String>,
    /// Id of the token that created this one.
    pub parent: Option<String>,
    /// Agent attributes, used by row filters.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    jti: String,
    sub: String,
    kind: TokenKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    swarm: Option<String>,
    iss: String,
    iat: i64,
    exp: i64,
}

/// A request to mint a token, already validated by the caller's permissions.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Kind.
    pub kind: TokenKind,
    /// Subject name.
    pub name: String,
    /// Swarm.
    pub swarm: Option<String>,
    /// Creating token's id.
    pub parent: Option<String>,
    /// Agent attributes.
    pub attributes: BTreeMap<String, String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Expire no later than this (an agent never outlives its swarm token).
    pub not_after: Option<DateTime<Utc>>,
}

/// A freshly minted token: the only moment its text exists on the server.
#[derive(Clone)]
pub struct IssuedToken {
    /// The record as stored.
    pub record: TokenRecord,
    /// The JWT to hand to the client.
    pub token: String,
}

// Hand-written so the token text can never reach a log through `{:?}`.
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("record", &self.record)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Signs, verifies, records and revokes tokens.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    meta: Meta,
    records: RwLock<HashMap<String, TokenRecord>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").finish_non_exhaustive()
    }
}

impl TokenService {
    /// Loads token records and the signing secret (from `secret`, or the
    /// file `<secrets_dir>/jwt.key`, generated on first start).
    pub async fn open(
        meta: Meta,
        secrets_dir: &Path,
        secret: Option<&[u8]>,
    ) -> Result<Arc<Self>, AuthError> {
        let secret = match secret {
            Some(s) if s.len() >= MIN_SECRET_LEN => s.to_vec(),
            Some(_) => {
                return Err(AuthError::Internal(format!(
                    "AIRLOCK_JWT_SECRET must be at least {MIN_SECRET_LEN} bytes"
                )));
            }
            None => load_or_create_secret(secrets_dir)?,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "jti"]);
        validation.leeway = 5;
        let records: Vec<TokenRecord> = meta.list(Collection::Tokens).await?;
        let records = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(Arc::new(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            meta,
            records: RwLock::new(records),
        }))
    }

    /// Mints a token and stores its record before handing it out.
    pub async fn issue(&self, new: NewToken) -> Result<IssuedToken, AuthError> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(new.ttl)
            .map_err(|_| AuthError::Internal("token lifetime out of range".into()))?;
        let record = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind: new.kind,
            name: new.name,
            swarm: new.swarm,
            parent: new.parent,
            attributes: new.attributes,
            created_at: now,
            expires_at: new
                .not_after
                .map_or(now + ttl, |limit| limit.min(now + ttl)),
            revoked_at: None,
        };
        let claims = Claims {
            jti: record.id.clone(),
            sub: record.name.clone(),
            kind: record.kind,
            swarm: record.swarm.clone(),
            iss: ISSUER.to_string(),
            iat: now.timestamp(),
            exp: record.expires_at.timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("token signing failed: {e}")))?;
        self.meta
            .put(Collection::Tokens, &record.id, &record)
            .await?;
        self.write_records()
            .insert(record.id.clone(), record.clone());
        Ok(IssuedToken { record, token })
    }

    /// Checks a token's signature, expiry and record; returns its principal.
    /// A record this node has not seen yet (issued on another node a moment
    /// ago) is read from the store, once the signature has proved that
    /// airlock issued the token.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // A node cut off from the cluster's changes may hold a revoked
        // token as valid: past a short outage it refuses rather than guess.
        if let Some(lag) = self.meta.feed_lag()
            && lag > MAX_FEED_LAG
        {
            return Err(AuthError::Unconfirmed {
                seconds: lag.as_secs(),
            });
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::InvalidToken,
            })?
            .claims;
        match self.check(&claims) {
            Err(AuthError::UnknownToken) => {
                self.refresh_record(&claims.jti).await?;
                self.check(&claims)
            }
            checked => checked,
        }
    }

    /// Checks verified claims against the records in memory.
    fn check(&self, claims: &Claims) -> Result<Principal, AuthError> {
        let records = self.read_records();
        let record = records.get(&claims.jti).ok_or(AuthError::UnknownToken)?;
        // A token whose creator was revoked is revoked too, even if it was
        // minted while the revocation was cascading.
        let mut current = Some(record);
        while let Some(r) = current {
            if r.revoked_at.is_some() {
                return Err(AuthError::Revoked);
            }
            current = r.parent.as_ref().and_then(|p| records.get(p));
        }
        if record.expires_at <= Utc::now() {
            return Err(AuthError::Expired);
        }
        // The record is authoritative; a mismatch means the token was forged
        // with a leaked key or the record was edited — refuse either way.
        if record.kind != claims.kind || record.swarm != claims.swarm || record.name != claims.sub {
            return Err(AuthError::InvalidToken);
        }
        Ok(super::principal_of_record(record))
    }

    /// Looks up a record.
    pub fn get(&self, id: &str) -> Option<TokenRecord> {
        self.read_records().get(id).cloned()
    }

    /// All records, newest first.
    pub fn list(&self) -> Vec<TokenRecord> {
        let mut all: Vec<TokenRecord> = self.read_records().values().cloned().collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all
    }

    /// Revokes a token and every token it created (recursively), returning
    /// the ids newly revoked. Already revoked tokens are left as they are.
    pub async fn revoke(&self, id: &str) -> Result<Vec<String>, AuthError> {
        let now = Utc::now();
        let to_revoke: Vec<TokenRecord> = {
            let records = self.read_records();
            let mut ids = vec![id.to_string()];
            let mut i = 0;
            while i < ids.len() {
                let parent = ids[i].clone();
                ids.extend(
                    records
                        .values()
                        .filter(|r| r.parent.as_deref() == Some(parent.as_str()))
                        .map(|r| r.id.clone()),
                );
                i += 1;
            }
            ids.iter()
                .filter_map(|id| records.get(id))
                .filter(|r| r.revoked_at.is_none())
                .cloned()
                .collect()
        };
        let mut revoked = Vec::with_capacity(to_revoke.len());
        for mut record in to_revoke {
            record.revoked_at = Some(now);
            // Durable first: a crash between the two leaves it revoked on disk.
            self.meta
                .put(Collection::Tokens, &record.id, &record)
                .await?;
            revoked.push(record.id.clone());
            self.write_records().insert(record.id.clone(), record);
        }
        Ok(revoked)
    }

    /// Forgets records that expired more than `grace` ago.
    pub async fn purge_expired(&self, grace: Duration) -> Result<usize, AuthError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        let expired: Vec<String> = self
            .read_records()
            .values()
            .filter(|r| r.expires_at < cutoff)
            .map(|r| r.id.clone())
            .collect();
        for id in &expired {
            self.meta.delete(Collection::Tokens, id).await?;
            self.write_records().remove(id);
        }
        Ok(expired.len())
    }

    /// Reads one record from the store into memory (or forgets it).
    async fn refresh_record(&self, id: &str) -> Result<(), MetaError> {
        match self.meta.get::<TokenRecord>(Collection::Tokens, id).await? {
            Some(record) => self.write_records().insert(id.to_string(), record),
            None => self.write_records().remove(id),
        };
        Ok(())
    }

    fn read_records(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TokenRecord>> {
        // The map is only ever replaced entry by entry; a panic elsewhere
        // cannot leave it half-updated, so a poisoned lock is still sound.
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_records(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, TokenRecord>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }
}

// Other nodes issue and revoke tokens: a change they announce replaces
// this node's copy of the record.
#[async_trait::async_trait]
impl Cache for TokenService {
    fn name(&self) -> &'static str {
        "tokens"
    }

    fn collections(&self) -> &'static [Collection] {
        &[Collection::Tokens]
    }

    async fn refresh(&self, _: Collection, key: Option<&str>) -> Result<(), MetaError> {
        match key {
            Some(id) => self.refresh_record(id).await,
            None => {
                let records: Vec<TokenRecord> = self.meta.list(Collection::Tokens).await?;
                *self.write_records() = records.into_iter().map(|r| (r.id.clone(), r)).collect();
                Ok(())
            }
        }
    }
}

fn load_or_create_secret(dir: &Path) -> Result<Vec<u8>, AuthError> {
    crate::secrets::load_or_create_hex(&dir.join(SECRET_FILE), MIN_SECRET_LEN).map_err(|e| {
        AuthError::Internal(match e {
            crate::secrets::SecretsError::BadKey(path) => format!(
                "{path} is not a valid secret; delete it to generate a new one (all tokens become invalid)"
            ),
            other => other.to_string(),
        })
    })
}

#[cfg(test)]
mod tests;
