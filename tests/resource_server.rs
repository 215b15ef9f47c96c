//! The example resource server (examples/resource_server/) against a real
//! phonekey: local JWT validation with the JWKS, RFC 6750 errors, and a key
//! rotation picked up by re-fetching the JWKS on an unknown kid.

mod common;

// The example's own files, so that this tests exactly what it ships.
#[path = "../examples/resource_server/app.rs"]
mod app;
#[path = "../examples/resource_server/verifier.rs"]
mod verifier;

use std::net::TcpListener;

use actix_web::{web, App, HttpServer};
use common::*;
use phonekey::oauth::clients::GrantType;

fn start_api(issuer: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let verifier = web::Data::new(verifier::Verifier::new(issuer, issuer));
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                App::new()
                    .app_data(verifier.clone())
                    .configure(app::configure)
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    base
}

async fn call(
    server: &TestServer,
    url: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value, String) {
    let mut request = server.http.get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default(), challenge)
}

#[tokio::test]
async fn the_example_api_accepts_phonekey_tokens() {
    let server = TestServer::start();
    let api = start_api(&server.config.issuer);
    let (id, secret) = server.client_with_scopes(
        &[GrantType::ClientCredentials],
        true,
        &["reports:read", "profile"],
    );
    let secret = secret.unwrap();
    let token_with = |scope: &'static str| {
        let (server, id, secret) = (&server, id.clone(), secret.clone());
        async move {
            let (status, body, _) = server
                .token_basic(
                    &id,
                    &secret,
                    &[("grant_type", "client_credentials"), ("scope", scope)],
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_string()
        }
    };
    let full = token_with("reports:read profile").await;
    let narrow = token_with("profile").await;

    let (status, body, _) = call(&server, &format!("{api}/me"), Some(&full)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], id.as_str());
    let (status, _, _) = call(&server, &format!("{api}/reports"), Some(&full)).await;
    assert_eq!(status, 200);

    // RFC 6750 §3.1
    let (status, _, challenge) = call(&server, &format!("{api}/me"), None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge, r#"Bearer realm="api""#);
    let (status, body, challenge) = call(&server, &format!("{api}/me"), Some("not-a-token")).await;
    expect_error(status, &body, 401, "invalid_token");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    let (status, body, challenge) = call(&server, &format!("{api}/reports"), Some(&narrow)).await;
    expect_error(status, &body, 403, "insufficient_scope");
    assert!(challenge.contains(r#"scope="reports:read""#), "{challenge}");

    // A tampered token fails.
    let mut tampered = full.clone();
    tampered.insert(tampered.len() - 3, 'x');
    let (status, _, _) = call(&server, &format!("{api}/me"), Some(&tampered)).await;
    assert_eq!(status, 401);

    // An expired token fails: issue one two hours "ago".
    server.clock.advance(-7200);
    let old = token_with("profile").await;
    server.clock.advance(7200);
    let (status, body, _) = call(&server, &format!("{api}/me"), Some(&old)).await;
    expect_error(status, &body, 401, "invalid_token");

    // After a key rotation the API meets an unknown kid and fetches the JWKS again.
    let mut conn = phonekey::db::connect_once(&server.config.database).unwrap();
    phonekey::oauth::keys::rotate(&mut conn, server.config.tokens.alg, server.clock_now()).unwrap();
    server.reload_keys();
    server
        .clock
        .advance(phonekey::oauth::keys::PUBLISH_AHEAD + 1);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let rotated = token_with("profile").await;
    assert_ne!(
        jsonwebtoken::decode_header(&rotated).unwrap().kid,
        jsonwebtoken::decode_header(&full).unwrap().kid
    );
    // The API fetched the JWKS less than 10 s ago; it re-fetches after that.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let (status, body, _) = call(&server, &format!("{api}/me"), Some(&rotated)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = call(&server, &format!("{api}/me"), Some(&full)).await;
    assert_eq!(status, 200, "tokens of the previous key still work");
}
