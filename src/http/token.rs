//! The OAuth endpoints that take form bodies (RFC 6749 §3.2): the token
//! endpoint (`/o/token/`, `/o/extended_token/`), introspection (RFC 7662)
//! and revocation (RFC 7009).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body;
use super::AppState;
use crate::core::Core;
use crate::db::Conn;
use crate::error::AppResult;
use crate::oauth::request::TokenRequest;
use crate::oauth::{self, OAuthError};

/// Reads a form body and the (single) Authorization header.
async fn form_request(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> AppResult<TokenRequest> {
    if body::kind(req)? != body::Kind::Form {
        return Err(OAuthError::invalid_request(
            "this endpoint takes application/x-www-form-urlencoded",
        )
        .into());
    }
    let mut auth = req.headers().get_all(header::AUTHORIZATION);
    let authorization = match (auth.next(), auth.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            value
                .to_str()
                .map_err(|_| OAuthError::invalid_client(true))?
                .to_string(),
        ),
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request("more than one Authorization header").into())
        }
    };
    let bytes = body::read(payload, body::BODY_LIMIT).await?;
    let region = state.core.config.default_region;
    Ok(TokenRequest::parse(
        &bytes,
        authorization.as_deref(),
        region,
    )?)
}

pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let request = form_request(&state, &req, payload).await?;
    let batched = oauth::token::statements_batched(&request);
    let on_writer = oauth::token::fits_on_writer(&request);
    let run = move |conn: &mut Conn, core: &Core| oauth::token::token(core, conn, &request);
    let issued = if on_writer {
        state.on_writer(run).await?
    } else if batched {
        state.batched(run).await?
    } else {
        state.blocking(run).await?
    };
    let mut response = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if let Some(refresh) = issued.refresh_token {
        response["refresh_token"] = json!(refresh);
    }
    // RFC 6749 §5.1
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(response))
}

pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let request = form_request(&state, &req, payload).await?;
    let info = state
        .batched(move |conn, core| oauth::introspect::introspect(core, conn, &request))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(info))
}

pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let request = form_request(&state, &req, payload).await?;
    state
        .blocking(move |conn, core| oauth::introspect::revoke(core, conn, &request))
        .await?;
    Ok(HttpResponse::Ok().finish())
}
