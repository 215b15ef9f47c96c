//! Bearer-token checking for an API that trusts phonekey: signature against
//! the JWKS (cached; fetched again, at most every 10 s, when a token names a
//! key we have not seen, as after a key rotation), then `iss`, `aud`, `exp`,
//! and the scope the route needs. Errors are RFC 6750's.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    pub exp: i64,
}

/// RFC 6750 §3: what the resource server answers.
#[derive(Debug)]
pub enum BearerError {
    /// No token at all: a bare challenge, no error code (§3.1).
    Missing,
    InvalidToken(String),
    InsufficientScope(&'static str),
}

impl std::fmt::Display for BearerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BearerError::Missing => f.write_str("a bearer token is required"),
            BearerError::InvalidToken(why) => write!(f, "invalid token: {why}"),
            BearerError::InsufficientScope(scope) => write!(f, "this needs scope {scope}"),
        }
    }
}

impl ResponseError for BearerError {
    fn status_code(&self) -> StatusCode {
        match self {
            BearerError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let challenge = match self {
            BearerError::Missing => r#"Bearer realm="api""#.to_string(),
            BearerError::InvalidToken(_) => {
                r#"Bearer realm="api", error="invalid_token", error_description="the access token is invalid or expired""#
                    .to_string()
            }
            BearerError::InsufficientScope(scope) => {
                format!(r#"Bearer realm="api", error="insufficient_scope", scope="{scope}""#)
            }
        };
        HttpResponse::build(self.status_code())
            .insert_header((header::WWW_AUTHENTICATE, challenge))
            .json(
                serde_json::json!({ "error": self.code(), "error_description": self.to_string() }),
            )
    }
}

impl BearerError {
    fn code(&self) -> &'static str {
        match self {
            BearerError::Missing => "invalid_request",
            BearerError::InvalidToken(_) => "invalid_token",
            BearerError::InsufficientScope(_) => "insufficient_scope",
        }
    }
}

pub struct Verifier {
    jwks_url: String,
    issuer: String,
    audience: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    fetched: RwLock<Option<Instant>>,
}

const REFETCH_AFTER: Duration = Duration::from_secs(10);

impl Verifier {
    /// `issuer` is phonekey's (`PHONEKEY_ISSUER`); `audience` what its tokens carry.
    pub fn new(issuer: &str, audience: &str) -> Verifier {
        Verifier {
            jwks_url: format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            http: reqwest::Client::new(),
            keys: RwLock::new(HashMap::new()),
            fetched: RwLock::new(None),
        }
    }

    async fn refresh_keys(&self) -> Result<(), BearerError> {
        let recently = self
            .fetched
            .read()
            .map(|f| f.is_some_and(|t| t.elapsed() < REFETCH_AFTER))
            .unwrap_or(false);
        if recently {
            return Ok(());
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            BearerError::InvalidToken(format!("cannot fetch the JWKS: {e}"))
        };
        let set: JwkSet = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| unavailable(&e))?
            .json()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) {
                keys.insert(kid, key);
            }
        }
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        if let Ok(mut f) = self.fetched.write() {
            *f = Some(Instant::now());
        }
        Ok(())
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, BearerError> {
        let invalid = |why: &str| BearerError::InvalidToken(why.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("unexpected algorithm"));
        }
        let kid = header.kid.ok_or_else(|| invalid("no kid"))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh_keys().await?;
                self.key(&kid).ok_or_else(|| invalid("unknown key"))?
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| invalid(&e.to_string()))
    }

    /// Checks the request's bearer token and that it carries `scope` (if any).
    pub async fn authorize(
        &self,
        req: &HttpRequest,
        scope: Option<&'static str>,
    ) -> Result<Claims, BearerError> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(BearerError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| BearerError::InvalidToken("not a bearer token".into()))?;
        let claims = self.verify(token.trim()).await?;
        if let Some(needed) = scope {
            if !claims.scope.split(' ').any(|s| s == needed) {
                return Err(BearerError::InsufficientScope(needed));
            }
        }
        Ok(claims)
    }
}
