//! A client nobody here wrote: the `oauth2` crate, configured only from our
//! RFC 8414 metadata, drives every standard grant, and what it parses must be
//! what we sent.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::{jwt_claims, new_phone, TestServer};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    RedirectUrl, RequestTokenError, ResourceOwnerPassword, ResourceOwnerUsername, Scope,
    TokenResponse, TokenUrl,
};
use phonekey::oauth::clients::{GrantType, NewClient};
use serde_json::{json, Value};

const REDIRECT: &str = "https://app.example/callback";

struct Endpoints {
    authorize: AuthUrl,
    token: TokenUrl,
}

async fn discover(server: &TestServer) -> Endpoints {
    let meta: Value = server
        .http
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("metadata JSON");
    let url = |key: &str| meta[key].as_str().expect(key).to_string();
    Endpoints {
        authorize: AuthUrl::new(url("authorization_endpoint")).expect("authorize URL"),
        token: TokenUrl::new(url("token_endpoint")).expect("token URL"),
    }
}

/// The HTTP client the oauth2 crate asks for: no redirects (its own advice).
fn http() -> oauth2::reqwest::Client {
    oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn scopes(token: &impl TokenResponse) -> Vec<String> {
    let mut v: Vec<String> = token
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn authorization_code_with_pkce_then_refresh() {
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let (client_id, _) = server.register(&NewClient {
        name: "SPA".into(),
        confidential: false,
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        redirect_uris: vec![REDIRECT.into()],
        scopes: vec!["read".into(), "write".into()],
        resources: vec![],
    });
    let endpoints = discover(&server).await;
    let client = BasicClient::new(ClientId::new(client_id.clone()))
        .set_auth_uri(endpoints.authorize)
        .set_token_uri(endpoints.token)
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).expect("redirect"));
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("write".into()))
        .add_scope(Scope::new("read".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The resource owner's side, in a browser.
    let browser = Browser::new(&server.base);
    let phone = new_phone();
    let start = browser.get(auth_url.as_str()).await;
    assert_eq!(start.status, 200, "{}", start.html);
    let code_page = browser
        .submit(&start, "/o/authorize/phone/", &[("phone", &phone)])
        .await;
    let sms_code = server.sms.last_code(&phone);
    let back = browser
        .submit(&code_page, "/o/authorize/code/", &[("code", &sms_code)])
        .await;
    let consent = browser.get(back.location.as_deref().expect("back")).await;
    let approved = browser
        .submit(&consent, "/o/authorize/", &[("decision", "approve")])
        .await;
    let params = approved.redirect_params();
    assert_eq!(&params["state"], state.secret());
    let code = AuthorizationCode::new(params["code"].clone());

    let http = http();
    let token = client
        .exchange_code(code.clone())
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    assert_eq!(*token.token_type(), oauth2::basic::BasicTokenType::Bearer);
    assert_eq!(
        token.expires_in(),
        Some(Duration::from_secs(server.config.tokens.access_ttl as u64))
    );
    assert_eq!(scopes(&token), ["read", "write"]);
    let claims = jwt_claims(token.access_token().secret());
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["scope"], "read write");

    // A second exchange of the same code: the crate sees invalid_grant.
    let (_, verifier) = PkceCodeChallenge::new_random_sha256();
    match client
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }

    // Refresh with a fresh login (the reuse above revoked the first one's tokens).
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _) = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .url();
    let consent = browser.get(auth_url.as_str()).await;
    let approved = browser
        .submit(&consent, "/o/authorize/", &[("decision", "approve")])
        .await;
    let code = AuthorizationCode::new(approved.redirect_params()["code"].clone());
    let token = client
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("second code exchange");
    let refresh = token.refresh_token().expect("refresh token");
    let refreshed = client
        .exchange_refresh_token(refresh)
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.access_token().secret(),
        token.access_token().secret()
    );
    assert_ne!(
        refreshed.refresh_token().expect("rotated").secret(),
        refresh.secret()
    );
    assert_eq!(scopes(&refreshed), ["read", "write"]);
}

#[tokio::test]
async fn client_credentials_and_password_with_both_auth_styles() {
    let server = TestServer::start();
    let (client_id, secret) = server.register(&NewClient {
        name: "backend".into(),
        confidential: true,
        grant_types: vec![
            GrantType::ClientCredentials,
            GrantType::Password,
            GrantType::RefreshToken,
        ],
        redirect_uris: vec![],
        scopes: vec!["jobs".into(), "reports".into()],
        resources: vec![],
    });
    let secret = secret.expect("secret");
    let endpoints = discover(&server).await;
    let http = http();

    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = BasicClient::new(ClientId::new(client_id.clone()))
            .set_client_secret(ClientSecret::new(secret.clone()))
            .set_token_uri(endpoints.token.clone())
            .set_auth_type(auth.clone());
        let token = client
            .exchange_client_credentials()
            .add_scope(Scope::new("reports".into()))
            .request_async(&http)
            .await
            .unwrap_or_else(|e| panic!("client_credentials with {auth:?}: {e:?}"));
        assert_eq!(scopes(&token), ["reports"]);
        assert!(token.refresh_token().is_none());
        assert_eq!(
            jwt_claims(token.access_token().secret())["sub"],
            client_id.as_str()
        );

        match client
            .exchange_client_credentials()
            .add_scope(Scope::new("admin".into()))
            .request_async(&http)
            .await
        {
            Err(RequestTokenError::ServerResponse(e)) => {
                assert_eq!(*e.error(), BasicErrorResponseType::InvalidScope)
            }
            other => panic!("expected invalid_scope, got {other:?}"),
        }
    }

    // The password grant, for a user with a password.
    let phone = new_phone();
    let ticket = server.verified_ticket(&phone).await;
    let (status, user, _) = server
        .put_json(
            "/api/v1/user/",
            &json!({ "username": "olga", "password": "plenty of entropy", "secret_identifier": ticket }),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let client = BasicClient::new(ClientId::new(client_id.clone()))
        .set_client_secret(ClientSecret::new(secret.clone()))
        .set_token_uri(endpoints.token.clone());
    let token = client
        .exchange_password(
            &ResourceOwnerUsername::new("olga".into()),
            &ResourceOwnerPassword::new("plenty of entropy".into()),
        )
        .request_async(&http)
        .await
        .expect("password grant");
    assert_eq!(scopes(&token), ["jobs", "reports"]);
    assert_eq!(jwt_claims(token.access_token().secret())["sub"], user["id"]);
    let refreshed = client
        .exchange_refresh_token(token.refresh_token().expect("refresh"))
        .request_async(&http)
        .await
        .expect("refresh");
    assert!(refreshed.refresh_token().is_some());

    match client
        .exchange_password(
            &ResourceOwnerUsername::new("olga".into()),
            &ResourceOwnerPassword::new("wrong".into()),
        )
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    let wrong_secret = BasicClient::new(ClientId::new(client_id))
        .set_client_secret(ClientSecret::new("not the secret".into()))
        .set_token_uri(endpoints.token);
    match wrong_secret
        .exchange_client_credentials()
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient)
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }
}
