//! The authorization code flow through the HTML pages, as a browser drives
//! it: phone, SMS code, consent, redirect with the code, exchange at the
//! token endpoint with PKCE; and every way it must refuse.

mod common;

use base64::Engine;
use common::browser::Browser;
use common::{expect_error, new_phone, split, TestServer};
use phonekey::oauth::clients::{GrantType, NewClient};
use sha2::Digest;

const REDIRECT: &str = "https://app.example/callback";
const LOOPBACK: &str = "http://127.0.0.1/callback";

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = phonekey::secrets::random_urlsafe(48);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// A public app (PKCE required) and a confidential one, both with the code flow.
struct Apps {
    public_id: String,
    confidential_id: String,
    confidential_secret: String,
}

fn apps(server: &TestServer) -> Apps {
    let grants = vec![GrantType::AuthorizationCode, GrantType::RefreshToken];
    let (public_id, _) = server.register(&NewClient {
        name: "Pocket <App>".into(),
        confidential: false,
        grant_types: grants.clone(),
        redirect_uris: vec![REDIRECT.into(), LOOPBACK.into()],
        scopes: vec!["read".into(), "write".into()],
        resources: vec![],
    });
    let (confidential_id, secret) = server.register(&NewClient {
        name: "Web App".into(),
        confidential: true,
        grant_types: grants,
        redirect_uris: vec![REDIRECT.into()],
        scopes: vec!["read".into()],
        resources: vec![],
    });
    Apps {
        public_id,
        confidential_id,
        confidential_secret: secret.expect("secret"),
    }
}

fn authorize_url(params: &[(&str, &str)]) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("/o/authorize/?{query}")
}

/// The whole flow for the public app; returns (code, redirect params).
async fn approved_code(
    server: &TestServer,
    browser: &Browser,
    apps: &Apps,
    pkce: &Pkce,
    phone: &str,
) -> String {
    let start = browser
        .get(&public_request(
            apps,
            pkce,
            &[("scope", "read"), ("state", "st-1")],
        ))
        .await;
    let consent = browser.log_in(server, &start, phone).await;
    let approved = browser
        .submit(&consent, "/o/authorize/", &[("decision", "approve")])
        .await;
    assert_eq!(approved.status, 303, "{}", approved.html);
    let params = approved.redirect_params();
    assert_eq!(params.get("state").map(String::as_str), Some("st-1"));
    params.get("code").expect("code").clone()
}

/// The public app's authorization request with its PKCE challenge.
fn public_request(apps: &Apps, pkce: &Pkce, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", apps.public_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    authorize_url(&params)
}

/// The public app exchanges a code.
async fn redeem(
    server: &TestServer,
    apps: &Apps,
    code: &str,
    redirect: &str,
    verifier: &str,
) -> (u16, serde_json::Value) {
    exchange(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", &apps.public_id),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn exchange(server: &TestServer, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let (status, body, _) = server.post_form("/o/token/", form, "127.0.0.1").await;
    (status, body)
}

async fn introspect(server: &TestServer, apps: &Apps, token: &str) -> serde_json::Value {
    let response = server
        .http
        .post(server.url("/o/introspect/"))
        .basic_auth(&apps.confidential_id, Some(&apps.confidential_secret))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect");
    split(response).await.1
}

#[tokio::test]
async fn phone_login_consent_and_pkce_exchange() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let phone = new_phone();

    let start = browser
        .get(&public_request(
            &apps,
            &pkce,
            &[("scope", "read write"), ("state", "opaque state")],
        ))
        .await;
    assert_eq!(start.status, 200);
    // The client's name is escaped, not markup.
    assert!(
        start.text().contains("Sign in to Pocket <App>"),
        "{}",
        start.html
    );
    assert!(!start.html.contains("<App>"));
    let csrf = start.set_cookie("phonekey_csrf").expect("CSRF cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/o/authorize"] {
        assert!(csrf.contains(attribute), "{csrf}");
    }
    assert!(!csrf.contains("Secure"), "plain-http issuer: {csrf}");
    assert_eq!(start.headers["cache-control"], "no-store");
    assert_eq!(start.headers["x-frame-options"], "DENY");

    let code_page = browser
        .submit(&start, "/o/authorize/phone/", &[("phone", &phone)])
        .await;
    assert_eq!(code_page.status, 200, "{}", code_page.html);
    assert_eq!(server.sms.messages().len(), 1);
    let code = server.sms.last_code(&phone);

    // A wrong code first: the page says how many tries are left.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let retry = browser
        .submit(&code_page, "/o/authorize/code/", &[("code", wrong)])
        .await;
    assert_eq!(retry.status, 400);
    assert!(retry.html.contains("4 tries left"), "{}", retry.html);

    let logged_in = browser
        .submit(&retry, "/o/authorize/code/", &[("code", &code)])
        .await;
    assert_eq!(logged_in.status, 303, "{}", logged_in.html);
    let session = logged_in
        .set_cookie("phonekey_session")
        .expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/o/authorize", "Max-Age="] {
        assert!(session.contains(attribute), "{session}");
    }

    let consent = browser
        .get(&logged_in.location.clone().expect("location"))
        .await;
    assert_eq!(consent.status, 200);
    assert!(
        consent.text().contains("Allow Pocket <App>"),
        "{}",
        consent.html
    );
    assert!(consent.html.contains("<li>read</li>") && consent.html.contains("<li>write</li>"));
    assert!(consent.html.contains(&phone));

    let approved = browser
        .submit(&consent, "/o/authorize/", &[("decision", "approve")])
        .await;
    assert_eq!(approved.status, 303);
    let location = approved.location.clone().expect("location");
    assert!(location.starts_with(&format!("{REDIRECT}?")), "{location}");
    let params = approved.redirect_params();
    assert_eq!(params["state"], "opaque state");
    assert_eq!(params["iss"], server.base);
    let code = params["code"].clone();

    let (status, tokens) = redeem(&server, &apps, &code, REDIRECT, &pkce.verifier).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "read write");
    let access = tokens["access_token"].as_str().expect("access token");
    let refresh = tokens["refresh_token"].as_str().expect("refresh token");
    let info = introspect(&server, &apps, access).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], apps.public_id.as_str());
    assert_eq!(info["username"].as_str().map(str::is_empty), Some(false));

    // The refresh token works like any other.
    let (status, refreshed) = exchange(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &apps.public_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");

    // Reuse of the code: refused, and everything it issued is revoked.
    let (status, body) = redeem(&server, &apps, &code, REDIRECT, &pkce.verifier).await;
    expect_error(status, &body, 400, "invalid_grant");
    assert_eq!(introspect(&server, &apps, access).await["active"], false);
    let new_access = refreshed["access_token"].as_str().expect("access");
    assert_eq!(
        introspect(&server, &apps, new_access).await["active"],
        false
    );
    let (status, body) = exchange(
        &server,
        &[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                refreshed["refresh_token"].as_str().expect("refresh"),
            ),
            ("client_id", &apps.public_id),
        ],
    )
    .await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn a_logged_in_browser_skips_the_code_and_can_log_out() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let phone = new_phone();
    approved_code(&server, &browser, &apps, &pkce(), &phone).await;
    assert_eq!(server.sms.messages().len(), 1);

    let again = pkce();
    let url = public_request(&apps, &again, &[]);
    let consent = browser.get(&url).await;
    assert!(consent.has_form("/o/authorize/"), "{}", consent.html);
    assert_eq!(server.sms.messages().len(), 1, "no second SMS");

    let token = browser.cookie("phonekey_session").expect("session");
    let logged_out = browser.submit(&consent, "/o/authorize/logout/", &[]).await;
    assert_eq!(logged_out.status, 303);
    assert!(browser.cookie("phonekey_session").is_none());
    let start = browser
        .get(&logged_out.location.clone().expect("location"))
        .await;
    assert!(start.has_form("/o/authorize/phone/"), "{}", start.html);

    // The old session token is dead in the database, not only in this browser.
    let stale = Browser::new(&server.base);
    stale.put_cookie("phonekey_session", &token);
    let page = stale.get(&url).await;
    assert!(page.has_form("/o/authorize/phone/"), "{}", page.html);
}

#[tokio::test]
async fn deny_sends_access_denied_to_the_client() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let start = browser
        .get(&public_request(&apps, &pkce, &[("state", "s")]))
        .await;
    let consent = browser.log_in(&server, &start, &new_phone()).await;
    let denied = browser
        .submit(&consent, "/o/authorize/", &[("decision", "deny")])
        .await;
    assert_eq!(denied.status, 303);
    let params = denied.redirect_params();
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "s");
    assert!(!params.contains_key("code"));
}

#[tokio::test]
async fn pkce_is_checked_at_the_token_endpoint() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let code = approved_code(&server, &browser, &apps, &pkce, &new_phone()).await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", apps.public_id.as_str()),
    ];
    let other = crate::pkce();
    for verifier in [None, Some(other.verifier.as_str()), Some("short")] {
        let mut form = base.to_vec();
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let (status, body) = exchange(&server, &form).await;
        expect_error(status, &body, 400, "invalid_grant");
    }
    let mut form = base.to_vec();
    form.push(("code_verifier", &pkce.verifier));
    let (status, body) = exchange(&server, &form).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn confidential_clients_without_pkce_and_the_redirect_uri_rule() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    // No redirect_uri in the request: the one registered URI is used, and the
    // token request need not repeat it.
    let start = browser
        .get(&authorize_url(&[
            ("response_type", "code"),
            ("client_id", &apps.confidential_id),
        ]))
        .await;
    let consent = browser.log_in(&server, &start, &new_phone()).await;
    let approved = browser
        .submit(&consent, "/o/authorize/", &[("decision", "approve")])
        .await;
    assert!(approved
        .location
        .as_deref()
        .is_some_and(|l| l.starts_with(REDIRECT)));
    let code = approved.redirect_params()["code"].clone();
    let auth = |form: Vec<(&'static str, String)>| {
        let server = &server;
        let apps = &apps;
        async move {
            let response = server
                .http
                .post(server.url("/o/token/"))
                .basic_auth(&apps.confidential_id, Some(&apps.confidential_secret))
                .form(&form)
                .send()
                .await
                .expect("token");
            let (status, body, _) = split(response).await;
            (status, body)
        }
    };
    // A verifier for a code that had no challenge is a downgrade attempt.
    let (status, body) = auth(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("code_verifier", pkce().verifier),
    ])
    .await;
    expect_error(status, &body, 400, "invalid_grant");
    // A redirect_uri that differs from the registered one.
    let (status, body) = auth(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", "https://app.example/other".into()),
    ])
    .await;
    expect_error(status, &body, 400, "invalid_grant");
    // Another client cannot use the code.
    let (status, body) = exchange(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &apps.public_id),
        ],
    )
    .await;
    expect_error(status, &body, 400, "invalid_grant");
    let (status, body) = auth(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
    ])
    .await;
    assert_eq!(status, 200, "{body}");
    // No scope asked for: the client's default, which is all it may have.
    assert_eq!(body["scope"], "read");

    // With redirect_uri in the authorization request, the token request must repeat it.
    let start = browser
        .get(&authorize_url(&[
            ("response_type", "code"),
            ("client_id", &apps.confidential_id),
            ("redirect_uri", REDIRECT),
            ("scope", "read"),
        ]))
        .await;
    assert!(
        start.has_form("/o/authorize/"),
        "still logged in: {}",
        start.html
    );
    let approved = browser
        .submit(&start, "/o/authorize/", &[("decision", "approve")])
        .await;
    let code = approved.redirect_params()["code"].clone();
    let (status, body) = auth(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
    ])
    .await;
    expect_error(status, &body, 400, "invalid_request");
    let (status, body) = auth(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", REDIRECT.into()),
    ])
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read");
}

#[tokio::test]
async fn codes_expire_after_a_minute() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let code = approved_code(&server, &browser, &apps, &pkce, &new_phone()).await;
    server.clock.advance(61);
    let (status, body) = redeem(&server, &apps, &code, REDIRECT, &pkce.verifier).await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn untrusted_requests_get_a_page_never_a_redirect() {
    let server = TestServer::start();
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("response_type", "code")],
        vec![("response_type", "code"), ("client_id", "no-such-client")],
        vec![
            ("response_type", "code"),
            ("client_id", &apps.public_id),
            ("redirect_uri", "https://evil.example/callback"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
        // Two registered URIs and none named.
        vec![
            ("response_type", "code"),
            ("client_id", &apps.public_id),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
        vec![
            ("response_type", "code"),
            ("client_id", &apps.public_id),
            ("client_id", &apps.public_id),
            ("redirect_uri", REDIRECT),
        ],
        vec![
            ("response_type", "code"),
            ("client_id", &apps.public_id),
            ("redirect_uri", "not a url"),
        ],
        // A prefix of a registered URI is not that URI.
        vec![
            ("response_type", "code"),
            ("client_id", &apps.public_id),
            ("redirect_uri", "https://app.example/callback/../evil"),
        ],
    ];
    for params in cases {
        let page = browser.get(&authorize_url(&params)).await;
        assert_eq!(page.status, 400, "{params:?}: {}", page.html);
        assert!(page.location.is_none(), "{params:?}");
        assert!(
            page.html.contains("Invalid authorization request"),
            "{}",
            page.html
        );
        assert!(page.headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html")));
    }
    // Not a 500 for raw garbage either.
    let page = browser.get("/o/authorize/?%ff%fe=%00&client_id=%zz").await;
    assert_eq!(page.status, 400, "{}", page.html);
}

#[tokio::test]
async fn trusted_requests_send_their_errors_to_the_client() {
    let server = TestServer::start();
    let apps = apps(&server);
    let (no_code_flow, _) = server.register(&NewClient {
        name: "otp only".into(),
        confidential: false,
        grant_types: vec![GrantType::Otp],
        redirect_uris: vec![REDIRECT.into()],
        scopes: vec![],
        resources: vec![],
    });
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let with = |extra: &[(&'static str, String)]| {
        let mut params: Vec<(&str, String)> = vec![
            ("client_id", apps.public_id.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("state", "s1".into()),
        ];
        params.extend_from_slice(extra);
        params
    };
    let s256 = ("code_challenge_method", "S256".to_string());
    let challenge = ("code_challenge", pkce.challenge.clone());
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (with(&[challenge.clone(), s256.clone()]), "invalid_request"),
        (
            with(&[
                ("response_type", "token".into()),
                challenge.clone(),
                s256.clone(),
            ]),
            "unsupported_response_type",
        ),
        // Public clients must use PKCE, and only S256.
        (with(&[("response_type", "code".into())]), "invalid_request"),
        (
            with(&[("response_type", "code".into()), challenge.clone()]),
            "invalid_request",
        ),
        (
            with(&[
                ("response_type", "code".into()),
                challenge.clone(),
                ("code_challenge_method", "plain".into()),
            ]),
            "invalid_request",
        ),
        (
            with(&[
                ("response_type", "code".into()),
                ("code_challenge", "too-short".into()),
                s256.clone(),
            ]),
            "invalid_request",
        ),
        (
            with(&[
                ("response_type", "code".into()),
                challenge.clone(),
                s256.clone(),
                ("scope", "read admin".into()),
            ]),
            "invalid_scope",
        ),
        (
            vec![
                ("client_id", no_code_flow),
                ("response_type", "code".into()),
                ("state", "s1".into()),
                challenge.clone(),
                s256.clone(),
            ],
            "unauthorized_client",
        ),
    ];
    for (params, error) in cases {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = browser.get(&authorize_url(&params)).await;
        assert_eq!(page.status, 303, "{params:?}: {}", page.html);
        let got = page.redirect_params();
        assert_eq!(
            got.get("error").map(String::as_str),
            Some(error),
            "{params:?}"
        );
        assert_eq!(got["state"], "s1");
        assert!(page
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with(REDIRECT)));
    }
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let start_url = public_request(&apps, &pkce, &[]);
    let start = browser.get(&start_url).await;
    let phone = new_phone();
    let mut fields = start.form("/o/authorize/phone/");
    fields.retain(|(n, _)| n != "csrf");
    fields.push(("phone".into(), phone.clone()));
    let page = browser.post("/o/authorize/phone/", &fields).await;
    assert_eq!(page.status, 403, "{}", page.html);
    // A token from another browser does not fit this browser's cookie.
    let other = Browser::new(&server.base);
    let theirs = other.get(&start_url).await;
    let mut fields = start.form("/o/authorize/phone/");
    fields.retain(|(n, _)| n != "csrf");
    fields.extend(
        theirs
            .form("/o/authorize/phone/")
            .into_iter()
            .filter(|(n, _)| n == "csrf"),
    );
    fields.push(("phone".into(), phone.clone()));
    assert_eq!(fields.iter().filter(|(n, _)| n == "csrf").count(), 1);
    let page = browser.post("/o/authorize/phone/", &fields).await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert!(server.sms.messages().is_empty(), "no SMS for a forged form");

    // Consent without a token: no code is issued.
    let consent = browser.log_in(&server, &start, &phone).await;
    let mut fields = consent.form("/o/authorize/");
    fields.retain(|(n, _)| n != "csrf");
    fields.push(("decision".into(), "approve".into()));
    let page = browser.post("/o/authorize/", &fields).await;
    assert_eq!(page.status, 403);
    assert!(page.location.is_none());
}

#[tokio::test]
async fn native_apps_may_use_any_loopback_port() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let redirect = "http://127.0.0.1:49152/callback";
    let start = browser
        .get(&authorize_url(&[
            ("response_type", "code"),
            ("client_id", &apps.public_id),
            ("redirect_uri", redirect),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ]))
        .await;
    let consent = browser.log_in(&server, &start, &new_phone()).await;
    let approved = browser
        .submit(&consent, "/o/authorize/", &[("decision", "approve")])
        .await;
    let location = approved.location.clone().expect("location");
    assert!(location.starts_with(&format!("{redirect}?")), "{location}");
    let code = approved.redirect_params()["code"].clone();
    let (status, body) = redeem(&server, &apps, &code, redirect, &pkce.verifier).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn without_auto_created_users_an_unknown_phone_cannot_log_in() {
    let server = TestServer::start();
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let phone = new_phone();
    let start = browser.get(&public_request(&apps, &pkce, &[])).await;
    let code_page = browser
        .submit(&start, "/o/authorize/phone/", &[("phone", &phone)])
        .await;
    let code = server.sms.last_code(&phone);
    let page = browser
        .submit(&code_page, "/o/authorize/code/", &[("code", &code)])
        .await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert!(page.html.contains("No account uses this phone number"));
    assert!(browser.cookie("phonekey_session").is_none());

    // Once the phone has a user (signed up through the API), it can.
    let cooldown = server.config.otp.resend_seconds + 1;
    server.clock.advance(cooldown);
    server.signed_up_user(&phone).await;
    server.clock.advance(cooldown);
    let consent = browser.log_in(&server, &start, &phone).await;
    assert!(consent.has_form("/o/authorize/"), "{}", consent.html);
}

#[tokio::test]
async fn https_issuers_get_secure_cookies() {
    let server = TestServer::start_with(&[("PHONEKEY_ISSUER", "https://id.example.com")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let page = browser.get(&public_request(&apps, &pkce, &[])).await;
    let cookie = page.set_cookie("phonekey_csrf").expect("cookie");
    assert!(cookie.contains("Secure"), "{cookie}");
}

/// Twenty exchanges of one code at once: one gets tokens, and since the
/// others are reuse, those tokens end up revoked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_exchanges_of_one_code() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let apps = apps(&server);
    let browser = Browser::new(&server.base);
    let pkce = pkce();
    let code = approved_code(&server, &browser, &apps, &pkce, &new_phone()).await;
    let server = std::sync::Arc::new(server);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (server, code, id, verifier) = (
                server.clone(),
                code.clone(),
                apps.public_id.clone(),
                pkce.verifier.clone(),
            );
            tokio::spawn(async move {
                exchange(
                    &server,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", REDIRECT),
                        ("client_id", &id),
                        ("code_verifier", &verifier),
                    ],
                )
                .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            200 => winners.push(body),
            _ => expect_error(status, &body, 400, "invalid_grant"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one exchange wins");
    let access = winners[0]["access_token"].as_str().expect("access");
    assert_eq!(introspect(&server, &apps, access).await["active"], false);
}
