//! `PUT /api/v1/user/` (and `POST`).

use actix_web::{web, HttpRequest, HttpResponse};

use super::body;
use super::AppState;
use crate::error::AppResult;
use crate::users;

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let input = body::object(&req, payload).await?;
    let user = state
        .blocking(move |conn, core| users::create(conn, core, &input, core.now()))
        .await?;
    Ok(HttpResponse::Created().json(user))
}
