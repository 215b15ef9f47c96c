//! Fixed-window counters with a cooldown, kept in the database so that limits
//! hold across server instances. A hit is one conditional UPDATE: two racing
//! requests cannot both slip under the limit.

use diesel::prelude::*;

use super::fixed::{self, Bind};
use super::schema::rate_limits;
use super::{DbConn, DbResult};

pub struct Limit {
    pub window_seconds: i64,
    /// Hits allowed per window; `None` for no limit.
    pub max_hits: Option<i32>,
    /// Seconds required between two hits; 0 for none.
    pub cooldown: i64,
}

/// Counts a hit on `bucket`; `Ok(None)` if allowed, `Ok(Some(seconds))` to wait.
pub fn hit(conn: &mut DbConn, bucket: &str, limit: &Limit, now: i64) -> DbResult<Option<i64>> {
    let sql = conn.insert_ignore_sql(
        "rate_limits",
        "(bucket, window_start, hits, last_at) VALUES (?, ?, 0, ?)",
        "bucket",
    );
    fixed::execute(
        conn,
        &sql,
        &[
            Bind::Text(bucket),
            Bind::BigInt(now),
            Bind::BigInt(i64::MIN / 2),
        ],
    )?;

    let window_over = now - limit.window_seconds;
    let max_hits = limit.max_hits.unwrap_or(i32::MAX);
    // MySQL applies SET assignments left to right: `hits` must read the old
    // `window_start`, so it comes first.
    let updated = fixed::execute(
        conn,
        "UPDATE rate_limits SET \
           hits = CASE WHEN window_start <= ? THEN 1 ELSE hits + 1 END, \
           window_start = CASE WHEN window_start <= ? THEN ? ELSE window_start END, \
           last_at = ? \
         WHERE bucket = ? AND last_at <= ? AND (window_start <= ? OR hits < ?)",
        &[
            Bind::BigInt(window_over),
            Bind::BigInt(window_over),
            Bind::BigInt(now),
            Bind::BigInt(now),
            Bind::Text(bucket),
            Bind::BigInt(now - limit.cooldown),
            Bind::BigInt(window_over),
            Bind::Int(max_hits),
        ],
    )?;
    if updated == 1 {
        return Ok(None);
    }

    let mut rows: Vec<(i64, i32, i64)> = on_backend!(conn, |c| rate_limits::table
        .filter(rate_limits::bucket.eq(bucket))
        .select((
            rate_limits::window_start,
            rate_limits::hits,
            rate_limits::last_at,
        ))
        .load(c))?;
    let (window_start, hits, last_at) = rows
        .pop()
        .ok_or_else(|| super::DbError::Other(format!("rate limit bucket {bucket} vanished")))?;
    let mut wait = last_at + limit.cooldown - now;
    if hits >= max_hits {
        wait = wait.max(window_start + limit.window_seconds - now);
    }
    Ok(Some(wait.max(1)))
}
