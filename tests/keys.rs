//! Signing key rotation: the new key is published before it signs, and the
//! old one stays published until every token it signed has expired.

mod common;

use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use phonekey::oauth::clients::GrantType;

async fn jwks(server: &TestServer) -> JwkSet {
    server
        .http
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn token(server: &TestServer, id: &str, secret: &str) -> String {
    let (status, body, _) = server
        .token_basic(id, secret, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn verifies(set: &JwkSet, token: &str, server: &TestServer) -> bool {
    let Some(jwk) = set.find(&kid(token)) else {
        return false;
    };
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&server.config.issuer]);
    validation.set_audience(&[&server.config.issuer]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok()
}

#[tokio::test]
async fn rotation_without_a_gap() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.unwrap();
    let old_token = token(&server, &id, &secret).await;
    let old_kid = kid(&old_token);

    let mut conn = phonekey::db::connect_once(&server.config.database).unwrap();
    let new_kid =
        phonekey::oauth::keys::rotate(&mut conn, server.config.tokens.alg, server.clock_now())
            .unwrap();
    assert_ne!(new_kid, old_kid);
    server.reload_keys();

    // Published at once, but not yet signing.
    let set = jwks(&server).await;
    assert!(set.find(&old_kid).is_some() && set.find(&new_kid).is_some());
    assert_eq!(kid(&token(&server, &id, &secret).await), old_kid);

    server
        .clock
        .advance(phonekey::oauth::keys::PUBLISH_AHEAD + 1);
    let new_token = token(&server, &id, &secret).await;
    assert_eq!(
        kid(&new_token),
        new_kid,
        "the new key signs after the switch"
    );
    let set = jwks(&server).await;
    assert!(
        verifies(&set, &old_token, &server),
        "old tokens still verify"
    );
    assert!(verifies(&set, &new_token, &server));
    let (_, info, _) = server
        .token_basic(&id, &secret, &[("grant_type", "client_credentials")])
        .await;
    assert!(info["access_token"].is_string());

    // Once everything the old key signed has expired, it is no longer published.
    server.clock.advance(server.config.tokens.access_ttl + 1);
    server.reload_keys();
    let set = jwks(&server).await;
    assert!(set.find(&old_kid).is_none());
    assert!(set.find(&new_kid).is_some());
    assert_eq!(kid(&token(&server, &id, &secret).await), new_kid);
}

/// `PHONEKEY_TOKEN_ALG=RS256`: tokens for resource servers without EdDSA,
/// published in the JWKS as RSA keys, verifiable and introspectable.
#[tokio::test]
async fn rs256_tokens_verify_with_the_jwks() {
    let server = TestServer::start_with(&[("PHONEKEY_TOKEN_ALG", "RS256")]);
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.unwrap();
    let access = token(&server, &id, &secret).await;
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let set = jwks(&server).await;
    let jwk = set.find(&kid(&access)).expect("published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&server.config.issuer]);
    validation.set_audience(&[&server.config.issuer]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&access, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], id.as_str());

    let response = server
        .http
        .post(server.url("/o/introspect/"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["active"], true);
}
