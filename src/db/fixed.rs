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
    let (sql, binds) = in_list(
        select,
        &[],
        &distinct_texts(keys.iter().map(String::as_str)),
    );
    let found: Vec<U> = load_mysql::<ST, U>(conn, &sql, &binds)?;
    Ok(keys
        .iter()
        .map(|key| found.iter().find(|row| key_of(row) == key).cloned())
        .collect())
}

/// The row counts a batched statement is made for. MySQL keeps a prepared
/// statement per distinct SQL text on every connection, and the server
/// counts them all against `max_prepared_stmt_count` (16,382 by default, for
/// every client together): with a statement for each count up to the batch
/// limit, one process prepared over 1,100 under load and its memory grew
/// by about 25 MiB. So `IN` lists are padded up to one of these counts and
/// multi-row `INSERT`s are split into them.
#[cfg(feature = "mysql")]
const ROW_COUNTS: [usize; 14] = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64];

/// The largest row count of `ROW_COUNTS` (the batch limit).
#[cfg(feature = "mysql")]
pub const MAX_ROWS: usize = ROW_COUNTS[ROW_COUNTS.len() - 1];

/// Whether `insert_rows` inserts `rows` rows in one statement.
#[cfg(feature = "mysql")]
pub fn one_statement(rows: usize) -> bool {
    ROW_COUNTS.contains(&rows)
}

/// Inserts rows: `head` (an `INSERT … (columns)`), `VALUES` with `row` (one
/// row's placeholders, as many as each row has binds) repeated, then `tail`
/// (empty or an `ON DUPLICATE KEY …` clause), in as few statements of
/// `ROW_COUNTS` rows as add up to them. Returns the rows changed.
#[cfg(feature = "mysql")]
pub fn insert_rows(
    conn: &mut DbConn,
    (head, row, tail): (&str, &str, &str),
    binds: &[Bind<'_>],
) -> DbResult<usize> {
    let per_row = row.matches('?').count().max(1);
    let mut changed = 0;
    let mut rest = binds;
    while !rest.is_empty() {
        let rows = rest.len() / per_row;
        let count = ROW_COUNTS
            .iter()
            .rev()
            .copied()
            .find(|&c| c <= rows)
            .unwrap_or(1);
        let (now, later) = rest.split_at((count * per_row).min(rest.len()));
        let sql = format!("{head} VALUES {}{tail}", vec![row; count].join(", "));
        changed += execute(conn, &sql, now)?;
        rest = later;
    }
    Ok(changed)
}

/// `list` (a statement ending in `IN`) with its list, and the binds: the
/// `prefix` ones (of the `?`s before the list), then `keys` (at least one)
/// padded to a count of `ROW_COUNTS` by repeating the last: a key listed twice
/// selects or changes nothing more.
#[cfg(feature = "mysql")]
pub fn in_list<'a>(list: &str, prefix: &[Bind<'a>], keys: &[Bind<'a>]) -> (String, Vec<Bind<'a>>) {
    let count = ROW_COUNTS
        .iter()
        .copied()
        .find(|&c| c >= keys.len())
        .unwrap_or(keys.len());
    let mut binds = prefix.to_vec();
    binds.extend_from_slice(keys);
    if let Some(&last) = keys.last() {
        binds.extend(std::iter::repeat_n(last, count - keys.len()));
    }
    (format!("{list} ({})", vec!["?"; count].join(", ")), binds)
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

#[cfg(all(test, feature = "mysql"))]
mod tests {
    use super::*;

    #[test]
    fn lists_are_padded_to_a_row_count() {
        let keys = [Bind::Text("a"), Bind::Text("b"), Bind::Text("c")];
        let (sql, binds) = in_list("SELECT x FROM t WHERE k IN", &[Bind::Int(1)], &keys[..3]);
        assert_eq!(sql, "SELECT x FROM t WHERE k IN (?, ?, ?)");
        assert_eq!(binds.len(), 4);
        let nine: Vec<Bind<'_>> = (0..9).map(|_| Bind::Text("k")).collect();
        let (sql, binds) = in_list("IN", &[], &nine);
        assert_eq!(sql.matches('?').count(), 12);
        assert!(matches!(binds[11], Bind::Text("k")));
        assert_eq!(binds.len(), 12);
    }

    #[test]
    fn rows_are_inserted_in_statements_of_a_row_count() {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut conn = DbConn::Sqlite(
            diesel::SqliteConnection::establish(":memory:").expect("an in-memory database"),
        );
        conn.batch_execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .expect("a table");
        // 11 rows: one statement of 8 and one of 3.
        let keys: Vec<i32> = (0..11).collect();
        let binds: Vec<Bind<'_>> = keys
            .iter()
            .flat_map(|k| [Bind::Int(*k), Bind::Text("v")])
            .collect();
        let statement = ("INSERT INTO t (k, v)", "(?, ?)", "");
        assert_eq!(
            insert_rows(&mut conn, statement, &binds).expect("insert"),
            11
        );
        let (sql, binds) = in_list("DELETE FROM t WHERE k IN", &[], &binds[..2]);
        assert_eq!(execute(&mut conn, &sql, &binds).expect("delete"), 1);
        let rest = execute(&mut conn, "DELETE FROM t", &[]).expect("delete");
        assert_eq!(rest, 10);
    }
}
