//! Keeping secrets out of messages, listings, logs and the audit: source
//! URLs lose their credentials, JSON bodies lose the values of keys that
//! may hold secrets. A leaf module: `sync`, `audit` and the front ends all
//! use it, and it uses nothing of theirs.

use url::Url;

/// A source URL fit for messages and listings: user, password and (for
/// HTTP, where presigned URLs carry signatures there) the query are removed.
pub fn url(source: &str) -> String {
    match Url::parse(source) {
        Ok(mut url) if url.scheme() != "file" => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            if matches!(url.scheme(), "http" | "https") && url.query().is_some() {
                url.set_query(Some("redacted"));
            }
            // libpq-style URLs may carry `?password=…`.
            if url.scheme().starts_with("postgres") {
                url.set_query(None);
            }
            url.to_string()
        }
        _ => source.to_string(),
    }
}

/// Whether a setting or JSON key of this name may hold a secret
/// (`password`, `aws_secret_access_key`, `private_key`, `token`, …).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key", "credential"]
        .iter()
        .any(|s| key.contains(s))
}

/// An action's JSON body for the audit: values of keys that may hold
/// secrets are replaced, and source URLs lose their credentials.
pub fn json_body(body: &[u8]) -> Option<String> {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if is_secret_key(key) {
                        *value = serde_json::Value::String("[redacted]".into());
                    } else if let serde_json::Value::String(text) = value
                        && text.contains("://")
                    {
                        *text = url(text);
                    } else {
                        walk(value);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if body.is_empty() {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    walk(&mut value);
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_lose_secrets_and_url_credentials() {
        let body = br#"{"name": "s.t", "source": "s3://AKIAXXX:hunter2@bucket/x.parquet",
            "password": "pw", "options": {"aws_secret_access_key": "k", "region": "eu"},
            "nested": [{"token": "eyJ..."}]}"#;
        let redacted = json_body(body).unwrap();
        for secret in ["hunter2", "AKIAXXX", "\"pw\"", "\"k\"", "eyJ"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(
            redacted.contains("s.t") && redacted.contains("eu"),
            "{redacted}"
        );
        assert_eq!(json_body(b""), None);
        assert_eq!(json_body(b"\x08\x01"), None);
    }

    #[test]
    fn urls_lose_credentials_and_signatures() {
        assert_eq!(
            url("https://user:pw@host/x.csv?X-Amz-Signature=abc"),
            "https://host/x.csv?redacted"
        );
        assert_eq!(
            url("s3://bucket/part-?.parquet"),
            "s3://bucket/part-?.parquet"
        );
        assert_eq!(url("/data/x.csv"), "/data/x.csv");
        assert_eq!(
            url("postgres://airlock:pw@db:5432/meta?password=pw2&sslmode=require"),
            "postgres://db:5432/meta"
        );
    }
}
