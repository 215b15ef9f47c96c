//! The database-backed oxide-auth `Authorizer`: codes keep their grant
//! (extensions included), expire after 60 s and are consumed once, even when
//! 20 threads race for the same code.

mod common;

use common::*;
use oxide_auth::primitives::authorizer::Authorizer;
use oxide_auth::primitives::grant::{Extensions, Grant, Value};
use phonekey::oauth::store::OAuthStore;

fn grant(server: &TestServer) -> Grant {
    let mut extensions = Extensions::new();
    extensions.set_raw("pkce".into(), Value::private(Some("S256:challenge".into())));
    Grant {
        owner_id: "user-1".into(),
        client_id: "client-1".into(),
        scope: "read write".parse().unwrap(),
        redirect_uri: url::Url::parse("https://app.example/cb").unwrap(),
        until: chrono::DateTime::from_timestamp(server.clock_now() + 60, 0).unwrap(),
        extensions,
    }
}

fn authorize(server: &TestServer) -> String {
    let mut conn = server.state.pool.get().unwrap();
    let mut store = OAuthStore::new(&server.state.core, &mut conn);
    store.authorize(grant(server)).unwrap()
}

fn extract(server: &TestServer, code: &str) -> Option<Grant> {
    let mut conn = server.state.pool.get().unwrap();
    let mut store = OAuthStore::new(&server.state.core, &mut conn);
    store.extract(code).unwrap()
}

#[test]
fn a_code_gives_its_grant_once() {
    let server = TestServer::start();
    let code = authorize(&server);
    let got = extract(&server, &code).expect("the code is good once");
    let want = grant(&server);
    assert_eq!(
        (got.owner_id.as_str(), got.client_id.as_str()),
        ("user-1", "client-1")
    );
    assert_eq!(got.scope, want.scope);
    assert_eq!(got.redirect_uri, want.redirect_uri);
    assert_eq!(got.extensions, want.extensions, "PKCE's challenge survives");
    assert!(extract(&server, &code).is_none(), "single use");
    assert!(extract(&server, "never-issued").is_none());
}

#[test]
fn codes_expire_after_a_minute() {
    let server = TestServer::start();
    let code = authorize(&server);
    server.clock.advance(61);
    assert!(extract(&server, &code).is_none());
}

#[test]
fn racing_exchanges_yield_one_grant() {
    let server = std::sync::Arc::new(TestServer::start());
    let code = authorize(&server);
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let (server, code) = (server.clone(), code.clone());
            std::thread::spawn(move || extract(&server, &code).is_some())
        })
        .collect();
    let wins = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
}
