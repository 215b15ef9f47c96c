//! Deleting what has expired, in small batches so that no single delete
//! holds SQLite's write lock (or InnoDB row locks) for long.

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::{Backend, Conn, DbResult};

const BATCH: i64 = 1000;

/// (table, key column, time column) of everything with an expiry.
const EXPIRING: [(&str, &str, &str); 6] = [
    ("otp_codes", "id", "expires_at"),
    ("verification_tickets", "ticket_hash", "expires_at"),
    ("authorization_codes", "code_hash", "expires_at"),
    ("access_tokens", "jti", "expires_at"),
    ("refresh_tokens", "token_hash", "expires_at"),
    ("browser_sessions", "session_hash", "expires_at"),
];

/// Deletes rows whose time column is before `before`; returns how many.
fn purge_table(
    conn: &mut Conn,
    table: &str,
    key: &str,
    column: &str,
    before: i64,
) -> DbResult<usize> {
    let sql = match conn.backend() {
        // SQLite has no DELETE … LIMIT in its default build.
        Backend::Sqlite => format!(
            "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < ? LIMIT {BATCH})"
        ),
        // MySQL has no LIMIT in IN subqueries, but DELETE … LIMIT.
        Backend::Mysql => format!("DELETE FROM {table} WHERE {column} < ? LIMIT {BATCH}"),
    };
    let mut total = 0;
    loop {
        let sql = sql.clone();
        let n = conn.write_tx(move |c| {
            Ok::<_, super::DbError>(
                diesel::sql_query(&sql)
                    .bind::<BigInt, _>(before)
                    .execute(c)?,
            )
        })?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Deletes codes, tickets, authorization codes, tokens and browser sessions that expired before
/// `expired_before`, and rate-limit counters untouched since `idle_before`.
pub fn expired(conn: &mut Conn, expired_before: i64, idle_before: i64) -> DbResult<usize> {
    let mut total = 0;
    for (table, key, column) in EXPIRING {
        total += purge_table(conn, table, key, column, expired_before)?;
    }
    total += purge_table(conn, "rate_limits", "bucket", "last_at", idle_before)?;
    Ok(total)
}
