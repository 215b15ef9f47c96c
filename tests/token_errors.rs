//! The token endpoint's error paths: RFC 6749 §5.2 codes and statuses, never a 500.

mod common;

use common::*;
use phonekey::oauth::clients::GrantType;

async fn raw(
    server: &TestServer,
    body: &str,
    auth: Option<&str>,
    content_type: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut request = server
        .http
        .post(server.url("/o/token/"))
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    split(request.send().await.unwrap()).await
}

#[tokio::test]
async fn client_authentication_failures() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.unwrap();
    let form = [("grant_type", "otp"), ("phone", PHONE), ("code", "123456")];

    // Wrong secret by Basic: 401 with WWW-Authenticate.
    let (status, body, headers) = server.token_basic(&id, "wrong", &form).await;
    expect_error(status, &body, 401, "invalid_client");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    // Unknown client by Basic.
    let (status, _, headers) = server.token_basic("nobody", &secret, &form).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    // Wrong secret in the body: 401 without the Basic challenge.
    let body =
        format!("grant_type=otp&phone=%2B14155550123&code=1&client_id={id}&client_secret=wrong");
    let (status, json, headers) =
        raw(&server, &body, None, "application/x-www-form-urlencoded").await;
    expect_error(status, &json, 401, "invalid_client");
    assert!(!headers.contains_key("www-authenticate"));
    // No credentials at all.
    let (status, json, _) = raw(
        &server,
        "grant_type=otp&phone=%2B14155550123&code=1",
        None,
        "application/x-www-form-urlencoded",
    )
    .await;
    expect_error(status, &json, 401, "invalid_client");
    // A confidential client without its secret.
    let (status, _, _) = raw(
        &server,
        &format!("grant_type=otp&client_id={id}"),
        None,
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(status, 401);
    // Malformed Basic.
    let (status, json, _) = raw(
        &server,
        "grant_type=otp",
        Some("Basic %%%"),
        "application/x-www-form-urlencoded",
    )
    .await;
    expect_error(status, &json, 401, "invalid_client");
    // Two methods at once.
    let (status, json, _) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "otp"), ("client_secret", &secret)],
        )
        .await;
    expect_error(status, &json, 400, "invalid_request");
}

#[tokio::test]
async fn grant_type_checks() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.unwrap();
    let (status, body, _) = server.token_basic(&id, &secret, &[("phone", PHONE)]).await;
    expect_error(status, &body, 400, "invalid_request");
    let (status, body, _) = server
        .token_basic(&id, &secret, &[("grant_type", "implicit")])
        .await;
    expect_error(status, &body, 400, "unsupported_grant_type");
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );
}

#[tokio::test]
async fn otp_grant_needs_a_proof() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    server.signed_up_user(&phone).await;
    // The seed's phone-only call is refused.
    let (status, body, _) = server
        .token_basic(&id, &secret, &[("grant_type", "otp"), ("phone", &phone)])
        .await;
    expect_error(status, &body, 400, "invalid_request");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("proof"));
    let (status, body, _) = server
        .token_basic(&id, &secret, &[("grant_type", "otp"), ("code", "123456")])
        .await;
    expect_error(status, &body, 400, "invalid_request");
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "otp"),
                ("phone", &phone),
                ("code", "1"),
                ("secret_identifier", "2"),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_request");
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "otp"), ("phone", "garbage"), ("code", "1")],
        )
        .await;
    expect_error(status, &body, 400, "invalid_request");
    // Wrong proofs are invalid_grant.
    for (key, value) in [
        ("code", "000000"),
        ("secret_identifier", "deadbeef"),
        ("secret_identifier", "é"),
    ] {
        let (status, body, _) = server
            .token_basic(
                &id,
                &secret,
                &[("grant_type", "otp"), ("phone", &phone), (key, value)],
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{key}={value}: {body}"
        );
    }
    // A ticket for another phone does not prove this one.
    let other_ticket = server.verified_ticket(&new_phone()).await;
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "otp"),
                ("phone", &phone),
                ("secret_identifier", &other_ticket),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn code_proof_counts_attempts() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    server.signed_up_user(&phone).await;
    let code = server.get_code_after_cooldown(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, _, _) = server
            .token_basic(
                &id,
                &secret,
                &[("grant_type", "otp"), ("phone", &phone), ("code", wrong)],
            )
            .await;
        assert_eq!(status, 400);
    }
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "otp"), ("phone", &phone), ("code", &code)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "five wrong tries killed the code"
    );
}

#[tokio::test]
async fn malformed_requests_are_invalid_request_never_500() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{id}:{secret}")
        )
    );
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        (
            "grant_type=otp&grant_type=otp&phone=%2B14155550123&code=1",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            r#"{"grant_type":"otp"}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            "grant_type=refresh_token",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&refresh_token=%00%FF",
            "application/x-www-form-urlencoded",
            400,
            "invalid_grant",
        ),
        (
            "grant_type=refresh_token&refresh_token=abc&scope=%22bad%22",
            "application/x-www-form-urlencoded",
            400,
            "invalid_grant",
        ),
        (
            "\u{1}\u{2}garbage=&&&==",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            "",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
    ];
    for (body, content_type, status, error) in cases {
        let (got, json, headers) = raw(&server, body, Some(&basic), content_type).await;
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(error)),
            "{body}: {json}"
        );
        assert_eq!(headers["cache-control"], "no-store");
    }
    let big = format!("grant_type=otp&pad={}", "a".repeat(70 * 1024));
    let (status, json, _) = raw(
        &server,
        &big,
        Some(&basic),
        "application/x-www-form-urlencoded",
    )
    .await;
    expect_error(status, &json, 413, "invalid_request");
    // Two Authorization headers.
    let response = server
        .http
        .post(server.url("/o/token/"))
        .header("authorization", &basic)
        .header("authorization", &basic)
        .form(&[("grant_type", "otp")])
        .send()
        .await
        .unwrap();
    let (status, json, _) = split(response).await;
    expect_error(status, &json, 400, "invalid_request");
}

#[tokio::test]
async fn refresh_token_errors() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let (_phone, tokens) = server.user_tokens(&id, &secret).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // Another confidential client cannot use it.
    let (other, other_secret) = server.client(&[GrantType::RefreshToken], true);
    let (status, body, _) = server
        .token_basic(
            &other,
            &other_secret.unwrap(),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
    // A wider scope than granted.
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "admin"),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_scope");
    // Expired (14 days by default).
    server.clock.advance(1_209_601);
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
}

/// Client rows are cached per process for `CLIENT_CACHE_FOR`: a client
/// deleted in the database (by the CLI or another instance) is refused once
/// that time has passed.
#[tokio::test]
async fn a_deleted_client_is_refused_after_the_cache_window() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.expect("secret");
    let form = [("grant_type", "client_credentials")];
    let (status, body, _) = server.token_basic(&id, &secret, &form).await;
    assert_eq!(status, 200, "{body}");

    let mut conn = phonekey::db::connect_once(&server.config.database).expect("connect");
    let conn = conn.db().expect("a connection");
    assert!(phonekey::db::clients::delete(conn, &id).expect("delete"));
    std::thread::sleep(
        phonekey::oauth::clients::CLIENT_CACHE_FOR + std::time::Duration::from_millis(100),
    );

    let (status, body, _) = server.token_basic(&id, &secret, &form).await;
    expect_error(status, &body, 401, "invalid_client");
}
