//! User creation (api.md §3): tickets, validation, conflicts, form bodies.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn the_ticket_is_required_and_checked_first() {
    let server = TestServer::start();
    for body in [
        json!({ "auto_username": true }),
        json!({ "auto_username": true, "secret_identifier": "0".repeat(48) }),
        json!({ "auto_username": true, "secret_identifier": 42 }),
        // Bad fields, but the ticket is looked at first.
        json!({ "email": "nope", "secret_identifier": "x" }),
    ] {
        let (status, resp, _) = server.put_json("/api/v1/user/", &body).await;
        assert_eq!(
            (status, resp["error"].as_str()),
            (400, Some("invalid_secret_identifier")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_ticket_creates_one_user_and_then_still_buys_tokens_once() {
    let server = TestServer::start();
    let (client_id, secret) = server.client(&[phonekey::oauth::clients::GrantType::Otp], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    let (ticket, _) = server.signed_up_user(&phone).await;
    let (status, body, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "auto_username": true, "secret_identifier": ticket }),
        )
        .await;
    expect_error(status, &body, 400, "invalid_secret_identifier");
    let form = [
        ("grant_type", "otp"),
        ("phone", phone.as_str()),
        ("secret_identifier", ticket.as_str()),
    ];
    let (status, _, _) = server.token_basic(&client_id, &secret, &form).await;
    assert_eq!(status, 200);
    let (status, body, _) = server.token_basic(&client_id, &secret, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "ticket reuse at the token endpoint"
    );
}

#[tokio::test]
async fn expired_ticket() {
    let server = TestServer::start();
    let ticket = server.verified_ticket(&new_phone()).await;
    server.clock.advance(601);
    let (status, body, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "auto_username": true, "secret_identifier": ticket }),
        )
        .await;
    expect_error(status, &body, 400, "invalid_secret_identifier");
}

#[tokio::test]
async fn phone_mismatch_and_field_errors_keep_the_ticket() {
    let server = TestServer::start();
    let phone = new_phone();
    let ticket = server.verified_ticket(&phone).await;
    let (status, body, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "auto_username": true, "secret_identifier": ticket, "account": { "phone": new_phone() } }),
        )
        .await;
    expect_error(status, &body, 400, "invalid_request");
    assert!(body["fields"]["account"]["phone"].is_string(), "{body}");

    let (status, body, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "secret_identifier": ticket, "email": "not-an-email", "password": "short",
                     "account": { "dob": "yesterday" } }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["fields"]["email"], "not an email address");
    assert!(body["fields"]["password"].is_string());
    assert!(
        body["fields"]["username"].is_string(),
        "username is required without auto_username"
    );
    assert!(body["fields"]["account"]["dob"].is_string());

    let (status, body, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "secret_identifier": ticket, "account": { "phone": "garbage" } }),
        )
        .await;
    expect_error(status, &body, 400, "invalid_phone");

    // None of that spent the ticket.
    let (status, user, _) = server
        .put_json("/api/v1/user/", &json!({ "secret_identifier": ticket, "username": "ann.lee", "account": { "dob": "1990-01-31" } }))
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["username"], "ann.lee");
    assert_eq!(user["account"]["dob"], "1990-01-31T00:00:00Z");
    assert_eq!(user["account"]["phone"], phone.as_str());
}

#[tokio::test]
async fn duplicates_are_409_and_leave_nothing_behind() {
    let server = TestServer::start();
    let phone = new_phone();
    let (_, first) = server.signed_up_user(&phone).await;
    let username = first["username"].as_str().unwrap();

    // Same phone again (a second verification of it).
    server.clock.advance(31);
    let ticket = server.verified_ticket(&phone).await;
    let (status, body, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "auto_username": true, "secret_identifier": ticket }),
        )
        .await;
    expect_error(status, &body, 409, "conflict");
    assert!(body["fields"]["phone"].is_string(), "{body}");

    // Same username, other phone; then the same email.
    let other = new_phone();
    let ticket = server.verified_ticket(&other).await;
    let (status, body, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "username": username, "secret_identifier": ticket }),
        )
        .await;
    expect_error(status, &body, 409, "conflict");
    assert!(body["fields"]["username"].is_string(), "{body}");
    let (status, _, _) = server
        .put_json("/api/v1/user/", &json!({ "username": "first.owner", "email": "a@example.com", "secret_identifier": ticket }))
        .await;
    assert_eq!(status, 201, "the failed attempts did not spend the ticket");

    let third = new_phone();
    let ticket = server.verified_ticket(&third).await;
    let (status, body, _) = server
        .put_json("/api/v1/user/", &json!({ "auto_username": true, "email": "A@example.com", "secret_identifier": ticket }))
        .await;
    expect_error(status, &body, 409, "conflict");
    assert!(body["fields"]["email"].is_string(), "{body}");
    // No half-written user: the phone has no user, so verifycode says so.
    server.clock.advance(31);
    let code = server.get_code(&third).await;
    let (_, body, _) = server
        .post_form(
            "/otp/verifycode/",
            &[("phone", &third), ("code", &code)],
            &new_ip(),
        )
        .await;
    assert_eq!(body["user_exists"], false);
}

#[tokio::test]
async fn form_bodies_and_post_work_too() {
    let server = TestServer::start();
    let phone = new_phone();
    let ticket = server.verified_ticket(&phone).await;
    let response = server
        .http
        .post(server.url("/api/v1/user"))
        .form(&[
            ("secret_identifier", ticket.as_str()),
            ("auto_username", "true"),
            ("first_name", "Ann"),
            ("account.zip_code", "500081"),
            ("account[blood_group]", "o-"),
        ])
        .send()
        .await
        .unwrap();
    let (status, user, _) = split(response).await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["first_name"], "Ann");
    assert_eq!(user["account"]["zip_code"], "500081");
    assert_eq!(user["account"]["blood_group"], "o-");
    assert_eq!(user["account"]["verified"], true);
}

#[tokio::test]
async fn verifycode_reports_existing_users() {
    let server = TestServer::start();
    let phone = new_phone();
    server.signed_up_user(&phone).await;
    server.clock.advance(31);
    let code = server.get_code(&phone).await;
    let (_, body, _) = server
        .post_form(
            "/otp/verifycode/",
            &[("phone", &phone), ("code", &code)],
            &new_ip(),
        )
        .await;
    assert_eq!(body["user_exists"], true);
}
