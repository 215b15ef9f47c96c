//! One-time codes: at most one live code per phone; a new one supersedes the old.

use diesel::prelude::*;

use super::fixed::{self, Bind};
#[cfg(feature = "mysql")]
use super::rate_limits::Bucket;
use super::rate_limits::{self, Limit};
use super::schema::otp_codes;
use super::{Conn, DbConn, DbError, DbResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = otp_codes, treat_none_as_default_value = false)]
pub struct CodeRow {
    pub id: String,
    pub phone: String,
    pub code_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub attempts: i32,
    pub superseded_at: Option<i64>,
    pub verified_at: Option<i64>,
}

/// Supersedes the phone's live code and stores the new one. Run in a transaction.
pub fn replace(conn: &mut DbConn, row: &CodeRow) -> DbResult<()> {
    fixed::execute(
        conn,
        "UPDATE otp_codes SET superseded_at = ? \
         WHERE phone = ? AND superseded_at IS NULL AND verified_at IS NULL",
        &[Bind::BigInt(row.created_at), Bind::Text(&row.phone)],
    )?;
    on_backend!(conn, |c| diesel::insert_into(otp_codes::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// The phone's live code, whether or not it has expired or run out of attempts.
pub fn find_live(conn: &mut DbConn, phone: &str) -> DbResult<Option<CodeRow>> {
    let mut rows = on_backend!(conn, |c| otp_codes::table
        .filter(otp_codes::phone.eq(phone))
        .filter(otp_codes::superseded_at.is_null())
        .filter(otp_codes::verified_at.is_null())
        .order(otp_codes::created_at.desc())
        .select(CodeRow::as_select())
        .load(c))?;
    Ok(rows.pop())
}

/// Spends one attempt on the code, and marks it verified when `matched`.
/// Only the first `max_attempts` attempts can land: the caller's comparison
/// counts only if this returns true.
pub fn spend_attempt(
    conn: &mut DbConn,
    id: &str,
    matched: bool,
    max_attempts: i32,
    now: i64,
) -> DbResult<bool> {
    // A miss sets verified_at to itself (NULL): one statement for both.
    let n = fixed::execute(
        conn,
        "UPDATE otp_codes SET attempts = attempts + 1, \
           verified_at = CASE WHEN ? = 1 THEN ? ELSE verified_at END \
         WHERE id = ? AND superseded_at IS NULL AND verified_at IS NULL \
           AND attempts < ? AND expires_at > ?",
        &[
            Bind::Int(i32::from(matched)),
            Bind::BigInt(now),
            Bind::Text(id),
            Bind::Int(max_attempts),
            Bind::BigInt(now),
        ],
    )?;
    Ok(n == 1)
}

/// Spends one attempt on the phone's live code and marks it verified, if
/// that code's hash is `code_hash` and it can still be tried: the usual
/// right code in one statement. False leaves everything as it was. The
/// database compares keyed hashes, which an attacker can neither compute nor
/// steer, so the comparison's timing tells nothing about the code.
/// The MySQL procedure `phonekey_otp_grant` makes the same statement.
pub fn spend_if_matches(
    conn: &mut DbConn,
    phone: &str,
    code_hash: &str,
    max_attempts: i32,
    now: i64,
) -> DbResult<bool> {
    let n = fixed::execute(
        conn,
        "UPDATE otp_codes SET attempts = attempts + 1, verified_at = ? \
         WHERE phone = ? AND code_hash = ? AND superseded_at IS NULL \
           AND verified_at IS NULL AND attempts < ? AND expires_at > ?",
        &[
            Bind::BigInt(now),
            Bind::Text(phone),
            Bind::Text(code_hash),
            Bind::Int(max_attempts),
            Bind::BigInt(now),
        ],
    )?;
    Ok(n == 1)
}

pub fn attempts(conn: &mut DbConn, id: &str) -> DbResult<Option<i32>> {
    let mut rows = on_backend!(conn, |c| otp_codes::table
        .filter(otp_codes::id.eq(id))
        .select(otp_codes::attempts)
        .load(c))?;
    Ok(rows.pop())
}

pub fn delete(conn: &mut DbConn, id: &str) -> DbResult<()> {
    on_backend!(conn, |c| diesel::delete(
        otp_codes::table.filter(otp_codes::id.eq(id))
    )
    .execute(c))?;
    Ok(())
}

/// getcode's write: the rate-limit buckets it hits, in order (the phone's,
/// then the client address's), and the code it stores if they all allow it.
pub struct CodeIssue {
    pub buckets: Vec<(String, Limit)>,
    pub row: CodeRow,
    pub now: i64,
}

/// What getcode's write answers: stored, or refused by a limit for this
/// many seconds.
pub type Issued = Result<(), i64>;

/// Hits the buckets and, if they all allow it, supersedes the phone's live
/// code and stores the new one, in one transaction; on MySQL with the
/// getcodes of concurrent requests (`db::batch`). `Err(seconds)` inside:
/// refused by a limit, and nothing counted.
pub fn issue(conn: &mut Conn, issue: CodeIssue) -> DbResult<Issued> {
    #[cfg(feature = "mysql")]
    if let Some(batched) = &conn.batched {
        return batched.new_codes.run(issue);
    }
    match conn.write_tx(move |c| issue_one(c, &issue)) {
        Ok(()) => Ok(Ok(())),
        Err(Refused::Limit(wait)) => Ok(Err(wait)),
        Err(Refused::Db(e)) => Err(e),
    }
}

/// Why `issue_one` stored nothing; an error, so that its transaction rolls
/// back the hits already counted.
enum Refused {
    Limit(i64),
    Db(DbError),
}

impl From<DbError> for Refused {
    fn from(e: DbError) -> Refused {
        Refused::Db(e)
    }
}

fn issue_one(conn: &mut DbConn, issue: &CodeIssue) -> Result<(), Refused> {
    for (bucket, limit) in &issue.buckets {
        if let Some(wait) = rate_limits::hit(conn, bucket, limit, issue.now)? {
            return Err(Refused::Limit(wait));
        }
    }
    Ok(replace(conn, &issue.row)?)
}

/// `issue` for many requests in one transaction: lock the buckets
/// (`lock_buckets`), decide in request order which hits the limits allow
/// (`count_hits`), write the buckets back, supersede the winners' live codes
/// and insert theirs (`store_codes`). Seven round trips whatever the number
/// of requests, against eight each.
#[cfg(feature = "mysql")]
pub(super) fn issue_many(conn: &mut DbConn, batch: &[CodeIssue]) -> DbResult<Vec<Issued>> {
    conn.write_tx(|conn| {
        let mut buckets = lock_buckets(conn, batch)?;
        let (answers, mut changed) = count_hits(batch, &mut buckets)?;
        let winners: Vec<&CodeRow> = batch
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_ok())
            .map(|(i, _)| &i.row)
            .collect();
        if winners.is_empty() {
            return Ok(answers);
        }
        changed.sort_unstable();
        let binds: Vec<Bind<'_>> = changed
            .iter()
            .flat_map(|name| bucket_binds(name, &buckets[*name]))
            .collect();
        let statement = (
            BUCKETS_INSERT,
            "(?, ?, ?, ?)",
            " ON DUPLICATE KEY UPDATE window_start = VALUES(window_start), \
             hits = VALUES(hits), last_at = VALUES(last_at)",
        );
        fixed::insert_rows(conn, statement, &binds)?;
        store_codes(conn, &winners)?;
        Ok(answers)
    })
}

/// Creates the batch's buckets that are missing (as `rate_limits::hit`
/// does) and locks them all, in key order; returns them by name.
#[cfg(feature = "mysql")]
fn lock_buckets(
    conn: &mut DbConn,
    batch: &[CodeIssue],
) -> DbResult<std::collections::HashMap<String, Bucket>> {
    use diesel::sql_types::{BigInt, Integer, Text};
    let mut names: Vec<(&str, i64)> = batch
        .iter()
        .flat_map(|i| i.buckets.iter().map(|(name, _)| (name.as_str(), i.now)))
        .collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    names.dedup_by(|a, b| a.0 == b.0);
    let fresh: Vec<Bucket> = names.iter().map(|(_, now)| Bucket::new(*now)).collect();
    let binds: Vec<Bind<'_>> = names
        .iter()
        .zip(&fresh)
        .flat_map(|((name, _), b)| bucket_binds(name, b))
        .collect();
    let statement = (
        BUCKETS_INSERT,
        "(?, ?, ?, ?)",
        " ON DUPLICATE KEY UPDATE bucket = bucket",
    );
    fixed::insert_rows(conn, statement, &binds)?;
    let keys: Vec<Bind<'_>> = names.iter().map(|(name, _)| Bind::Text(name)).collect();
    let (sql, binds) = fixed::in_list(
        "SELECT bucket, window_start, hits, last_at FROM rate_limits WHERE bucket IN",
        &[],
        &keys,
    );
    let rows: Vec<(String, i64, i32, i64)> = fixed::load_mysql::<(Text, BigInt, Integer, BigInt), _>(
        conn,
        &format!("{sql} FOR UPDATE"),
        &binds,
    )?;
    Ok(rows
        .into_iter()
        .map(|(name, window_start, hits, last_at)| {
            let bucket = Bucket {
                window_start,
                hits,
                last_at,
            };
            (name, bucket)
        })
        .collect())
}

/// Counts, in request order, the hits each request's limits allow
/// (`Limit::apply`, the conditional `UPDATE` of `rate_limits::hit`); a
/// request refused by one bucket counts in none. Returns the answers and the
/// names of the buckets that changed.
#[cfg(feature = "mysql")]
fn count_hits<'a>(
    batch: &'a [CodeIssue],
    buckets: &mut std::collections::HashMap<String, Bucket>,
) -> DbResult<(Vec<Issued>, Vec<&'a str>)> {
    let mut answers = Vec::with_capacity(batch.len());
    let mut changed: Vec<&str> = Vec::new();
    for issue in batch {
        let mut after: Vec<(&str, Bucket)> = Vec::new();
        let mut answer = Ok(());
        for (name, limit) in &issue.buckets {
            let before = buckets
                .get(name)
                .copied()
                .ok_or_else(|| DbError::Other(format!("rate limit bucket {name} vanished")))?;
            match limit.apply(before, issue.now) {
                Ok(bucket) => after.push((name, bucket)),
                Err(wait) => {
                    answer = Err(wait);
                    break;
                }
            }
        }
        if answer.is_ok() {
            for (name, bucket) in after {
                buckets.insert(name.to_string(), bucket);
                if !changed.contains(&name) {
                    changed.push(name);
                }
            }
        }
        answers.push(answer);
    }
    Ok((answers, changed))
}

/// Supersedes the live codes of the winners' phones and inserts the
/// winners' codes; a phone won twice keeps only its last code live, as one
/// request after the other would leave it.
#[cfg(feature = "mysql")]
fn store_codes(conn: &mut DbConn, winners: &[&CodeRow]) -> DbResult<()> {
    let phones = fixed::distinct_texts(winners.iter().map(|r| r.phone.as_str()));
    let now = winners
        .iter()
        .map(|r| r.created_at)
        .max()
        .unwrap_or_default();
    let (sql, binds) = fixed::in_list(
        "UPDATE otp_codes SET superseded_at = ? \
         WHERE superseded_at IS NULL AND verified_at IS NULL AND phone IN",
        &[Bind::BigInt(now)],
        &phones,
    );
    fixed::execute(conn, &sql, &binds)?;
    let superseded: Vec<Option<i64>> = winners
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let later = winners[i + 1..].iter().rev().find(|r| r.phone == row.phone);
            later.map(|r| r.created_at)
        })
        .collect();
    let binds: Vec<Bind<'_>> = winners
        .iter()
        .zip(&superseded)
        .flat_map(|(r, superseded)| {
            debug_assert!(r.superseded_at.is_none() && r.verified_at.is_none());
            [
                Bind::Text(&r.id),
                Bind::Text(&r.phone),
                Bind::Text(&r.code_hash),
                Bind::BigInt(r.created_at),
                Bind::BigInt(r.expires_at),
                Bind::Int(r.attempts),
                Bind::OptBigInt(*superseded),
            ]
        })
        .collect();
    let statement = (
        "INSERT INTO otp_codes (id, phone, code_hash, created_at, expires_at, attempts, \
         superseded_at, verified_at)",
        "(?, ?, ?, ?, ?, ?, ?, NULL)",
        "",
    );
    fixed::insert_rows(conn, statement, &binds).map(drop)
}

#[cfg(feature = "mysql")]
const BUCKETS_INSERT: &str = "INSERT INTO rate_limits (bucket, window_start, hits, last_at)";

#[cfg(feature = "mysql")]
fn bucket_binds<'a>(name: &'a str, b: &Bucket) -> [Bind<'a>; 4] {
    [
        Bind::Text(name),
        Bind::BigInt(b.window_start),
        Bind::Int(b.hits),
        Bind::BigInt(b.last_at),
    ]
}
