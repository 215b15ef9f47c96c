//! `PUT /api/v1/user/` (and `POST`).

use actix_web::{web, HttpRequest, HttpResponse};

use super::body;
use super::AppState;
use crate::core::Core;
use crate::db::Conn;
use crate::error::AppResult;
use crate::users;

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let input = body::object(&req, payload).await?;
    let sign_up = users::read_sign_up(&input, state.core.config.default_region)?;
    let hashes_password = sign_up.hashes_password();
    // MySQL: without a password to hash, the ticket's lookup and the write
    // are rows of batched statements awaited here, the rest is CPU only.
    #[cfg(feature = "mysql")]
    if let (Some(db), false) = (state.pool.awaited(), hashes_password) {
        let core = &state.core;
        let hash = sign_up.ticket_hash(core)?;
        let (gave_up, waiting) = state.waiting()?;
        let found = async { Ok(db.lookup_ticket(hash, waiting).await?) };
        let ticket = state.within_timeout(found, gave_up).await?;
        let (write, view) = users::sign_up_rows(sign_up, ticket, core.now())?;
        let (gave_up, waiting) = state.waiting()?;
        let stored = async { Ok(db.create_with_ticket(write, waiting).await) };
        let user = users::signed_up(state.within_timeout(stored, gave_up).await?, view)?;
        return Ok(HttpResponse::Created().json(user));
    }
    let create = move |conn: &mut Conn, core: &Core| users::create(conn, core, sign_up, core.now());
    // Its statements are batched on MySQL in the common case. On SQLite it
    // runs on the writer, unless a password's hash would hold the writer up.
    let user = if hashes_password {
        state.batched(create).await?
    } else {
        state.on_writer(create).await?
    };
    Ok(HttpResponse::Created().json(user))
}
