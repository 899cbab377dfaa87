//! Tests of the artifact service: visibility, names, restarts, expiry.

use std::collections::BTreeMap;

use datafusion::arrow::array::{BinaryArray, RecordBatch};

use super::*;
use crate::principal::TokenKind;

fn principal(kind: TokenKind, name: &str, swarm: Option<&str>) -> Principal {
    Principal::described(
        kind,
        swarm.map(str::to_string),
        name.into(),
        BTreeMap::new(),
    )
}

fn artifact(owner: &Principal, visibility: Visibility) -> Artifact {
    Artifact {
        id: "id1".into(),
        name: "a".into(),
        owner: Owner::of(owner),
        visibility,
        tags: vec![],
        created_at: Utc::now(),
        expires_at: Utc::now(),
        versions: vec![],
    }
}

#[test]
fn who_sees_an_artifact() {
    let a1 = principal(TokenKind::Agent, "a1", Some("emea"));
    let a2 = principal(TokenKind::Agent, "a2", Some("emea"));
    let swarm = principal(TokenKind::Swarm, "emea", Some("emea"));
    let other = principal(TokenKind::Agent, "a1", Some("apac"));
    let admin = principal(TokenKind::Admin, "admin", None);
    let private = artifact(&a1, Visibility::Private);
    assert!(visible_to(&a1, &private) && visible_to(&admin, &private));
    // Private means private: not the swarm's token, not a namesake elsewhere.
    for p in [&a2, &swarm, &other] {
        assert!(!visible_to(p, &private), "{}", p.label());
    }
    let shared = artifact(&a1, Visibility::Swarm);
    assert!(visible_to(&a2, &shared) && visible_to(&swarm, &shared));
    assert!(!visible_to(&other, &shared));
    assert!(require_owner(&a2, &shared).is_err());
    assert!(require_owner(&admin, &shared).is_ok());
}

#[test]
fn names_are_identifiers() {
    assert_eq!(check_name("EU_orders_q3").unwrap(), "eu_orders_q3");
    for bad in [
        "",
        "1abc",
        "a-b",
        "a.b",
        "a b",
        "__airlock_x",
        &"x".repeat(64),
    ] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_restart_removes_what_no_record_names() {
    use crate::meta::DuckDbMetaStore;
    use futures::stream;

    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
    let options = BTreeMap::new();
    let open = || {
        ArtifactService::open(
            meta.clone(),
            dir.path(),
            ArtifactSettings::default(),
            &options,
        )
    };
    let service = open().await.unwrap();
    let a1 = principal(TokenKind::Agent, "a1", Some("emea"));
    let schema = read::chunk_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(BinaryArray::from(vec![&b"kept"[..]]))],
    )
    .unwrap();
    let kept = service
        .upload(
            &a1,
            "kept",
            UploadOptions::default(),
            schema,
            stream::iter([Ok(batch)]),
        )
        .await
        .unwrap();
    drop(service);
    // What a crash mid-upload leaves: a whole object no record names,
    // and a local multipart staging file.
    let root = dir.path().join("artifacts/swarm/emea/lost");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("orphan.bin"), b"orphan").unwrap();
    std::fs::write(root.join("partial.bin#1"), b"partial").unwrap();
    let service = open().await.unwrap();
    assert!(!root.join("orphan.bin").exists());
    assert!(!root.join("partial.bin#1").exists());
    let object = dir.path().join("artifacts").join(&kept.version.object);
    assert_eq!(std::fs::read(object).unwrap(), b"kept");
    assert_eq!(service.get(&a1, "kept").unwrap().id, kept.artifact.id);
}

#[tokio::test]
async fn expired_artifacts_are_unreadable_then_removed() {
    use crate::meta::DuckDbMetaStore;
    use futures::stream;

    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
    let service = ArtifactService::open(
        meta,
        dir.path(),
        ArtifactSettings::default(),
        &BTreeMap::new(),
    )
    .await
    .unwrap();
    let a1 = principal(TokenKind::Agent, "a1", Some("emea"));
    let schema = read::chunk_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(BinaryArray::from(vec![&b"old"[..]]))],
    )
    .unwrap();
    let uploaded = service
        .upload(
            &a1,
            "old",
            UploadOptions::default(),
            schema,
            stream::iter([Ok(batch)]),
        )
        .await
        .unwrap();
    let object = dir.path().join("artifacts").join(&uploaded.version.object);
    assert!(object.exists());
    let mut expired = uploaded.artifact.clone();
    expired.expires_at = Utc::now() - chrono::Duration::seconds(1);
    {
        let _turn = service.commit.lock().await;
        service.store_record(expired).await.unwrap();
    }
    // Unreadable from the instant it expires…
    assert!(matches!(
        service.get(&a1, &uploaded.artifact.id),
        Err(ArtifactError::NotFound(_))
    ));
    assert!(
        service
            .download(&a1, &uploaded.artifact.id, None)
            .await
            .is_err()
    );
    // …and gone, record and object, when housekeeping runs.
    assert_eq!(service.remove_expired().await.unwrap(), 1);
    assert!(!object.exists());
    assert!(service.read_index().is_empty());
}
