//! Handshake, bearer tokens, token rules, expiry and revocation.

use std::time::Duration;

use arrow_flight::HandshakeRequest;
use base64::Engine;
use serde_json::json;
use tonic::Code;

use crate::harness::{PASSWORD, TestServer, action, query};

fn basic(user: &str, password: &str, padded: bool) -> String {
    let raw = format!("{user}:{password}");
    let encoded = if padded {
        base64::engine::general_purpose::STANDARD.encode(raw)
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
    };
    format!("Basic {encoded}")
}

async fn handshake(
    server: &TestServer,
    header: &str,
) -> Result<tonic::Response<tonic::Streaming<arrow_flight::HandshakeResponse>>, tonic::Status> {
    let mut raw = server.raw().await;
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request
        .metadata_mut()
        .insert("authorization", header.parse().unwrap());
    raw.handshake(request).await
}

#[tokio::test]
async fn handshake_answers_with_a_bearer_header_and_accepts_unpadded_basic() {
    let server = TestServer::start().await;
    // "admin:test-password" is 19 bytes: base64 needs one '=' of padding.
    for padded in [true, false] {
        let response = handshake(&server, &basic("admin", PASSWORD, padded))
            .await
            .unwrap();
        let header = response
            .metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(header.starts_with("Bearer "), "{header}");
        let token = header.trim_start_matches("Bearer ");
        let mut client = server.with_token(token).await;
        let me = action(&mut client, "whoami", &json!({})).await.unwrap();
        assert_eq!(me["kind"], "admin");
    }
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated() {
    let server = TestServer::start().await;
    let err = handshake(&server, &basic("admin", "wrong", true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("invalid user or password"),
        "{}",
        err.message()
    );

    // No header at all on a query.
    let mut anonymous = server.anonymous().await;
    let err = query(&mut anonymous, "SELECT 1").await.unwrap_err();
    assert!(
        err.contains("Unauthenticated") && err.contains("no credentials"),
        "{err}"
    );

    // A password on an ordinary call (only the handshake takes one).
    let mut raw = server.raw().await;
    let mut request = tonic::Request::new(arrow_flight::Action::new("whoami", ""));
    request.metadata_mut().insert(
        "authorization",
        basic("admin", PASSWORD, true).parse().unwrap(),
    );
    let err = raw.do_action(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("only in the Flight handshake"),
        "{}",
        err.message()
    );

    // A garbage bearer token.
    let mut garbage = server.with_token("not.a.jwt").await;
    let err = action(&mut garbage, "whoami", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("invalid token"), "{}", err.message());
}

#[tokio::test]
async fn token_as_basic_password_works_for_clients_without_headers() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let swarm = action(
        &mut admin,
        "token.create",
        &json!({"kind": "swarm", "name": "emea"}),
    )
    .await
    .unwrap();
    let token = swarm["token"].as_str().unwrap();
    let response = handshake(&server, &basic("token", token, false))
        .await
        .unwrap();
    let header = response
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(header, format!("Bearer {token}"));
    // And Basic token:<jwt> on an ordinary call.
    let mut client = server.anonymous().await;
    client.set_header("authorization", basic("token", token, true));
    let mut raw = server.raw().await;
    let mut request = tonic::Request::new(arrow_flight::Action::new("whoami", ""));
    request.metadata_mut().insert(
        "authorization",
        basic("token", token, true).parse().unwrap(),
    );
    let result = raw
        .do_action(request)
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let me: serde_json::Value = serde_json::from_slice(&result.body).unwrap();
    assert_eq!(me["kind"], "swarm");
    assert_eq!(me["swarm"], "emea");
}

#[tokio::test]
async fn swarm_mints_agents_and_revocation_is_immediate_and_durable() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let swarm = action(
        &mut admin,
        "token.create",
        &json!({"kind": "swarm", "name": "emea", "ttl_seconds": 3600, "attributes": {"region": "EU"}}),
    )
    .await
    .unwrap();
    assert!(swarm["expires_at"].is_string());
    let mut swarm_client = server.with_token(swarm["token"].as_str().unwrap()).await;
    // Only admins set attributes; a swarm's agents inherit its own.
    let err = action(
        &mut swarm_client,
        "token.create",
        &json!({"kind": "agent", "name": "a1", "attributes": {"region": "US"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let agent = action(
        &mut swarm_client,
        "token.create",
        &json!({"kind": "agent", "name": "a1"}),
    )
    .await
    .unwrap();
    let mut agent_client = server.with_token(agent["token"].as_str().unwrap()).await;
    let me = action(&mut agent_client, "whoami", &json!({}))
        .await
        .unwrap();
    assert_eq!(me["kind"], "agent");
    assert_eq!(me["swarm"], "emea");
    assert_eq!(me["attributes"]["region"], "EU");

    // Agents cannot mint; swarms cannot mint swarms.
    let err = action(
        &mut agent_client,
        "token.create",
        &json!({"kind": "agent", "name": "a2"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = action(
        &mut swarm_client,
        "token.create",
        &json!({"kind": "swarm", "name": "x"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Agents cannot do admin actions.
    let err = action(
        &mut agent_client,
        "table.register",
        &json!({"name": "a.b", "source": "/x.csv"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The swarm sees its agent in token.list, never a token secret.
    let listed = action(&mut swarm_client, "token.list", &json!({}))
        .await
        .unwrap();
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(
        !listed
            .to_string()
            .contains(agent["token"].as_str().unwrap())
    );

    // Revoking the swarm revokes its agent, at once.
    let revoked = action(&mut admin, "token.revoke", &json!({"id": swarm["id"]}))
        .await
        .unwrap();
    assert_eq!(revoked["newly_revoked"].as_array().unwrap().len(), 2);
    let err = action(&mut agent_client, "whoami", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());

    // Still revoked after a restart.
    let dir = server.dir.clone();
    let tmp = server.stop().await;
    let server = TestServer::start_in(&dir, |_| {}).await;
    let mut agent_client = server.with_token(agent["token"].as_str().unwrap()).await;
    let err = action(&mut agent_client, "whoami", &json!({}))
        .await
        .unwrap_err();
    assert!(err.message().contains("revoked"), "{}", err.message());
    drop(tmp);
}

#[tokio::test]
async fn expired_tokens_are_refused_with_a_hint() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let swarm = action(
        &mut admin,
        "token.create",
        &json!({"kind": "swarm", "name": "s", "ttl_seconds": 1}),
    )
    .await
    .unwrap();
    let mut client = server.with_token(swarm["token"].as_str().unwrap()).await;
    assert!(action(&mut client, "whoami", &json!({})).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = action(&mut client, "whoami", &json!({})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
}
