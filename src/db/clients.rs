//! Registered client applications.

use diesel::prelude::*;

use super::schema::applications;
use super::{DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = applications, treat_none_as_default_value = false)]
pub struct ClientRow {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub name: String,
    pub client_type: String,
    /// Space-separated lists.
    pub grant_types: String,
    pub redirect_uris: String,
    pub scopes: String,
    pub default_scope: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    /// Space-separated RFC 8707 resource URIs the client may ask tokens for.
    pub resources: String,
}

pub fn insert(conn: &mut DbConn, row: &ClientRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(applications::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

pub fn find(conn: &mut DbConn, client_id: &str) -> DbResult<Option<ClientRow>> {
    let mut rows = on_backend!(conn, |c| applications::table
        .filter(applications::client_id.eq(client_id))
        .select(ClientRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

pub fn list(conn: &mut DbConn) -> DbResult<Vec<ClientRow>> {
    Ok(on_backend!(conn, |c| applications::table
        .order(applications::created_at.asc())
        .select(ClientRow::as_select())
        .load(c))?)
}

pub fn delete(conn: &mut DbConn, client_id: &str) -> DbResult<bool> {
    let n = on_backend!(conn, |c| diesel::delete(
        applications::table.filter(applications::client_id.eq(client_id))
    )
    .execute(c))?;
    Ok(n == 1)
}
