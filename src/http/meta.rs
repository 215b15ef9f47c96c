//! `/.well-known/jwks.json`, `/healthz`, `/readyz`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use diesel::connection::SimpleConnection;
use serde_json::json;

use super::AppState;
use crate::error::AppResult;

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(state.core.keys.jwks_json().to_string())
}

/// The process is up; touches nothing else.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers.
pub async fn readyz(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let backend = state
        .blocking(|conn, _| {
            conn.batch_execute("SELECT 1")
                .map_err(crate::db::DbError::from)?;
            Ok(conn.backend().name())
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready", "database": backend })))
}
