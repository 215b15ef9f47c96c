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
    let sign_up = users::read_sign_up(&input, state.core.config.default_region)?;
    // Its statements are batched on MySQL in the common case.
    let user = state
        .batched(move |conn, core| users::create(conn, core, sign_up, core.now()))
        .await?;
    Ok(HttpResponse::Created().json(user))
}
