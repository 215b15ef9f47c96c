//! Storage: one diesel `MultiConnection` over SQLite and (with the `mysql`
//! feature) MySQL/MariaDB, an r2d2 pool, embedded migrations per backend, and
//! one file of queries per table, each written once and run on the concrete
//! connection (`on_backend!`). Nothing here knows about HTTP or OAuth.
//!
//! Row structs insert `None` as a bound NULL (`treat_none_as_default_value =
//! false`): with diesel's default, a `None` is written as `DEFAULT`, so the SQL
//! depends on the values, and diesel prepares and closes the statement on every
//! insert instead of reusing it (three MySQL round trips instead of one).

/// Runs diesel code on the connection's own backend. Through the
/// `MultiConnection` enum diesel renders a query's SQL text on every
/// execution, several times (to check that it may be cached, to collect its
/// binds), even when its prepared statement is cached; on the concrete
/// connection it finds the statement by the query's type. The body is
/// compiled once per backend.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Sqlite($c) => $body,
            #[cfg(feature = "mysql")]
            $crate::db::DbConn::Mysql($c) => $body,
        }
    };
}

#[cfg(feature = "mysql")]
pub mod awaited;
#[cfg(feature = "mysql")]
mod batch;
pub mod clients;
pub mod codes;
pub mod codes_auth;
mod fixed;
pub mod keys;
#[cfg(feature = "mysql")]
pub mod otp_grant;
#[cfg(feature = "mysql")]
pub mod proofs;
pub mod purge;
pub mod rate_limits;
mod readers;
pub mod schema;
pub mod sessions;
pub mod settings;
pub mod tickets;
pub mod tokens;
pub mod users;
mod writer;

pub use writer::GroupWriter;

#[cfg(feature = "mysql")]
pub use batch::Waiting;

#[cfg(feature = "mysql")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

#[cfg(feature = "mysql")]
use diesel::MysqlConnection;

#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(SqliteConnection),
    #[cfg(feature = "mysql")]
    Mysql(MysqlConnection),
}

/// A connection as the pool keeps it, with what the pool needs to know
/// about its health.
pub struct Slot {
    inner: DbConn,
    last_ok: Instant,
    broken: bool,
}

/// What a request or a command reaches the database through. A pooled one
/// takes its connection from the pool at its first statement that needs
/// one (`db`), so that on MySQL a request whose statements are all batched
/// (client tokens, refresh, the otp grant, introspection, getcode, verifycode,
/// sign-up) holds none while it waits for its batch, and more of them can
/// wait than the pool has connections.
pub struct Conn {
    backend: Backend,
    source: Source,
    /// SQLite allows one writer at a time: this process's writes go through
    /// one shared connection that commits them in groups. `None` on MySQL.
    writer: Option<Arc<GroupWriter>>,
    /// MySQL: statements run for many requests at once.
    #[cfg(feature = "mysql")]
    batched: Option<Arc<batch::Batched>>,
}

enum Source {
    Pool {
        pool: r2d2::Pool<Manager>,
        held: Option<r2d2::PooledConnection<Manager>>,
    },
    /// A connection outside any pool (start-up, CLI).
    Own(Box<Slot>),
    /// SQLite: the serving thread's own reader connection (`readers`),
    /// kept for the thread's next request when this is dropped.
    Thread {
        readers: readers::Readers,
        slot: Option<Box<Slot>>,
    },
    /// SQLite: the writer thread's connection. A request that runs there
    /// (`GroupWriter::run_request`) does so inside the batch's open
    /// transaction, and its writes are savepoints of that transaction.
    Writer(Box<DbConn>),
    /// None at all: for work that runs where nothing may block (an HTTP
    /// worker) and that its caller runs again elsewhere if it needed one
    /// (`wanted_database`).
    Detached { wanted: bool },
}

/// The connection in `held`, taken with `take` if it holds none yet.
fn held_or_taken<C>(held: &mut Option<C>, take: impl FnOnce() -> DbResult<C>) -> DbResult<&mut C> {
    let conn = match held.take() {
        Some(conn) => conn,
        None => take()?,
    };
    Ok(held.insert(conn))
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Thread { readers, slot } = self {
            if let Some(slot) = slot.take() {
                readers.keep(slot);
            }
        }
    }
}

impl Conn {
    /// The connection, taken from the pool now if it has not been yet
    /// (`Unavailable` if none frees up within the pool's timeout).
    pub fn db(&mut self) -> DbResult<&mut DbConn> {
        let slot: &mut Slot = match &mut self.source {
            Source::Own(slot) => slot,
            Source::Thread { readers, slot } => held_or_taken(slot, || readers.take())?,
            Source::Pool { pool, held } => held_or_taken(held, || Ok(pool.get()?))?,
            Source::Writer(conn) => return Ok(conn),
            Source::Detached { wanted } => {
                *wanted = true;
                return Err(DbError::Detached);
            }
        };
        Ok(&mut slot.inner)
    }

    /// Whether this is a detached connection (`Pool::detached`) that was
    /// asked for the database, whatever its caller made of the refusal.
    pub fn wanted_database(&self) -> bool {
        matches!(self.source, Source::Detached { wanted: true })
    }

    /// The SQLite writer thread's connection (`Source::Writer`).
    fn for_writer(conn: DbConn) -> Conn {
        Conn {
            backend: Backend::Sqlite,
            source: Source::Writer(Box::new(conn)),
            writer: None,
            #[cfg(feature = "mysql")]
            batched: None,
        }
    }

    /// Whether this runs on the writer thread, inside its open transaction.
    fn on_writer(&self) -> bool {
        matches!(self.source, Source::Writer(_))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Every write goes through here: a transaction (an `Err` from `f` rolls
    /// back what `f` did) that has committed when this returns. On SQLite it
    /// runs on the writer thread's connection, not on this one, so `f` owns
    /// what it uses and hands back what the caller needs.
    pub fn write_tx<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        if self.on_writer() {
            return writer::in_savepoint(self.db()?, f);
        }
        match &self.writer {
            Some(writer) => writer.run(f),
            None => self.db()?.write_tx(f),
        }
    }

    /// A write of exactly one statement, which is atomic by itself: on MySQL
    /// it runs in autocommit, sparing the BEGIN and COMMIT round trips; on
    /// SQLite it joins the group commit without a savepoint of its own.
    pub fn write_one<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.run_one(f),
            None => f(self.db()?),
        }
    }

    /// A write that makes itself atomic on MySQL (one statement, or a call of
    /// a stored procedure with its own transaction) but needs a transaction
    /// on SQLite: there it runs like `write_tx`, on MySQL on this connection
    /// without BEGIN and COMMIT around it.
    pub fn write_atomic<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        if self.on_writer() {
            return writer::in_savepoint(self.db()?, f);
        }
        if let Some(writer) = &self.writer {
            return writer.run(f);
        }
        let conn = self.db()?;
        match conn {
            DbConn::Sqlite(_) => conn.write_tx(f),
            #[cfg(feature = "mysql")]
            DbConn::Mysql(_) => f(conn),
        }
    }

    /// A read of rows the request goes on to change, made where its write
    /// will run. On SQLite that is the writer thread's connection: every
    /// commit empties a reader connection's page cache, so a lookup there
    /// reads its B-tree pages again, while the writer's cache stays warm
    /// (refresh +9-14%, docs/performance.md). Its answer waits for the
    /// writer's batch to commit, so it never reports a change that a failed
    /// commit threw away. On MySQL it is an ordinary read on this connection.
    pub fn read_for_write<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        self.write_one(f)
    }

    /// Records how the last use went: a lost connection is dropped from the
    /// pool; a working one needs no test query on its next checkout.
    pub fn record(&mut self, connection_lost: bool) {
        let slot: &mut Slot = match &mut self.source {
            Source::Own(slot) => slot,
            Source::Thread {
                slot: Some(slot), ..
            } => slot,
            Source::Pool {
                held: Some(held), ..
            } => held,
            Source::Pool { held: None, .. }
            | Source::Thread { slot: None, .. }
            | Source::Writer(_)
            | Source::Detached { .. } => return,
        };
        if connection_lost {
            slot.broken = true;
        } else {
            slot.last_ok = Instant::now();
        }
    }
}

/// MySQL: whether the server prepares `BEGIN`, `COMMIT` and `ROLLBACK`
/// (MariaDB since 10.6; MySQL 8 refuses `BEGIN`). diesel sends them with
/// `batch_execute`, which switches multi-statement mode on and off around
/// each: three round trips instead of one, six more per transaction.
#[cfg(feature = "mysql")]
static PREPARED_BEGIN: AtomicBool = AtomicBool::new(true);

/// A connection used successfully this recently is not tested on checkout;
/// under load that saves a round trip per request.
const TRUST_FOR: Duration = Duration::from_secs(1);

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "mysql")]
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// Storage errors, as the layers above need to tell them apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached (pool timeout, lost connection).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique index refused the row; the message names the index.
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    /// A concurrent transaction won (deadlock, serialization failure):
    /// the caller lost the race and must not treat its write as done.
    #[error("transaction lost a race: {0}")]
    Contention(String),
    #[error("database error: {0}")]
    Other(String),
    /// Asked of a connection that has none (`Pool::detached`).
    #[error("no database connection here")]
    Detached,
}

pub type DbResult<T> = Result<T, DbError>;

// Lookups here are by unique key and `load` the (at most one) row instead of
// using `.first()`: its bound `LIMIT ?` makes SQLite re-prepare the statement
// on every execution.

impl DbError {
    /// A deadlock (MySQL 1213, also Galera's conflict at `COMMIT`): the
    /// transaction was rolled back whole, so it may be run again.
    pub fn is_deadlock(&self) -> bool {
        matches!(self, DbError::Contention(m) if m.contains("Deadlock found"))
    }
}

impl From<DieselError> for DbError {
    fn from(err: DieselError) -> Self {
        match &err {
            DieselError::DatabaseError(kind, info) => {
                let message = info.message().to_string();
                match kind {
                    DatabaseErrorKind::UniqueViolation => DbError::Conflict(message),
                    DatabaseErrorKind::SerializationFailure => DbError::Contention(message),
                    DatabaseErrorKind::ClosedConnection => DbError::Unavailable(message),
                    _ if is_unavailable(&message) => DbError::Unavailable(message),
                    _ if is_contention(&message) => DbError::Contention(message),
                    _ => DbError::Other(message),
                }
            }
            DieselError::BrokenTransactionManager => DbError::Unavailable(err.to_string()),
            _ => DbError::Other(err.to_string()),
        }
    }
}

impl From<r2d2::PoolError> for DbError {
    fn from(err: r2d2::PoolError) -> Self {
        DbError::Unavailable(err.to_string())
    }
}

// The database cannot take the statement now, through no fault of the
// request: 503, and service resumes by itself. These arrive as `Unknown`
// with only a message.
fn is_unavailable(message: &str) -> bool {
    const SIGNS: [&str; 12] = [
        // MySQL client errors 2006/2013 and friends: the connection is lost.
        "server has gone away",
        "Lost connection",
        "Can't connect",
        "Connection refused",
        "connection was killed",
        "Server shutdown",
        // The disk is full (SQLite's SQLITE_FULL; MySQL 1114 and errno 28)
        // or failing (SQLITE_IOERR).
        "database or disk is full",
        "disk I/O error",
        "' is full",
        "No space left on device",
        // A read-only database: SQLite's file, or a MySQL server in
        // `read_only` (a replica during a failover).
        "readonly database",
        "--read-only option",
    ];
    SIGNS.iter().any(|s| message.contains(s))
}

// SQLite's "database is locked" after the busy timeout, MySQL's lock wait timeout and deadlock.
fn is_contention(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("Deadlock found")
        || message.contains("Lock wait timeout")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
        }
    }
}

/// A database URL checked for its scheme, so that start-up names the real
/// problem instead of trying every backend in turn.
#[derive(Debug, Clone)]
pub struct DbUrl {
    pub backend: Backend,
    /// What the driver gets: a file path for SQLite, the URL for MySQL.
    target: String,
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://phonekey.db".into());
            }
            return Ok(DbUrl {
                backend: Backend::Sqlite,
                target: path.to_string(),
            });
        }
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            if !cfg!(feature = "mysql") {
                return Err(
                    "this build has no MySQL support; rebuild with `--features mysql`".into(),
                );
            }
            let url = url.replacen("mariadb://", "mysql://", 1);
            let parsed = url::Url::parse(&url).map_err(|e| format!("not a valid URL: {e}"))?;
            if parsed.host_str().unwrap_or("").is_empty() {
                return Err("mysql:// URL needs a host".into());
            }
            return Ok(DbUrl {
                backend: Backend::Mysql,
                target: url,
            });
        }
        Err("must start with sqlite:// or mysql://".into())
    }
}

/// Opens connections for the pool and prepares each one for our workload.
#[derive(Debug)]
pub struct Manager {
    url: DbUrl,
    /// The longest a statement waits for a lock another connection holds.
    lock_wait: Duration,
}

impl ManageConnection for Manager {
    type Connection = Slot;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Slot, r2d2::Error> {
        Ok(Slot {
            inner: self.open()?,
            last_ok: Instant::now(),
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Slot) -> Result<(), r2d2::Error> {
        if conn.broken {
            return Err(r2d2::Error::QueryError(
                DieselError::BrokenTransactionManager,
            ));
        }
        if conn.last_ok.elapsed() < TRUST_FOR {
            return Ok(());
        }
        conn.inner.ping().map_err(|e| {
            r2d2::Error::ConnectionError(diesel::ConnectionError::BadConnection(e.to_string()))
        })?;
        conn.last_ok = Instant::now();
        Ok(())
    }

    fn has_broken(&self, conn: &mut Slot) -> bool {
        conn.broken
    }
}

/// What every connection of a process shares: SQLite's writer thread,
/// MySQL's batching threads.
#[derive(Clone)]
struct Shared {
    writer: Option<Arc<GroupWriter>>,
    #[cfg(feature = "mysql")]
    batched: Option<Arc<batch::Batched>>,
}

impl Shared {
    fn new(url: &DbUrl, lock_wait: Duration) -> Shared {
        let writer = (url.backend == Backend::Sqlite).then(|| {
            let path = url.target.clone();
            Arc::new(GroupWriter::new(move || {
                open_sqlite(&path, lock_wait)
                    .map(DbConn::Sqlite)
                    .map_err(|e| DbError::Unavailable(e.to_string()))
            }))
        });
        #[cfg(feature = "mysql")]
        let batched = (url.backend == Backend::Mysql).then(|| {
            let target = url.target.clone();
            Arc::new(batch::Batched::new(move || {
                open_mysql(&target, lock_wait)
                    .map(DbConn::Mysql)
                    .map_err(|e| DbError::Unavailable(e.to_string()))
            }))
        });
        Shared {
            writer,
            #[cfg(feature = "mysql")]
            batched,
        }
    }

    fn conn(&self, backend: Backend, source: Source) -> Conn {
        Conn {
            backend,
            source,
            writer: self.writer.clone(),
            #[cfg(feature = "mysql")]
            batched: self.batched.clone(),
        }
    }
}

impl Manager {
    fn open(&self) -> Result<DbConn, r2d2::Error> {
        match self.url.backend {
            Backend::Sqlite => open_sqlite(&self.url.target, self.lock_wait).map(DbConn::Sqlite),
            #[cfg(feature = "mysql")]
            Backend::Mysql => open_mysql(&self.url.target, self.lock_wait).map(DbConn::Mysql),
            #[cfg(not(feature = "mysql"))]
            Backend::Mysql => Err(r2d2::Error::ConnectionError(
                diesel::ConnectionError::BadConnection("built without MySQL support".into()),
            )),
        }
    }
}

#[cfg(feature = "mysql")]
fn open_mysql(url: &str, lock_wait: Duration) -> Result<MysqlConnection, r2d2::Error> {
    let mut conn = MysqlConnection::establish(url).map_err(r2d2::Error::ConnectionError)?;
    // Single-use updates rely on seeing the latest committed row.
    conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .map_err(r2d2::Error::QueryError)?;
    // A lock held elsewhere (an operator's `LOCK TABLES` or `ALTER TABLE`, a
    // stuck transaction) fails the statement with "Lock wait timeout", i.e.
    // 503, instead of holding the request (and with batching every request
    // of its kind) for as long as the lock is held: the server's defaults
    // are 50 s for a row and a year for a table.
    let secs = lock_wait.as_secs().max(1);
    conn.batch_execute(&format!(
        "SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}"
    ))
    .map_err(r2d2::Error::QueryError)?;
    Ok(conn)
}

fn open_sqlite(path: &str, lock_wait: Duration) -> Result<SqliteConnection, r2d2::Error> {
    let mut conn = SqliteConnection::establish(path).map_err(r2d2::Error::ConnectionError)?;
    // WAL lets readers run beside the one writer; NORMAL is durable across
    // process crashes, which is what WAL needs. Inserts land on random index
    // pages (hashes, random ids), and every page a commit touches is written
    // whole to the WAL and again by the checkpoint: 1 KiB pages write a
    // quarter of what 4 KiB pages do (measured: +5-10% tokens/s). It only
    // applies to a new database file.
    // Another process's writer is waited for (busy timeout) as MySQL waits
    // for a lock.
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}; PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        lock_wait.as_millis()
    ))
    .map_err(r2d2::Error::QueryError)?;
    Ok(conn)
}

impl DbConn {
    pub fn backend(&self) -> Backend {
        match self {
            DbConn::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "mysql")]
            DbConn::Mysql(_) => Backend::Mysql,
        }
    }

    /// The transaction behind `Conn::write_tx`. Every write transaction here
    /// starts with a write, so SQLite takes its write lock at the first
    /// statement and another process's writer makes it wait (busy timeout),
    /// never fail on a stale read snapshot.
    fn write_tx<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&mut DbConn) -> Result<T, E>,
    {
        enum TxError<E> {
            App(E),
            Diesel(DieselError),
        }
        impl<E> From<DieselError> for TxError<E> {
            fn from(e: DieselError) -> Self {
                TxError::Diesel(e)
            }
        }
        #[cfg(feature = "mysql")]
        if matches!(self, DbConn::Mysql(_)) && PREPARED_BEGIN.load(Ordering::Relaxed) {
            match fixed::execute(self, "BEGIN", &[]) {
                Ok(_) => return self.finish_tx(f),
                Err(DbError::Other(m)) if m.contains("prepared statement protocol") => {
                    PREPARED_BEGIN.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let result = self.transaction::<T, TxError<E>, _>(|conn| f(conn).map_err(TxError::App));
        result.map_err(|e| match e {
            TxError::App(e) => e,
            TxError::Diesel(e) => E::from(DbError::from(e)),
        })
    }

    /// Tests that the connection still answers. On MySQL a prepared `DO 1`:
    /// `batch_execute` would take three round trips (it switches
    /// multi-statement mode on and off around the query).
    pub fn ping(&mut self) -> DbResult<()> {
        match self {
            DbConn::Sqlite(c) => Ok(c.batch_execute("SELECT 1")?),
            #[cfg(feature = "mysql")]
            DbConn::Mysql(_) => fixed::execute(self, "DO 1", &[]).map(drop),
        }
    }

    /// MySQL: runs `f` in the transaction just begun and commits, or rolls
    /// back if `f` fails. A connection whose transaction could not be ended
    /// is reported lost, so that the pool drops it instead of handing out a
    /// transaction left open.
    #[cfg(feature = "mysql")]
    fn finish_tx<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&mut DbConn) -> Result<T, E>,
    {
        let lost = |e: DbError| DbError::Unavailable(format!("could not end a transaction: {e}"));
        match f(self) {
            Ok(value) => match fixed::execute(self, "COMMIT", &[]) {
                Ok(_) => Ok(value),
                Err(e) => Err(match fixed::execute(self, "ROLLBACK", &[]) {
                    Ok(_) => e.into(),
                    Err(_) => lost(e).into(),
                }),
            },
            Err(e) => match fixed::execute(self, "ROLLBACK", &[]) {
                Ok(_) => Err(e),
                Err(rollback) => Err(lost(rollback).into()),
            },
        }
    }

    /// Inserts a row unless its primary key exists (`sql` is the column list
    /// and VALUES part, the same on every backend).
    pub(crate) fn insert_ignore_sql(
        &self,
        table: &str,
        columns_and_values: &str,
        key: &str,
    ) -> String {
        match self.backend() {
            Backend::Sqlite => {
                format!("INSERT INTO {table} {columns_and_values} ON CONFLICT ({key}) DO NOTHING")
            }
            Backend::Mysql => format!(
                "INSERT INTO {table} {columns_and_values} ON DUPLICATE KEY UPDATE {key} = {key}"
            ),
        }
    }
}

pub struct PoolOptions {
    pub max_size: u32,
    /// How long a request waits for a connection, and for a lock that another
    /// connection or process holds.
    pub connect_timeout: Duration,
}

/// Builds the pool without waiting for the database: the server starts and
/// answers 503 until the database is there.
///
/// SQLite requests read on their serving thread's own connection
/// (`readers`); its pool serves the rest (upkeep, tools). The pool's size
/// still sets how many threads serve requests (`crate::serve`), which bounds
/// the writes in flight from those threads; the requests that run on the
/// writer thread are bounded by the HTTP layer's backlog.
pub fn build_pool(url: &DbUrl, options: &PoolOptions) -> Pool {
    let lock_wait = options.connect_timeout;
    let manager = || Manager {
        url: url.clone(),
        lock_wait,
    };
    let inner = r2d2::Pool::builder()
        .max_size(options.max_size.max(1))
        .min_idle(Some(0))
        .connection_timeout(options.connect_timeout)
        .build_unchecked(manager());
    Pool {
        inner,
        readers: (url.backend == Backend::Sqlite).then(|| readers::Readers::new(manager())),
        backend: url.backend,
        shared: Shared::new(url, lock_wait),
    }
}

/// The connections of a server process, and what they share.
#[derive(Clone)]
pub struct Pool {
    inner: r2d2::Pool<Manager>,
    /// SQLite: the serving threads' own reader connections.
    readers: Option<readers::Readers>,
    backend: Backend,
    shared: Shared,
}

impl Pool {
    /// A connection taken from the pool now.
    pub fn get(&self) -> DbResult<Conn> {
        let mut conn = self.lazy();
        conn.db()?;
        Ok(conn)
    }

    /// A request's connection, taken at its first statement that needs one.
    /// On MySQL that is its first statement that is not batched, if it has
    /// one, from the pool; on SQLite its first read, on the serving
    /// thread's own connection.
    pub fn for_request(&self) -> Conn {
        match &self.readers {
            Some(readers) => {
                let source = Source::Thread {
                    readers: readers.clone(),
                    slot: None,
                };
                self.shared.conn(self.backend, source)
            }
            None => self.lazy(),
        }
    }

    /// SQLite: runs `f` whole on the writer thread (`GroupWriter::run_request`);
    /// `answer` gets its result once the batch holding its writes has
    /// committed. On MySQL, which has no writer thread, `answer` is told so.
    pub fn run_on_writer<T, F, A>(&self, f: F, answer: A)
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> T + Send + 'static,
        A: FnOnce(Result<T, DbError>) + Send + 'static,
    {
        match &self.shared.writer {
            Some(writer) => writer.run_request(f, answer),
            None => answer(Err(DbError::Other("no SQLite writer".into()))),
        }
    }

    /// A handle with no connection and no writer: every statement fails
    /// at once with `DbError::Detached` instead of waiting for one.
    pub fn detached(&self) -> Conn {
        Conn {
            backend: self.backend,
            source: Source::Detached { wanted: false },
            writer: None,
            #[cfg(feature = "mysql")]
            batched: None,
        }
    }

    /// A handle that takes its connection from the pool at first use.
    pub fn lazy(&self) -> Conn {
        let source = Source::Pool {
            pool: self.inner.clone(),
            held: None,
        };
        self.shared.conn(self.backend, source)
    }

    pub fn max_size(&self) -> u32 {
        self.inner.max_size()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// How long start-up and the CLI wait for a lock (a pool waits
/// `PoolOptions::connect_timeout`).
pub(crate) const LOCK_WAIT_OUTSIDE_POOL: Duration = Duration::from_secs(10);

/// Opens one connection outside any pool (start-up, CLI), reporting a bad
/// URL or an unreachable server.
pub fn connect_once(url: &DbUrl) -> DbResult<Conn> {
    let manager = Manager {
        url: url.clone(),
        lock_wait: LOCK_WAIT_OUTSIDE_POOL,
    };
    let slot = manager
        .connect()
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    Ok(Shared::new(url, LOCK_WAIT_OUTSIDE_POOL).conn(url.backend, Source::Own(Box::new(slot))))
}

/// Applies the embedded migrations of the connection's backend; returns how many ran.
pub fn migrate(conn: &mut DbConn) -> DbResult<usize> {
    let ran = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        #[cfg(feature = "mysql")]
        DbConn::Mysql(c) => c.run_pending_migrations(MYSQL_MIGRATIONS).map(|v| v.len()),
    };
    ran.map_err(|e| DbError::Other(format!("migration failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_storage_that_cannot_take_writes_now_are_unavailable() {
        // As MySQL and MariaDB word them; SQLite's are met for real in
        // tests/storage_full.rs.
        for message in [
            "The table 'access_tokens' is full",
            "Error writing file './test/refresh_tokens.ibd' (Errcode: 28 \"No space left on device\")",
            "The MariaDB server is running with the --read-only option so it cannot execute this statement",
            "MySQL server has gone away",
        ] {
            assert!(is_unavailable(message), "{message}");
        }
        for message in [
            "Duplicate entry 'x' for key 'PRIMARY'",
            "Data too long for column 'phone' at row 1",
            "no such table: users",
        ] {
            assert!(!is_unavailable(message), "{message}");
        }
    }

    /// The bundled SQLite is built with the options of `.cargo/config.toml`
    /// (docs/performance.md): a build that lost them is slower, not wrong,
    /// and this says so.
    #[test]
    fn sqlite_is_built_without_per_call_mutexes() {
        use diesel::sql_types::Text;
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct CompileOption {
            #[diesel(sql_type = Text)]
            compile_options: String,
        }
        let mut conn = SqliteConnection::establish(":memory:").expect("in-memory SQLite");
        let options: Vec<String> = diesel::sql_query("PRAGMA compile_options")
            .load::<CompileOption>(&mut conn)
            .expect("compile options")
            .into_iter()
            .map(|o| o.compile_options)
            .collect();
        for wanted in ["THREADSAFE=2", "DEFAULT_MEMSTATUS=0", "OMIT_SHARED_CACHE"] {
            assert!(
                options.iter().any(|o| o == wanted),
                "{wanted} not in {options:?}"
            );
        }
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"));
    }
}
