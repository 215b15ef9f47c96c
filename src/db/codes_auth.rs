//! Authorization codes (RFC 6749 §4.1): stored by hash, consumed once.

use diesel::prelude::*;

use super::fixed::{self, Bind};
use super::schema::authorization_codes as ac;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ac, treat_none_as_default_value = false)]
pub struct AuthCodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub redirect_uri: String,
    /// The grant's extensions (PKCE keeps its challenge there), as JSON.
    pub extensions: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The token family the code's tokens join, so that reuse can revoke them.
    pub family: String,
    /// Whether the authorization request named the redirect URI (RFC 6749
    /// §4.1.3: then the token request must repeat it).
    pub redirect_uri_sent: bool,
    /// The RFC 8707 resource the authorization request named.
    pub resource: Option<String>,
}

pub fn insert(conn: &mut DbConn, row: &AuthCodeRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(ac::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// Marks the code used; false if it was used already or has expired.
pub fn consume(conn: &mut DbConn, hash: &str, now: i64) -> DbResult<bool> {
    let n = fixed::execute(
        conn,
        "UPDATE authorization_codes SET used_at = ? \
         WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
        &[Bind::BigInt(now), Bind::Text(hash), Bind::BigInt(now)],
    )?;
    Ok(n == 1)
}

pub fn find(conn: &mut DbConn, hash: &str) -> DbResult<Option<AuthCodeRow>> {
    let mut rows = on_backend!(conn, |c| ac::table
        .filter(ac::code_hash.eq(hash))
        .select(AuthCodeRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}
