//! MySQL: the batched statements (`db::batch`) for a request that awaits
//! their answers where it runs (an HTTP worker) instead of blocking a
//! lane thread on each: one hand-off to the batching thread and one back
//! per statement, where the lane adds two more and a thread per request.

use std::sync::Arc;

use super::batch::{Batched, Waiting};
use super::otp_grant::{GrantWrite, Outcome};
use super::tokens::{self, AccessTokenRow, RefreshTokenRow, Rotation};
use super::{Backend, DbResult, Pool};

/// The batched statements of a MySQL pool; `None` on SQLite.
#[derive(Clone)]
pub struct Awaited(Arc<Batched>);

impl Pool {
    pub fn awaited(&self) -> Option<Awaited> {
        self.shared.batched.clone().map(Awaited)
    }
}

impl Awaited {
    /// The refresh token's row under its key (`tokens::refresh_key`). A
    /// token stored under an earlier key is not found here
    /// (`tokens::lookup_refresh` finds it).
    pub async fn find_refresh(
        &self,
        token: &str,
        waiting: Waiting,
    ) -> DbResult<Option<RefreshTokenRow>> {
        let key = tokens::refresh_key(Backend::Mysql, token);
        self.0.refresh_lookups.submit(key, waiting).await
    }

    /// The id of the user with this (normalized) phone.
    pub async fn user_id_by_phone(
        &self,
        phone: &str,
        waiting: Waiting,
    ) -> DbResult<Option<String>> {
        self.0.phone_users.submit(phone.to_string(), waiting).await
    }

    /// `tokens::store_access`.
    pub async fn store_access(&self, row: AccessTokenRow, waiting: Waiting) -> DbResult<()> {
        self.0.access_inserts.submit(row, waiting).await
    }

    /// `tokens::store_rotation`.
    pub async fn store_rotation(
        &self,
        old_key: String,
        now: i64,
        access: AccessTokenRow,
        refresh: RefreshTokenRow,
        waiting: Waiting,
    ) -> DbResult<bool> {
        let rotation = Rotation {
            old_key,
            now,
            access,
            refresh,
        };
        self.0.rotations.submit(rotation, waiting).await
    }

    /// `otp_grant::store`.
    pub async fn store_otp_grant(&self, write: GrantWrite, waiting: Waiting) -> DbResult<Outcome> {
        self.0.otp_grants.submit(write, waiting).await
    }
}
