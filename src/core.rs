//! What every request needs besides a database connection: configuration,
//! the server's HMAC key, the signing keys, the clock and the client cache. Loaded at start; the
//! keys are reloaded every few seconds to pick up rotations.

use std::sync::{Arc, RwLock};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::{self, DbConn};
use crate::error::AppResult;
use crate::oauth::clients::ClientCache;
use crate::oauth::keys::KeyRing;
use crate::secrets::{self, Hasher};

pub struct Core {
    pub config: Config,
    pub hasher: Hasher,
    keys: RwLock<Arc<KeyRing>>,
    pub clock: SharedClock,
    /// Client applications, read on every token call, kept for a moment.
    pub clients: ClientCache,
}

impl Core {
    pub fn load(config: Config, conn: &mut DbConn, clock: SharedClock) -> AppResult<Core> {
        let secret = match &config.secret_key {
            Some(key) => key.clone(),
            // Made once; every instance sharing the database uses the same one.
            None => db::settings::get_or_insert(conn, "secret_key", &secrets::random_hex(32))?,
        };
        let now = clock.now();
        let keys =
            KeyRing::load_or_create(conn, config.tokens.alg, now, now - config.tokens.access_ttl)?;
        Ok(Core {
            hasher: Hasher::new(secret.as_bytes()),
            keys: RwLock::new(Arc::new(keys)),
            clock,
            config,
            clients: ClientCache::default(),
        })
    }

    pub fn keys(&self) -> Arc<KeyRing> {
        // A panic while swapping cannot leave a half-written ring: the guard only swaps an Arc.
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the published keys (another instance may have rotated them).
    pub fn reload_keys(&self, conn: &mut DbConn) -> AppResult<()> {
        let ring = KeyRing::load(
            conn,
            self.config.tokens.alg,
            self.now() - self.config.tokens.access_ttl,
        )?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(())
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}
