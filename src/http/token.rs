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
use crate::db::Conn;
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
    let detached = match detached::plan(&request, state.pool.backend()) {
        Some(read) => detached_token(&state, &request, read).await?,
        None => None,
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

/// A token request with its one read and its writes where writes run and
/// the rest here, on this worker, with no connection (`oauth::detached`):
/// on SQLite as jobs on the writer thread, on MySQL as rows of batched
/// statements awaited here. `None` if it needed the database for more (or,
/// on MySQL, its otp grant was not the common case), having written
/// nothing: it then runs the ordinary way.
async fn detached_token(
    state: &AppState,
    request: &TokenRequest,
    read: detached::Read,
) -> AppResult<Option<Issued>> {
    #[cfg(feature = "mysql")]
    if let Some(db) = state.pool.awaited() {
        let (gave_up, waiting) = state.waiting()?;
        let prefetched = detached::read_awaited(&db, read, waiting);
        let prefetched = state.within_timeout(prefetched, gave_up).await?;
        let Some((answer, writes)) = run_detached(state, request, prefetched)? else {
            return Ok(None);
        };
        if writes.is_empty() {
            return answer.map(Some);
        }
        let (gave_up, waiting) = state.waiting()?;
        let stored = detached::store_awaited(&db, writes, waiting);
        match state.within_timeout(stored, gave_up).await? {
            detached::Stored::Done => {}
            detached::Stored::NotStored => return Ok(None),
            detached::Stored::Lost { client_id, family } => {
                state
                    .blocking(move |conn, _| detached::lost_rotation(conn, &client_id, family))
                    .await?
            }
            detached::Stored::Elsewhere(writes) => {
                state
                    .blocking(move |conn, _| detached::store(conn, writes))
                    .await?
            }
        }
        return answer.map(Some);
    }
    let prefetched = state
        .on_writer(move |conn, _| detached::read(conn, read))
        .await?;
    let Some((answer, writes)) = run_detached(state, request, prefetched)? else {
        return Ok(None);
    };
    if !writes.is_empty() {
        state
            .on_writer(move |conn, _| detached::store(conn, writes))
            .await?;
    }
    answer.map(Some)
}

/// The flow of a detached request, here: CPU only (a cached client, one
/// signature). A panic in it is this request's 500, as on a blocking thread.
fn run_detached(
    state: &AppState,
    request: &TokenRequest,
    prefetched: detached::Prefetched,
) -> AppResult<Option<(AppResult<Issued>, Vec<detached::Deferred>)>> {
    let ran = catch_unwind(AssertUnwindSafe(|| {
        detached::run(&state.core, state.pool.detached(), request, prefetched)
    }))
    .map_err(|_| AppError::Internal("a token request panicked".into()))?;
    Ok(match ran {
        detached::Outcome::Ran { answer, writes } => Some((answer, writes)),
        detached::Outcome::NeedsDatabase => None,
    })
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
