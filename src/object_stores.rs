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

/// Where a store's credentials may come from.
#[derive(Clone, Copy)]
pub enum StoreAccess<'a> {
    /// The server's own: the standard cloud variables, then these options
    /// (the config file's `[object_store]`).
    Server(&'a BTreeMap<String, String>),
    /// A runtime connection's: only these options, never the server's
    /// environment or files (an admin must not be able to point the
    /// server's credentials, or a file of its choosing, at a URL of its
    /// choosing).
    Connection(&'a BTreeMap<String, String>),
}

impl std::fmt::Debug for StoreAccess<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option names only: values may be secrets.
        let (kind, options) = match self {
            StoreAccess::Server(o) => ("Server", o),
            StoreAccess::Connection(o) => ("Connection", o),
        };
        f.debug_tuple(kind)
            .field(&options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The store a URL names, with credentials from `access`.
pub fn open_with(
    url: &Url,
    access: StoreAccess<'_>,
) -> Result<(Arc<dyn ObjectStore>, Path), StoreUrlError> {
    match access {
        StoreAccess::Server(options) => open(url, options),
        StoreAccess::Connection(options) => {
            if url.scheme() == "file" {
                return Err(StoreUrlError::Invalid {
                    reason: "a connection cannot serve file:// URLs; local files need none".into(),
                });
            }
            if let Some(key) = options.keys().find(|k| !connection_option(url.scheme(), k)) {
                return Err(StoreUrlError::Invalid {
                    reason: format!(
                        "'{key}' is not an option a {} connection may set",
                        url.scheme()
                    ),
                });
            }
            let (store, path) =
                object_store::parse_url_opts(url, options.clone()).map_err(|e| {
                    StoreUrlError::Invalid {
                        reason: e.to_string(),
                    }
                })?;
            Ok((Arc::from(store), path))
        }
    }
}

/// The options a runtime connection may set, per scheme: credentials
/// given inline, region, endpoint and transport settings. Options that
/// name a server file or command, or move where credentials are fetched
/// from (token files, service-account paths, CLI, metadata and identity
/// endpoints, authority hosts), are refused.
fn connection_option(scheme: &str, key: &str) -> bool {
    const CLIENT: &[&str] = &["allow_http", "timeout", "connect_timeout", "user_agent"];
    const S3: &[&str] = &[
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region",
        "aws_default_region",
        "aws_endpoint",
        "aws_endpoint_url",
        "aws_allow_http",
        "aws_virtual_hosted_style_request",
        "aws_skip_signature",
        "aws_request_payer",
        "aws_unsigned_payload",
        "aws_checksum_algorithm",
    ];
    const GCS: &[&str] = &["google_service_account_key"];
    const AZURE: &[&str] = &[
        "azure_storage_account_name",
        "azure_storage_account_key",
        "azure_storage_sas_key",
        "azure_storage_token",
        "azure_storage_client_id",
        "azure_storage_client_secret",
        "azure_storage_tenant_id",
        "azure_storage_endpoint",
        "azure_allow_http",
        "azure_use_fabric_endpoint",
    ];
    let allowed: &[&str] = match scheme {
        "s3" | "s3a" => S3,
        "gs" => GCS,
        "az" | "adl" | "azure" | "abfs" | "abfss" => AZURE,
        "http" | "https" => &[],
        _ => return false,
    };
    allowed.contains(&key) || CLIENT.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_set_only_inline_credentials_and_transport_options() {
        let s3 = Url::parse("s3://bucket/").unwrap();
        let options = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let fine = options(&[("aws_region", "eu-west-1"), ("allow_http", "true")]);
        assert!(open_with(&s3, StoreAccess::Connection(&fine)).is_ok());
        for (url, key) in [
            ("s3://bucket/", "aws_regoin"),
            ("s3://bucket/", "aws_metadata_endpoint"),
            ("s3://bucket/", "aws_container_credentials_relative_uri"),
            ("az://container/", "azure_federated_token_file"),
            ("az://container/", "azure_authority_host"),
            ("az://container/", "azure_use_azure_cli"),
            ("gs://bucket/", "google_service_account"),
            ("gs://bucket/", "google_application_credentials"),
        ] {
            let url = Url::parse(url).unwrap();
            let error = open_with(&url, StoreAccess::Connection(&options(&[(key, "x")])))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(key), "{key}: {error}");
        }
        let file = Url::parse("file:///etc/").unwrap();
        assert!(open_with(&file, StoreAccess::Connection(&BTreeMap::new())).is_err());
    }
}
