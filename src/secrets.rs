//! Keys kept beside the metadata, never in it: the files of
//! `<data_dir>/secrets/` (owner-only) and the sealing of secrets stored in
//! the metadata (connection passwords, private keys, access keys).
//!
//! A sealed secret is `v1:` + base64(nonce ‖ XChaCha20-Poly1305 ciphertext)
//! under a 32-byte key from `AIRLOCK_SECRETS_KEY` or the file
//! `secrets/connections.key`, generated on first use. A copy of the
//! metadata alone (a backup, a Postgres dump) therefore reveals no secret,
//! and a tampered or foreign ciphertext fails to open instead of decoding
//! to garbage. A leaf module.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;

/// The file holding the sealing key, inside the secrets directory.
pub const KEY_FILE: &str = "connections.key";
const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

/// Why a key or a sealed secret is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Reading or writing a key file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A key that is not 32 bytes of hex or base64.
    #[error("{0} must hold 32 bytes as 64 hex digits or base64")]
    BadKey(String),
    /// A sealed value that does not open under this key.
    #[error(
        "a stored secret cannot be decrypted: it was sealed with another key or altered; \
         restore the key used to store it (AIRLOCK_SECRETS_KEY or secrets/{KEY_FILE}) or set the secret again"
    )]
    Unsealable,
}

/// Seals and opens secrets with one key.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox").finish_non_exhaustive()
    }
}

impl SecretBox {
    /// The key from `key` (the text of `AIRLOCK_SECRETS_KEY`) when given,
    /// else from `<dir>/connections.key`, created on first use.
    pub fn open(dir: &Path, key: Option<&str>) -> Result<Self, SecretsError> {
        let key = match key {
            Some(text) => {
                parse_key(text).ok_or_else(|| SecretsError::BadKey("AIRLOCK_SECRETS_KEY".into()))?
            }
            None => {
                let path = dir.join(KEY_FILE);
                let bytes = load_or_create_hex(&path, 32)?;
                bytes
                    .try_into()
                    .map_err(|_| SecretsError::BadKey(path.display().to_string()))?
            }
        };
        Ok(Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// A sealed form of `plain`, fit to store, bound to `context` (what
    /// it is the secret of): it opens only with the same context, so a
    /// sealed value copied into another record does not open there.
    pub fn seal(&self, context: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        // Encryption only fails for plaintexts beyond 256 GiB.
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", BASE64.encode(out))
    }

    /// The plain text of a value [`SecretBox::seal`] made for `context`.
    pub fn unseal(&self, context: &str, sealed: &str) -> Result<String, SecretsError> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| BASE64.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(SecretsError::Unsealable)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretsError::Unsealable)?;
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Unsealable)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Unsealable)
    }
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    decode_hex(text)
        .or_else(|| BASE64.decode(text).ok())
        .and_then(|bytes| bytes.try_into().ok())
}

/// The bytes of a hex key file, or `len` fresh random bytes written to a
/// new owner-only file. A file that does not hold at least `len` bytes of
/// hex is an error, never silently replaced: that would orphan whatever
/// the old key protected.
pub fn load_or_create_hex(path: &Path, len: usize) -> Result<Vec<u8>, SecretsError> {
    let io = |e: std::io::Error| SecretsError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if path.exists() {
        let hex = std::fs::read_to_string(path).map_err(io)?;
        return decode_hex(hex.trim())
            .filter(|s| s.len() >= len)
            .ok_or_else(|| SecretsError::BadKey(path.display().to_string()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut secret = vec![0u8; len];
    rand::rng().fill(secret.as_mut_slice());
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, hex.as_bytes()).map_err(io)?;
    Ok(secret)
}

/// Writes a new file readable by the owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || hex.is_empty() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let sealed_box = SecretBox::open(dir.path(), None).unwrap();
        let sealed = sealed_box.seal("c/password", "hunter2");
        assert!(sealed.starts_with("v1:") && !sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            sealed_box.seal("c/password", "hunter2"),
            "fresh nonce per seal"
        );
        // The key file persists: a second open reads the same key.
        let again = SecretBox::open(dir.path(), None).unwrap();
        assert_eq!(again.unseal("c/password", &sealed).unwrap(), "hunter2");
        // Bound to its context: moved to another record it does not open.
        assert!(again.unseal("d/password", &sealed).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = SecretBox::open(dir.path(), Some(&"ab".repeat(32))).unwrap();
        assert!(matches!(
            other.unseal("c/password", &sealed),
            Err(SecretsError::Unsealable)
        ));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(again.unseal("c/password", &tampered).is_err());
        assert!(again.unseal("c/password", "hunter2").is_err());
    }

    #[test]
    fn environment_keys_are_hex_or_base64_of_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "0f".repeat(32);
        let b64 = BASE64.encode([0x0f; 32]);
        let a = SecretBox::open(dir.path(), Some(&hex)).unwrap();
        let b = SecretBox::open(dir.path(), Some(&b64)).unwrap();
        assert_eq!(b.unseal("c", &a.seal("c", "x")).unwrap(), "x");
        assert!(SecretBox::open(dir.path(), Some("short")).is_err());
        assert!(
            !dir.path().join(KEY_FILE).exists(),
            "env key writes no file"
        );
    }
}
