//! Group commit for SQLite. SQLite has one writer at a time, and each commit
//! writes the WAL frames of every page it touched. Writes of this process
//! therefore go to one thread that owns the write connection: it runs each in
//! a savepoint of one open transaction, takes the next queued write while
//! there is one, and commits when the queue is empty. Every writer gets its
//! answer only after the COMMIT that holds its changes, so a request never
//! reports a write that a failed commit threw away.
//!
//! A request whose database work is little more than its writes may run
//! here whole (`run_request`), with the `Conn` over this connection: its caller
//! awaits the answer instead of blocking a thread on it, which spares the
//! two thread hops to and from a blocking thread.
//!
//! One thread instead of a lock that requests pass around: each write costs
//! one hand-off (the answer) instead of two (the lock, then the batch's end),
//! and the connection stays warm in one thread's cache. The price is that a
//! write must own what it captures (`'static`). Measured with the
//! benchmark's storage ceiling: otp_token +37-41%, refresh +28-40%
//! (docs/performance.md).

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

use super::{Conn, DbConn, DbError};

/// A batch is committed after this many writes even if more are queued, so
/// the first writer of a busy batch waits a bounded time.
const MAX_BATCH: usize = 64;
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

/// Tells a caller how its write ended; given the batch's commit failure, if any.
type Answer = Box<dyn FnOnce(Option<DbError>) + Send>;

/// A queued write: runs on the writer's connection (or learns why there is
/// none) and says whether its changes stay, with the answer to send once
/// the batch has ended.
struct Job {
    savepoint: bool,
    work: Work,
}

/// Given the writer's `Conn`, or told why there is none.
type Work = Box<dyn FnOnce(Result<&mut Conn, DbError>) -> Ran + Send>;

struct Ran {
    kept: bool,
    answer: Answer,
}

impl Job {
    /// Answers the job with `err` without running it.
    fn refuse(self, err: DbError) {
        let ran = (self.work)(Err(err));
        (ran.answer)(None);
    }
}

pub struct GroupWriter {
    /// The writer thread ends when this is dropped.
    jobs: Option<Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GroupWriter {
    /// Waits for the writer thread to close its connection, as dropping a
    /// connection does: closing the last one checkpoints and removes the WAL
    /// under an exclusive lock, which must not overlap what the caller does next.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the SQLite writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter").finish_non_exhaustive()
    }
}

/// What the writer thread owns.
struct Writer {
    open: Arc<Opener>,
    /// The write connection, as the `Conn` that requests run on here.
    conn: Option<Conn>,
    /// Wakes the checkpointer thread; dropping it ends that thread.
    checkpoint: SyncSender<()>,
    /// The WAL's length in frames, as the last checkpoint saw it.
    wal_frames: Arc<AtomicI64>,
    wal_limit: i64,
    since_checkpoint: u64,
}

impl GroupWriter {
    pub fn new(open: impl Fn() -> Result<DbConn, DbError> + Send + Sync + 'static) -> GroupWriter {
        GroupWriter::start(Arc::new(open), WAL_LIMIT_FRAMES)
    }

    fn start(open: Arc<Opener>, wal_limit: i64) -> GroupWriter {
        let wal_frames = Arc::new(AtomicI64::new(0));
        let writer = Writer {
            checkpoint: spawn_checkpointer(open.clone(), wal_frames.clone()),
            open,
            conn: None,
            wal_frames,
            wal_limit,
            since_checkpoint: 0,
        };
        let (jobs, queue) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.serve(queue));
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                // Every write then answers that the database is unavailable.
                tracing::error!(error = %e, "could not start the SQLite writer");
                None
            }
        };
        GroupWriter {
            jobs: Some(jobs),
            thread,
        }
    }

    /// Runs `f` in a savepoint of the shared transaction and returns its
    /// result once that transaction has committed. An `Err` from `f` (or a
    /// panic) undoes only `f`'s own changes.
    pub fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        self.run_in(true, f)
    }

    /// `run` for `f` that executes exactly one statement: a statement that
    /// fails undoes itself, so no savepoint is needed.
    pub fn run_one<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        self.run_in(false, f)
    }

    fn run_in<T, E, F>(&self, savepoint: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        type Outcome<T, E> = Result<Result<T, E>, Box<dyn Any + Send>>;
        let (reply, answer) = mpsc::sync_channel::<Outcome<T, E>>(1);
        let work = move |conn: Result<&mut Conn, DbError>| {
            let outcome: Outcome<T, E> = match conn.and_then(|conn| conn.db()) {
                Ok(conn) => catch_unwind(AssertUnwindSafe(|| f(conn))),
                Err(e) => Ok(Err(E::from(e))),
            };
            let kept = matches!(outcome, Ok(Ok(_)));
            let answer: Answer = Box::new(move |failure| {
                let outcome = match (outcome, failure) {
                    (Ok(Ok(_)), Some(e)) => Ok(Err(E::from(e))),
                    (outcome, _) => outcome,
                };
                // A caller that is gone has nothing left to be told.
                let _ = reply.send(outcome);
            });
            Ran { kept, answer }
        };
        let job = Job {
            savepoint,
            work: Box::new(work),
        };
        if let Err(job) = self.submit(job) {
            job.refuse(stopped());
        }
        match answer.recv() {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => Err(stopped().into()),
        }
    }

    /// Runs `f` on the writer thread, in a savepoint of the shared
    /// transaction, with a `Conn` whose writes join that transaction in
    /// savepoints of their own and whose reads see it. `answer` gets what `f`
    /// returned once the transaction has committed, or the error that lost
    /// it; a panic in `f` undoes its changes and drops `answer` unanswered.
    /// `f` holds up every other write while it runs: it must be short (no
    /// password hash; one signature is the most measured to pay off).
    pub fn run_request<T, F, A>(&self, f: F, answer: A)
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> T + Send + 'static,
        A: FnOnce(Result<T, DbError>) + Send + 'static,
    {
        let work = move |conn: Result<&mut Conn, DbError>| {
            let outcome = match conn {
                Ok(conn) => catch_unwind(AssertUnwindSafe(|| f(conn))).ok(),
                Err(e) => {
                    return Ran {
                        kept: false,
                        answer: Box::new(move |_| answer(Err(e))),
                    }
                }
            };
            let kept = outcome.is_some();
            let answer: Answer = Box::new(move |failure| match (outcome, failure) {
                (Some(_), Some(e)) => answer(Err(e)),
                (Some(value), None) => answer(Ok(value)),
                (None, _) => tracing::error!("a request panicked on the SQLite writer"),
            });
            Ran { kept, answer }
        };
        let job = Job {
            savepoint: true,
            work: Box::new(work),
        };
        if let Err(job) = self.submit(job) {
            job.refuse(stopped());
        }
    }

    /// Queues `job`, or hands it back if the writer thread has stopped.
    fn submit(&self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|returned| returned.0),
            None => Err(job),
        }
    }
}

fn stopped() -> DbError {
    DbError::Unavailable("the SQLite writer has stopped".into())
}

impl Writer {
    fn serve(mut self, queue: Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut conn = match self.begin() {
                Ok(conn) => conn,
                Err(e) => {
                    first.refuse(e);
                    continue;
                }
            };
            let mut answers = Vec::new();
            let mut failure = None;
            let mut next = Some(first);
            let mut ran = 0;
            while let Some(job) = next.take() {
                ran += 1;
                match run_job(&mut conn, job) {
                    Ok(Some(answer)) => answers.push(answer),
                    Ok(None) => {}
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                if ran < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            self.end_batch(conn, failure, answers);
        }
    }

    /// Opens a batch's transaction on the connection, which the batch holds
    /// until `end_batch` (a new one is opened if there is none).
    fn begin(&mut self) -> Result<Conn, DbError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let mut conn = (self.open)()?;
                conn.batch_execute(&format!(
                    "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_FILE_LIMIT}"
                ))?;
                Conn::for_writer(conn)
            }
        };
        // IMMEDIATE takes the write lock now, waiting out other processes'
        // writers, instead of failing later on a stale snapshot.
        if let Err(err) = exec_on(&mut conn, "BEGIN IMMEDIATE") {
            if !matches!(err, DbError::Unavailable(_)) {
                self.conn = Some(conn);
            }
            return Err(err);
        }
        Ok(conn)
    }

    /// Commits the batch (or rolls it back after `failure`), answers its
    /// writers, and then checkpoints if one is due.
    fn end_batch(&mut self, mut conn: Conn, failure: Option<DbError>, answers: Vec<Answer>) {
        let failure = failure.or_else(|| exec_on(&mut conn, "COMMIT").err());
        if failure.is_none() || exec_on(&mut conn, "ROLLBACK").is_ok() {
            self.conn = Some(conn);
        }
        // Otherwise the connection is in an unknown state: it is dropped, and
        // the next batch opens a new one.
        for answer in answers {
            answer(failure.clone());
        }
        if self.wal_frames.load(Ordering::Relaxed) > self.wal_limit {
            if let Some(conn) = self.conn.as_mut() {
                if let Err(e) = conn.db().and_then(|c| checkpoint(c, "RESTART")) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                // Whatever happened, the next passive checkpoint measures again.
                self.wal_frames.store(0, Ordering::Relaxed);
            }
        }
        self.since_checkpoint += 1;
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.since_checkpoint = 0;
            // A full channel means a checkpoint is already due.
            if let Err(TrySendError::Disconnected(())) = self.checkpoint.try_send(()) {
                tracing::warn!("the WAL checkpointer has stopped");
            }
        }
    }
}

/// Runs one job in the open transaction. `Ok(Some)`: its changes stay and
/// it waits for the commit; `Ok(None)`: it failed alone and has been
/// answered; `Err`: the transaction is lost (the job has been answered).
fn run_job(conn: &mut Conn, job: Job) -> Result<Option<Answer>, DbError> {
    if job.savepoint {
        if let Err(err) = exec_on(conn, "SAVEPOINT job") {
            job.refuse(err.clone());
            return Err(err);
        }
    }
    let ran = (job.work)(Ok(conn));
    let closed = match (job.savepoint, ran.kept) {
        (false, _) => Ok(()),
        (true, false) => {
            exec_on(conn, "ROLLBACK TO job").and_then(|()| exec_on(conn, "RELEASE job"))
        }
        (true, true) => exec_on(conn, "RELEASE job"),
    };
    match (closed, ran.kept) {
        (Ok(()), true) => Ok(Some(ran.answer)),
        (Ok(()), false) => {
            (ran.answer)(None);
            Ok(None)
        }
        (Err(err), kept) => {
            (ran.answer)(kept.then(|| err.clone()));
            Err(err)
        }
    }
}

/// `f` in a savepoint of the writer's open transaction: an `Err` undoes
/// only what `f` did. A request's write on the writer thread.
pub(super) fn in_savepoint<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    E: From<DbError>,
    F: FnOnce(&mut DbConn) -> Result<T, E>,
{
    exec(conn, "SAVEPOINT request_write").map_err(|e| E::from(e.into()))?;
    let result = f(conn);
    let closed = match &result {
        Ok(_) => exec(conn, "RELEASE request_write"),
        Err(_) => exec(conn, "ROLLBACK TO request_write")
            .and_then(|()| exec(conn, "RELEASE request_write")),
    };
    match closed {
        Ok(()) => result,
        Err(e) => Err(E::from(e.into())),
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

/// `exec` on the writer's `Conn`.
fn exec_on(conn: &mut Conn, sql: &'static str) -> Result<(), DbError> {
    Ok(exec(conn.db()?, sql)?)
}

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
            super::super::open_sqlite(&target, super::super::LOCK_WAIT_OUTSIDE_POOL)
                .map(DbConn::Sqlite)
                .map_err(|e| DbError::Unavailable(e.to_string()))
        })
    }

    fn remove_db(target: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{target}{suffix}"));
        }
    }

    /// A connection of its own, as another process's reader.
    fn reader(target: &str) -> DbConn {
        DbConn::Sqlite(
            super::super::open_sqlite(target, super::super::LOCK_WAIT_OUTSIDE_POOL)
                .expect("open reader"),
        )
    }

    /// Under a steady stream of writes the WAL still starts over now and then
    /// (passive checkpoints alone let it grow without end: gigabytes here).
    #[test]
    fn the_wal_stays_small_under_steady_writes() {
        let target = temp_db();
        let writer = {
            let target = target.clone();
            GroupWriter::start(
                Arc::new(move || {
                    super::super::open_sqlite(&target, super::super::LOCK_WAIT_OUTSIDE_POOL)
                        .map(DbConn::Sqlite)
                        .map_err(|e| DbError::Unavailable(e.to_string()))
                }),
                64,
            )
        };
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
                .run(move |c| {
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
            .run(move |c| c.batch_execute(sql).map_err(DbError::from))
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

    /// After a job that wrote row 1 and panicked: the writer still commits
    /// (row 2), and row 1 was undone.
    fn the_writer_goes_on_and_row_1_is_gone(writer: Arc<GroupWriter>, target: &str) {
        writer
            .run(|c| insert(c, 2))
            .expect("the writer still writes");
        let mut reader = reader(target);
        assert_eq!(count(&mut reader, "SELECT COUNT(*) AS n FROM t"), 1);
        assert_eq!(
            count(&mut reader, "SELECT COUNT(*) AS n FROM t WHERE n = 2"),
            1
        );
        drop(writer);
        remove_db(target);
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
            writer.run(move |c| {
                insert(c, n)?;
                if n % 2 == 1 {
                    return Err(DbError::Other("refused".into()));
                }
                Ok(1)
            })
        });
        let mut reader = reader(&target);
        assert_eq!(kept, 16 * 25);
        assert_eq!(count(&mut reader, "SELECT COUNT(*) AS n FROM t"), kept);
        assert_eq!(
            count(&mut reader, "SELECT COUNT(*) AS n FROM t WHERE n % 2 = 1"),
            0
        );
        drop(writer);
        remove_db(&target);
    }

    /// A write that panics undoes its own changes, and the panic reaches its
    /// caller's thread, not the writer's: the writes around it commit.
    #[test]
    fn a_panicking_write_undoes_itself_and_panics_its_caller() {
        let (target, writer) = writer_with("CREATE TABLE t (n BIGINT PRIMARY KEY NOT NULL)");
        let panicking = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.run(|c| -> Result<(), DbError> {
                    insert(c, 1)?;
                    panic!("a bug in a write");
                })
            })
        };
        assert!(panicking.join().is_err(), "the caller must see the panic");
        the_writer_goes_on_and_row_1_is_gone(writer, &target);
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
            writer.run_one(move |c| insert(c, if n % 2 == 1 { -1 } else { n }))
        });
        let mut reader = reader(&target);
        assert_eq!(kept, 16 * 25);
        assert_eq!(count(&mut reader, "SELECT COUNT(*) AS n FROM t"), kept + 1);
        drop(writer);
        remove_db(&target);
    }

    /// Requests run whole on the writer from many threads at once. Each
    /// writes row n in one savepoint; odd ones also write row -n in a second
    /// that fails; every fourth ends in an error after its writes. Each must
    /// be answered after the commit that holds its rows (another connection
    /// sees them by then), with what it returned, and keep exactly its
    /// successful writes, also when the request itself ends in an error.
    #[test]
    fn requests_on_the_writer_are_answered_after_their_commit_with_their_own_writes() {
        let (target, writer) = writer_with("CREATE TABLE t (n BIGINT PRIMARY KEY NOT NULL)");
        let threads: Vec<_> = (0..16i64)
            .map(|t| {
                let (writer, target) = (writer.clone(), target.clone());
                std::thread::spawn(move || {
                    let mut reader = reader(&target);
                    for i in 1..=50i64 {
                        let n = t * 1000 + i;
                        let (reply, answered) = mpsc::channel();
                        let request = move |conn: &mut Conn| -> Result<i64, DbError> {
                            conn.write_tx(move |c| insert(c, n))?;
                            if n % 2 == 1 {
                                let undone = conn.write_tx(move |c| {
                                    insert(c, -n)?;
                                    Err::<usize, _>(DbError::Other("refused".into()))
                                });
                                assert!(undone.is_err());
                            }
                            if n % 4 == 3 {
                                return Err(DbError::Other("the request failed".into()));
                            }
                            Ok(n)
                        };
                        writer.run_request(request, move |result| {
                            let _ = reply.send(result);
                        });
                        match answered.recv().expect("an answer") {
                            Ok(Ok(value)) => assert_eq!(value, n),
                            Ok(Err(e)) => assert!(n % 4 == 3, "request {n} failed: {e}"),
                            Err(e) => panic!("the batch failed: {e}"),
                        }
                        let seen = count(
                            &mut reader,
                            &format!("SELECT COUNT(*) AS n FROM t WHERE n = {n}"),
                        );
                        assert_eq!(
                            seen, 1,
                            "row {n} not committed when its request was answered"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("request thread");
        }
        let mut reader = reader(&target);
        assert_eq!(
            count(&mut reader, "SELECT COUNT(*) AS n FROM t WHERE n > 0"),
            16 * 50
        );
        assert_eq!(
            count(&mut reader, "SELECT COUNT(*) AS n FROM t WHERE n < 0"),
            0
        );
        drop(writer);
        remove_db(&target);
    }

    /// A request that panics on the writer undoes its writes and goes
    /// unanswered (its caller sees the channel closed); the writer goes on.
    #[test]
    fn a_request_that_panics_on_the_writer_undoes_itself() {
        let (target, writer) = writer_with("CREATE TABLE t (n BIGINT PRIMARY KEY NOT NULL)");
        let (reply, answered) = mpsc::channel::<Result<(), DbError>>();
        writer.run_request(
            |conn: &mut Conn| {
                conn.write_tx(|c| insert(c, 1)).expect("insert");
                panic!("a bug in a request");
            },
            move |result| {
                let _ = reply.send(result);
            },
        );
        assert!(answered.recv().is_err(), "a panicked request has no answer");
        the_writer_goes_on_and_row_1_is_gone(writer, &target);
    }
}
