//! Verification tickets ("secret identifiers"): proof that a phone was verified,
//! usable once to create a user and once to obtain tokens.

use diesel::prelude::*;

use super::fixed::{self, Bind};
use super::schema::verification_tickets as t;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = t, treat_none_as_default_value = false)]
pub struct TicketRow {
    pub ticket_hash: String,
    pub phone: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_for_user_at: Option<i64>,
    pub used_for_token_at: Option<i64>,
}

pub fn insert(conn: &mut DbConn, row: &TicketRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(t::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

pub fn find(conn: &mut DbConn, hash: &str) -> DbResult<Option<TicketRow>> {
    let mut rows = on_backend!(conn, |c| t::table
        .filter(t::ticket_hash.eq(hash))
        .select(TicketRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

/// Marks the ticket used for creating a user; false if it was not usable.
pub fn consume_for_user(conn: &mut DbConn, hash: &str, phone: &str, now: i64) -> DbResult<bool> {
    consume(
        conn,
        "UPDATE verification_tickets SET used_for_user_at = ? \
         WHERE ticket_hash = ? AND phone = ? AND used_for_user_at IS NULL AND expires_at > ?",
        hash,
        phone,
        now,
    )
}

/// Marks the ticket used for obtaining tokens; false if it was not usable.
/// The MySQL procedure `phonekey_otp_grant` makes the same statement.
pub fn consume_for_token(conn: &mut DbConn, hash: &str, phone: &str, now: i64) -> DbResult<bool> {
    consume(
        conn,
        "UPDATE verification_tickets SET used_for_token_at = ? \
         WHERE ticket_hash = ? AND phone = ? AND used_for_token_at IS NULL AND expires_at > ?",
        hash,
        phone,
        now,
    )
}

fn consume(conn: &mut DbConn, sql: &str, hash: &str, phone: &str, now: i64) -> DbResult<bool> {
    let binds = [
        Bind::BigInt(now),
        Bind::Text(hash),
        Bind::Text(phone),
        Bind::BigInt(now),
    ];
    Ok(fixed::execute(conn, sql, &binds)? == 1)
}
