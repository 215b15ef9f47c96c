//! Browser login sessions of the authorization pages, stored by hash.

use diesel::prelude::*;

use super::schema::browser_sessions as bs;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = bs, treat_none_as_default_value = false)]
pub struct SessionRow {
    pub session_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

pub fn insert(conn: &mut DbConn, row: &SessionRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(bs::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// The session's user, if the session exists and has not expired.
pub fn live_user(conn: &mut DbConn, hash: &str, now: i64) -> DbResult<Option<String>> {
    let mut rows = on_backend!(conn, |c| bs::table
        .filter(bs::session_hash.eq(hash))
        .filter(bs::expires_at.gt(now))
        .select(bs::user_id)
        .load(c))?;
    Ok(rows.pop())
}

pub fn delete(conn: &mut DbConn, hash: &str) -> DbResult<()> {
    on_backend!(conn, |c| diesel::delete(
        bs::table.filter(bs::session_hash.eq(hash))
    )
    .execute(c))?;
    Ok(())
}
