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

/// New users with their accounts in one multi-row `INSERT` each (MySQL's
/// batched otp grants, `db::otp_grant`). Run inside a transaction.
#[cfg(feature = "mysql")]
pub(super) fn insert_many(conn: &mut DbConn, rows: &[(&UserRow, &AccountRow)]) -> DbResult<()> {
    use super::fixed::{self, Bind};
    let binds: Vec<Bind<'_>> = rows.iter().flat_map(|(u, _)| user_binds(Some(u))).collect();
    let statement = (
        "INSERT INTO users (id, username, email, first_name, last_name, password_hash, \
         is_superuser, is_active, date_joined)",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "",
    );
    fixed::insert_rows(conn, statement, &binds)?;
    let binds: Vec<Bind<'_>> = rows
        .iter()
        .flat_map(|(u, a)| std::iter::once(Bind::Text(&u.id)).chain(account_binds(Some(a))))
        .collect();
    let statement = (
        "INSERT INTO accounts (user_id, phone, blood_group, dob, address, zip_code, verified)",
        "(?, ?, ?, ?, ?, ?, ?)",
        "",
    );
    fixed::insert_rows(conn, statement, &binds).map(drop)
}

/// A user's columns, in the order of `users` and of the MySQL procedure's
/// parameters; all NULL for none.
#[cfg(feature = "mysql")]
pub(super) fn user_binds(user: Option<&UserRow>) -> [super::fixed::Bind<'_>; 9] {
    use super::fixed::Bind;
    let flag = |b: Option<bool>| Bind::OptInt(b.map(i32::from));
    [
        Bind::OptText(user.map(|u| u.id.as_str())),
        Bind::OptText(user.map(|u| u.username.as_str())),
        Bind::OptText(user.and_then(|u| u.email.as_deref())),
        Bind::OptText(user.map(|u| u.first_name.as_str())),
        Bind::OptText(user.map(|u| u.last_name.as_str())),
        Bind::OptText(user.and_then(|u| u.password_hash.as_deref())),
        flag(user.map(|u| u.is_superuser)),
        flag(user.map(|u| u.is_active)),
        Bind::OptBigInt(user.map(|u| u.date_joined)),
    ]
}

/// An account's columns but its user's id, in the order of `accounts` and of
/// the MySQL procedure's parameters; all NULL for none.
#[cfg(feature = "mysql")]
pub(super) fn account_binds(account: Option<&AccountRow>) -> [super::fixed::Bind<'_>; 6] {
    use super::fixed::Bind;
    [
        Bind::OptText(account.map(|a| a.phone.as_str())),
        Bind::OptText(account.map(|a| a.blood_group.as_str())),
        Bind::OptBigInt(account.and_then(|a| a.dob)),
        Bind::OptText(account.map(|a| a.address.as_str())),
        Bind::OptText(account.map(|a| a.zip_code.as_str())),
        Bind::OptInt(account.map(|a| i32::from(a.verified))),
    ]
}

/// A sign-up's write: the ticket it spends for its phone, the new user and
/// its account.
#[derive(Debug)]
pub struct SignUpWrite {
    pub ticket_hash: String,
    pub now: i64,
    pub user: UserRow,
    pub account: AccountRow,
}

/// Spends the ticket (for the account's phone) and inserts the user and its
/// account, in one transaction; on MySQL with the sign-ups of concurrent
/// requests (`db::batch`). False: the ticket could not be spent, nothing
/// was stored. A taken username or phone is `DbError::Conflict`.
pub fn create_with_ticket(conn: &mut Conn, write: SignUpWrite) -> DbResult<bool> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        return batched.sign_ups.run(write);
    }
    conn.write_tx(move |c| create_one(c, &write))
}

fn create_one(conn: &mut DbConn, write: &SignUpWrite) -> DbResult<bool> {
    let phone = &write.account.phone;
    if !super::tickets::consume_for_user(conn, &write.ticket_hash, phone, write.now)? {
        return Ok(false);
    }
    insert(conn, &write.user, Some(&write.account))?;
    Ok(true)
}

/// `create_with_ticket` for many requests: one alone is the one-by-one
/// statements in a transaction; more spend their tickets together
/// (`db::proofs`) and insert the users and accounts with one multi-row
/// `INSERT` each. A taken username or phone fails the batch, which is then
/// run again one sign-up at a time.
#[cfg(feature = "mysql")]
pub(super) fn create_many(conn: &mut DbConn, batch: &[SignUpWrite]) -> DbResult<Vec<bool>> {
    use super::proofs::{self, Presented, ProofKey, TicketUse};
    if let [one] = batch {
        return conn.write_tx(|conn| create_one(conn, one).map(|stored| vec![stored]));
    }
    let keys: Vec<ProofKey> = batch
        .iter()
        .map(|w| ProofKey::Ticket {
            hash: w.ticket_hash.clone(),
        })
        .collect();
    conn.write_tx(|conn| {
        let presented: Vec<Presented<'_>> = batch
            .iter()
            .zip(&keys)
            .map(|(w, proof)| Presented::new(&w.account.phone, proof, w.now))
            .collect();
        let won = proofs::spend_many(conn, &presented, TicketUse::User)?;
        let rows: Vec<(&UserRow, &AccountRow)> = batch
            .iter()
            .zip(&won)
            .filter(|(_, won)| **won)
            .map(|(w, _)| (&w.user, &w.account))
            .collect();
        if !rows.is_empty() {
            insert_many(conn, &rows)?;
        }
        Ok(won)
    })
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
