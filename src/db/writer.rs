//! Group commit for SQLite. SQLite has one writer at a time, and each commit
//! writes the WAL frames of every page it touched. Writers of this process
//! therefore share one connection and one open transaction: each write runs in
//! its own savepoint, and whoever finds nobody queued behind it commits the
//! batch. Every writer answers only after the COMMIT that holds its changes,
//! so a request never reports a write that a failed commit threw away.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

use super::{DbConn, DbError};

/// A batch is committed after this many writes even if more are queued, so
/// the first writer of a busy batch waits a bounded time.
const MAX_BATCH: usize = 64;
/// Commit failures remembered for writers that wake late.
const KEEP_FAILURES: usize = 64;
/// Commits between checkpoints under load, and the longest pause between
/// checkpoints while anything is being written.
const CHECKPOINT_EVERY: u64 = 200;
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(500);
/// Passive checkpoints cannot reset a WAL that writers keep appending to.
/// Past this many frames (8 MiB of 1 KiB pages) the writer runs one blocking
/// checkpoint between batches, after which the WAL starts over from its
/// beginning (RESTART: measured faster than TRUNCATE, which shrinks and then
/// regrows the file). A WAL file larger than `WAL_FILE_LIMIT` is cut back.
const WAL_LIMIT_FRAMES: i64 = 8192;
const WAL_FILE_LIMIT: i64 = 64 * 1024 * 1024;

type Opener = dyn Fn() -> Result<DbConn, DbError> + Send + Sync;

pub struct GroupWriter {
    open: Arc<Opener>,
    /// Wakes the checkpointer thread; dropping it ends that thread.
    checkpoint: SyncSender<()>,
    /// The WAL's length in frames, as the last checkpoint saw it.
    wal_frames: Arc<AtomicI64>,
    wal_limit: i64,
    state: Mutex<State>,
    /// Batches end here, apart from `state`, so that their writers can
    /// answer while the writer goes on (e.g. with a RESTART checkpoint).
    done: Mutex<Done>,
    /// Signalled, with `done`, when a batch ends.
    committed: Condvar,
    /// Writers waiting for `state`: while there are any, the batch stays open.
    queued: AtomicUsize,
}

struct State {
    conn: Option<DbConn>,
    in_tx: bool,
    batch_len: usize,
    /// Incremented by every commit (or failed commit) of a batch.
    epoch: u64,
    since_checkpoint: u64,
}

struct Done {
    /// Batches before this one have ended (committed or failed): `State::epoch`
    /// as of the last batch's end, kept here so waiters need not take `state`.
    ended: u64,
    failures: VecDeque<(u64, DbError)>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter").finish_non_exhaustive()
    }
}

impl GroupWriter {
    pub fn new(open: impl Fn() -> Result<DbConn, DbError> + Send + Sync + 'static) -> GroupWriter {
        let open: Arc<Opener> = Arc::new(open);
        let wal_frames = Arc::new(AtomicI64::new(0));
        GroupWriter {
            checkpoint: spawn_checkpointer(open.clone(), wal_frames.clone()),
            wal_frames,
            wal_limit: WAL_LIMIT_FRAMES,
            open,
            state: Mutex::new(State {
                conn: None,
                in_tx: false,
                batch_len: 0,
                epoch: 0,
                since_checkpoint: 0,
            }),
            done: Mutex::new(Done {
                ended: 0,
                failures: VecDeque::new(),
            }),
            committed: Condvar::new(),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every path below leaves `State` consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in a savepoint of the shared transaction and returns its
    /// result once that transaction has committed. An `Err` from `f` (or a
    /// panic) undoes only `f`'s own changes.
    pub fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&mut DbConn) -> Result<T, E>,
    {
        self.run_in(true, f)
    }

    /// `run` for `f` that executes exactly one statement: a statement that
    /// fails undoes itself, so no savepoint is needed.
    pub fn run_one<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&mut DbConn) -> Result<T, E>,
    {
        self.run_in(false, f)
    }

    fn run_in<T, E, F>(&self, savepoint: bool, f: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&mut DbConn) -> Result<T, E>,
    {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);

        if let Err(e) = state.begin(&*self.open) {
            return Err(e.into());
        }
        let Some(conn) = state.conn.as_mut() else {
            return Err(DbError::Unavailable("no writer connection".into()).into());
        };
        let opened = if savepoint {
            exec(conn, "SAVEPOINT job")
        } else {
            Ok(())
        };
        let result = match opened {
            Ok(()) => catch_unwind(AssertUnwindSafe(|| f(conn))),
            Err(e) => {
                let err = DbError::from(e);
                self.finish_batch(&mut state, Some(err.clone()));
                return Err(err.into());
            }
        };
        let undo = !matches!(result, Ok(Ok(_)));
        let closed = match (savepoint, undo) {
            (false, _) => Ok(()),
            (true, true) => exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job")),
            (true, false) => exec(conn, "RELEASE job"),
        };
        if let Err(e) = closed {
            let err = DbError::from(e);
            self.finish_batch(&mut state, Some(err.clone()));
            return Err(err.into());
        }
        let value = match result {
            Ok(Ok(value)) => value,
            // Our changes are gone; the batch goes on without us.
            Ok(Err(e)) => {
                self.maybe_commit(&mut state);
                return Err(e);
            }
            Err(panic) => {
                self.maybe_commit(&mut state);
                drop(state);
                std::panic::resume_unwind(panic);
            }
        };

        state.batch_len += 1;
        let epoch = state.epoch;
        self.maybe_commit(&mut state);
        drop(state);
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while done.ended <= epoch {
            done = self.committed.wait(done).unwrap_or_else(|p| p.into_inner());
        }
        match done.failures.iter().find(|(e, _)| *e == epoch) {
            Some((_, err)) => Err(err.clone().into()),
            None => Ok(value),
        }
    }

    /// Commits unless another writer is queued to join the batch.
    fn maybe_commit(&self, state: &mut State) {
        if !state.in_tx {
            return;
        }
        if self.queued.load(Ordering::SeqCst) > 0 && state.batch_len < MAX_BATCH {
            return;
        }
        let failure = match state.conn.as_mut().map(|c| exec(c, "COMMIT")) {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(DbError::from(e)),
            None => Some(DbError::Unavailable("no writer connection".into())),
        };
        self.finish_batch(state, failure);
    }

    /// Ends the batch: on failure rolls it back and remembers why for its
    /// writers; wakes them either way.
    fn finish_batch(&self, state: &mut State, failure: Option<DbError>) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(err) = failure {
            let rolled_back = state
                .conn
                .as_mut()
                .is_some_and(|c| exec(c, "ROLLBACK").is_ok());
            if !rolled_back {
                // The connection is in an unknown state: open a new one next time.
                state.conn = None;
            }
            if done.failures.len() == KEEP_FAILURES {
                done.failures.pop_front();
            }
            done.failures.push_back((state.epoch, err));
        }
        state.in_tx = false;
        state.batch_len = 0;
        state.epoch += 1;
        done.ended = state.epoch;
        drop(done);
        self.committed.notify_all();
        if self.wal_frames.load(Ordering::Relaxed) > self.wal_limit {
            if let Some(conn) = state.conn.as_mut() {
                if let Err(e) = checkpoint(conn, "RESTART") {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                // Whatever happened, the next passive checkpoint measures again.
                self.wal_frames.store(0, Ordering::Relaxed);
            }
        }
        state.since_checkpoint += 1;
        if state.since_checkpoint >= CHECKPOINT_EVERY {
            state.since_checkpoint = 0;
            // A full channel means a checkpoint is already due.
            if let Err(TrySendError::Disconnected(())) = self.checkpoint.try_send(()) {
                tracing::warn!("the WAL checkpointer has stopped");
            }
        }
    }
}

/// A statement without parameters that diesel prepares once per connection
/// and reuses; `batch_execute` would parse the SQL on every call, and the
/// writer runs these several times per request.
#[derive(Debug, Clone, Copy)]
struct Fixed(&'static str);

impl QueryId for Fixed {
    type QueryId = ();
    // Cached by its SQL text instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Sqlite> for Fixed {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for Fixed {}

fn exec(conn: &mut DbConn, sql: &'static str) -> QueryResult<()> {
    match conn {
        DbConn::Sqlite(c) => Fixed(sql).execute(c).map(drop),
        #[allow(unreachable_patterns)]
        other => other.batch_execute(sql),
    }
}

/// Copies the WAL back into the database file on a thread of its own, so that
/// no commit pays for a checkpoint's writes and fsync (the writer connection
/// has automatic checkpoints turned off). A passive checkpoint never blocks
/// writers or readers.
fn spawn_checkpointer(open: Arc<Opener>, wal_frames: Arc<AtomicI64>) -> SyncSender<()> {
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("wal-checkpoint".into())
        .spawn(move || {
            let mut conn: Option<DbConn> = None;
            loop {
                match nudged.recv_timeout(CHECKPOINT_PAUSE) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                if conn.is_none() {
                    conn = open().ok();
                }
                if let Some(c) = conn.as_mut() {
                    match checkpoint(c, "PASSIVE") {
                        Ok(frames) => wal_frames.store(frames, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, "WAL checkpoint failed");
                            conn = None;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the WAL checkpointer");
    }
    nudge
}

#[derive(diesel::QueryableByName)]
struct CheckpointResult {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
}

/// Runs a checkpoint; returns the WAL's length in frames afterwards.
fn checkpoint(conn: &mut DbConn, mode: &str) -> Result<i64, DbError> {
    use diesel::RunQueryDsl;
    let rows: Vec<CheckpointResult> =
        diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).load(conn)?;
    Ok(rows.first().map_or(0, |r| i64::from(r.log)))
}

impl State {
    fn begin(&mut self, open: &dyn Fn() -> Result<DbConn, DbError>) -> Result<(), DbError> {
        if self.in_tx {
            return Ok(());
        }
        if self.conn.is_none() {
            let mut conn = open()?;
            conn.batch_execute(&format!(
                "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_FILE_LIMIT}"
            ))?;
            self.conn = Some(conn);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| DbError::Unavailable("no writer connection".into()))?;
        // IMMEDIATE takes the write lock now, waiting out other processes'
        // writers, instead of failing later on a stale snapshot.
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
            let err = DbError::from(e);
            if matches!(err, DbError::Unavailable(_)) {
                self.conn = None;
            }
            return Err(err);
        }
        self.in_tx = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sql_types::BigInt;
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn count(conn: &mut DbConn, sql: &str) -> i64 {
        diesel::sql_query(sql)
            .load::<Count>(conn)
            .expect("count query")
            .pop()
            .map_or(-1, |c| c.n)
    }

    fn temp_db() -> String {
        std::env::temp_dir()
            .join(format!(
                "phonekey-writer-{}-{}.db",
                std::process::id(),
                crate::secrets::random_hex(6)
            ))
            .to_string_lossy()
            .to_string()
    }

    fn writer_for(target: &str) -> GroupWriter {
        let target = target.to_string();
        GroupWriter::new(move || {
            super::super::open_sqlite(&target)
                .map(DbConn::Sqlite)
                .map_err(|e| DbError::Unavailable(e.to_string()))
        })
    }

    fn remove_db(target: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{target}{suffix}"));
        }
    }

    /// Under a steady stream of writes the WAL still starts over now and then
    /// (passive checkpoints alone let it grow without end: gigabytes here).
    #[test]
    fn the_wal_stays_small_under_steady_writes() {
        let target = temp_db();
        let mut writer = writer_for(&target);
        writer.wal_limit = 64;
        writer
            .run(|c| {
                c.batch_execute("CREATE TABLE t (n BIGINT PRIMARY KEY NOT NULL, pad TEXT NOT NULL)")
                    .map_err(DbError::from)
            })
            .expect("create table");
        let wal = format!("{target}-wal");
        let mut largest = 0;
        // About 250 MiB of WAL frames in all (13 KiB a commit, measured):
        // without restarts the WAL would hold all of it.
        for n in 0..20_000i64 {
            writer
                .run(|c| {
                    diesel::sql_query(format!(
                        "INSERT INTO t (n, pad) VALUES ({n}, printf('%.2000c', 'x'))"
                    ))
                    .execute(c)
                    .map(|_| ())
                    .map_err(DbError::from)
                })
                .expect("insert");
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // Restarts wait for a passive checkpoint to measure the WAL, which
        // lags on a busy machine: the bound is loose but far from 250 MiB.
        assert!(largest < 96 << 20, "the WAL grew to {largest} bytes");
        drop(writer);
        remove_db(&target);
    }

    /// A writer on a new database whose schema is `sql`.
    fn writer_with(sql: &'static str) -> (String, Arc<GroupWriter>) {
        let target = temp_db();
        let writer = Arc::new(writer_for(&target));
        writer
            .run(|c| c.batch_execute(sql).map_err(DbError::from))
            .expect("create table");
        (target, writer)
    }

    /// 16 threads × 50 calls of `write(writer, n)` at once; each answer must
    /// be `Ok` exactly for even `n`. Returns how many were.
    fn hammer(
        writer: &Arc<GroupWriter>,
        write: fn(&GroupWriter, i64) -> Result<usize, DbError>,
    ) -> i64 {
        let threads: Vec<_> = (0..16i64)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    let mut kept = 0;
                    for i in 0..50i64 {
                        let n = t * 1000 + i;
                        let result = write(&writer, n);
                        assert_eq!(result.is_ok(), n % 2 == 0, "answer for row {n}");
                        kept += i64::from(result.is_ok());
                    }
                    kept
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("writer thread"))
            .sum()
    }

    fn insert(c: &mut DbConn, n: i64) -> Result<usize, DbError> {
        diesel::sql_query(format!("INSERT INTO t (n) VALUES ({n})"))
            .execute(c)
            .map_err(DbError::from)
    }

    /// Many threads write at once; every odd one fails after writing. Each
    /// writer's answer must match what was committed: all even rows, no odd one.
    #[test]
    fn concurrent_writers_keep_or_lose_only_their_own_rows() {
        let (target, writer) = writer_with("CREATE TABLE t (n BIGINT PRIMARY KEY NOT NULL)");
        let kept = hammer(&writer, |writer, n| {
            writer.run(|c| {
                insert(c, n)?;
                if n % 2 == 1 {
                    return Err(DbError::Other("refused".into()));
                }
                Ok(1)
            })
        });
        let mut reader = DbConn::Sqlite(super::super::open_sqlite(&target).expect("open reader"));
        assert_eq!(kept, 16 * 25);
        assert_eq!(count(&mut reader, "SELECT COUNT(*) AS n FROM t"), kept);
        assert_eq!(
            count(&mut reader, "SELECT COUNT(*) AS n FROM t WHERE n % 2 = 1"),
            0
        );
        drop(writer);
        remove_db(&target);
    }

    /// Single statements run without a savepoint: one that fails (here a
    /// duplicate key) undoes only itself, and the batch around it commits.
    #[test]
    fn a_failed_single_statement_undoes_only_itself() {
        let (target, writer) = writer_with(
            "CREATE TABLE t (n BIGINT PRIMARY KEY NOT NULL); INSERT INTO t VALUES (-1)",
        );
        // Odd ones collide with the row -1.
        let kept = hammer(&writer, |writer, n| {
            writer.run_one(|c| insert(c, if n % 2 == 1 { -1 } else { n }))
        });
        let mut reader = DbConn::Sqlite(super::super::open_sqlite(&target).expect("open reader"));
        assert_eq!(kept, 16 * 25);
        assert_eq!(count(&mut reader, "SELECT COUNT(*) AS n FROM t"), kept + 1);
        drop(writer);
        remove_db(&target);
    }
}
