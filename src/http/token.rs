//! The OAuth endpoints that take form bodies (RFC 6749 §3.2): the token
//! endpoint (`/o/token/`, `/o/extended_token/`), introspection (RFC 7662)
//! and revocation (RFC 7009).

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body;
use super::AppState;
use crate::core::Core;
use crate::db::{Backend, Conn};
use crate::error::{AppError, AppResult};
use crate::oauth::request::TokenRequest;
use crate::oauth::store::Issued;
use crate::oauth::{self, detached, OAuthError};

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
    let detached = match detached::plan(&request) {
        Some(read) if state.pool.backend() == Backend::Sqlite => {
            detached_token(&state, &request, read).await?
        }
        _ => None,
    };
    let issued = match detached {
        Some(issued) => issued,
        None => {
            let batched = oauth::token::statements_batched(&request);
            let on_writer = oauth::token::fits_on_writer(&request);
            let run = move |conn: &mut Conn, core: &Core| oauth::token::token(core, conn, &request);
            if on_writer {
                state.on_writer(run).await?
            } else if batched {
                state.batched(run).await?
            } else {
                state.blocking(run).await?
            }
        }
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

/// SQLite: a client-credentials or refresh request with its read and its
/// writes as jobs on the writer thread and the rest here, on this worker,
/// with no connection (`oauth::detached`); `None` if it needed the database
/// for more, and has written nothing.
async fn detached_token(
    state: &AppState,
    request: &TokenRequest,
    read: detached::Read,
) -> AppResult<Option<Issued>> {
    let prefetched = state
        .on_writer(move |conn, _| detached::read(conn, read))
        .await?;
    // The flow is CPU only (a cached client, one signature); a panic in it
    // is this request's 500, as it would be on a blocking thread.
    let ran = catch_unwind(AssertUnwindSafe(|| {
        detached::run(&state.core, state.pool.detached(), request, prefetched)
    }))
    .map_err(|_| AppError::Internal("a token request panicked".into()))?;
    let (answer, writes) = match ran {
        detached::Outcome::Ran { answer, writes } => (answer, writes),
        detached::Outcome::NeedsDatabase => return Ok(None),
    };
    if !writes.is_empty() {
        state
            .on_writer(move |conn, _| detached::store(conn, writes))
            .await?;
    }
    answer.map(Some)
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
