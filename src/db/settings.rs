//! Server-wide values generated once and shared by every instance (the HMAC key).

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::schema::settings;
use super::{DbConn, DbResult};

pub fn get(conn: &mut DbConn, name: &str) -> DbResult<Option<String>> {
    let mut rows = on_backend!(conn, |c| settings::table
        .filter(settings::name.eq(name))
        .select(settings::value)
        .load::<String>(c))?;
    Ok(rows.pop())
}

/// Stores `value` unless another instance stored one first; returns the value that won.
pub fn get_or_insert(conn: &mut DbConn, name: &str, value: &str) -> DbResult<String> {
    let sql = conn.insert_ignore_sql("settings", "(name, value) VALUES (?, ?)", "name");
    on_backend!(conn, |c| diesel::sql_query(sql)
        .bind::<Text, _>(name)
        .bind::<Text, _>(value)
        .execute(c))?;
    get(conn, name)?.ok_or_else(|| super::DbError::Other(format!("setting {name} vanished")))
}
