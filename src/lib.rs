//! phonekey: an OAuth 2.0 authorization server whose headline grant is
//! phone-number login with an SMS one-time code.
//!
//! Layers, top to bottom: `http` (handlers) → `oauth`, `otp`, `users`
//! (domain) → `db` (storage). `config`, `core`, `sms`, `secrets`, `phone` and
//! `clock` serve them all.

pub mod clock;
pub mod config;
pub mod core;
pub mod db;
pub mod error;
pub mod http;
pub mod oauth;
pub mod otp;
pub mod phone;
pub mod secrets;
pub mod sessions;
pub mod sms;
pub mod users;

use std::net::TcpListener;
use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::PoolOptions;
use crate::http::AppState;

/// Why the server could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL: cannot use the database: {0}")]
    Database(String),
    #[error("DATABASE_URL: migrations failed: {0}")]
    Migrate(String),
    #[error("PHONEKEY_SMS_PROVIDER: {0}")]
    Sms(String),
    #[error("start-up failed: {0}")]
    Other(String),
}

/// Connects, migrates, loads keys and builds the state that every request shares.
pub fn prepare(config: Config, clock: SharedClock) -> Result<AppState, StartError> {
    let mut once =
        db::connect_once(&config.database).map_err(|e| StartError::Database(e.to_string()))?;
    let conn = once.db().map_err(|e| StartError::Database(e.to_string()))?;
    db::migrate(conn).map_err(|e| StartError::Migrate(e.to_string()))?;
    let sms = sms::from_config(&config).map_err(StartError::Sms)?;
    let pool = db::build_pool(
        &config.database,
        &PoolOptions {
            max_size: config.db_pool_size,
            connect_timeout: config.db_timeout,
        },
    );
    let core =
        core::Core::load(config, conn, clock).map_err(|e| StartError::Other(e.to_string()))?;
    Ok(AppState::new(pool, Arc::new(core), sms))
}

/// Expired rows are kept this long after expiry (for audit), then deleted.
pub const PURGE_GRACE: i64 = 86_400;

/// Background upkeep on a thread of its own (never on the executor): reload
/// the signing keys often, to pick up a `keys rotate` from any instance, and
/// every ten minutes delete expired codes, tickets and tokens and idle
/// rate-limit counters.
pub fn spawn_maintenance(state: &AppState) {
    let (pool, core) = (state.pool.clone(), state.core.clone());
    let interval = oauth::keys::KEY_RELOAD_SECONDS;
    let spawned = std::thread::Builder::new()
        .name("phonekey-upkeep".into())
        .spawn(move || {
            let mut since_purge = 0;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(interval));
                let mut conn = match pool.get() {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "upkeep: no database connection; will retry");
                        continue;
                    }
                };
                let reloaded = conn.db().map_err(error::AppError::from).and_then(|c| core.reload_keys(c));
                if let Err(e) = reloaded {
                    tracing::warn!(error = %e, "could not reload the signing keys; keeping the loaded ones");
                }
                since_purge += interval;
                if since_purge < 600 {
                    continue;
                }
                since_purge = 0;
                let now = core.now();
                // A counter idle for longer than any window (1 h) or cooldown (≤ 1 day) is empty.
                match db::purge::expired(&mut conn, now - PURGE_GRACE, now - 86_400 - 3_600) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "purged expired rows"),
                    Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the upkeep thread");
    }
}

/// Starts serving on `listener`; the returned server runs until stopped.
pub fn serve(state: AppState, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let workers = state
        .core
        .config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // Enough blocking threads to keep every pooled connection busy, few
    // enough that requests queue for a thread rather than for a connection.
    // (On MySQL the requests that wait for batches have threads of their
    // own, `http::lane`; on SQLite each of these threads keeps a reader
    // connection of its own, `db::readers`, and a login's requests run on the
    // writer thread instead, `http::AppState::on_writer`.)
    let blocking = (state.pool.max_size() as usize / workers).max(2) + 2;
    let server = actix_web::HttpServer::new(move || http::app(state.clone()))
        .workers(workers)
        .worker_max_blocking_threads(blocking)
        .listen(listener)?
        .run();
    Ok(server)
}
