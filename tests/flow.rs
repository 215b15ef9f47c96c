//! The seed's whole call flow over real HTTP, with the JWT checked against
//! the published JWKS by an independent JWT library.

mod common;

use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use phonekey::oauth::clients::GrantType;
use serde_json::{json, Value};

async fn verify_with_jwks(server: &TestServer, token: &str) -> Value {
    let jwks: JwkSet = server
        .http
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("every token names its kid");
    let jwk = jwks.find(&kid).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&server.config.issuer]);
    validation.set_audience(&[&server.config.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn the_seed_flow_end_to_end() {
    let server = TestServer::start();
    let (client_id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let phone = new_phone();

    // getcode: the code travels only in the SMS, never in the response.
    let (status, body, _) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "phone": phone, "expires_in": 300, "resend_in": 30 })
    );
    let sms = server.sms.messages().pop().expect("an SMS was sent");
    assert_eq!(sms["to"], phone.as_str());
    let code = sms["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    let text = sms["body"].as_str().unwrap();
    assert!(
        text.ends_with(&format!("@127.0.0.1 #{code}")),
        "autofill line: {text}"
    );
    assert!(!body.to_string().contains(&code));

    // verifycode
    let (status, body, _) = server
        .post_form(
            "/otp/verifycode/",
            &[("phone", &phone), ("code", &code)],
            &new_ip(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ticket = body["secret_identifier"].as_str().unwrap().to_string();
    assert_eq!(ticket.len(), 48);
    assert!(ticket.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["user_exists"], false);

    // user creation with every seed field
    let (status, user, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({
                "email": "Tarun@Example.com", "first_name": "tarun", "last_name": "batra",
                "password": "walkman123",
                "account": { "blood_group": "b+", "dob": "1989-12-12T00:00:00Z", "phone": phone,
                             "address": "vijetha midas touch", "zip_code": "500081", "verified": false },
                "auto_username": true, "secret_identifier": ticket,
            }),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert!(user["username"].as_str().unwrap().starts_with("user_"));
    assert_eq!(user["email"], "tarun@example.com");
    assert_eq!(user["first_name"], "tarun");
    assert_eq!(user["last_name"], "batra");
    assert_eq!(
        user["account"],
        json!({ "phone": phone, "blood_group": "b+", "dob": "1989-12-12T00:00:00Z",
                "address": "vijetha midas touch", "zip_code": "500081", "verified": true })
    );
    assert!(user.get("password").is_none());
    assert!(user["date_joined"].as_str().unwrap().ends_with('Z'));

    // otp grant with the ticket, at the seed's path
    let response = server
        .http
        .post(server.url("/o/extended_token/"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("grant_type", "otp"),
            ("phone", phone.as_str()),
            ("secret_identifier", ticket.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let (status, tokens, headers) = split(response).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let access = tokens["access_token"].as_str().unwrap();
    let claims = verify_with_jwks(&server, access).await;
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["scope"], tokens["scope"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["jti"].as_str().is_some());

    // refresh: a new pair; the old refresh token is dead and its reuse kills the family
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, rotated, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh1),
            ],
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    let claims2 = verify_with_jwks(&server, rotated["access_token"].as_str().unwrap()).await;
    assert_eq!(claims2["sub"], user["id"]);
    assert_ne!(claims2["jti"], claims["jti"]);

    let (status, body, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh1),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
    // The family is revoked: the newest refresh token no longer works either.
    let (status, body, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh2),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn otp_grant_with_the_code_in_one_step() {
    let server = TestServer::start();
    let (client_id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    let (_, user) = server.signed_up_user(&phone).await;

    let code = server.get_code_after_cooldown(&phone).await;
    // Body authentication, and the grant's absolute-URI name.
    let (status, tokens, _) = server
        .post_form(
            "/o/token/",
            &[
                ("grant_type", "urn:phonekey:params:oauth:grant-type:otp"),
                ("phone", &phone),
                ("code", &code),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ],
            &new_ip(),
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = verify_with_jwks(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], user["id"]);

    // The code was spent.
    let (status, body, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[("grant_type", "otp"), ("phone", &phone), ("code", &code)],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn auto_create_users_signs_up_on_first_login() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let (client_id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let (status, tokens, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[("grant_type", "otp"), ("phone", &phone), ("code", &code)],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    // No refresh_token grant for this client: no refresh token either.
    let claims = verify_with_jwks(&server, tokens["access_token"].as_str().unwrap()).await;
    let sub = claims["sub"].as_str().unwrap().to_string();

    // A second login finds the same user.
    let code = server.get_code_after_cooldown(&phone).await;
    let (status, tokens, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[("grant_type", "otp"), ("phone", &phone), ("code", &code)],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = verify_with_jwks(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], sub.as_str());
}

#[tokio::test]
async fn without_auto_create_an_unknown_phone_gets_invalid_grant() {
    let server = TestServer::start();
    let (client_id, secret) = server.client(&[GrantType::Otp], true);
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let (status, body, _) = server
        .token_basic(
            &client_id,
            &secret.unwrap(),
            &[("grant_type", "otp"), ("phone", &phone), ("code", &code)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn scopes_are_granted_by_policy_in_stable_order() {
    let server = TestServer::start();
    let (client_id, secret) =
        server.client_with_scopes(&[GrantType::Otp], true, &["write", "read", "profile"]);
    let secret = secret.unwrap();
    let phone = new_phone();
    server.signed_up_user(&phone).await;

    let code = server.get_code_after_cooldown(&phone).await;
    let (status, body, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[
                ("grant_type", "otp"),
                ("phone", &phone),
                ("code", &code),
                ("scope", "admin"),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_scope");

    // The bad scope cost no code: the same code still works.
    let (status, tokens, _) = server
        .token_basic(
            &client_id,
            &secret,
            &[
                ("grant_type", "otp"),
                ("phone", &phone),
                ("code", &code),
                ("scope", "write read"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "read write");
    let claims = verify_with_jwks(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["scope"], "read write");
}

#[tokio::test]
async fn public_client_logs_in_and_refreshes_with_its_id_alone() {
    let server = TestServer::start();
    let (client_id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], false);
    assert!(secret.is_none());
    let phone = new_phone();
    let (ticket, _) = server.signed_up_user(&phone).await;
    let (status, tokens, _) = server
        .post_form(
            "/o/token/",
            &[
                ("grant_type", "otp"),
                ("phone", &phone),
                ("secret_identifier", &ticket),
                ("client_id", &client_id),
            ],
            &new_ip(),
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, body, _) = server
        .post_form(
            "/o/token/",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", &client_id),
            ],
            &new_ip(),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Another client cannot use this client's refresh token.
    let (other, _) = server.client(&[GrantType::RefreshToken], false);
    let (status, body, _) = server
        .post_form(
            "/o/token/",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", body["refresh_token"].as_str().unwrap()),
                ("client_id", &other),
            ],
            &new_ip(),
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn health_readiness_and_jwks() {
    let server = TestServer::start();
    let (status, body, _) = split(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body, _) = split(
        server
            .http
            .get(server.url("/readyz/"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["database"], server.db.backend());
    let (status, jwks, headers) = split(
        server
            .http
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part is published"
    );
}

/// The suite runs on the database it was asked to: CI fails if the MariaDB half silently ran on SQLite.
#[tokio::test]
async fn runs_on_the_requested_backend() {
    let server = TestServer::start();
    let expected = if database_server().is_some() {
        "mysql"
    } else {
        "sqlite"
    };
    let (_, body, _) = split(server.http.get(server.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(body["database"], expected);
    println!("PHONEKEY_BACKEND_UNDER_TEST={expected}");
}

#[tokio::test]
async fn client_credentials_issues_a_client_token_without_refresh() {
    let server = TestServer::start();
    let (id, secret) =
        server.client_with_scopes(&[GrantType::ClientCredentials], true, &["reports", "audit"]);
    let secret = secret.unwrap();
    let (status, tokens, headers) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "client_credentials"), ("scope", "reports")],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        tokens.get("refresh_token").is_none(),
        "RFC 6749 §4.4.3: no refresh token"
    );
    assert_eq!(tokens["scope"], "reports");
    let claims = verify_with_jwks(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(
        claims["sub"],
        id.as_str(),
        "sub is the client for client_credentials"
    );
    assert_eq!(claims["client_id"], id.as_str());

    // Body authentication; default scope is everything allowed, sorted.
    let (status, tokens, _) = server
        .post_form(
            "/o/token/",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            &new_ip(),
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "audit reports");

    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "client_credentials"), ("scope", "admin")],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
    let (status, body, _) = server
        .token_basic(&id, "wrong", &[("grant_type", "client_credentials")])
        .await;
    expect_error(status, &body, 401, "invalid_client");
    let (otp_only, otp_secret) = server.client(&[GrantType::Otp], true);
    let (status, body, _) = server
        .token_basic(
            &otp_only,
            &otp_secret.unwrap(),
            &[("grant_type", "client_credentials")],
        )
        .await;
    expect_error(status, &body, 400, "unauthorized_client");
}

/// Refresh tokens made before they began with their creation time (43
/// characters, stored under their bare SHA-256) still rotate after an upgrade,
/// and their reuse still revokes the family. New ones are stored under the
/// backend's key layout: the time, then the hash, on SQLite; the time, then
/// the first 52 hex digits of the hash, on MySQL (the column's 64).
#[tokio::test]
async fn refresh_tokens_from_before_the_time_prefix_still_rotate() {
    use phonekey::db::tokens::refresh_key;
    use phonekey::secrets;

    let server = TestServer::start();
    let (client_id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let (_, tokens) = server.user_tokens(&client_id, &secret).await;
    let issued = tokens["refresh_token"].as_str().unwrap();
    let time = secrets::ordered_secret_time(issued).expect("a new token starts with its time");

    let key = refresh_key(server.config.database.backend, issued);
    let hash = secrets::sha256_hex(issued.as_bytes());
    match server.db.backend() {
        "sqlite" => assert_eq!(key, format!("{time}{hash}")),
        _ => assert_eq!(key, format!("{time}{}", &hash[..52])),
    }
    // Rewrite the stored row as an old build left it.
    let old = secrets::random_urlsafe(32);
    assert_eq!(secrets::ordered_secret_time(&old), None);
    let changed = server.rewrite_rows(
        "UPDATE refresh_tokens SET token_hash = ? WHERE token_hash = ?",
        &[&secrets::sha256_hex(old.as_bytes()), &key],
    );
    assert_eq!(changed, 1, "the issued token is stored under its key");

    let refresh = |token: String| {
        let (server, client_id, secret) = (&server, &client_id, &secret);
        async move {
            let form = [("grant_type", "refresh_token"), ("refresh_token", &token)];
            server.token_basic(client_id, secret, &form).await
        }
    };
    // The issued token is no longer stored: only the rewritten one works.
    let (status, body, _) = refresh(issued.to_string()).await;
    expect_error(status, &body, 400, "invalid_grant");
    let (status, rotated, _) = refresh(old.clone()).await;
    assert_eq!(status, 200, "{rotated}");
    let newer = rotated["refresh_token"].as_str().unwrap().to_string();
    assert!(secrets::ordered_secret_time(&newer).is_some());
    // Reuse of the old token revokes the family, the new token included.
    let (status, body, _) = refresh(old).await;
    expect_error(status, &body, 400, "invalid_grant");
    let (status, body, _) = refresh(newer).await;
    expect_error(status, &body, 400, "invalid_grant");
}
