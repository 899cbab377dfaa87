use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use url::Url;

use crate::meta::DuckDbMetaStore;
use crate::sync::SnowflakeConfig;

async fn open(dir: &std::path::Path, key: Option<&str>) -> Arc<Connections> {
    let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir).unwrap()));
    let secrets = SecretBox::open(&dir.join("secrets"), key).unwrap();
    let mut sections = BTreeMap::new();
    sections.insert(
        "prod".to_string(),
        SnowflakeConfig {
            account: "acme".into(),
            user: "loader".into(),
            password_env: Some("PATH".into()),
            ..SnowflakeConfig::default()
        },
    );
    let config = SnowflakeConnections::from_config(&sections).unwrap();
    Connections::open(meta, secrets, config).await.unwrap()
}

fn snowflake(name: &str, password: &str) -> ConnectionRequest {
    ConnectionRequest {
        name: Some(name.into()),
        kind: Some(ConnectionKind::Snowflake),
        account: Some("acme".into()),
        user: Some("etl".into()),
        password: Some(password.into()),
        ..ConnectionRequest::default()
    }
}

fn lake(options: &[(&str, &str)]) -> ConnectionRequest {
    ConnectionRequest {
        name: Some("lake".into()),
        kind: Some(ConnectionKind::ObjectStore),
        url: Some("s3://lake/raw/".into()),
        options: Some(
            options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConnectionRequest::default()
    }
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let connections = open(dir.path(), None).await;
    let view = connections
        .create("admin:admin", snowflake("rt", "pw-4711"))
        .await
        .unwrap();
    assert_eq!(view.secrets_set, vec!["password"]);
    connections
        .create(
            "admin:admin",
            lake(&[
                ("aws_region", "eu-west-1"),
                ("aws_access_key_id", "AKIA-TEST"),
                ("AWS_SECRET_ACCESS_KEY", "sk-0815"),
            ]),
        )
        .await
        .unwrap();
    let listed = serde_json::to_string(&connections.list().await.unwrap()).unwrap();
    assert!(listed.contains("eu-west-1") && listed.contains("aws_secret_access_key"));
    for secret in ["pw-4711", "sk-0815"] {
        assert!(!listed.contains(secret), "{secret} in {listed}");
    }
    // Stored documents hold only sealed values.
    let records: Vec<serde_json::Value> = connections
        .meta
        .list(Collection::Connections)
        .await
        .unwrap();
    let stored = serde_json::to_string(&records).unwrap();
    assert!(!stored.contains("pw-4711") && !stored.contains("sk-0815"));
    assert!(stored.contains("v1:"));
    // Reopened with the same key file: the secrets open again.
    drop(connections);
    let connections = open(dir.path(), None).await;
    let options = connections
        .object_store_options("lake", "s3://lake/raw/2026/x.parquet")
        .unwrap();
    assert_eq!(options["aws_secret_access_key"], "sk-0815");
    assert!(connections.snowflake("rt").is_ok());
}

#[tokio::test]
async fn another_key_leaves_connections_listed_but_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let connections = open(dir.path(), None).await;
    connections
        .create("admin:admin", snowflake("rt", "pw"))
        .await
        .unwrap();
    drop(connections);
    let connections = open(dir.path(), Some(&"11".repeat(32))).await;
    let view = connections.get("rt").await.unwrap();
    assert!(view.error.unwrap().contains("cannot be decrypted"));
    let error = connections.snowflake("rt").unwrap_err().to_string();
    assert!(error.contains("cannot be used"), "{error}");
    // Setting the secret again repairs it.
    let repaired = connections
        .update(ConnectionRequest {
            name: Some("rt".into()),
            password: Some("new".into()),
            ..ConnectionRequest::default()
        })
        .await
        .unwrap();
    assert!(repaired.error.is_none());
    assert!(connections.snowflake("rt").is_ok());
}

#[tokio::test]
async fn config_names_are_read_only_and_names_unique() {
    let dir = tempfile::tempdir().unwrap();
    let connections = open(dir.path(), None).await;
    let taken = connections
        .create("admin:admin", snowflake("prod", "pw"))
        .await;
    assert!(matches!(taken, Err(ConnectionError::ReadOnly(_))));
    assert!(matches!(
        connections.delete("prod", &[]).await,
        Err(ConnectionError::ReadOnly(_))
    ));
    let prod = connections.get("prod").await.unwrap();
    assert!(prod.read_only && prod.origin == "config");
    assert_eq!(prod.secrets_set, vec!["password"]);
    connections
        .create("admin:admin", snowflake("rt", "pw"))
        .await
        .unwrap();
    assert!(matches!(
        connections
            .create("admin:admin", snowflake("rt", "pw"))
            .await,
        Err(ConnectionError::Exists(_))
    ));
    assert!(matches!(
        connections
            .create("admin:admin", snowflake("a b", "pw"))
            .await,
        Err(ConnectionError::Invalid(_))
    ));
    assert!(matches!(
        connections.delete("rt", &["sales.orders".into()]).await,
        Err(ConnectionError::InUse { .. })
    ));
    connections.delete("rt", &[]).await.unwrap();
    assert!(matches!(
        connections.delete("rt", &[]).await,
        Err(ConnectionError::NotFound(_))
    ));
    assert!(connections.snowflake("rt").is_err());
}

#[tokio::test]
async fn object_store_connections_serve_only_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let connections = open(dir.path(), None).await;
    connections
        .create("admin:admin", lake(&[("aws_region", "eu-west-1")]))
        .await
        .unwrap();
    assert!(
        connections
            .object_store_options("lake", "s3://lake/raw/a.csv")
            .is_ok()
    );
    for outside in [
        "s3://lake/other/a.csv",
        "s3://lakehouse/raw/a.csv",
        "gs://lake/raw/a.csv",
    ] {
        let error = connections
            .object_store_options("lake", outside)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not under"), "{outside}: {error}");
    }
    assert!(
        connections
            .object_store_options("prod", "s3://lake/raw/a.csv")
            .is_err()
    );
    // Wrong options are refused when saved.
    let mut bad = lake(&[("aws_no_such_option", "1")]);
    bad.name = Some("bad".into());
    assert!(matches!(
        connections.create("admin:admin", bad).await,
        Err(ConnectionError::Invalid(_))
    ));
    // Snowflake fields on an object store connection are refused.
    let mut mixed = lake(&[]);
    mixed.name = Some("mixed".into());
    mixed.password = Some("pw".into());
    assert!(matches!(
        connections.create("admin:admin", mixed).await,
        Err(ConnectionError::Invalid(_))
    ));
}

#[test]
fn roots_contain_only_their_own_paths() {
    let root = Url::parse("s3://lake/raw/").unwrap();
    assert!(is_under("s3://lake/raw/x/y.parquet", &root));
    assert!(is_under("s3://lake/raw", &root));
    assert!(!is_under("s3://lake/rawer/x", &root));
    let bucket = Url::parse("s3://lake").unwrap();
    assert!(is_under("s3://lake/any/x", &bucket));
}
