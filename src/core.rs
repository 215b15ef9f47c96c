//! What every request needs besides a database connection: configuration,
//! the server's HMAC key, the signing keys and the clock. Loaded once at start.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::{self, DbConn};
use crate::error::AppResult;
use crate::oauth::keys::KeyRing;
use crate::secrets::{self, Hasher};

pub struct Core {
    pub config: Config,
    pub hasher: Hasher,
    pub keys: KeyRing,
    pub clock: SharedClock,
}

impl Core {
    pub fn load(config: Config, conn: &mut DbConn, clock: SharedClock) -> AppResult<Core> {
        let secret = match &config.secret_key {
            Some(key) => key.clone(),
            // Made once; every instance sharing the database uses the same one.
            None => db::settings::get_or_insert(conn, "secret_key", &secrets::random_hex(32))?,
        };
        let now = clock.now();
        let keys = KeyRing::load_or_create(conn, now, now - config.tokens.access_ttl)?;
        Ok(Core {
            hasher: Hasher::new(secret.as_bytes()),
            keys,
            clock,
            config,
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}
