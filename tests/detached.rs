//! Client-credentials and refresh requests run without a connection
//! (`oauth::detached`, SQLite's path, checked here on either backend): a
//! flow that needs the database says so and has written nothing, and a
//! flow that ran writes nothing until its caller stores what it kept.

mod common;

use common::*;
use phonekey::db::tokens;
use phonekey::error::AppError;
use phonekey::oauth::clients::GrantType;
use phonekey::oauth::detached::{self, Deferred, Outcome};
use phonekey::oauth::request::TokenRequest;
use phonekey::oauth::OAuthErrorKind;

fn request(form: &[(&str, &str)]) -> TokenRequest {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    TokenRequest::parse(body.as_bytes(), None, None).expect("a token request")
}

/// A refresh of `token`, the client authenticated in the body.
fn refresh_request(id: &str, secret: &str, token: &str) -> TokenRequest {
    request(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", id),
        ("client_secret", secret),
    ])
}

/// Runs `request` detached, after the read it plans.
fn run_detached(server: &TestServer, request: &TokenRequest) -> Outcome {
    let read = detached::plan(request).expect("a request that may run detached");
    let mut conn = server.state.pool.get().expect("a connection");
    let prefetched = detached::read(&mut conn, read).expect("the read");
    detached::run(
        &server.state.core,
        server.state.pool.detached(),
        request,
        prefetched,
    )
}

/// A client with the otp and refresh grants, and a user's first tokens from it.
async fn logged_in(server: &TestServer) -> (String, String, String) {
    let (id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.expect("a confidential client's secret");
    let (_phone, tokens) = server.user_tokens(&id, &secret).await;
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token");
    (id, secret, refresh.to_string())
}

/// Rotates `token` over HTTP; returns the new refresh token.
async fn rotate(server: &TestServer, id: &str, secret: &str, token: &str) -> String {
    let (status, rotated, _) = server
        .token_basic(
            id,
            secret,
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    rotated["refresh_token"]
        .as_str()
        .expect("a new refresh token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_yet_cached_sends_its_request_the_ordinary_way() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.expect("a confidential client's secret");
    let form = request(&[
        ("grant_type", "client_credentials"),
        ("client_id", &id),
        ("client_secret", &secret),
    ]);
    let db = server.db.url();

    // Loading the client needs the database: the flow stops, keeps nothing.
    assert!(matches!(
        run_detached(&server, &form),
        Outcome::NeedsDatabase
    ));
    assert_eq!(count_rows(&db, "access_tokens"), 0);

    // Over HTTP the same request falls back, and loads the client.
    let (status, body, _) = server
        .token_basic(&id, &secret, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count_rows(&db, "access_tokens"), 1);

    // Now cached: it runs, and its token is stored only when asked.
    let Outcome::Ran { answer, writes } = run_detached(&server, &form) else {
        panic!("a cached client's request needs no database");
    };
    let issued = answer.expect("a token");
    let claims = jwt_claims(&issued.access_token);
    assert!(matches!(writes.as_slice(), [Deferred::Access(row)] if row.jti == claims["jti"]));
    assert_eq!(count_rows(&db, "access_tokens"), 1);
    let mut conn = server.state.pool.get().expect("a connection");
    detached::store(&mut conn, writes).expect("stored");
    let jti = claims["jti"].as_str().expect("a jti");
    let stored = tokens::find_access(conn.db().expect("a connection"), jti).expect("lookup");
    assert_eq!(stored.map(|row| row.client_id), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_refresh_token_revokes_its_family_once_stored() {
    let server = TestServer::start();
    let (id, secret, first) = logged_in(&server).await;
    let first = first.as_str();
    let second = rotate(&server, &id, &secret, first).await;
    let revoked = |token: &str| {
        let mut conn = server.state.pool.get().expect("a connection");
        tokens::find_refresh(conn.db().expect("a connection"), token)
            .expect("lookup")
            .expect("a stored refresh token")
            .revoked
    };

    let reuse = refresh_request(&id, &secret, first);
    let Outcome::Ran { answer, writes } = run_detached(&server, &reuse) else {
        panic!("a cached client's refresh needs no database beyond its read");
    };
    assert!(
        matches!(&answer, Err(AppError::OAuth(e)) if e.kind == OAuthErrorKind::InvalidGrant),
        "{answer:?}"
    );
    assert!(matches!(writes.as_slice(), [Deferred::RevokeFamily(_)]));
    assert!(!revoked(&second), "nothing is written before it is stored");

    let mut conn = server.state.pool.get().expect("a connection");
    detached::store(&mut conn, writes).expect("stored");
    assert!(revoked(&second), "the whole family is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_lost_its_token_is_refused_and_revokes_the_family() {
    let server = TestServer::start();
    let (id, secret, first) = logged_in(&server).await;
    let first = first.as_str();
    let refresh = refresh_request(&id, &secret, first);
    // Read while unspent...
    let Outcome::Ran { answer, writes } = run_detached(&server, &refresh) else {
        panic!("a cached client's refresh needs no database beyond its read");
    };
    let issued = answer.expect("tokens, if the rotation holds");
    assert!(matches!(writes.as_slice(), [Deferred::Rotation { .. }]));
    // ... and spent by another request before the rotation is stored.
    let winner = rotate(&server, &id, &secret, first).await;

    let mut conn = server.state.pool.get().expect("a connection");
    let stored = detached::store(&mut conn, writes);
    assert!(
        matches!(&stored, Err(AppError::OAuth(e)) if e.kind == OAuthErrorKind::InvalidGrant),
        "{stored:?}"
    );
    let claims = jwt_claims(&issued.access_token);
    let jti = claims["jti"].as_str().expect("a jti");
    let db = conn.db().expect("a connection");
    assert!(tokens::find_access(db, jti).expect("lookup").is_none());
    let winner = tokens::find_refresh(db, &winner).expect("lookup");
    assert!(winner.expect("the winner's token").revoked);
}
