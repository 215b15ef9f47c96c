//! Issued access tokens (by `jti`) and refresh tokens (by hash), grouped in
//! families: every refresh token descends from one grant, and reuse of a spent
//! one revokes the whole family.

use diesel::prelude::*;

use super::fixed::{self, Bind};
use super::schema::{access_tokens, refresh_tokens, users};
#[cfg(feature = "mysql")]
use super::DbError;
use super::{Backend, Conn, DbConn, DbResult};
use crate::secrets;

/// The key a refresh token is stored under: the SHA-256 of the token,
/// preceded by the token's own creation time when it starts with one
/// (`secrets::ordered_secret`), so that new rows are appended to the table's
/// B-tree instead of rewriting a random page (SQLite refresh +35%). On MySQL
/// the key keeps the column's 64 characters: 12 of time and the first 52 hex
/// digits (208 bits) of the hash. There a random key made every rotation
/// read and rewrite a random page of the clustered index: once the table
/// outgrew InnoDB's buffer pool (128 MiB by default), MariaDB refresh fell
/// from 7,300 to 4,000/s within 40 s; with time-ordered keys it held 7,800.
pub fn refresh_key(backend: Backend, token: &str) -> String {
    let hash = secrets::sha256_hex(token.as_bytes());
    match (backend, secrets::ordered_secret_time(token)) {
        (Backend::Sqlite, Some(time)) => format!("{time}{hash}"),
        (Backend::Mysql, Some(time)) => format!("{time}{}", &hash[..52]),
        _ => hash,
    }
}

/// Whether a token that `refresh_key` does not find may be stored under
/// an earlier key (`lookup_refresh` looks there too).
pub fn may_have_earlier_key(backend: Backend, token: &str) -> bool {
    legacy_refresh_key(backend, token).is_some()
}

/// MySQL: the key a token with a creation time was stored under before
/// 2026-11-27 (its bare hash), looked up when `refresh_key` finds nothing.
fn legacy_refresh_key(backend: Backend, token: &str) -> Option<String> {
    let earlier = backend == Backend::Mysql && secrets::ordered_secret_time(token).is_some();
    earlier.then(|| secrets::sha256_hex(token.as_bytes()))
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = access_tokens, treat_none_as_default_value = false)]
pub struct AccessTokenRow {
    pub jti: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scope: String,
    pub family: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
    /// The `aud` it was issued for, when not the default audience.
    pub audience: Option<String>,
    /// SHA-256 of the token as issued; `None` for tokens from before it was
    /// kept, whose signature must be verified instead.
    pub token_hash: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens, treat_none_as_default_value = false)]
pub struct RefreshTokenRow {
    pub token_hash: String,
    pub family: String,
    pub parent_hash: Option<String>,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked: bool,
    /// The RFC 8707 resource its access tokens are for (their `aud`).
    pub resource: Option<String>,
}

pub fn insert_access(conn: &mut DbConn, row: &AccessTokenRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(access_tokens::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// Inserts the new access tokens of a batch (MySQL's batched inserts,
/// `db::batch`); all or none are stored, so that a batch that fails can be
/// run again row by row. One statement is atomic by itself; a row count that
/// `fixed::insert_rows` splits into several statements gets a transaction.
#[cfg(feature = "mysql")]
pub(super) fn insert_access_rows(conn: &mut DbConn, rows: &[AccessTokenRow]) -> DbResult<Vec<()>> {
    if fixed::one_statement(rows.len()) {
        insert_access_many(conn, rows.iter())?;
    } else {
        conn.write_tx(|conn| insert_access_many(conn, rows.iter()))?;
    }
    Ok(vec![(); rows.len()])
}

/// New access tokens in one multi-row `INSERT` (a new token is not revoked).
#[cfg(feature = "mysql")]
pub(super) fn insert_access_many<'a>(
    conn: &mut DbConn,
    rows: impl ExactSizeIterator<Item = &'a AccessTokenRow>,
) -> DbResult<()> {
    let binds: Vec<Bind<'_>> = rows.flat_map(access_binds).collect();
    let statement = (
        "INSERT INTO access_tokens (jti, client_id, user_id, scope, family, issued_at, \
         expires_at, revoked, audience, token_hash)",
        "(?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        "",
    );
    fixed::insert_rows(conn, statement, &binds).map(drop)
}

/// New refresh tokens in one multi-row `INSERT` (neither spent nor revoked).
#[cfg(feature = "mysql")]
pub(super) fn insert_refresh_many<'a>(
    conn: &mut DbConn,
    rows: impl ExactSizeIterator<Item = &'a RefreshTokenRow>,
) -> DbResult<()> {
    let binds: Vec<Bind<'_>> = rows.flat_map(|r| refresh_binds(Some(r))).collect();
    let statement = (
        "INSERT INTO refresh_tokens (token_hash, family, parent_hash, client_id, user_id, \
         scope, issued_at, expires_at, used_at, revoked, resource)",
        "(?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?)",
        "",
    );
    fixed::insert_rows(conn, statement, &binds).map(drop)
}

/// A refresh rotation queued for `rotate_refresh_rows`.
#[cfg(feature = "mysql")]
pub(super) struct Rotation {
    pub(super) old_key: String,
    pub(super) now: i64,
    pub(super) access: AccessTokenRow,
    pub(super) refresh: RefreshTokenRow,
}

/// Many rotations in one transaction (MySQL's batched writes, `db::batch`):
/// lock the presented tokens that are still unspent, spend them, insert
/// every winner's access and refresh token with one multi-row `INSERT` each,
/// commit: six round trips and one commit for the whole batch. A token
/// presented twice in a batch is won by the first. One rotation alone is the
/// stored procedure's single round trip. Answers whether each was stored.
#[cfg(feature = "mysql")]
pub(super) fn rotate_refresh_rows(conn: &mut DbConn, batch: &[Rotation]) -> DbResult<Vec<bool>> {
    use diesel::sql_types::Text;
    if let [one] = batch {
        let stored = call_rotate_refresh(conn, &one.old_key, one.now, &one.access, &one.refresh)?;
        return Ok(vec![stored]);
    }
    conn.write_tx(|conn| {
        let keys = fixed::distinct_texts(batch.iter().map(|r| r.old_key.as_str()));
        let (sql, binds) = fixed::in_list(
            "SELECT token_hash FROM refresh_tokens \
             WHERE used_at IS NULL AND revoked = 0 AND token_hash IN",
            &[],
            &keys,
        );
        let unspent: Vec<String> =
            fixed::load_mysql::<Text, String>(conn, &format!("{sql} FOR UPDATE"), &binds)?;
        let mut claimed = std::collections::HashSet::new();
        let won: Vec<bool> = batch
            .iter()
            .map(|r| unspent.contains(&r.old_key) && claimed.insert(r.old_key.as_str()))
            .collect();
        let winners: Vec<&Rotation> = batch
            .iter()
            .zip(&won)
            .filter(|(_, w)| **w)
            .map(|(r, _)| r)
            .collect();
        if winners.is_empty() {
            return Ok(won);
        }
        let now = winners.iter().map(|r| r.now).max().unwrap_or_default();
        let keys: Vec<Bind<'_>> = winners.iter().map(|r| Bind::Text(&r.old_key)).collect();
        let (sql, binds) = fixed::in_list(
            "UPDATE refresh_tokens SET used_at = ? WHERE token_hash IN",
            &[Bind::BigInt(now)],
            &keys,
        );
        let spent = fixed::execute(conn, &sql, &binds)?;
        if spent != winners.len() {
            // Locked above, so this cannot happen; if it does, store nothing.
            return Err(DbError::Other(
                "a locked refresh token was not spent".into(),
            ));
        }
        insert_access_many(conn, winners.iter().map(|r| &r.access))?;
        insert_refresh_many(conn, winners.iter().map(|r| &r.refresh))?;
        Ok(won)
    })
}

/// `find_access_with_username` for many `jti`s in one statement (MySQL's
/// batched lookups, `db::batch`): one answer per `jti`, in their order.
#[cfg(feature = "mysql")]
pub(super) fn find_access_rows(
    conn: &mut DbConn,
    jtis: &[String],
) -> DbResult<Vec<Option<WithUsername<AccessTokenRow>>>> {
    use diesel::query_builder::AsQuery;
    use diesel::sql_types::{Nullable, Text};
    type Columns = (<access_tokens::table as AsQuery>::SqlType, Nullable<Text>);
    fixed::load_mysql_by_keys::<Columns, WithUsername<AccessTokenRow>>(
        conn,
        "SELECT a.jti, a.client_id, a.user_id, a.scope, a.family, a.issued_at, a.expires_at, \
         a.revoked, a.audience, a.token_hash, u.username FROM access_tokens a \
         LEFT JOIN users u ON u.id = a.user_id WHERE a.jti IN",
        jtis,
        |(row, _)| &row.jti,
    )
}

/// `find_refresh` for many keys (`refresh_key`) in one statement (MySQL's
/// batched lookups, `db::batch`): one answer per key, in their order.
#[cfg(feature = "mysql")]
pub(super) fn find_refresh_rows(
    conn: &mut DbConn,
    keys: &[String],
) -> DbResult<Vec<Option<RefreshTokenRow>>> {
    use diesel::query_builder::AsQuery;
    type Columns = <refresh_tokens::table as AsQuery>::SqlType;
    fixed::load_mysql_by_keys::<Columns, RefreshTokenRow>(
        conn,
        "SELECT token_hash, family, parent_hash, client_id, user_id, scope, issued_at, \
         expires_at, used_at, revoked, resource FROM refresh_tokens WHERE token_hash IN",
        keys,
        |row| &row.token_hash,
    )
}

/// The row of a presented refresh token, read where its rotation runs: on
/// SQLite on the writer thread (`Conn::read_for_write`), on MySQL in one
/// `SELECT` with the lookups of concurrent requests (`db::batch`).
pub fn lookup_refresh(conn: &mut Conn, token: &str) -> DbResult<Option<RefreshTokenRow>> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        let found = batched
            .refresh_lookups
            .run(refresh_key(Backend::Mysql, token))?;
        return match (found, legacy_refresh_key(Backend::Mysql, token)) {
            (None, Some(legacy)) => find_refresh_by_key(conn.db()?, &legacy),
            (found, _) => Ok(found),
        };
    }
    let token = token.to_string();
    conn.read_for_write(move |c| find_refresh(c, &token))
}

/// Stores a new access token that is the request's only write: on SQLite
/// in the writer's group commit, on MySQL in one multi-row `INSERT` with the
/// tokens of concurrent requests (`db::batch`). Returns once it is committed.
pub fn store_access(conn: &mut Conn, row: AccessTokenRow) -> DbResult<()> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        return batched.access_inserts.run(row);
    }
    conn.write_one(move |c| insert_access(c, &row))
}

/// `find_access_with_username`, on MySQL in one `SELECT` with the lookups of
/// concurrent requests (`db::batch`).
pub fn lookup_access_with_username(
    conn: &mut Conn,
    jti: &str,
) -> DbResult<Option<WithUsername<AccessTokenRow>>> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        return batched.access_lookups.run(jti.to_string());
    }
    find_access_with_username(conn.db()?, jti)
}

pub fn insert_refresh(conn: &mut DbConn, row: &RefreshTokenRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(refresh_tokens::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

pub fn find_access(conn: &mut DbConn, jti: &str) -> DbResult<Option<AccessTokenRow>> {
    let mut rows = on_backend!(conn, |c| access_tokens::table
        .filter(access_tokens::jti.eq(jti))
        .select(AccessTokenRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

/// The row of a presented refresh token, if it was ever issued.
pub fn find_refresh(conn: &mut DbConn, token: &str) -> DbResult<Option<RefreshTokenRow>> {
    find_under_refresh_keys(conn, token, find_refresh_by_key)
}

/// `find` under `refresh_key`, then under the key an older build stored the
/// token under, if there is one.
fn find_under_refresh_keys<T>(
    conn: &mut DbConn,
    token: &str,
    mut find: impl FnMut(&mut DbConn, &str) -> DbResult<Option<T>>,
) -> DbResult<Option<T>> {
    let backend = conn.backend();
    if let Some(found) = find(conn, &refresh_key(backend, token))? {
        return Ok(Some(found));
    }
    match legacy_refresh_key(backend, token) {
        Some(legacy) => find(conn, &legacy),
        None => Ok(None),
    }
}

fn find_refresh_by_key(conn: &mut DbConn, key: &str) -> DbResult<Option<RefreshTokenRow>> {
    let mut rows = on_backend!(conn, |c| refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(key))
        .select(RefreshTokenRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

/// A token's row with its user's username (`None` for a client's own token),
/// in one statement: introspection reports both (one MySQL round trip, not two).
pub type WithUsername<T> = (T, Option<String>);

pub fn find_access_with_username(
    conn: &mut DbConn,
    jti: &str,
) -> DbResult<Option<WithUsername<AccessTokenRow>>> {
    let mut rows = on_backend!(conn, |c| access_tokens::table
        .left_join(users::table.on(users::id.nullable().eq(access_tokens::user_id)))
        .filter(access_tokens::jti.eq(jti))
        .select((AccessTokenRow::as_select(), users::username.nullable()))
        .load(c))?;
    Ok(rows.pop())
}

pub fn find_refresh_with_username(
    conn: &mut DbConn,
    token: &str,
) -> DbResult<Option<WithUsername<RefreshTokenRow>>> {
    find_under_refresh_keys(conn, token, |conn, key| {
        let mut rows = on_backend!(conn, |c| refresh_tokens::table
            .left_join(users::table.on(users::id.nullable().eq(refresh_tokens::user_id)))
            .filter(refresh_tokens::token_hash.eq(key))
            .select((RefreshTokenRow::as_select(), users::username.nullable()))
            .load(c))?;
        Ok(rows.pop())
    })
}

/// Spends the refresh token stored under `key` (the `token_hash` of its
/// row); false if it was already spent or revoked (someone else won).
pub fn spend_refresh(conn: &mut DbConn, key: &str, now: i64) -> DbResult<bool> {
    let n = fixed::execute(
        conn,
        "UPDATE refresh_tokens SET used_at = ? \
         WHERE token_hash = ? AND used_at IS NULL AND revoked = 0",
        &[Bind::BigInt(now), Bind::Text(key)],
    )?;
    Ok(n == 1)
}

/// The message of the error `phonekey_rotate_refresh_token` (MySQL) raises
/// for a token already spent or revoked; the migration that creates it says the same.
#[cfg(feature = "mysql")]
const SPENT_MESSAGE: &str = "phonekey: refresh token already spent";

/// Spends the refresh token stored under `old_key` and stores its
/// successors `access` and `refresh`, all or nothing; false if it was
/// already spent or revoked (someone else won), and then nothing is stored.
/// On MySQL one call of a stored procedure with its own transaction (one
/// round trip instead of six), so it must not run inside another; on SQLite
/// the caller's transaction holds the three statements (`Conn::write_atomic`
/// does both).
/// Callers use `store_rotation`, which on MySQL batches rotations.
fn rotate_refresh(
    conn: &mut DbConn,
    old_key: &str,
    now: i64,
    access: &AccessTokenRow,
    refresh: &RefreshTokenRow,
) -> DbResult<bool> {
    match conn {
        DbConn::Sqlite(_) => {
            if !spend_refresh(conn, old_key, now)? {
                return Ok(false);
            }
            insert_access(conn, access)?;
            insert_refresh(conn, refresh)?;
            Ok(true)
        }
        #[cfg(feature = "mysql")]
        DbConn::Mysql(_) => call_rotate_refresh(conn, old_key, now, access, refresh),
    }
}

/// The rotation as one call of `phonekey_rotate_refresh_token`, for the
/// token stored under `old_key`.
#[cfg(feature = "mysql")]
fn call_rotate_refresh(
    conn: &mut DbConn,
    old_key: &str,
    now: i64,
    access: &AccessTokenRow,
    refresh: &RefreshTokenRow,
) -> DbResult<bool> {
    let head = [Bind::Text(old_key), Bind::BigInt(now)];
    let binds = [
        &head[..],
        &access_binds(access),
        &refresh_binds(Some(refresh)),
    ]
    .concat();
    let called = fixed::execute(
        conn,
        "CALL phonekey_rotate_refresh_token(\
         ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &binds,
    );
    match called {
        Ok(_) => Ok(true),
        Err(DbError::Other(message)) if message == SPENT_MESSAGE => Ok(false),
        Err(e) => Err(e),
    }
}

/// Spends the refresh token stored under `old_key` (the `token_hash` its
/// lookup found, which for an older token may not be `refresh_key`'s) and
/// stores its successors, as `rotate_refresh`, run where writes run: on
/// SQLite in the writer's transaction, on MySQL in one transaction with the
/// rotations of concurrent requests (`rotate_refresh_rows`). False if it was
/// already spent.
pub fn store_rotation(
    conn: &mut Conn,
    old_key: String,
    now: i64,
    access: AccessTokenRow,
    refresh: RefreshTokenRow,
) -> DbResult<bool> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        return batched.rotations.run(Rotation {
            old_key,
            now,
            access,
            refresh,
        });
    }
    conn.write_atomic(move |c| rotate_refresh(c, &old_key, now, &access, &refresh))
}

/// An access token's columns, in the order the MySQL procedures take them
/// (all but `revoked`: a new token is not).
#[cfg(feature = "mysql")]
pub(super) fn access_binds(row: &AccessTokenRow) -> [Bind<'_>; 9] {
    debug_assert!(!row.revoked);
    [
        Bind::Text(&row.jti),
        Bind::Text(&row.client_id),
        Bind::OptText(row.user_id.as_deref()),
        Bind::Text(&row.scope),
        Bind::OptText(row.family.as_deref()),
        Bind::BigInt(row.issued_at),
        Bind::BigInt(row.expires_at),
        Bind::OptText(row.audience.as_deref()),
        Bind::OptText(row.token_hash.as_deref()),
    ]
}

/// A refresh token's columns, in the order the MySQL procedures take them
/// (all but `used_at` and `revoked`: a new token is neither); all NULL for none.
#[cfg(feature = "mysql")]
pub(super) fn refresh_binds(row: Option<&RefreshTokenRow>) -> [Bind<'_>; 9] {
    debug_assert!(row.is_none_or(|r| !r.revoked && r.used_at.is_none()));
    [
        Bind::OptText(row.map(|r| r.token_hash.as_str())),
        Bind::OptText(row.map(|r| r.family.as_str())),
        Bind::OptText(row.and_then(|r| r.parent_hash.as_deref())),
        Bind::OptText(row.map(|r| r.client_id.as_str())),
        Bind::OptText(row.and_then(|r| r.user_id.as_deref())),
        Bind::OptText(row.map(|r| r.scope.as_str())),
        Bind::OptBigInt(row.map(|r| r.issued_at)),
        Bind::OptBigInt(row.map(|r| r.expires_at)),
        Bind::OptText(row.and_then(|r| r.resource.as_deref())),
    ]
}

/// Revokes every refresh and access token of a family.
pub fn revoke_family(conn: &mut DbConn, family: &str) -> DbResult<()> {
    on_backend!(conn, |c| {
        diesel::update(refresh_tokens::table.filter(refresh_tokens::family.eq(family)))
            .set(refresh_tokens::revoked.eq(true))
            .execute(c)?;
        diesel::update(access_tokens::table.filter(access_tokens::family.eq(family)))
            .set(access_tokens::revoked.eq(true))
            .execute(c)
    })?;
    Ok(())
}

pub fn revoke_access(conn: &mut DbConn, jti: &str) -> DbResult<()> {
    on_backend!(conn, |c| diesel::update(
        access_tokens::table.filter(access_tokens::jti.eq(jti))
    )
    .set(access_tokens::revoked.eq(true))
    .execute(c))?;
    Ok(())
}

#[cfg(all(test, feature = "mysql"))]
mod tests {
    use super::*;

    fn row(jti: &str) -> AccessTokenRow {
        AccessTokenRow {
            jti: jti.into(),
            client_id: "app".into(),
            user_id: None,
            scope: String::new(),
            family: None,
            issued_at: 1_800_000_000,
            expires_at: 1_800_003_600,
            revoked: false,
            audience: None,
            token_hash: Some(secrets::sha256_hex(jti.as_bytes())),
        }
    }

    fn stored(conn: &mut DbConn) -> i64 {
        on_backend!(conn, |c| access_tokens::table.count().get_result::<i64>(c)).expect("count")
    }

    /// A batch of 11 rows takes two statements (8 and 3 rows); one that fails
    /// in its second statement must not leave the first one's rows behind:
    /// the batcher then runs each row alone, and those would be refused as
    /// duplicates of themselves (seen: `token_store.rs` failed so on MariaDB).
    #[test]
    fn a_batch_split_into_statements_stores_all_or_nothing() {
        use diesel::Connection;
        let mut conn = DbConn::Sqlite(
            diesel::SqliteConnection::establish(":memory:").expect("an in-memory database"),
        );
        crate::db::migrate(&mut conn).expect("migrate");
        insert_access(&mut conn, &row("taken")).expect("the first row");

        let mut rows: Vec<AccessTokenRow> = (0..11).map(|i| row(&format!("new-{i}"))).collect();
        rows[9] = row("taken");
        let result = insert_access_rows(&mut conn, &rows);
        assert!(matches!(result, Err(DbError::Conflict(_))), "{result:?}");
        assert_eq!(stored(&mut conn), 1, "the first statement's rows stayed");

        rows[9] = row("new-9");
        insert_access_rows(&mut conn, &rows).expect("a batch of new rows");
        assert_eq!(stored(&mut conn), 12);
    }
}
