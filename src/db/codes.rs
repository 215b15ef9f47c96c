//! One-time codes: at most one live code per phone; a new one supersedes the old.

use diesel::prelude::*;

use super::schema::otp_codes;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = otp_codes)]
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
    diesel::update(
        otp_codes::table
            .filter(otp_codes::phone.eq(&row.phone))
            .filter(otp_codes::superseded_at.is_null())
            .filter(otp_codes::verified_at.is_null()),
    )
    .set(otp_codes::superseded_at.eq(row.created_at))
    .execute(conn)?;
    diesel::insert_into(otp_codes::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The phone's live code, whether or not it has expired or run out of attempts.
pub fn find_live(conn: &mut DbConn, phone: &str) -> DbResult<Option<CodeRow>> {
    Ok(otp_codes::table
        .filter(otp_codes::phone.eq(phone))
        .filter(otp_codes::superseded_at.is_null())
        .filter(otp_codes::verified_at.is_null())
        .order(otp_codes::created_at.desc())
        .select(CodeRow::as_select())
        .load(conn)?
        .pop())
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
    let target = otp_codes::table
        .filter(otp_codes::id.eq(id))
        .filter(otp_codes::superseded_at.is_null())
        .filter(otp_codes::verified_at.is_null())
        .filter(otp_codes::attempts.lt(max_attempts))
        .filter(otp_codes::expires_at.gt(now));
    let n = if matched {
        diesel::update(target)
            .set((
                otp_codes::attempts.eq(otp_codes::attempts + 1),
                otp_codes::verified_at.eq(now),
            ))
            .execute(conn)?
    } else {
        diesel::update(target)
            .set(otp_codes::attempts.eq(otp_codes::attempts + 1))
            .execute(conn)?
    };
    Ok(n == 1)
}

pub fn attempts(conn: &mut DbConn, id: &str) -> DbResult<Option<i32>> {
    Ok(otp_codes::table
        .filter(otp_codes::id.eq(id))
        .select(otp_codes::attempts)
        .load(conn)?
        .pop())
}

pub fn delete(conn: &mut DbConn, id: &str) -> DbResult<()> {
    diesel::delete(otp_codes::table.filter(otp_codes::id.eq(id))).execute(conn)?;
    Ok(())
}
