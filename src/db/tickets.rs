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

/// verifycode's write on MySQL: its code, and the ticket it buys.
#[cfg(feature = "mysql")]
#[derive(Debug)]
pub struct TicketForCode {
    pub code: super::proofs::ProofKey,
    pub ticket: TicketRow,
    pub now: i64,
}

/// verifycode's write for many requests (`db::awaited`): one alone is the one-by-one
/// statements; more spend their codes together (`db::proofs`), insert the
/// tickets with one multi-row `INSERT` and look up which phones have a user
/// with one `SELECT`.
#[cfg(feature = "mysql")]
pub(super) fn store_for_codes(
    conn: &mut DbConn,
    batch: &[TicketForCode],
) -> DbResult<Vec<Option<bool>>> {
    use super::proofs::{self, Presented, ProofKey, TicketUse};
    use diesel::sql_types::Text;
    if let [one] = batch {
        let ProofKey::Code { hash, max_attempts } = &one.code else {
            return Ok(vec![None]);
        };
        let row = &one.ticket;
        return conn.write_tx(|conn| {
            if !super::codes::spend_if_matches(conn, &row.phone, hash, *max_attempts, one.now)? {
                return Ok(vec![None]);
            }
            insert(conn, row)?;
            Ok(vec![Some(super::users::phone_taken(conn, &row.phone)?)])
        });
    }
    conn.write_tx(|conn| {
        let presented: Vec<Presented<'_>> = batch
            .iter()
            .map(|w| Presented::new(&w.ticket.phone, &w.code, w.now))
            .collect();
        let won = proofs::spend_many(conn, &presented, TicketUse::Token)?;
        let winners: Vec<&TicketRow> = batch
            .iter()
            .zip(&won)
            .filter_map(|(w, won)| won.then_some(&w.ticket))
            .collect();
        if winners.is_empty() {
            return Ok(vec![None; batch.len()]);
        }
        let binds: Vec<Bind<'_>> = winners
            .iter()
            .flat_map(|t| {
                debug_assert!(t.used_for_user_at.is_none() && t.used_for_token_at.is_none());
                [
                    Bind::Text(&t.ticket_hash),
                    Bind::Text(&t.phone),
                    Bind::BigInt(t.created_at),
                    Bind::BigInt(t.expires_at),
                ]
            })
            .collect();
        let statement = (
            "INSERT INTO verification_tickets (ticket_hash, phone, created_at, expires_at, \
             used_for_user_at, used_for_token_at)",
            "(?, ?, ?, ?, NULL, NULL)",
            "",
        );
        fixed::insert_rows(conn, statement, &binds)?;
        let phones = fixed::distinct_texts(winners.iter().map(|t| t.phone.as_str()));
        let (sql, binds) =
            fixed::in_list("SELECT phone FROM accounts WHERE phone IN", &[], &phones);
        let taken: Vec<String> = fixed::load_mysql::<Text, String>(conn, &sql, &binds)?;
        Ok(batch
            .iter()
            .zip(&won)
            .map(|(w, won)| won.then(|| taken.contains(&w.ticket.phone)))
            .collect())
    })
}

/// The ticket with this hash: `find`, on MySQL in one `SELECT` with the
/// lookups of concurrent requests (`db::batch`).
pub fn lookup(conn: &mut super::Conn, hash: &str) -> DbResult<Option<TicketRow>> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        return batched.ticket_lookups.run(hash.to_string());
    }
    find(conn.db()?, hash)
}

/// `find` for many hashes in one statement: one answer per hash, in their order.
#[cfg(feature = "mysql")]
pub(super) fn find_many(conn: &mut DbConn, hashes: &[String]) -> DbResult<Vec<Option<TicketRow>>> {
    use diesel::query_builder::AsQuery;
    type Columns = <t::table as AsQuery>::SqlType;
    fixed::load_mysql_by_keys::<Columns, TicketRow>(
        conn,
        "SELECT ticket_hash, phone, created_at, expires_at, used_for_user_at, \
         used_for_token_at FROM verification_tickets WHERE ticket_hash IN",
        hashes,
        |row| &row.ticket_hash,
    )
}
