//! Verification tickets ("secret identifiers"): proof that a phone was verified,
//! usable once to create a user and once to obtain tokens.

use diesel::prelude::*;

use super::schema::verification_tickets as t;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = t)]
pub struct TicketRow {
    pub ticket_hash: String,
    pub phone: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_for_user_at: Option<i64>,
    pub used_for_token_at: Option<i64>,
}

pub fn insert(conn: &mut DbConn, row: &TicketRow) -> DbResult<()> {
    diesel::insert_into(t::table).values(row).execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConn, hash: &str) -> DbResult<Option<TicketRow>> {
    Ok(t::table
        .filter(t::ticket_hash.eq(hash))
        .select(TicketRow::as_select())
        .load(conn)?
        .pop())
}

/// Marks the ticket used for creating a user; false if it was not usable.
pub fn consume_for_user(conn: &mut DbConn, hash: &str, phone: &str, now: i64) -> DbResult<bool> {
    let n = diesel::update(
        t::table
            .filter(t::ticket_hash.eq(hash))
            .filter(t::phone.eq(phone))
            .filter(t::used_for_user_at.is_null())
            .filter(t::expires_at.gt(now)),
    )
    .set(t::used_for_user_at.eq(now))
    .execute(conn)?;
    Ok(n == 1)
}

/// Marks the ticket used for obtaining tokens; false if it was not usable.
pub fn consume_for_token(conn: &mut DbConn, hash: &str, phone: &str, now: i64) -> DbResult<bool> {
    let n = diesel::update(
        t::table
            .filter(t::ticket_hash.eq(hash))
            .filter(t::phone.eq(phone))
            .filter(t::used_for_token_at.is_null())
            .filter(t::expires_at.gt(now)),
    )
    .set(t::used_for_token_at.eq(now))
    .execute(conn)?;
    Ok(n == 1)
}
