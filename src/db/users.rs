//! Users and their phone accounts (the seed's profile).

use diesel::prelude::*;

use super::schema::{accounts, users};
use super::{Conn, DbConn, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users, treat_none_as_default_value = false)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: Option<String>,
    pub is_superuser: bool,
    pub is_active: bool,
    pub date_joined: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts, treat_none_as_default_value = false)]
pub struct AccountRow {
    pub user_id: String,
    pub phone: String,
    pub blood_group: String,
    pub dob: Option<i64>,
    pub address: String,
    pub zip_code: String,
    pub verified: bool,
}

/// Inserts a user and, if given, its account. Run inside a transaction:
/// a unique violation on the account must not leave the user behind.
pub fn insert(conn: &mut DbConn, user: &UserRow, account: Option<&AccountRow>) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(users::table)
        .values(user)
        .execute(c))?;
    if let Some(account) = account {
        on_backend!(conn, |c| diesel::insert_into(accounts::table)
            .values(account)
            .execute(c))?;
    }
    Ok(())
}

pub fn delete(conn: &mut DbConn, id: &str) -> DbResult<()> {
    on_backend!(conn, |c| diesel::delete(
        users::table.filter(users::id.eq(id))
    )
    .execute(c))?;
    Ok(())
}

/// The active user whose account has this phone.
pub fn find_by_phone(conn: &mut DbConn, phone: &str) -> DbResult<Option<UserRow>> {
    let mut rows = on_backend!(conn, |c| users::table
        .inner_join(accounts::table)
        .filter(accounts::phone.eq(phone))
        .filter(users::is_active.eq(true))
        .select(UserRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

/// The id of the active user whose account has this phone: `find_by_phone`,
/// on MySQL in one `SELECT` with the lookups of concurrent requests
/// (`db::batch`).
pub fn lookup_user_id_by_phone(conn: &mut Conn, phone: &str) -> DbResult<Option<String>> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        return batched.phone_users.run(phone.to_string());
    }
    Ok(find_by_phone(conn.db()?, phone)?.map(|u| u.id))
}

/// `lookup_user_id_by_phone` for many phones in one statement (MySQL's
/// batched lookups): one answer per phone, in their order.
#[cfg(feature = "mysql")]
pub(super) fn find_user_ids_by_phones(
    conn: &mut DbConn,
    phones: &[String],
) -> DbResult<Vec<Option<String>>> {
    use diesel::sql_types::Text;
    let found = super::fixed::load_mysql_by_keys::<(Text, Text), (String, String)>(
        conn,
        "SELECT a.phone, u.id FROM accounts a JOIN users u ON u.id = a.user_id \
         WHERE u.is_active = 1 AND a.phone IN",
        phones,
        |(phone, _)| phone,
    )?;
    Ok(found.into_iter().map(|f| f.map(|(_, id)| id)).collect())
}

pub fn phone_of(conn: &mut DbConn, user_id: &str) -> DbResult<Option<String>> {
    let mut rows = on_backend!(conn, |c| accounts::table
        .filter(accounts::user_id.eq(user_id))
        .select(accounts::phone)
        .load(c))?;
    Ok(rows.pop())
}

pub fn phone_taken(conn: &mut DbConn, phone: &str) -> DbResult<bool> {
    let n: i64 = on_backend!(conn, |c| accounts::table
        .filter(accounts::phone.eq(phone))
        .count()
        .get_result(c))?;
    Ok(n > 0)
}

pub fn find_by_id(conn: &mut DbConn, id: &str) -> DbResult<Option<UserRow>> {
    let mut rows = on_backend!(conn, |c| users::table
        .filter(users::id.eq(id))
        .select(UserRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

pub fn find_by_username(conn: &mut DbConn, username: &str) -> DbResult<Option<UserRow>> {
    let mut rows = on_backend!(conn, |c| users::table
        .filter(users::username.eq(username))
        .select(UserRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}
