//! Token requests run without a connection (`oauth::detached`), their
//! read and writes made as the server makes them on each backend (on
//! SQLite with a connection, on MySQL as awaited rows of batched
//! statements): a flow that needs the database says so and has written
//! nothing, and a flow that ran writes nothing until its caller stores what
//! it kept.

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
async fn run_detached(server: &TestServer, request: &TokenRequest) -> Outcome {
    let pool = &server.state.pool;
    let read = detached::plan(request, pool.backend()).expect("a request that may run detached");
    #[cfg(feature = "mysql")]
    if let Some(db) = pool.awaited() {
        let prefetched = detached::read_awaited(&db, read, waiting()).await;
        let prefetched = prefetched.expect("the read");
        return detached::run(&server.state.core, pool.detached(), request, prefetched);
    }
    let mut conn = pool.get().expect("a connection");
    let prefetched = detached::read(&mut conn, read).expect("the read");
    detached::run(&server.state.core, pool.detached(), request, prefetched)
}

/// A request that waits for its row as long as it takes.
#[cfg(feature = "mysql")]
fn waiting() -> phonekey::db::Waiting {
    let gave_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    phonekey::db::Waiting::new(gave_up, ())
}

/// Makes what a detached request kept, as the server does.
async fn store(server: &TestServer, writes: Vec<Deferred>) -> Result<(), AppError> {
    let mut conn = server.state.pool.get().expect("a connection");
    #[cfg(feature = "mysql")]
    if let Some(db) = server.state.pool.awaited() {
        return match detached::store_awaited(&db, writes, waiting()).await? {
            detached::Stored::Done => Ok(()),
            detached::Stored::Lost { client_id, family } => {
                detached::lost_rotation(&mut conn, &client_id, family)
            }
            detached::Stored::Elsewhere(writes) => detached::store(&mut conn, writes),
            detached::Stored::NotStored => panic!("no otp grant here"),
        };
    }
    detached::store(&mut conn, writes)
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
        run_detached(&server, &form).await,
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
    let Outcome::Ran { answer, writes } = run_detached(&server, &form).await else {
        panic!("a cached client's request needs no database");
    };
    let issued = answer.expect("a token");
    let claims = jwt_claims(&issued.access_token);
    assert!(matches!(writes.as_slice(), [Deferred::Access(row)] if row.jti == claims["jti"]));
    assert_eq!(count_rows(&db, "access_tokens"), 1);
    store(&server, writes).await.expect("stored");
    let mut conn = server.state.pool.get().expect("a connection");
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
    let Outcome::Ran { answer, writes } = run_detached(&server, &reuse).await else {
        panic!("a cached client's refresh needs no database beyond its read");
    };
    assert!(
        matches!(&answer, Err(AppError::OAuth(e)) if e.kind == OAuthErrorKind::InvalidGrant),
        "{answer:?}"
    );
    assert!(matches!(writes.as_slice(), [Deferred::RevokeFamily(_)]));
    assert!(!revoked(&second), "nothing is written before it is stored");

    store(&server, writes).await.expect("stored");
    assert!(revoked(&second), "the whole family is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_lost_its_token_is_refused_and_revokes_the_family() {
    let server = TestServer::start();
    let (id, secret, first) = logged_in(&server).await;
    let first = first.as_str();
    let refresh = refresh_request(&id, &secret, first);
    // Read while unspent...
    let Outcome::Ran { answer, writes } = run_detached(&server, &refresh).await else {
        panic!("a cached client's refresh needs no database beyond its read");
    };
    let issued = answer.expect("tokens, if the rotation holds");
    assert!(matches!(writes.as_slice(), [Deferred::Rotation(_)]));
    // ... and spent by another request before the rotation is stored.
    let winner = rotate(&server, &id, &secret, first).await;

    let stored = store(&server, writes).await;
    assert!(
        matches!(&stored, Err(AppError::OAuth(e)) if e.kind == OAuthErrorKind::InvalidGrant),
        "{stored:?}"
    );
    let claims = jwt_claims(&issued.access_token);
    let jti = claims["jti"].as_str().expect("a jti");
    let mut conn = server.state.pool.get().expect("a connection");
    let db = conn.db().expect("a connection");
    assert!(tokens::find_access(db, jti).expect("lookup").is_none());
    let winner = tokens::find_refresh(db, &winner).expect("lookup");
    assert!(winner.expect("the winner's token").revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otp_grant_with_a_wrong_code_stores_nothing_and_runs_the_ordinary_way() {
    // A login that creates its user: the common case the batch stores.
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let (id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.expect("a confidential client's secret");
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let grant = request(&[
        ("grant_type", "otp"),
        ("phone", &phone),
        ("code", wrong),
        ("client_id", &id),
        ("client_secret", &secret),
    ]);
    let backend = server.state.pool.backend();
    if backend == phonekey::db::Backend::Sqlite {
        // There the grant runs whole on the writer thread instead.
        assert!(detached::plan(&grant, backend).is_none());
        return;
    }
    // Load the client into the cache, as any earlier request of it would.
    let (status, body, _) = server
        .token_basic(&id, &secret, &[("grant_type", "otp"), ("phone", &phone)])
        .await;
    expect_error(status, &body, 400, "invalid_request");

    // The flow cannot tell a wrong code from a right one: the batched
    // write that spends it can, and leaves everything as it was.
    let Outcome::Ran { answer, writes } = run_detached(&server, &grant).await else {
        panic!("a cached client's otp grant needs no database beyond its read");
    };
    assert!(answer.is_ok(), "{answer:?}");
    #[cfg(feature = "mysql")]
    {
        let db = server
            .state
            .pool
            .awaited()
            .expect("MySQL's batched statements");
        let stored = detached::store_awaited(&db, writes, waiting()).await;
        assert!(matches!(stored, Ok(detached::Stored::NotStored)));
        assert_eq!(count_rows(&server.db.url(), "access_tokens"), 0);
        assert_eq!(count_rows(&server.db.url(), "users"), 0);
    }
    #[cfg(not(feature = "mysql"))]
    drop(writes);

    // Over HTTP the same request runs the ordinary way, which counts the
    // attempt; the right code then still works.
    let form = [("grant_type", "otp"), ("phone", &phone), ("code", wrong)];
    let (status, body, _) = server.token_basic(&id, &secret, &form).await;
    expect_error(status, &body, 400, "invalid_grant");
    let form = [("grant_type", "otp"), ("phone", &phone), ("code", &code)];
    let (status, body, _) = server.token_basic(&id, &secret, &form).await;
    assert_eq!(status, 200, "{body}");
}
