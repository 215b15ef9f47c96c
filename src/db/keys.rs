//! Token signing keys. The oldest key that is not retired signs; retired keys
//! stay published until the tokens they signed have expired.

use diesel::prelude::*;

use super::schema::signing_keys;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys, treat_none_as_default_value = false)]
pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    /// Base64 PKCS#8 DER.
    pub private_key: String,
    /// Base64url raw public key (Ed25519 `x`).
    pub public_key: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

pub fn insert(conn: &mut DbConn, row: &KeyRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(signing_keys::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// Keys to publish: current ones, and retired ones still inside `keep_after`.
pub fn published(conn: &mut DbConn, keep_after: i64) -> DbResult<Vec<KeyRow>> {
    Ok(on_backend!(conn, |c| signing_keys::table
        .filter(
            signing_keys::retired_at
                .is_null()
                .or(signing_keys::retired_at.gt(keep_after)),
        )
        .order((signing_keys::created_at.asc(), signing_keys::kid.asc()))
        .select(KeyRow::as_select())
        .load(c))?)
}

/// Retires, at `at`, every key that is not retired yet.
pub fn retire_current(conn: &mut DbConn, at: i64) -> DbResult<()> {
    on_backend!(conn, |c| diesel::update(
        signing_keys::table.filter(signing_keys::retired_at.is_null())
    )
    .set(signing_keys::retired_at.eq(at))
    .execute(c))?;
    Ok(())
}

pub fn all(conn: &mut DbConn) -> DbResult<Vec<KeyRow>> {
    Ok(on_backend!(conn, |c| signing_keys::table
        .order((signing_keys::created_at.asc(), signing_keys::kid.asc()))
        .select(KeyRow::as_select())
        .load(c))?)
}
