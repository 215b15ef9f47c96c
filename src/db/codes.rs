//! One-time codes: at most one live code per phone; a new one supersedes the old.

use diesel::prelude::*;

use super::fixed::{self, Bind};
use super::schema::otp_codes;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = otp_codes, treat_none_as_default_value = false)]
pub struct CodeRow {
    pub id: String,
    pub phone: String,
    pub code_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub attempts: i32,
    pub superseded_at: Option<i64>,
    pub verified_at: Option<i64>,
}

/// Supersedes the phone's live code and stores the new one. Run in a transaction.
pub fn replace(conn: &mut DbConn, row: &CodeRow) -> DbResult<()> {
    fixed::execute(
        conn,
        "UPDATE otp_codes SET superseded_at = ? \
         WHERE phone = ? AND superseded_at IS NULL AND verified_at IS NULL",
        &[Bind::BigInt(row.created_at), Bind::Text(&row.phone)],
    )?;
    on_backend!(conn, |c| diesel::insert_into(otp_codes::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// The phone's live code, whether or not it has expired or run out of attempts.
pub fn find_live(conn: &mut DbConn, phone: &str) -> DbResult<Option<CodeRow>> {
    let mut rows = on_backend!(conn, |c| otp_codes::table
        .filter(otp_codes::phone.eq(phone))
        .filter(otp_codes::superseded_at.is_null())
        .filter(otp_codes::verified_at.is_null())
        .order(otp_codes::created_at.desc())
        .select(CodeRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

/// Spends one attempt on the code, and marks it verified when `matched`.
/// Only the first `max_attempts` attempts can land: the caller's comparison
/// counts only if this returns true.
pub fn spend_attempt(
    conn: &mut DbConn,
    id: &str,
    matched: bool,
    max_attempts: i32,
    now: i64,
) -> DbResult<bool> {
    // A miss sets verified_at to itself (NULL): one statement for both.
    let n = fixed::execute(
        conn,
        "UPDATE otp_codes SET attempts = attempts + 1, \
           verified_at = CASE WHEN ? = 1 THEN ? ELSE verified_at END \
         WHERE id = ? AND superseded_at IS NULL AND verified_at IS NULL \
           AND attempts < ? AND expires_at > ?",
        &[
            Bind::Int(i32::from(matched)),
            Bind::BigInt(now),
            Bind::Text(id),
            Bind::Int(max_attempts),
            Bind::BigInt(now),
        ],
    )?;
    Ok(n == 1)
}

/// Spends one attempt on the phone's live code and marks it verified, if
/// that code's hash is `code_hash` and it can still be tried: the usual
/// right code in one statement. False leaves everything as it was. The
/// database compares keyed hashes, which an attacker can neither compute nor
/// steer, so the comparison's timing tells nothing about the code.
/// The MySQL procedure `phonekey_otp_grant` makes the same statement.
pub fn spend_if_matches(
    conn: &mut DbConn,
    phone: &str,
    code_hash: &str,
    max_attempts: i32,
    now: i64,
) -> DbResult<bool> {
    let n = fixed::execute(
        conn,
        "UPDATE otp_codes SET attempts = attempts + 1, verified_at = ? \
         WHERE phone = ? AND code_hash = ? AND superseded_at IS NULL \
           AND verified_at IS NULL AND attempts < ? AND expires_at > ?",
        &[
            Bind::BigInt(now),
            Bind::Text(phone),
            Bind::Text(code_hash),
            Bind::Int(max_attempts),
            Bind::BigInt(now),
        ],
    )?;
    Ok(n == 1)
}

pub fn attempts(conn: &mut DbConn, id: &str) -> DbResult<Option<i32>> {
    let mut rows = on_backend!(conn, |c| otp_codes::table
        .filter(otp_codes::id.eq(id))
        .select(otp_codes::attempts)
        .load(c))?;
    Ok(rows.pop())
}

pub fn delete(conn: &mut DbConn, id: &str) -> DbResult<()> {
    on_backend!(conn, |c| diesel::delete(
        otp_codes::table.filter(otp_codes::id.eq(id))
    )
    .execute(c))?;
    Ok(())
}
