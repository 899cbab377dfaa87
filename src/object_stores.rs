//! Opening an object store from a URL (`file://`, `s3://`, `gs://`,
//! `az://`, `http(s)://`), with credentials from the standard `AWS_*`,
//! `GOOGLE_*`, `AZURE_*` variables and options from the config file on top.
//! A leaf: sync sources and the artifact store both open stores this way.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use url::Url;

/// Why a URL gives no store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    /// A scheme object_store does not serve.
    #[error("unsupported URL scheme '{0}': use file://, s3://, gs://, az:// or https://")]
    UnsupportedScheme(String),
    /// The URL or its options are wrong.
    #[error("{reason}")]
    Invalid {
        /// What object_store said.
        reason: String,
    },
}

/// The store a URL names and the path within it the URL points at.
pub fn open(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, Path), StoreUrlError> {
    let env_prefixes = match url.scheme() {
        "file" => {
            let path = Path::from_url_path(url.path()).map_err(|e| StoreUrlError::Invalid {
                reason: e.to_string(),
            })?;
            return Ok((Arc::new(object_store::local::LocalFileSystem::new()), path));
        }
        "s3" | "s3a" => ["aws_"].as_slice(),
        "gs" => ["google_"].as_slice(),
        "az" | "adl" | "azure" | "abfs" | "abfss" => ["azure_"].as_slice(),
        "http" | "https" => [].as_slice(),
        other => return Err(StoreUrlError::UnsupportedScheme(other.to_string())),
    };
    // Standard cloud variables first, config options on top.
    let mut merged: BTreeMap<String, String> = std::env::vars()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| env_prefixes.iter().any(|p| k.starts_with(p)))
        .collect();
    merged.extend(
        options
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    let (store, path) =
        object_store::parse_url_opts(url, merged).map_err(|e| StoreUrlError::Invalid {
            reason: e.to_string(),
        })?;
    Ok((Arc::from(store), path))
}

/// The first of `options` that the store `url` names does not know (a
/// typo there would otherwise be ignored silently).
pub fn unknown_option<'a>(
    url: &Url,
    mut options: impl Iterator<Item = &'a String>,
) -> Option<String> {
    use std::str::FromStr;

    use object_store::ClientConfigKey;
    use object_store::aws::AmazonS3ConfigKey;
    use object_store::azure::AzureConfigKey;
    use object_store::gcp::GoogleConfigKey;

    let known = |key: &str| match url.scheme() {
        "s3" | "s3a" => AmazonS3ConfigKey::from_str(key).is_ok(),
        "gs" => GoogleConfigKey::from_str(key).is_ok(),
        "az" | "adl" | "azure" | "abfs" | "abfss" => AzureConfigKey::from_str(key).is_ok(),
        "http" | "https" => ClientConfigKey::from_str(key).is_ok(),
        _ => false,
    };
    options.find(|key| !known(key)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_against_the_store_kind() {
        let s3 = Url::parse("s3://bucket/").unwrap();
        let keys = ["aws_region".to_string(), "allow_http".to_string()];
        assert_eq!(unknown_option(&s3, keys.iter()), None);
        let typo = ["aws_regoin".to_string()];
        assert_eq!(unknown_option(&s3, typo.iter()), Some("aws_regoin".into()));
        let gs = Url::parse("gs://bucket/").unwrap();
        assert!(unknown_option(&gs, keys[..1].iter()).is_some());
    }
}
