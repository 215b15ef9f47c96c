//! `grant_type=password`: username or phone plus Argon2id password, only for
//! clients that allow it, the same answer for unknown users and wrong passwords.

mod common;

use common::*;
use phonekey::oauth::clients::GrantType;
use serde_json::json;

#[tokio::test]
async fn password_grant_by_username_or_phone() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Password, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    let ticket = server.verified_ticket(&phone).await;
    let (status, user, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "username": "ann", "password": "correct horse", "secret_identifier": ticket }),
        )
        .await;
    assert_eq!(status, 201, "{user}");

    for login in ["ann", phone.as_str()] {
        let (status, tokens, _) = server
            .token_basic(
                &id,
                &secret,
                &[
                    ("grant_type", "password"),
                    ("username", login),
                    ("password", "correct horse"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{login}: {tokens}");
        assert!(tokens["refresh_token"].is_string());
        let (_, info, _) = server
            .token_basic(
                &id,
                &secret,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ],
            )
            .await;
        assert!(info["access_token"].is_string(), "{info}");
    }

    let (s1, wrong, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "password"),
                ("username", "ann"),
                ("password", "wrong horse"),
            ],
        )
        .await;
    let (s2, unknown, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "password"),
                ("username", "nobody"),
                ("password", "wrong horse"),
            ],
        )
        .await;
    assert_eq!((s1, s2), (400, 400));
    assert_eq!(
        wrong, unknown,
        "unknown users and wrong passwords look the same"
    );
    assert_eq!(wrong["error"], "invalid_grant");

    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[("grant_type", "password"), ("username", "ann")],
        )
        .await;
    expect_error(status, &body, 400, "invalid_request");
}

#[tokio::test]
async fn users_without_a_password_and_clients_without_the_grant() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Password], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    let (_, user) = server.signed_up_user(&phone).await;
    let username = user["username"].as_str().unwrap();
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "password"),
                ("username", username),
                ("password", "anything at all"),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");

    let (otp_only, otp_secret) = server.client(&[GrantType::Otp], true);
    let (status, body, _) = server
        .token_basic(
            &otp_only,
            &otp_secret.unwrap(),
            &[
                ("grant_type", "password"),
                ("username", username),
                ("password", "x"),
            ],
        )
        .await;
    expect_error(status, &body, 400, "unauthorized_client");

    // Without refresh_token among its grants, a client gets no refresh token.
    let ticket = server.verified_ticket(&new_phone()).await;
    server
        .put_json(
            "/api/v1/user/",
            &json!({ "username": "bo", "password": "long enough", "secret_identifier": ticket }),
        )
        .await;
    let (status, tokens, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "password"),
                ("username", "bo"),
                ("password", "long enough"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens.get("refresh_token").is_none());
}
