//! `/.well-known/oauth-authorization-server`, `/.well-known/jwks.json`, `/healthz`, `/readyz`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::AppResult;

/// RFC 8414 metadata: what a client library needs to find everything else.
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    let issuer = &state.core.config.issuer;
    let client_auth = ["client_secret_basic", "client_secret_post", "none"];
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/o/authorize/"),
            "token_endpoint": format!("{issuer}/o/token/"),
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "introspection_endpoint": format!("{issuer}/o/introspect/"),
            "revocation_endpoint": format!("{issuer}/o/revoke_token/"),
            "grant_types_supported": ["otp", crate::oauth::clients::OTP_GRANT_URN, "authorization_code", "refresh_token", "client_credentials", "password"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "token_endpoint_auth_methods_supported": client_auth,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": client_auth,
        }))
}

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(state.core.keys().jwks_json().to_string())
}

/// The process is up; touches nothing else.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers.
pub async fn readyz(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let backend = state
        .blocking(|conn, _| {
            conn.db()?.ping()?;
            Ok(conn.backend().name())
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready", "database": backend })))
}
