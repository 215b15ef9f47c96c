//! RFC 8707 resource indicators: a client names the API a token is for with
//! `resource`, among the resources it was registered with, and the token's
//! `aud` is that API — through every grant, refresh and the code flow.

mod common;

use common::browser::Browser;
use common::{expect_error, jwt_claims, new_phone, split, TestServer};
use phonekey::oauth::clients::{GrantType, NewClient};
use serde_json::Value;

const API: &str = "https://api.example/";
const BILLING: &str = "https://billing.example/v1";
const REDIRECT: &str = "https://app.example/callback";

struct App {
    id: String,
    secret: String,
}

fn app(server: &TestServer) -> App {
    let (id, secret) = server.register(&NewClient {
        name: "api client".into(),
        confidential: true,
        grant_types: vec![
            GrantType::ClientCredentials,
            GrantType::Otp,
            GrantType::RefreshToken,
            GrantType::AuthorizationCode,
        ],
        redirect_uris: vec![REDIRECT.into()],
        scopes: vec![],
        resources: vec![API.into(), BILLING.into()],
    });
    App {
        id,
        secret: secret.expect("secret"),
    }
}

async fn token(server: &TestServer, app: &App, form: &[(&str, &str)]) -> (u16, Value) {
    let (status, body, _) = server.token_basic(&app.id, &app.secret, form).await;
    (status, body)
}

/// The `aud` signed into a token response's access token.
fn signed_aud(body: &Value) -> Value {
    jwt_claims(body["access_token"].as_str().expect("access"))["aud"].clone()
}

/// A refresh-token grant, naming `resource` if given.
async fn refresh(
    server: &TestServer,
    app: &App,
    refresh_token: &str,
    resource: Option<&str>,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    form.extend(resource.map(|r| ("resource", r)));
    token(server, app, &form).await
}

async fn introspected_aud(server: &TestServer, app: &App, access: &str) -> Value {
    let response = server
        .http
        .post(server.url("/o/introspect/"))
        .basic_auth(&app.id, Some(&app.secret))
        .form(&[("token", access)])
        .send()
        .await
        .expect("introspect");
    split(response).await.1["aud"].clone()
}

#[tokio::test]
async fn client_credentials_for_a_named_resource() {
    let server = TestServer::start();
    let app = app(&server);
    let (status, body) = token(
        &server,
        &app,
        &[("grant_type", "client_credentials"), ("resource", API)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().expect("access");
    assert_eq!(jwt_claims(access)["aud"], API);
    assert_eq!(introspected_aud(&server, &app, access).await, API);

    // Without `resource`: the default audience (the issuer).
    let (_, body) = token(&server, &app, &[("grant_type", "client_credentials")]).await;
    let access = body["access_token"].as_str().expect("access");
    assert_eq!(
        jwt_claims(access)["aud"],
        server.config.tokens.audience.as_str()
    );
    assert_eq!(
        introspected_aud(&server, &app, access).await,
        server.config.tokens.audience.as_str()
    );

    for bad in [
        "https://elsewhere.example/",
        "https://api.example",
        "api.example",
        "https://api.example/#frag",
    ] {
        let (status, body) = token(
            &server,
            &app,
            &[("grant_type", "client_credentials"), ("resource", bad)],
        )
        .await;
        expect_error(status, &body, 400, "invalid_target");
    }
}

#[tokio::test]
async fn refresh_keeps_the_resource_and_refuses_another() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let app = app(&server);
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let (status, body) = token(
        &server,
        &app,
        &[
            ("grant_type", "otp"),
            ("phone", &phone),
            ("code", &code),
            ("resource", BILLING),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(signed_aud(&body), BILLING);
    let first = body["refresh_token"].as_str().expect("refresh").to_string();

    // Naming another resource, even an allowed one, is refused.
    let (status, err) = refresh(&server, &app, &first, Some(API)).await;
    expect_error(status, &err, 400, "invalid_target");

    // Without `resource` the new token is for the same API.
    let (status, body) = refresh(&server, &app, &first, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(signed_aud(&body), BILLING);
    let second = body["refresh_token"].as_str().expect("refresh").to_string();
    let (status, body) = refresh(&server, &app, &second, Some(BILLING)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_code_flow_carries_the_resource() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let app = app(&server);
    let browser = Browser::new(&server.base);
    let query = |resource: &str| {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", app.id.as_str()),
                ("redirect_uri", REDIRECT),
                ("resource", resource),
                ("state", "r"),
            ])
            .finish();
        format!("/o/authorize/?{q}")
    };

    // A resource the client may not name: the error goes back to the client.
    let refused = browser.get(&query("https://elsewhere.example/")).await;
    assert_eq!(refused.status, 303, "{}", refused.html);
    assert_eq!(refused.redirect_params()["error"], "invalid_target");

    let start = browser.get(&query(API)).await;
    let consent = browser.log_in(&server, &start, &new_phone()).await;
    let approved = browser
        .submit(&consent, "/o/authorize/", &[("decision", "approve")])
        .await;
    let code = approved.redirect_params()["code"].clone();
    let exchange = |resource: Option<&'static str>| {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ];
        form.extend(resource.map(|r| ("resource", r)));
        let (server, app) = (&server, &app);
        async move { token(server, app, &form).await }
    };
    let (status, body) = exchange(Some(BILLING)).await;
    expect_error(status, &body, 400, "invalid_target");
    let (status, body) = exchange(None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(signed_aud(&body), API);
}
