//! Statements with fixed SQL that diesel prepares once per connection and then
//! reuses. diesel never caches its UPDATE statements or `sql_query` (their
//! SQL could vary from call to call), so SQLite parses each of them again and
//! MySQL pays a prepare round trip and a close for every execution. The hot
//! single-use and rate-limit updates are written here instead.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Integer, Nullable, Text};
use diesel::{QueryResult, RunQueryDsl};

use super::{DbConn, DbResult};

/// A value bound to one `?` of a fixed statement.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    Text(&'a str),
    // The optional ones are bound only by the MySQL procedure calls.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    OptText(Option<&'a str>),
    BigInt(i64),
    Int(i32),
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    OptBigInt(Option<i64>),
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    OptInt(Option<i32>),
}

#[derive(Debug)]
struct Fixed<'a> {
    /// SQL with one `?` per bind and no other `?`.
    sql: &'a str,
    binds: &'a [Bind<'a>],
}

impl QueryId for Fixed<'_> {
    type QueryId = ();
    // Cached by its SQL text instead of by type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for Fixed<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<BigInt> + HasSqlType<Integer>,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
    i32: ToSql<Integer, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut binds = self.binds.iter();
        for (i, part) in self.sql.split('?').enumerate() {
            if i > 0 {
                match binds.next() {
                    Some(Bind::Text(s)) => out.push_bind_param::<Text, str>(s)?,
                    Some(Bind::OptText(s)) => {
                        out.push_bind_param::<Nullable<Text>, Option<&str>>(s)?
                    }
                    Some(Bind::BigInt(n)) => out.push_bind_param::<BigInt, i64>(n)?,
                    Some(Bind::Int(n)) => out.push_bind_param::<Integer, i32>(n)?,
                    Some(Bind::OptBigInt(n)) => {
                        out.push_bind_param::<Nullable<BigInt>, Option<i64>>(n)?
                    }
                    Some(Bind::OptInt(n)) => {
                        out.push_bind_param::<Nullable<Integer>, Option<i32>>(n)?
                    }
                    None => {
                        return Err(diesel::result::Error::QueryBuilderError(
                            format!("too few binds for {:?}", self.sql).into(),
                        ))
                    }
                }
            }
            out.push_sql(part);
        }
        if binds.next().is_some() {
            return Err(diesel::result::Error::QueryBuilderError(
                format!("too many binds for {:?}", self.sql).into(),
            ));
        }
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for Fixed<'_> {}

/// Executes `sql` with `binds`; returns the number of rows it changed.
pub fn execute(conn: &mut DbConn, sql: &str, binds: &[Bind<'_>]) -> DbResult<usize> {
    Ok(on_backend!(conn, |c| Fixed { sql, binds }.execute(c))?)
}

/// A `Fixed` statement that returns rows of SQL type `ST`.
#[cfg(feature = "mysql")]
pub struct FixedLoad<'a, ST> {
    fixed: Fixed<'a>,
    rows: std::marker::PhantomData<ST>,
}

#[cfg(feature = "mysql")]
impl<ST> QueryId for FixedLoad<'_, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

#[cfg(feature = "mysql")]
impl<ST, DB> QueryFragment<DB> for FixedLoad<'_, ST>
where
    DB: Backend,
    for<'a> Fixed<'a>: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.fixed.walk_ast(out)
    }
}

#[cfg(feature = "mysql")]
impl<ST> diesel::query_builder::Query for FixedLoad<'_, ST> {
    type SqlType = ST;
}

#[cfg(feature = "mysql")]
impl<Conn, ST> RunQueryDsl<Conn> for FixedLoad<'_, ST> {}

/// Runs `sql` with `binds` on MySQL and loads its rows as `U` (columns of
/// SQL types `ST`), with the statement prepared once per connection.
#[cfg(feature = "mysql")]
pub fn load_mysql<ST, U>(conn: &mut DbConn, sql: &str, binds: &[Bind<'_>]) -> DbResult<Vec<U>>
where
    for<'q> FixedLoad<'q, ST>: diesel::query_dsl::LoadQuery<'q, diesel::MysqlConnection, U>,
{
    match conn {
        DbConn::Mysql(c) => Ok(FixedLoad::<ST> {
            fixed: Fixed { sql, binds },
            rows: std::marker::PhantomData,
        }
        .load(c)?),
        DbConn::Sqlite(_) => Err(super::DbError::Other(
            "load_mysql on a SQLite connection".into(),
        )),
    }
}

/// Loads the rows whose key is one of `keys`, with `select` ending in
/// `WHERE <key column> IN` (the list is added); one answer per key, in their
/// order, as `key_of` tells a row's key. A key may be asked for twice.
#[cfg(feature = "mysql")]
pub fn load_mysql_by_keys<ST, U>(
    conn: &mut DbConn,
    select: &str,
    keys: &[String],
    key_of: fn(&U) -> &String,
) -> DbResult<Vec<Option<U>>>
where
    U: Clone,
    for<'q> FixedLoad<'q, ST>: diesel::query_dsl::LoadQuery<'q, diesel::MysqlConnection, U>,
{
    let binds = distinct_texts(keys.iter().map(String::as_str));
    let sql = in_list_sql(select, binds.len());
    let found: Vec<U> = load_mysql::<ST, U>(conn, &sql, &binds)?;
    Ok(keys
        .iter()
        .map(|key| found.iter().find(|row| key_of(row) == key).cloned())
        .collect())
}

/// `head` (an `INSERT … (columns)`) with `rows` copies of `row`, the
/// placeholders of one row, as its `VALUES`.
#[cfg(feature = "mysql")]
pub fn values_sql(head: &str, row: &str, rows: usize) -> String {
    format!("{head} VALUES {}", vec![row; rows].join(", "))
}

/// `list` (a statement ending in `IN`) with `keys` placeholders in parentheses.
#[cfg(feature = "mysql")]
pub fn in_list_sql(list: &str, keys: usize) -> String {
    format!("{list} ({})", vec!["?"; keys].join(", "))
}

/// The distinct `keys` of an `IN (…)` list, in key order, as binds: many
/// requests of a batch may name one key (all of them introspecting one
/// token), and key order is the order InnoDB locks rows in.
#[cfg(feature = "mysql")]
pub fn distinct_texts<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<Bind<'a>> {
    let mut keys: Vec<&str> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().map(Bind::Text).collect()
}
