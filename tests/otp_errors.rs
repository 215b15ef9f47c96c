//! Every error path of getcode and verifycode (api.md §1–§2).

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn bad_phones_get_invalid_phone() {
    let server = TestServer::start();
    for bad in ["", "abc", "+1", "1234567822", "+99999999999999999999"] {
        let (status, body, _) = server
            .post_form("/otp/getcode/", &[("phone", bad)], &new_ip())
            .await;
        let expected = if bad.is_empty() {
            "invalid_request"
        } else {
            "invalid_phone"
        };
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(expected)),
            "{bad}: {body}"
        );
        assert!(body["error_description"].as_str().is_some());
    }
    let (status, body, _) = server
        .post_json(
            "/otp/verifycode/",
            &json!({"phone": "nope", "code": "123456"}),
        )
        .await;
    expect_error(status, &body, 400, "invalid_phone");
    assert!(server.sms.messages().is_empty());
}

#[tokio::test]
async fn national_format_with_a_default_region() {
    let server = TestServer::start_with(&[("PHONEKEY_DEFAULT_REGION", "IN")]);
    let (status, body, _) = server
        .post_form("/otp/getcode/", &[("phone", "098765 43210")], &new_ip())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phone"], "+919876543210");
    // The code verifies whatever spelling of the number comes back.
    let code = server.sms.last_code("+919876543210");
    let (status, body, _) = server
        .post_json(
            "/otp/verifycode/",
            &json!({"phone": "+91 98765 43210", "code": code}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn wrong_codes_count_down_and_kill_the_code() {
    let server = TestServer::start();
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for left in (0..5).rev() {
        let (status, body) = server.verify(&phone, wrong).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_code")),
            "{body}"
        );
        assert_eq!(body["attempts_left"], left);
    }
    // Dead: even the right code is refused now.
    let (status, body) = server.verify(&phone, &code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_attempts")),
        "{body}"
    );
}

#[tokio::test]
async fn the_right_code_on_the_last_attempt_verifies() {
    let server = TestServer::start();
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        let (status, _) = server.verify(&phone, wrong).await;
        assert_eq!(status, 400);
    }
    // An overlong code is refused before it can cost an attempt.
    let (status, body) = server.verify(&phone, &"1".repeat(65)).await;
    expect_error(status, &body, 400, "invalid_request");
    let (status, body) = server.verify(&phone, &code).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn expired_and_absent_codes_look_the_same() {
    let server = TestServer::start();
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    server.clock.advance(301);
    let (status, expired) = server.verify(&phone, &code).await;
    assert_eq!(status, 400);
    let (status, absent) = server.verify(&new_phone(), "123456").await;
    assert_eq!(status, 400);
    assert_eq!(expired, absent);
    assert_eq!(expired["error"], "invalid_code");
    assert!(expired.get("attempts_left").is_none());
}

#[tokio::test]
async fn a_code_verifies_once() {
    let server = TestServer::start();
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let (status, _) = server.verify(&phone, &code).await;
    assert_eq!(status, 200);
    let (status, body) = server.verify(&phone, &code).await;
    expect_error(status, &body, 400, "invalid_code");
}

#[tokio::test]
async fn a_new_code_supersedes_the_old_one() {
    let server = TestServer::start();
    let phone = new_phone();
    let first = server.get_code(&phone).await;
    let second = server.get_code_after_cooldown(&phone).await;
    if first != second {
        let (status, _) = server.verify(&phone, &first).await;
        assert_eq!(status, 400, "the superseded code must not verify");
    }
    let (status, body) = server.verify(&phone, &second).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn resend_cooldown_with_retry_after() {
    let server = TestServer::start();
    let phone = new_phone();
    server.get_code(&phone).await;
    server.clock.advance(10);
    let (status, body, headers) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    expect_error(status, &body, 429, "rate_limited");
    assert_eq!(headers["retry-after"], "20");
    server.clock.advance(20);
    let (status, _, _) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn codes_per_phone_per_hour() {
    let server = TestServer::start();
    let phone = new_phone();
    for _ in 0..5 {
        server.get_code_after_cooldown(&phone).await;
    }
    server.clock.advance(31);
    let (status, body, headers) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    let wait: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 30 && wait <= 3600, "{wait}");
    server.clock.advance(wait);
    let (status, _, _) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    assert_eq!(status, 200, "a new hour, a new window");
}

#[tokio::test]
async fn codes_per_ip_per_hour_and_untrusted_forwarded_for() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_PER_IP_HOUR", "3")]);
    let ip = new_ip();
    for _ in 0..3 {
        let (status, _, _) = server
            .post_form("/otp/getcode/", &[("phone", &new_phone())], &ip)
            .await;
        assert_eq!(status, 200);
    }
    let (status, body, headers) = server
        .post_form("/otp/getcode/", &[("phone", &new_phone())], &ip)
        .await;
    expect_error(status, &body, 429, "rate_limited");
    assert!(headers.contains_key("retry-after"));
    // A refused request spent nothing: another IP still gets a code for a new phone.
    let (status, _, _) = server
        .post_form("/otp/getcode/", &[("phone", &new_phone())], &new_ip())
        .await;
    assert_eq!(status, 200);

    // Behind an untrusted peer, X-Forwarded-For is ignored: the peer is the client.
    let strict = TestServer::start_with(&[
        ("PHONEKEY_OTP_PER_IP_HOUR", "2"),
        ("PHONEKEY_TRUSTED_PROXIES", ""),
    ]);
    for expected in [200, 200, 429] {
        let (status, _, _) = strict
            .post_form("/otp/getcode/", &[("phone", &new_phone())], &new_ip())
            .await;
        assert_eq!(status, expected);
    }
}

#[tokio::test]
async fn sms_provider_refusing_or_unreachable_is_503_and_drops_the_code() {
    let server = TestServer::start();
    let phone = new_phone();
    server.sms.set_mode(SmsMode::Refuse);
    let (status, body, _) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("sms_unavailable")),
        "{body}"
    );
    server.sms.set_mode(SmsMode::Deliver);
    // The dropped code is gone: nothing verifies for this phone.
    let (status, _) = server.verify(&phone, "123456").await;
    assert_eq!(status, 400);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/sms", closed.local_addr().unwrap());
    drop(closed);
    let down = TestServer::start_with(&[("PHONEKEY_SMS_WEBHOOK_URL", &dead_url)]);
    let (status, body, _) = down
        .post_form("/otp/getcode/", &[("phone", &new_phone())], &new_ip())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("sms_unavailable")),
        "{body}"
    );
}

#[tokio::test]
async fn same_answer_for_known_and_unknown_phones() {
    let server = TestServer::start();
    let known = new_phone();
    server.signed_up_user(&known).await;
    server.clock.advance(31);
    let (s1, b1, _) = server
        .post_form("/otp/getcode/", &[("phone", &known)], &new_ip())
        .await;
    let unknown = new_phone();
    let (s2, b2, _) = server
        .post_form("/otp/getcode/", &[("phone", &unknown)], &new_ip())
        .await;
    assert_eq!((s1, s2), (200, 200));
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("phone");
        v
    };
    assert_eq!(strip(b1), strip(b2));
}

#[tokio::test]
async fn configured_code_length_and_ttl() {
    let server = TestServer::start_with(&[
        ("PHONEKEY_OTP_CODE_LENGTH", "8"),
        ("PHONEKEY_OTP_CODE_TTL", "120"),
    ]);
    let phone = new_phone();
    let (status, body, _) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 120);
    assert_eq!(server.sms.last_code(&phone).len(), 8);
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let server = TestServer::start();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", b"{not json".to_vec(), 400),
        ("application/json", b"[1,2]".to_vec(), 400),
        (
            "application/json",
            br#"{"phone": {"nested": 1}}"#.to_vec(),
            400,
        ),
        ("text/plain", b"phone=+14155550123".to_vec(), 400),
        (
            "application/x-www-form-urlencoded",
            b"phone=%2B1&phone=%2B2".to_vec(),
            400,
        ),
        (
            "application/x-www-form-urlencoded",
            vec![b'a'; 70 * 1024],
            413,
        ),
        ("application/json", b"{}".to_vec(), 400),
    ];
    for (content_type, body, expected) in cases {
        for path in ["/otp/getcode/", "/otp/verifycode/", "/api/v1/user/"] {
            let response = server
                .http
                .post(server.url(path))
                .header("content-type", content_type)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let (status, json, _) = split(response).await;
            // The user endpoint checks its ticket first.
            if path == "/api/v1/user/" && status == 400 && expected == 400 {
                assert!(json["error"].is_string());
                continue;
            }
            assert_eq!(status, expected, "{path} {content_type}: {json}");
            assert_eq!(json["error"], "invalid_request", "{path}: {json}");
        }
    }
    // Unknown paths and methods answer JSON too.
    let (status, body, _) = split(
        server
            .http
            .get(server.url("/no/such/thing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_error(status, &body, 404, "not_found");
    let (status, body, _) = split(
        server
            .http
            .get(server.url("/otp/getcode/"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_error(status, &body, 405, "invalid_request");
}
