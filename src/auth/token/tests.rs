//! Tokens: issuing, verifying, revoking, across restarts and nodes.

use super::*;
use crate::meta::DuckDbMetaStore;

async fn service(dir: &Path) -> Arc<TokenService> {
    let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir).unwrap()));
    TokenService::open(meta, &dir.join("secrets"), None)
        .await
        .unwrap()
}

fn swarm(name: &str, ttl: Duration) -> NewToken {
    NewToken {
        kind: TokenKind::Swarm,
        name: name.into(),
        swarm: Some(name.into()),
        parent: None,
        attributes: BTreeMap::new(),
        ttl,
        not_after: None,
    }
}

#[tokio::test]
async fn a_token_issued_or_revoked_on_one_node_counts_on_the_others() {
    use crate::meta::{PgMetaStore, test_postgres::TestPostgres};
    let postgres = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = b"a secret every node of the cluster shares";
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store = PgMetaStore::open(&postgres.url()).await.unwrap();
        let meta = Meta::new(Arc::new(store));
        let tokens = TokenService::open(meta.clone(), dir.path(), Some(secret))
            .await
            .unwrap();
        let follower = meta.follow(vec![Arc::downgrade(&tokens) as std::sync::Weak<dyn Cache>]);
        assert!(follower.is_some(), "a shared store announces changes");
        nodes.push(tokens);
    }
    let issued = nodes[0]
        .issue(swarm("emea", Duration::from_secs(3600)))
        .await
        .unwrap();
    // At once: the other node reads a record it has not seen yet.
    assert_eq!(
        nodes[1].verify(&issued.token).await.unwrap().token_id,
        issued.record.id
    );
    nodes[0].revoke(&issued.record.id).await.unwrap();
    let started = std::time::Instant::now();
    while nodes[1].verify(&issued.token).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the revocation did not reach the other node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        nodes[1].verify(&issued.token).await,
        Err(AuthError::Revoked)
    ));
}

/// A node's store that has not heard the cluster's feed for a while.
#[derive(Debug)]
struct CutOff(Arc<DuckDbMetaStore>);

#[async_trait::async_trait]
impl crate::meta::MetaStore for CutOff {
    async fn put_raw(
        &self,
        collection: Collection,
        key: &str,
        doc: String,
        labels: crate::meta::Labels,
        expect: crate::meta::Expect,
    ) -> Result<u64, MetaError> {
        self.0.put_raw(collection, key, doc, labels, expect).await
    }
    async fn get_raw(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<crate::meta::RawDoc>, MetaError> {
        self.0.get_raw(collection, key).await
    }
    async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError> {
        self.0.delete(collection, key).await
    }
    async fn list_raw(
        &self,
        collection: Collection,
        query: &crate::meta::ListQuery,
    ) -> Result<Vec<crate::meta::RawDoc>, MetaError> {
        self.0.list_raw(collection, query).await
    }
    fn fenced(self: Arc<Self>, _term: u64) -> Arc<dyn crate::meta::MetaStore> {
        self
    }
    fn feed_lag(&self) -> Option<Duration> {
        Some(Duration::from_secs(12))
    }
}

#[tokio::test]
async fn a_node_cut_off_from_the_feed_refuses_tokens_it_cannot_confirm() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DuckDbMetaStore::open(dir.path()).unwrap());
    let current = TokenService::open(
        Meta::new(Arc::clone(&store) as Arc<dyn crate::meta::MetaStore>),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let issued = current
        .issue(swarm("emea", Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(current.verify(&issued.token).await.is_ok());
    let cut_off = TokenService::open(Meta::new(Arc::new(CutOff(store))), dir.path(), None)
        .await
        .unwrap();
    let refused = cut_off.verify(&issued.token).await.unwrap_err();
    assert!(
        matches!(refused, AuthError::Unconfirmed { seconds: 12 }),
        "{refused}"
    );
    assert!(refused.to_string().contains("retry on another node"));
}

#[tokio::test]
async fn issue_verify_revoke_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (swarm_token, agent_token, agent_id) = {
        let tokens = service(dir.path()).await;
        let s = tokens
            .issue(swarm("emea", Duration::from_secs(3600)))
            .await
            .unwrap();
        let principal = tokens.verify(&s.token).await.unwrap();
        assert_eq!(principal.kind, TokenKind::Swarm);
        assert_eq!(principal.swarm.as_deref(), Some("emea"));
        let a = tokens
            .issue(NewToken {
                kind: TokenKind::Agent,
                name: "a1".into(),
                swarm: Some("emea".into()),
                parent: Some(s.record.id.clone()),
                attributes: BTreeMap::from([("region".into(), "EU".into())]),
                ttl: Duration::from_secs(60),
                not_after: None,
            })
            .await
            .unwrap();
        assert_eq!(
            tokens.verify(&a.token).await.unwrap().attributes["region"],
            "EU"
        );
        (s.token, a.token, a.record.id)
    };
    // Same secret and records after a restart.
    let tokens = service(dir.path()).await;
    assert!(tokens.verify(&agent_token).await.is_ok());
    let swarm_id = tokens.verify(&swarm_token).await.unwrap().token_id;
    let revoked = tokens.revoke(&swarm_id).await.unwrap();
    assert_eq!(revoked.len(), 2, "the swarm's agent goes with it");
    assert!(revoked.contains(&agent_id));
    assert!(matches!(
        tokens.verify(&swarm_token).await,
        Err(AuthError::Revoked)
    ));
    // Revocation is durable.
    let tokens = service(dir.path()).await;
    assert!(matches!(
        tokens.verify(&agent_token).await,
        Err(AuthError::Revoked)
    ));
}

#[tokio::test]
async fn expired_forged_and_foreign_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = service(dir.path()).await;
    let short = tokens
        .issue(swarm("s", Duration::from_secs(0)))
        .await
        .unwrap();
    // Expiry equals issue time: the record check refuses it even within leeway.
    assert!(matches!(
        tokens.verify(&short.token).await,
        Err(AuthError::Expired)
    ));

    let ok = tokens
        .issue(swarm("s", Duration::from_secs(60)))
        .await
        .unwrap();
    let mut forged = ok.token.clone();
    forged.pop();
    forged.push(if ok.token.ends_with('A') { 'B' } else { 'A' });
    assert!(matches!(
        tokens.verify(&forged).await,
        Err(AuthError::InvalidToken)
    ));
    assert!(matches!(
        tokens.verify("not-a-jwt").await,
        Err(AuthError::InvalidToken)
    ));

    // A token signed by another server's key does not verify here.
    let other_dir = tempfile::tempdir().unwrap();
    let other = service(other_dir.path()).await;
    let foreign = other
        .issue(swarm("s", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(matches!(
        tokens.verify(&foreign.token).await,
        Err(AuthError::InvalidToken)
    ));
}

#[tokio::test]
async fn secret_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    service(dir.path()).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets").join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secret readable by others: {mode:o}");
    }
}
