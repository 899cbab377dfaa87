//! The admin password: kept only as an Argon2 hash in the metadata store.
//!
//! On start, `AIRLOCK_ADMIN_PASSWORD` (if set) becomes the password. Without
//! it, an existing hash is kept; on the very first start a random password is
//! generated and handed back once so the caller can print it.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::Semaphore;

use super::AuthError;
use crate::meta::{Collection, Meta};

const HASH_KEY: &str = "admin_password_hash";
const GENERATED_LEN: usize = 24;

/// Password checks running at once: Argon2 takes tens of milliseconds and
/// 19 MiB each, so a flood of logins waits here instead of taking the CPU.
const CONCURRENT_CHECKS: usize = 2;

/// The verified admin password hash.
#[derive(Clone)]
pub struct AdminPassword {
    hash: String,
    checks: Arc<Semaphore>,
}

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminPassword(<hash>)")
    }
}

/// The outcome of [`AdminPassword::initialize`].
#[derive(Debug)]
pub struct Initialized {
    /// The password to verify against.
    pub password: AdminPassword,
    /// A password generated on first start, to print once; `None` otherwise.
    pub generated: Option<String>,
}

impl AdminPassword {
    /// Sets up the password from the environment value or the stored hash,
    /// generating one if there is neither.
    pub async fn initialize(meta: &Meta, from_env: Option<&str>) -> Result<Initialized, AuthError> {
        let stored: Option<String> = meta.get(Collection::Settings, HASH_KEY).await?;
        if let Some(password) = from_env.filter(|p| !p.is_empty()) {
            if let Some(hash) = stored.filter(|h| verify_blocking_ok(password, h)) {
                return Ok(Initialized {
                    password: AdminPassword::new(hash),
                    generated: None,
                });
            }
            let hash = hash_password(password)?;
            meta.put(Collection::Settings, HASH_KEY, &hash).await?;
            return Ok(Initialized {
                password: AdminPassword::new(hash),
                generated: None,
            });
        }
        if let Some(hash) = stored {
            return Ok(Initialized {
                password: AdminPassword::new(hash),
                generated: None,
            });
        }
        let generated: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(GENERATED_LEN)
            .map(char::from)
            .collect();
        let hash = hash_password(&generated)?;
        meta.put(Collection::Settings, HASH_KEY, &hash).await?;
        Ok(Initialized {
            password: AdminPassword::new(hash),
            generated: Some(generated),
        })
    }

    fn new(hash: String) -> Self {
        Self {
            hash,
            checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
        }
    }

    /// Checks a password. Argon2 is deliberately slow, so this runs on the
    /// blocking pool rather than stalling a gRPC worker.
    pub async fn verify(&self, password: &str) -> Result<bool, AuthError> {
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(format!("password check: {e}")))?;
        let hash = self.hash.clone();
        let password = password.to_string();
        tokio::task::spawn_blocking(move || verify_blocking_ok(&password, &hash))
            .await
            .map_err(|e| AuthError::Internal(format!("password check failed: {e}")))
    }
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| AuthError::Internal(format!("salt encoding: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("password hashing: {e}")))
}

fn verify_blocking_ok(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DuckDbMetaStore;

    #[tokio::test]
    async fn first_start_generates_then_keeps_then_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));

        let first = AdminPassword::initialize(&meta, None).await.unwrap();
        let generated = first.generated.clone().expect("generated on first start");
        assert_eq!(generated.len(), GENERATED_LEN);
        assert!(first.password.verify(&generated).await.unwrap());
        // Only the hash is stored.
        let stored: String = meta
            .get(Collection::Settings, HASH_KEY)
            .await
            .unwrap()
            .unwrap();
        assert!(!stored.contains(&generated));
        assert!(stored.starts_with("$argon2"));

        let second = AdminPassword::initialize(&meta, None).await.unwrap();
        assert!(second.generated.is_none());
        assert!(second.password.verify(&generated).await.unwrap());

        let third = AdminPassword::initialize(&meta, Some("from-env"))
            .await
            .unwrap();
        assert!(third.password.verify("from-env").await.unwrap());
        assert!(!third.password.verify(&generated).await.unwrap());
        // And the env password persists without the env.
        let fourth = AdminPassword::initialize(&meta, None).await.unwrap();
        assert!(fourth.password.verify("from-env").await.unwrap());
    }
}
