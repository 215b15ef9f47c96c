//! Browser login sessions of the authorization pages: a resource owner who
//! proved their phone with an SMS code stays logged in for a while, so the
//! next authorization only asks for consent. The session token lives in a
//! cookie; the database keeps its SHA-256.

use crate::core::Core;
use crate::db::{self, sessions::SessionRow, users::UserRow, Conn, DbConn};
use crate::error::{AppError, AppResult};
use crate::{otp, secrets, users};

/// Why a code did not log the phone in, beyond the code's own errors.
#[derive(Debug)]
pub enum LoginError {
    /// The phone has no user and users are not created on sign-in.
    NoUser,
    Failed(AppError),
}

impl From<AppError> for LoginError {
    fn from(err: AppError) -> Self {
        LoginError::Failed(err)
    }
}

pub struct NewSession {
    pub token: String,
    pub user_id: String,
}

/// Checks the SMS code for `phone` and, on a match, starts a session for the
/// phone's user in the transaction that spends the code.
pub fn log_in_with_code(
    conn: &mut Conn,
    core: &Core,
    phone: &str,
    code: &str,
    now: i64,
) -> Result<NewSession, LoginError> {
    let auto_create = core.config.otp.auto_create_users;
    let ttl = core.config.session_ttl;
    let owned_phone = phone.to_string();
    let result = otp::verify_code(conn, core, phone, code, now, move |c| {
        let phone = owned_phone.as_str();
        let user = match db::users::find_by_phone(c, phone)? {
            Some(user) => user,
            None if auto_create => users::user_for_phone(c, phone, now)?,
            // Rolls the spend back too: the code stays usable once the user exists.
            None => return Err(AppError::NotFound),
        };
        start(c, ttl, &user, now)
    });
    match result {
        Ok(session) => Ok(session),
        // Nothing else in verifying a code answers NotFound.
        Err(AppError::NotFound) => Err(LoginError::NoUser),
        Err(e) => Err(LoginError::Failed(e)),
    }
}

fn start(conn: &mut DbConn, ttl: i64, user: &UserRow, now: i64) -> AppResult<NewSession> {
    let token = secrets::random_urlsafe(32);
    db::sessions::insert(
        conn,
        &SessionRow {
            session_hash: secrets::sha256_hex(token.as_bytes()),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + ttl,
        },
    )?;
    Ok(NewSession {
        token,
        user_id: user.id.clone(),
    })
}

/// The logged-in, still active user behind a session cookie, with their phone.
pub fn current_user(conn: &mut DbConn, token: &str, now: i64) -> AppResult<Option<UserRow>> {
    if !secrets::plausible_token(token) {
        return Ok(None);
    }
    let hash = secrets::sha256_hex(token.as_bytes());
    let Some(user_id) = db::sessions::live_user(conn, &hash, now)? else {
        return Ok(None);
    };
    Ok(db::users::find_by_id(conn, &user_id)?.filter(|u| u.is_active))
}

pub fn phone_of(conn: &mut DbConn, user_id: &str) -> AppResult<Option<String>> {
    Ok(db::users::phone_of(conn, user_id)?)
}

pub fn end(conn: &mut Conn, token: &str) -> AppResult<()> {
    if !secrets::plausible_token(token) {
        return Ok(());
    }
    let hash = secrets::sha256_hex(token.as_bytes());
    Ok(conn.write_tx(move |c| db::sessions::delete(c, &hash))?)
}
