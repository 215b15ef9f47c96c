//! Fixed-window counters with a cooldown, kept in the database so that limits
//! hold across server instances. A hit is one conditional UPDATE: two racing
//! requests cannot both slip under the limit.

use diesel::prelude::*;

use super::fixed::{self, Bind};
use super::schema::rate_limits;
use super::{DbConn, DbResult};

/// `last_at` of a bucket never hit: far enough back for any cooldown.
const NEVER: i64 = i64::MIN / 2;

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
        &[Bind::Text(bucket), Bind::BigInt(now), Bind::BigInt(NEVER)],
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
            Bind::BigInt(limit.last_hit_allowed(now)),
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
    let refused = Bucket {
        window_start,
        hits,
        last_at,
    };
    Ok(Some(limit.wait(&refused, now)))
}

/// A bucket's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub window_start: i64,
    pub hits: i32,
    pub last_at: i64,
}

impl Bucket {
    /// A bucket as `hit` creates it, before its first hit.
    pub fn new(now: i64) -> Bucket {
        Bucket {
            window_start: now,
            hits: 0,
            last_at: NEVER,
        }
    }
}

impl Limit {
    /// `hit`'s conditional `UPDATE` on a bucket held in memory (MySQL's
    /// batched getcodes, `db::codes`): the bucket after the hit, or the
    /// seconds to wait.
    pub fn apply(&self, bucket: Bucket, now: i64) -> Result<Bucket, i64> {
        let window_over = now - self.window_seconds;
        let new_window = bucket.window_start <= window_over;
        let allowed = bucket.last_at <= self.last_hit_allowed(now)
            && (new_window || bucket.hits < self.max_hits.unwrap_or(i32::MAX));
        if !allowed {
            return Err(self.wait(&bucket, now));
        }
        Ok(Bucket {
            window_start: if new_window { now } else { bucket.window_start },
            hits: if new_window { 1 } else { bucket.hits + 1 },
            last_at: now,
        })
    }

    /// The latest `last_at` that lets a hit at `now` through. Without a
    /// cooldown, any: an instance whose clock runs a second ahead of this
    /// one's must not make this one's hits wait.
    fn last_hit_allowed(&self, now: i64) -> i64 {
        if self.cooldown > 0 {
            now - self.cooldown
        } else {
            i64::MAX
        }
    }

    /// How long a refused hit on `bucket` must wait (at least a second).
    fn wait(&self, bucket: &Bucket, now: i64) -> i64 {
        let mut wait = bucket.last_at + self.cooldown - now;
        if bucket.hits >= self.max_hits.unwrap_or(i32::MAX) {
            wait = wait.max(bucket.window_start + self.window_seconds - now);
        }
        wait.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_in_memory_follows_the_cooldown_window_and_limit() {
        let limit = Limit {
            window_seconds: 3600,
            max_hits: Some(2),
            cooldown: 60,
        };
        let t = 1_800_000_000;
        let first = limit.apply(Bucket::new(t), t).expect("first hit");
        assert_eq!((first.hits, first.window_start, first.last_at), (1, t, t));
        // Within the cooldown: wait for its end.
        assert_eq!(limit.apply(first, t + 10), Err(50));
        let second = limit.apply(first, t + 60).expect("after the cooldown");
        assert_eq!(second.hits, 2);
        // The window's limit is reached: wait for the window's end.
        assert_eq!(limit.apply(second, t + 200), Err(3400));
        // A new window starts counting again.
        let third = limit.apply(second, t + 3600).expect("a new window");
        assert_eq!((third.hits, third.window_start), (1, t + 3600));
        let unlimited = Limit {
            window_seconds: 3600,
            max_hits: None,
            cooldown: 0,
        };
        assert!(unlimited.apply(third, t + 3600).is_ok());
    }

    #[test]
    fn without_a_cooldown_a_hit_stamped_ahead_by_another_clock_does_not_block() {
        let limit = Limit {
            window_seconds: 3600,
            max_hits: Some(3),
            cooldown: 0,
        };
        let t = 1_800_000_000;
        // Another instance, its clock 2 s ahead, hit the bucket last.
        let theirs = limit.apply(Bucket::new(t + 2), t + 2).expect("their hit");
        let ours = limit
            .apply(theirs, t)
            .expect("our hit, by a clock behind theirs");
        assert_eq!(ours.hits, 2);
        // With a cooldown the order of hits matters, and a skew counts.
        let cooled = Limit {
            cooldown: 30,
            ..limit
        };
        let theirs = cooled.apply(Bucket::new(t + 2), t + 2).expect("their hit");
        assert_eq!(cooled.apply(theirs, t), Err(32));
    }
}
