//! MySQL: what concurrent requests each do with one row, done for many rows
//! in one statement: new access tokens in one multi-row `INSERT`, token
//! lookups in one `SELECT … IN (…)`. On MariaDB here a statement costs about
//! the same whether it carries one row or sixteen (the round trip, the
//! wake-ups and the commit are most of it: `mysqlslap` 16-row inserts stored
//! 4.7-6x the rows per second of single-row ones, docs/performance.md), so a
//! request hands its row to a thread that owns a connection of its own,
//! takes every row queued meanwhile, and runs them as one statement (or, for
//! refresh rotations, getcodes, otp grants, verifycodes and sign-ups, one
//! transaction). InnoDB runs a statement all or nothing, so every request is
//! answered after the commit that holds its row; a batch that fails for a
//! reason other than a lost connection is run again row by row, so that one
//! bad row fails only its own request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::oneshot;

use super::tokens::{self, AccessTokenRow, RefreshTokenRow, WithUsername};
use super::{codes, fixed, otp_grant, tickets, users, DbConn, DbError, DbResult, TRUST_FOR};

/// Rows per batch at most: bounds the statements' size (`fixed::ROW_COUNTS`
/// bounds how many of them a connection prepares).
const MAX_BATCH: usize = fixed::MAX_ROWS;

/// Times a batch that lost a deadlock is run again before its requests are
/// answered 503.
const DEADLOCK_RETRIES: u32 = 3;

type Opener = dyn Fn() -> DbResult<DbConn> + Send + Sync;
/// Runs one statement for `rows`; answers one `A` per row, in their order.
type Statement<R, A> = fn(&mut DbConn, &[R]) -> DbResult<Vec<A>>;

struct Pending<R, A> {
    row: R,
    reply: Reply<A>,
}

/// How a row's answer reaches its request.
enum Reply<A> {
    /// A thread blocked in `Batcher::run`.
    Blocked(SyncSender<DbResult<A>>),
    /// A request awaiting `Batcher::submit`'s answer. What it holds is let
    /// go before it hears (fields drop in order), so that its place is free
    /// by then.
    Awaited {
        waiting: Waiting,
        reply: oneshot::Sender<DbResult<A>>,
    },
}

impl<A> Reply<A> {
    fn send(self, answer: DbResult<A>) {
        // A caller that is gone has nothing left to be told.
        match self {
            Reply::Blocked(reply) => {
                let _ = reply.send(answer);
            }
            Reply::Awaited { waiting, reply } => {
                drop(waiting);
                let _ = reply.send(answer);
            }
        }
    }

    fn gave_up(&self) -> bool {
        matches!(self, Reply::Awaited { waiting, .. } if waiting.gave_up.load(Ordering::Relaxed))
    }
}

/// What a request that awaits a batched statement hands over with its row:
/// the flag it sets when it stops waiting, after which its row is left out
/// of any batch, and what it holds until its row is answered or left out
/// (its place in the server's backlog), so that rows queued behind a
/// database that stopped answering neither pile up nor run for nobody once
/// it answers again.
pub struct Waiting {
    gave_up: Arc<AtomicBool>,
    _held: Box<dyn Send>,
}

impl Waiting {
    pub fn new(gave_up: Arc<AtomicBool>, held: impl Send + 'static) -> Waiting {
        Waiting {
            gave_up,
            _held: Box::new(held),
        }
    }
}

/// Runs rows of one kind through one thread with its own connection, started
/// at the first row (a CLI command that opens a pool sends none). One thread,
/// not two: while it waits for the database the next batch fills, and two
/// threads made smaller batches (MariaDB client_credentials -4-14%,
/// introspection -15-20%, refresh within noise).
pub struct Batcher<R, A> {
    name: &'static str,
    open: Arc<Opener>,
    statement: Statement<R, A>,
    /// The threads end when this is dropped.
    rows: Option<Sender<Pending<R, A>>>,
    /// Taken by the thread when it starts.
    queue: Mutex<Option<Receiver<Pending<R, A>>>>,
    /// Whether the thread started, once it has been tried.
    started: OnceLock<bool>,
}

impl<R, A> std::fmt::Debug for Batcher<R, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static, A: Clone + Send + 'static> Batcher<R, A> {
    /// `open` makes a connection for a thread that has none (at its first
    /// batch, and after one was lost).
    pub fn new(name: &'static str, open: Arc<Opener>, statement: Statement<R, A>) -> Batcher<R, A> {
        let (rows, queue) = mpsc::channel();
        Batcher {
            name,
            open,
            statement,
            rows: Some(rows),
            queue: Mutex::new(Some(queue)),
            started: OnceLock::new(),
        }
    }

    fn start(&self) -> bool {
        let Some(queue) = self.queue.lock().ok().and_then(|mut q| q.take()) else {
            return false;
        };
        let thread = BatchThread {
            open: self.open.clone(),
            conn: None,
            last_ok: Instant::now(),
            statement: self.statement,
        };
        let spawned = std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || thread.serve(&queue));
        if let Err(e) = &spawned {
            // Every row is then answered that the database is unavailable.
            tracing::error!(error = %e, batcher = self.name, "could not start a batching thread");
        }
        spawned.is_ok()
    }

    /// Runs `row` with whatever else is queued; returns its answer once the
    /// statement that holds it has committed.
    pub fn run(&self, row: R) -> DbResult<A> {
        let (reply, answer) = mpsc::sync_channel(1);
        if !self.queue_row(row, Reply::Blocked(reply)) {
            return Err(stopped());
        }
        answer.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// `run` for a request that awaits the answer instead of blocking a
    /// thread for it.
    pub async fn submit(&self, row: R, waiting: Waiting) -> DbResult<A> {
        let (reply, answer) = oneshot::channel();
        if !self.queue_row(row, Reply::Awaited { waiting, reply }) {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `row` for the thread, started if need be; false if there is none.
    fn queue_row(&self, row: R, reply: Reply<A>) -> bool {
        *self.started.get_or_init(|| self.start())
            && self
                .rows
                .as_ref()
                .is_some_and(|rows| rows.send(Pending { row, reply }).is_ok())
    }
}

fn stopped() -> DbError {
    DbError::Unavailable("the batching thread did not answer".into())
}

impl<R, A> Drop for Batcher<R, A> {
    fn drop(&mut self) {
        self.rows.take();
    }
}

/// What a batching thread owns.
struct BatchThread<R, A> {
    open: Arc<Opener>,
    conn: Option<DbConn>,
    /// When `conn` last worked.
    last_ok: Instant,
    statement: Statement<R, A>,
}

impl<R, A> BatchThread<R, A> {
    fn serve(mut self, queue: &Receiver<Pending<R, A>>) {
        while let Some(batch) = next_batch(queue) {
            // A panic must not end the thread: every later row would then
            // be answered `503` for good. The batch's callers, whose replies
            // are dropped, are answered that the database is unavailable, and
            // the connection, in an unknown state, is opened again.
            if catch_unwind(AssertUnwindSafe(|| self.run_batch(batch))).is_err() {
                tracing::error!("a batched statement panicked");
                self.conn = None;
            }
        }
    }

    fn run_batch(&mut self, mut batch: Vec<Pending<R, A>>) {
        batch.retain(|pending| !pending.reply.gave_up());
        if batch.is_empty() {
            return;
        }
        let (rows, replies): (Vec<R>, Vec<_>) = batch.into_iter().map(|p| (p.row, p.reply)).unzip();
        match self.run(&rows) {
            Ok(answers) => {
                for (answer, reply) in answers.into_iter().zip(replies) {
                    reply.send(Ok(answer));
                }
            }
            // Nothing of the batch was done; each row alone says what is
            // wrong with it, if anything.
            Err(e) if rows.len() > 1 && !matches!(e, DbError::Unavailable(_)) => {
                for (row, reply) in rows.iter().zip(replies) {
                    let one = self.run(std::slice::from_ref(row));
                    reply.send(one.and_then(|mut a| a.pop().ok_or_else(no_answer)));
                }
            }
            Err(e) => {
                for reply in replies {
                    reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Runs one statement; a lost connection is dropped, and the next batch
    /// opens one. Fails unless there is one answer per row.
    fn run(&mut self, rows: &[R]) -> DbResult<Vec<A>> {
        let statement = self.statement;
        let mut deadlocks = 0;
        let result = loop {
            let result = statement(self.connection()?, rows);
            match &result {
                Err(DbError::Unavailable(_)) => self.conn = None,
                // Batches of other server processes lock the same rows (a
                // getcode's rate-limit buckets): InnoDB rolled the loser's
                // whole transaction back, so nothing of it stays and it is
                // run again, after a pause that makes the two part ways.
                Err(e) if e.is_deadlock() && deadlocks < DEADLOCK_RETRIES => {
                    deadlocks += 1;
                    let pause = rand::thread_rng().gen_range(1..=10);
                    std::thread::sleep(Duration::from_millis(pause));
                    continue;
                }
                _ => self.last_ok = Instant::now(),
            }
            break result;
        };
        let answers = result?;
        if answers.len() != rows.len() {
            return Err(no_answer());
        }
        Ok(answers)
    }

    /// The thread's connection, tested first (as the pool tests its own) if
    /// it has been idle: a connection lost while nothing was sent must not
    /// fail the first statement after the database is back. A statement
    /// that fails cannot be sent again blindly: it may have committed.
    fn connection(&mut self) -> DbResult<&mut DbConn> {
        if self.last_ok.elapsed() >= TRUST_FOR {
            if let Some(conn) = self.conn.as_mut() {
                if conn.ping().is_err() {
                    self.conn = None;
                }
            }
        }
        match self.conn {
            Some(ref mut conn) => Ok(conn),
            None => Ok(self.conn.insert((self.open)()?)),
        }
    }
}

fn no_answer() -> DbError {
    DbError::Other("a batched statement did not answer every row".into())
}

/// Waits for a row, then takes whatever else is queued (up to `MAX_BATCH`);
/// `None` once the batcher is gone.
fn next_batch<R, A>(queue: &Receiver<Pending<R, A>>) -> Option<Vec<Pending<R, A>>> {
    let first = queue.recv().ok()?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The statements run for many requests at once, each by its own thread with
/// its own connection (ten per server process, beside the pool).
pub(super) struct Batched {
    pub(super) access_inserts: Batcher<AccessTokenRow, ()>,
    pub(super) access_lookups: Batcher<String, Option<WithUsername<AccessTokenRow>>>,
    pub(super) refresh_lookups: Batcher<String, Option<RefreshTokenRow>>,
    pub(super) phone_users: Batcher<String, Option<String>>,
    pub(super) rotations: Batcher<tokens::Rotation, bool>,
    pub(super) otp_grants: Batcher<otp_grant::GrantWrite, otp_grant::Outcome>,
    pub(super) tickets_for_codes: Batcher<tickets::TicketForCode, Option<bool>>,
    pub(super) ticket_lookups: Batcher<String, Option<tickets::TicketRow>>,
    pub(super) sign_ups: Batcher<users::SignUpWrite, bool>,
    pub(super) new_codes: Batcher<codes::CodeIssue, codes::Issued>,
}

impl Batched {
    pub(super) fn new(open: impl Fn() -> DbResult<DbConn> + Send + Sync + 'static) -> Batched {
        let open: Arc<Opener> = Arc::new(open);
        Batched {
            access_inserts: Batcher::new(
                "access-inserts",
                open.clone(),
                tokens::insert_access_rows,
            ),
            access_lookups: Batcher::new("access-lookups", open.clone(), tokens::find_access_rows),
            refresh_lookups: Batcher::new(
                "refresh-lookups",
                open.clone(),
                tokens::find_refresh_rows,
            ),
            phone_users: Batcher::new("phone-users", open.clone(), users::find_user_ids_by_phones),
            rotations: Batcher::new("rotations", open.clone(), tokens::rotate_refresh_rows),
            otp_grants: Batcher::new("otp-grants", open.clone(), otp_grant::store_many),
            tickets_for_codes: Batcher::new(
                "tickets-for-codes",
                open.clone(),
                tickets::store_for_codes,
            ),
            ticket_lookups: Batcher::new("ticket-lookups", open.clone(), tickets::find_many),
            sign_ups: Batcher::new("sign-ups", open.clone(), users::create_many),
            new_codes: Batcher::new("new-codes", open, codes::issue_many),
        }
    }
}

impl std::fmt::Debug for Batched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::{Connection, SqliteConnection};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Doubles each row on a live connection; a negative row panics.
    fn double_or_panic(conn: &mut DbConn, rows: &[i32]) -> DbResult<Vec<i32>> {
        conn.ping()?;
        assert!(rows.iter().all(|&r| r >= 0), "a negative row");
        Ok(rows.iter().map(|r| r * 2).collect())
    }

    #[test]
    fn a_panicking_batch_answers_503_and_the_thread_keeps_serving() {
        let opened = Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        let open: Arc<Opener> = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            SqliteConnection::establish(":memory:")
                .map(DbConn::Sqlite)
                .map_err(|e| DbError::Unavailable(e.to_string()))
        });
        let batcher = Batcher::new("test", open, double_or_panic);
        assert!(matches!(batcher.run(1), Ok(2)));
        assert!(matches!(batcher.run(-1), Err(DbError::Unavailable(_))));
        assert!(matches!(batcher.run(3), Ok(6)));
        // The connection the panic left in an unknown state was replaced.
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    fn in_memory() -> DbResult<DbConn> {
        SqliteConnection::establish(":memory:")
            .map(DbConn::Sqlite)
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    /// Counts the rows it is given, and doubles them.
    fn counted(conn: &mut DbConn, rows: &[i32]) -> DbResult<Vec<i32>> {
        conn.ping()?;
        SEEN.fetch_add(rows.len(), Ordering::SeqCst);
        Ok(rows.iter().map(|r| r * 2).collect())
    }

    #[test]
    fn an_awaited_row_is_answered_unless_its_request_gave_up() {
        let batcher = Batcher::new("test", Arc::new(in_memory), counted);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let held = Arc::new(());
        let waiting =
            |gave_up: bool| Waiting::new(Arc::new(AtomicBool::new(gave_up)), held.clone());

        let answer = runtime.block_on(batcher.submit(21, waiting(false)));
        assert!(matches!(answer, Ok(42)));
        assert_eq!(SEEN.swap(0, Ordering::SeqCst), 1);

        // Its request stopped waiting before the batch ran: the row is left
        // out, and what the request held (its backlog place) is let go.
        let answer = runtime.block_on(batcher.submit(5, waiting(true)));
        assert!(matches!(answer, Err(DbError::Unavailable(_))));
        assert_eq!(SEEN.swap(0, Ordering::SeqCst), 0);
        assert_eq!(Arc::strong_count(&held), 1);
    }

    static ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

    /// Loses a deadlock while fewer than `row` attempts have been made; a
    /// row of 100 waits out a lock instead.
    fn contended(conn: &mut DbConn, rows: &[i32]) -> DbResult<Vec<i32>> {
        conn.ping()?;
        let attempt = ATTEMPTS.fetch_add(1, Ordering::SeqCst) as i32;
        match rows[0] {
            100 => Err(DbError::Contention("Lock wait timeout exceeded".into())),
            row if attempt < row => Err(DbError::Contention(
                "Deadlock found when trying to get lock; try restarting transaction".into(),
            )),
            row => Ok(vec![row]),
        }
    }

    #[test]
    fn a_batch_that_loses_a_deadlock_runs_again_a_few_times() {
        let open: Arc<Opener> = Arc::new(|| {
            SqliteConnection::establish(":memory:")
                .map(DbConn::Sqlite)
                .map_err(|e| DbError::Unavailable(e.to_string()))
        });
        let batcher = Batcher::new("test", open, contended);
        // Two deadlocks, then it commits.
        assert!(matches!(batcher.run(2), Ok(2)));
        assert_eq!(ATTEMPTS.swap(0, Ordering::SeqCst), 3);
        // Deadlocks every time: four tries, then the loss is the answer.
        assert!(matches!(batcher.run(1000), Err(e) if e.is_deadlock()));
        assert_eq!(ATTEMPTS.swap(0, Ordering::SeqCst), 4);
        // A lock wait already waited PHONEKEY_DB_TIMEOUT: not run again.
        assert!(matches!(batcher.run(100), Err(DbError::Contention(_))));
        assert_eq!(ATTEMPTS.swap(0, Ordering::SeqCst), 1);
    }
}
