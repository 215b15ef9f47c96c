//! RFC 7662 introspection, RFC 7009 revocation and RFC 8414 metadata, for
//! every token kind and state.

mod common;

use common::*;
use phonekey::oauth::clients::GrantType;
use serde_json::Value;

struct Setup {
    server: TestServer,
    app: (String, String),
    resource_server: (String, String),
    access: String,
    refresh: String,
    user: Value,
}

async fn setup() -> Setup {
    let server = TestServer::start();
    let (app_id, app_secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let (rs_id, rs_secret) = server.client(&[GrantType::ClientCredentials], true);
    let app = (app_id, app_secret.unwrap());
    let phone = new_phone();
    let (ticket, user) = server.signed_up_user(&phone).await;
    let (status, tokens, _) = server
        .token_basic(
            &app.0,
            &app.1,
            &[
                ("grant_type", "otp"),
                ("phone", &phone),
                ("secret_identifier", &ticket),
            ],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    Setup {
        access: tokens["access_token"].as_str().unwrap().to_string(),
        refresh: tokens["refresh_token"].as_str().unwrap().to_string(),
        resource_server: (rs_id, rs_secret.unwrap()),
        app,
        user,
        server,
    }
}

async fn post(
    server: &TestServer,
    path: &str,
    who: &(String, String),
    form: &[(&str, &str)],
) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(path))
        .basic_auth(&who.0, Some(&who.1))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn introspect(s: &Setup, token: &str) -> Value {
    let (status, body) = post(
        &s.server,
        "/o/introspect/",
        &s.resource_server,
        &[("token", token)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn active_tokens_describe_themselves() {
    let s = setup().await;
    let info = introspect(&s, &s.access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "Bearer");
    assert_eq!(info["client_id"], s.app.0.as_str());
    assert_eq!(info["sub"], s.user["id"]);
    assert_eq!(info["username"], s.user["username"]);
    assert_eq!(info["iss"], s.server.config.issuer.as_str());
    assert!(info["exp"].as_i64().unwrap() > info["iat"].as_i64().unwrap());
    assert!(info["jti"].is_string());
    assert!(info.get("scope").is_some() && info.get("aud").is_some());

    let (status, info) = post(
        &s.server,
        "/o/introspect/",
        &s.resource_server,
        &[("token", &s.refresh), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "refresh_token");
    assert_eq!(info["sub"], s.user["id"]);
    assert_eq!(info["username"], s.user["username"]);
    // A wrong hint only costs a second look.
    let (_, info) = post(
        &s.server,
        "/o/introspect/",
        &s.resource_server,
        &[("token", &s.access), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(info["active"], true);
}

#[tokio::test]
async fn a_clients_own_token_has_no_username() {
    let s = setup().await;
    let (rs_id, rs_secret) = &s.resource_server;
    let (status, tokens, _) = s
        .server
        .token_basic(rs_id, rs_secret, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, 200, "{tokens}");
    let info = introspect(&s, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], rs_id.as_str());
    assert!(info.get("username").is_none(), "{info}");
}

/// Tokens made from a real one (same `kid`, same `jti`, so that only the
/// signature check can refuse them): another payload under the real
/// signature, the real payload signed by another Ed25519 key, a signature
/// moved into another token, and the header rewritten to other algorithms.
fn forgeries(real: &str) -> Vec<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ed25519_dalek::Signer;
    let parts: Vec<&str> = real.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let mut claims = jwt_claims(real);
    claims["scope"] = Value::from("admin everything");
    let other_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let signed = format!("{header}.{payload}");
    let foreign = URL_SAFE_NO_PAD.encode(other_key.sign(signed.as_bytes()).to_bytes());
    let mut jose: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let mut rewritten = Vec::new();
    for alg in ["none", "HS256", "RS256", "ES256"] {
        jose["alg"] = Value::from(alg);
        let header = URL_SAFE_NO_PAD.encode(jose.to_string());
        rewritten.push(format!("{header}.{payload}.{signature}"));
        rewritten.push(format!("{header}.{payload}."));
    }
    let mut out = vec![
        format!("{header}.{other_payload}.{signature}"),
        format!("{signed}.{foreign}"),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{signature}.{signature}"),
        format!("{header}.{payload}.{}", &signature[..signature.len() - 4]),
    ];
    out.extend(rewritten);
    out
}

/// Access tokens are recognised by the hash stored when they were issued;
/// tokens from before it was stored (no hash) are recognised by their
/// signature, and forgeries of them are refused all the same.
#[tokio::test]
async fn tokens_issued_before_their_hash_was_kept_are_checked_by_signature() {
    let s = setup().await;
    let jti = jwt_claims(&s.access)["jti"].as_str().unwrap().to_string();
    let changed = s.server.rewrite_rows(
        "UPDATE access_tokens SET token_hash = NULL WHERE jti = ?",
        &[&jti],
    );
    assert_eq!(changed, 1, "the token's row has a hash to forget");

    let info = introspect(&s, &s.access).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["jti"], jti.as_str());
    for forged in forgeries(&s.access) {
        assert_eq!(introspect(&s, &forged).await["active"], false, "{forged}");
    }
}

/// Until 2026-11-27 MySQL stored every refresh token under its bare
/// SHA-256; since then under a key that begins with the token's creation
/// time. Tokens stored the old way are still found, rotated, replay-checked
/// and introspected there. SQLite has used the time-keyed form since these
/// tokens have carried a time, so it never looks for the bare hash.
#[tokio::test]
async fn refresh_tokens_stored_under_the_earlier_mysql_key_keep_working() {
    use phonekey::db::{tokens::refresh_key, Backend};
    let s = setup().await;
    let backend = s.server.state.pool.backend();
    let changed = s.server.rewrite_rows(
        "UPDATE refresh_tokens SET token_hash = ? WHERE token_hash = ?",
        &[
            &phonekey::secrets::sha256_hex(s.refresh.as_bytes()),
            &refresh_key(backend, &s.refresh),
        ],
    );
    assert_eq!(changed, 1, "the token's row");
    let rotate = |token: String| {
        let s = &s;
        async move {
            let form = [("grant_type", "refresh_token"), ("refresh_token", &token)];
            post(&s.server, "/o/token/", &s.app, &form).await
        }
    };

    if backend == Backend::Sqlite {
        assert_eq!(introspect(&s, &s.refresh).await["active"], false);
        let (status, body) = rotate(s.refresh.clone()).await;
        expect_error(status, &body, 400, "invalid_grant");
        return;
    }
    let info = introspect(&s, &s.refresh).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["username"], s.user["username"], "{info}");
    let (status, rotated) = rotate(s.refresh.clone()).await;
    assert_eq!(status, 200, "{rotated}");
    let next = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(introspect(&s, &s.refresh).await["active"], false, "spent");
    assert_eq!(introspect(&s, &next).await["active"], true, "its successor");
    // Presented again, the spent old-keyed token revokes its family.
    let (status, body) = rotate(s.refresh.clone()).await;
    expect_error(status, &body, 400, "invalid_grant");
    assert_eq!(
        introspect(&s, &next).await["active"],
        false,
        "family revoked"
    );
}

#[tokio::test]
async fn inactive_tokens_say_only_that() {
    let s = setup().await;
    let other_key_jwt =
        "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFZERTQSIsImtpZCI6Im5vcGUifQ.eyJqdGkiOiJ4In0.c2ln";
    for token in [
        "",
        "garbage",
        "a.b.c",
        other_key_jwt,
        &"x".repeat(5000),
        "ünïcode",
    ] {
        let (status, info) = post(
            &s.server,
            "/o/introspect/",
            &s.resource_server,
            &[("token", token)],
        )
        .await;
        if token.is_empty() {
            expect_error(status, &info, 400, "invalid_request");
            continue;
        }
        assert_eq!(status, 200);
        assert_eq!(info, serde_json::json!({ "active": false }), "{token:.20}");
    }
    // A tampered signature is not ours.
    let mut tampered = s.access.clone();
    tampered.pop();
    tampered.push(if s.access.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(introspect(&s, &tampered).await["active"], false);
    for forged in forgeries(&s.access) {
        assert_eq!(introspect(&s, &forged).await["active"], false, "{forged}");
    }

    // Spent refresh token: inactive after rotation.
    let (status, _) = post(
        &s.server,
        "/o/token/",
        &s.app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &s.refresh),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(introspect(&s, &s.refresh).await["active"], false);

    // Expired access token.
    s.server.clock.advance(3601);
    assert_eq!(
        introspect(&s, &s.access).await,
        serde_json::json!({ "active": false })
    );
}

/// Many introspections at once, each of another token: on MySQL their
/// lookups are answered by one statement (`db::batch`, held back here until
/// they have queued), and each request must get its own token's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_introspections_each_get_their_own_answer() {
    let s = std::sync::Arc::new(setup().await);
    let (rs_id, rs_secret) = &s.resource_server;
    let mut tokens = vec![(s.access.clone(), "user")];
    for i in 0..30 {
        let (status, issued, _) = s
            .server
            .token_basic(rs_id, rs_secret, &[("grant_type", "client_credentials")])
            .await;
        assert_eq!(status, 200, "{issued}");
        let token = issued["access_token"].as_str().unwrap().to_string();
        let jti = jwt_claims(&token)["jti"].as_str().unwrap().to_string();
        let state = match i % 5 {
            1 => {
                let (status, _) = post(
                    &s.server,
                    "/o/revoke_token/",
                    &s.resource_server,
                    &[("token", &token)],
                )
                .await;
                assert_eq!(status, 200);
                "revoked"
            }
            2 => {
                let gone = s
                    .server
                    .rewrite_rows("DELETE FROM access_tokens WHERE jti = ?", &[&jti]);
                assert_eq!(gone, 1);
                "unknown"
            }
            _ => "client",
        };
        tokens.push((token, state));
    }

    // Some tokens are asked about twice at once.
    let twice: Vec<_> = tokens.iter().step_by(3).cloned().collect();
    tokens.extend(twice);

    let held = s.server.db.hold_reads("access_tokens");
    let asked: Vec<_> = tokens
        .iter()
        .map(|(token, state)| {
            let (s, token, state) = (s.clone(), token.clone(), *state);
            tokio::spawn(async move {
                let info = introspect(&s, &token).await;
                (token, state, info)
            })
        })
        .collect();
    if let Some(held) = held {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        held.release();
    }
    for asked in asked {
        let (token, state, info) = asked.await.expect("introspection task");
        match state {
            "revoked" | "unknown" => {
                assert_eq!(info, serde_json::json!({ "active": false }), "{state}")
            }
            _ => {
                assert_eq!(info["active"], true, "{info}");
                assert_eq!(info["jti"], jwt_claims(&token)["jti"]);
                let (sub, username) = match state {
                    "user" => (s.user["id"].clone(), s.user["username"].clone()),
                    _ => (Value::from(rs_id.as_str()), Value::Null),
                };
                assert_eq!(info["sub"], sub);
                assert_eq!(
                    info.get("username").cloned().unwrap_or(Value::Null),
                    username
                );
            }
        }
    }
}

#[tokio::test]
async fn introspection_needs_a_confidential_client() {
    let s = setup().await;
    let (status, body) = post(
        &s.server,
        "/o/introspect/",
        &(s.resource_server.0.clone(), "wrong".into()),
        &[("token", &s.access)],
    )
    .await;
    expect_error(status, &body, 401, "invalid_client");
    let (public, _) = s.server.client(&[GrantType::Otp], false);
    let response = s
        .server
        .http
        .post(s.server.url("/o/introspect/"))
        .form(&[("token", s.access.as_str()), ("client_id", public.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family() {
    let s = setup().await;
    // Rotate once, so the family has two generations.
    let (_, rotated) = post(
        &s.server,
        "/o/token/",
        &s.app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &s.refresh),
        ],
    )
    .await;
    let access2 = rotated["access_token"].as_str().unwrap().to_string();
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(introspect(&s, &access2).await["active"], true);

    let (status, _) = post(
        &s.server,
        "/o/revoke_token/",
        &s.app,
        &[("token", &refresh2), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(status, 200);
    for token in [&s.access, &access2, &refresh2] {
        assert_eq!(introspect(&s, token).await["active"], false);
    }
    let (status, body) = post(
        &s.server,
        "/o/token/",
        &s.app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
        ],
    )
    .await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn revoking_an_access_token_and_the_edge_cases() {
    let s = setup().await;
    // Another client's token: 200, and nothing happens.
    let (status, _) = post(
        &s.server,
        "/o/revoke_token/",
        &s.resource_server,
        &[("token", &s.access)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(introspect(&s, &s.access).await["active"], true);
    // Unknown tokens: 200.
    let (status, _) = post(
        &s.server,
        "/o/revoke_token/",
        &s.app,
        &[("token", "never-issued")],
    )
    .await;
    assert_eq!(status, 200);
    // The owner revokes its access token; the refresh token lives on.
    let (status, _) = post(
        &s.server,
        "/o/revoke_token/",
        &s.app,
        &[("token", &s.access), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(introspect(&s, &s.access).await["active"], false);
    assert_eq!(introspect(&s, &s.refresh).await["active"], true);
    // Errors: no token, bad client.
    let (status, body) = post(&s.server, "/o/revoke_token/", &s.app, &[]).await;
    expect_error(status, &body, 400, "invalid_request");
    let (status, body) = post(
        &s.server,
        "/o/revoke_token/",
        &(s.app.0.clone(), "nope".into()),
        &[("token", &s.refresh)],
    )
    .await;
    expect_error(status, &body, 401, "invalid_client");
    assert_eq!(introspect(&s, &s.refresh).await["active"], true);
}

#[tokio::test]
async fn metadata_lists_every_endpoint() {
    let server = TestServer::start();
    let (status, meta, _) = split(
        server
            .http
            .get(server.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let issuer = server.config.issuer.as_str();
    assert_eq!(meta["issuer"], issuer);
    for (key, path) in [
        ("authorization_endpoint", "/o/authorize/"),
        ("token_endpoint", "/o/token/"),
        ("jwks_uri", "/.well-known/jwks.json"),
        ("introspection_endpoint", "/o/introspect/"),
        ("revocation_endpoint", "/o/revoke_token/"),
    ] {
        assert_eq!(meta[key], format!("{issuer}{path}"));
        // Every advertised endpoint exists.
        let url = meta[key].as_str().unwrap();
        let response = if key == "jwks_uri" || key == "authorization_endpoint" {
            server.http.get(url).send().await.unwrap()
        } else {
            server
                .http
                .post(url)
                .form(&[("x", "y")])
                .send()
                .await
                .unwrap()
        };
        assert_ne!(response.status(), 404, "{url}");
    }
    let grants: Vec<&str> = meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for g in [
        "otp",
        "urn:phonekey:params:oauth:grant-type:otp",
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "password",
    ] {
        assert!(grants.contains(&g), "{g}");
    }
    assert_eq!(
        meta["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert!(meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("client_secret_basic")));
}
