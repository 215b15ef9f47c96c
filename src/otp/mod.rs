//! One-time codes and verification tickets: generation, keyed hashes, limits
//! and single use. No HTTP here; time comes in as `now`.

use crate::core::Core;
use crate::db::{self, codes::CodeRow, rate_limits::Limit, tickets::TicketRow, Conn, DbConn};
use crate::error::{AppError, AppResult};
use crate::secrets;

/// A code just stored, for the SMS and the response.
pub struct NewCode {
    pub id: String,
    pub code: String,
    pub expires_in: i64,
    pub resend_in: i64,
}

pub struct Ticket {
    pub secret_identifier: String,
    pub expires_in: i64,
    /// Whether the phone has a user already, as of the ticket's transaction.
    pub user_exists: bool,
}

/// What proves a phone at the token endpoint.
pub enum Proof<'a> {
    Ticket(&'a str),
    Code(&'a str),
}

const HOUR: i64 = 3600;

/// Longer codes are refused before they are hashed.
const MAX_CODE_LEN: usize = 64;

fn code_hash(core: &Core, phone: &str, code: &str) -> String {
    core.hasher
        .hash(&[b"otp-code", phone.as_bytes(), code.as_bytes()])
}

fn ticket_hash(core: &Core, secret: &str) -> String {
    core.hasher.hash(&[b"otp-ticket", secret.as_bytes()])
}

/// The stored hash `proof` is spent by, for the otp grant's one-call write
/// on MySQL (`db::otp_grant`); `None` for a proof that cannot be right,
/// which `consume_proof` refuses and says why.
#[cfg(feature = "mysql")]
pub fn proof_hash(core: &Core, phone: &str, proof: &Proof<'_>) -> Option<String> {
    match *proof {
        Proof::Code(code) if code.len() <= MAX_CODE_LEN => Some(code_hash(core, phone, code)),
        Proof::Ticket(secret) if secrets::plausible_token(secret) => {
            Some(ticket_hash(core, secret))
        }
        _ => None,
    }
}

/// Makes and stores a new code for `phone`, superseding the old one, if the
/// per-phone cooldown and hourly limit and the per-IP hourly limit allow it.
/// All in one transaction: a refused request counts against no limit.
pub fn issue_code(
    conn: &mut Conn,
    core: &Core,
    phone: &str,
    client_ip: &str,
    now: i64,
) -> AppResult<NewCode> {
    let cfg = &core.config.otp;
    let per_hour = |n: i32| (n > 0).then_some(n);
    let phone_limit = Limit {
        window_seconds: HOUR,
        max_hits: per_hour(cfg.per_phone_hour),
        cooldown: cfg.resend_seconds,
    };
    let ip_limit = Limit {
        window_seconds: HOUR,
        max_hits: per_hour(cfg.per_ip_hour),
        cooldown: 0,
    };
    let code = secrets::random_digits(cfg.code_length);
    let row = CodeRow {
        id: secrets::ordered_id(10),
        phone: phone.to_string(),
        code_hash: code_hash(core, phone, &code),
        created_at: now,
        expires_at: now + cfg.code_ttl,
        attempts: 0,
        superseded_at: None,
        verified_at: None,
    };
    // The phone's bucket first, then the client address's.
    let mut buckets = vec![(format!("phone:{phone}"), phone_limit)];
    if ip_limit.max_hits.is_some() {
        buckets.push((format!("ip:{client_ip}"), ip_limit));
    }
    let new_code = NewCode {
        id: row.id.clone(),
        code,
        expires_in: cfg.code_ttl,
        resend_in: cfg.resend_seconds,
    };
    let issue = db::codes::CodeIssue { buckets, row, now };
    db::codes::issue(conn, issue)?.map_err(|wait| AppError::RateLimited { retry_after: wait })?;
    Ok(new_code)
}

/// Forgets a code the SMS provider could not deliver.
pub fn drop_code(conn: &mut Conn, id: &str) -> AppResult<()> {
    let id = id.to_string();
    Ok(conn.write_tx(move |conn| db::codes::delete(conn, &id))?)
}

/// Checks `code` against the phone's live code and spends one attempt. On a
/// match the code is consumed and `then` runs in the same transaction, so
/// that what the code buys exists exactly when the code is spent.
pub fn verify_code<T: Send + 'static>(
    conn: &mut Conn,
    core: &Core,
    phone: &str,
    code: &str,
    now: i64,
    then: impl FnOnce(&mut DbConn) -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let max = core.config.otp.max_attempts;
    if code.len() > MAX_CODE_LEN {
        return Err(AppError::invalid_request("code is too long"));
    }
    let hash = code_hash(core, phone, code);
    let phone = phone.to_string();
    // Lookup, comparison and attempt are one transaction (one commit per
    // try). A miss is returned as a value so that its attempt is committed.
    conn.write_tx(move |conn| {
        // A right code is spent by one statement; anything else is looked
        // at below, to count the attempt and say why it failed.
        if db::codes::spend_if_matches(conn, &phone, &hash, max, now)? {
            return then(conn).map(Ok);
        }
        let row = match db::codes::find_live(conn, &phone)? {
            Some(row) if row.expires_at > now => row,
            // Expired and absent look the same.
            _ => {
                return Ok(Err(AppError::InvalidCode {
                    attempts_left: None,
                }))
            }
        };
        if row.attempts >= max {
            return Ok(Err(AppError::TooManyAttempts));
        }
        // Usually false here; true if a new code that matches was sent
        // since the statement above.
        let matched = secrets::ct_eq(&hash, &row.code_hash);
        // The attempt is spent by a conditional update, so that however many
        // guesses race (on MySQL, from other connections), only the first
        // `max` can count.
        if !db::codes::spend_attempt(conn, &row.id, matched, max, now)? {
            return Ok(Err(lost_attempt(conn, &row.id, max)?));
        }
        if matched {
            return then(conn).map(Ok);
        }
        let used = db::codes::attempts(conn, &row.id)?.unwrap_or(max);
        Ok(Err(AppError::InvalidCode {
            attempts_left: Some((max - used).max(0)),
        }))
    })?
}

/// Why a conditional attempt did not land: the code ran out of attempts, or
/// it was used, superseded or expired meanwhile.
fn lost_attempt(conn: &mut DbConn, id: &str, max: i32) -> AppResult<AppError> {
    Ok(match db::codes::attempts(conn, id)? {
        Some(n) if n >= max => AppError::TooManyAttempts,
        _ => AppError::InvalidCode {
            attempts_left: None,
        },
    })
}

/// The row that stores the ticket behind `secret` for `phone`.
fn ticket_row(core: &Core, secret: &str, phone: &str, now: i64) -> TicketRow {
    TicketRow {
        ticket_hash: ticket_hash(core, secret),
        phone: phone.to_string(),
        created_at: now,
        expires_at: now + core.config.otp.ticket_ttl,
        used_for_user_at: None,
        used_for_token_at: None,
    }
}

/// MySQL: verifycode's common case made without the database: the batched
/// write that spends a right code and stores the ticket, and the ticket it
/// answers once stored. `None` for a code too long to be right.
#[cfg(feature = "mysql")]
pub fn prepare_ticket(
    core: &Core,
    phone: &str,
    code: &str,
    now: i64,
) -> Option<(db::tickets::TicketForCode, PendingTicket)> {
    if code.len() > MAX_CODE_LEN {
        return None;
    }
    let secret = secrets::random_hex(24);
    let write = db::tickets::TicketForCode {
        code: db::proofs::ProofKey::Code {
            hash: code_hash(core, phone, code),
            max_attempts: core.config.otp.max_attempts,
        },
        ticket: ticket_row(core, &secret, phone, now),
        now,
    };
    let pending = PendingTicket {
        secret_identifier: secret,
        expires_in: core.config.otp.ticket_ttl,
    };
    Some((write, pending))
}

/// A ticket whose write is on its way.
#[cfg(feature = "mysql")]
pub struct PendingTicket {
    secret_identifier: String,
    expires_in: i64,
}

#[cfg(feature = "mysql")]
impl PendingTicket {
    pub fn stored(self, user_exists: bool) -> Ticket {
        Ticket {
            secret_identifier: self.secret_identifier,
            expires_in: self.expires_in,
            user_exists,
        }
    }
}

/// `verifycode`: spends the code and returns a verification ticket, one
/// statement at a time (SQLite; on MySQL what `prepare_ticket`'s batched
/// write did not settle): counts a wrong code's attempt and says why it
/// failed.
pub fn verify_for_ticket(
    conn: &mut Conn,
    core: &Core,
    phone: &str,
    code: &str,
    now: i64,
) -> AppResult<Ticket> {
    let secret = secrets::random_hex(24);
    let row = ticket_row(core, &secret, phone, now);
    let expires_in = core.config.otp.ticket_ttl;
    verify_code(conn, core, phone, code, now, move |conn| {
        db::tickets::insert(conn, &row)?;
        Ok(Ticket {
            secret_identifier: secret,
            expires_in,
            user_exists: db::users::phone_taken(conn, &row.phone)?,
        })
    })
}

/// Spends the proof of `phone` for the otp grant and runs `then` in the same
/// transaction, so that what the proof buys exists exactly when it is spent.
/// Errors are the domain's (the token endpoint turns them into invalid_grant).
pub fn consume_proof<T: Send + 'static>(
    conn: &mut Conn,
    core: &Core,
    phone: &str,
    proof: Proof<'_>,
    now: i64,
    then: impl FnOnce(&mut DbConn) -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    match proof {
        Proof::Code(code) => verify_code(conn, core, phone, code, now, then),
        Proof::Ticket(secret) => {
            if !secrets::plausible_token(secret) {
                return Err(AppError::InvalidSecretIdentifier);
            }
            let hash = ticket_hash(core, secret);
            let phone = phone.to_string();
            conn.write_tx(move |conn| {
                if !db::tickets::consume_for_token(conn, &hash, &phone, now)? {
                    return Err(AppError::InvalidSecretIdentifier);
                }
                then(conn)
            })
        }
    }
}

/// The hash a presented ticket is stored under; refused at once if it
/// cannot be one.
pub fn presented_ticket(core: &Core, secret: &str) -> AppResult<String> {
    if !secrets::plausible_token(secret) {
        return Err(AppError::InvalidSecretIdentifier);
    }
    Ok(ticket_hash(core, secret))
}

/// The ticket found under that hash, if it may still create a user.
pub fn usable_for_user(found: Option<TicketRow>, now: i64) -> AppResult<TicketRow> {
    match found {
        Some(t) if t.used_for_user_at.is_none() && t.expires_at > now => Ok(t),
        _ => Err(AppError::InvalidSecretIdentifier),
    }
}
