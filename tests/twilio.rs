//! The `twilio` SMS provider against a local server that speaks Twilio's
//! Messages API: Basic credentials, a form with To, From and Body, 201.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use common::*;

const SID: &str = "ACtest0123";
const TOKEN: &str = "auth-token-xyz";

/// The forms Twilio received.
type Received = Arc<Mutex<Vec<HashMap<String, String>>>>;

fn fake_twilio() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let store = got.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let store = store.clone();
                App::new().route(
                    "/2010-04-01/Accounts/{sid}/Messages.json",
                    web::post().to(
                        move |req: HttpRequest,
                              path: web::Path<String>,
                              form: web::Form<HashMap<String, String>>| {
                            let store = store.clone();
                            async move {
                                let expected = format!(
                                    "Basic {}",
                                    base64::engine::general_purpose::STANDARD
                                        .encode(format!("{SID}:{TOKEN}"))
                                );
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok());
                                if path.into_inner() != SID || auth != Some(expected.as_str()) {
                                    return HttpResponse::Unauthorized()
                                        .json(serde_json::json!({"code": 20003}));
                                }
                                store.lock().unwrap().push(form.into_inner());
                                HttpResponse::Created()
                                    .json(serde_json::json!({"sid": "SM1", "status": "queued"}))
                            }
                        },
                    ),
                )
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    (base, got)
}

#[tokio::test]
async fn codes_go_out_through_twilio() {
    let (base, got) = fake_twilio();
    let server = TestServer::start_with(&[
        ("PHONEKEY_SMS_PROVIDER", "twilio"),
        ("PHONEKEY_TWILIO_API_BASE", &base),
        ("PHONEKEY_TWILIO_ACCOUNT_SID", SID),
        ("PHONEKEY_TWILIO_AUTH_TOKEN", TOKEN),
        ("PHONEKEY_TWILIO_FROM", "+15005550006"),
    ]);
    let phone = new_phone();
    let (status, body, _) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = got.lock().unwrap().pop().expect("Twilio got the message");
    assert_eq!(sent["To"], phone);
    assert_eq!(sent["From"], "+15005550006");
    let code = sent["Body"].rsplit('#').next().unwrap().to_string();
    assert_eq!(code.len(), 6, "{}", sent["Body"]);
    let (status, body, _) = server
        .post_form(
            "/otp/verifycode/",
            &[("phone", &phone), ("code", &code)],
            &new_ip(),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Twilio refusing (wrong credentials) is 503 sms_unavailable.
    let refused = TestServer::start_with(&[
        ("PHONEKEY_SMS_PROVIDER", "twilio"),
        ("PHONEKEY_TWILIO_API_BASE", &base),
        ("PHONEKEY_TWILIO_ACCOUNT_SID", SID),
        ("PHONEKEY_TWILIO_AUTH_TOKEN", "wrong"),
        ("PHONEKEY_TWILIO_FROM", "+15005550006"),
    ]);
    let (status, body, _) = refused
        .post_form("/otp/getcode/", &[("phone", &new_phone())], &new_ip())
        .await;
    expect_error(status, &body, 503, "sms_unavailable");
}

#[test]
fn twilio_needs_its_settings() {
    let err = phonekey::config::Config::from_pairs([("PHONEKEY_SMS_PROVIDER", "twilio")])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("PHONEKEY_TWILIO_"), "{err}");
}
