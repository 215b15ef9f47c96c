//! MySQL: the batched statements (`db::batch`) for a request that awaits
//! their answers where it runs (an HTTP worker) instead of blocking a
//! lane thread on each: one hand-off to the batching thread and one back
//! per statement, where the lane adds two more and a thread per request.

use std::sync::Arc;

use super::batch::{Batched, Waiting};
use super::otp_grant::{GrantWrite, Outcome};
use super::tickets::{TicketForCode, TicketRow};
use super::tokens::{self, AccessTokenRow, RefreshTokenRow, Rotation};
use super::users::SignUpWrite;
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

    /// Spends the code and stores the ticket, with the verifycodes of
    /// concurrent requests; answers whether the phone has a user, as of that
    /// transaction. `None`: nothing was stored (the code did not spend): the
    /// one-by-one path (`otp::verify_for_ticket`) must run and say why.
    pub async fn store_ticket_for_code(
        &self,
        write: TicketForCode,
        waiting: Waiting,
    ) -> DbResult<Option<bool>> {
        self.0.tickets_for_codes.submit(write, waiting).await
    }

    /// `tickets::lookup`: the ticket stored under this hash.
    pub async fn lookup_ticket(
        &self,
        hash: String,
        waiting: Waiting,
    ) -> DbResult<Option<TicketRow>> {
        self.0.ticket_lookups.submit(hash, waiting).await
    }

    /// `users::create_with_ticket`: the ticket spent and the user created.
    pub async fn create_with_ticket(&self, write: SignUpWrite, waiting: Waiting) -> DbResult<bool> {
        self.0.sign_ups.submit(write, waiting).await
    }

    /// `otp_grant::store`.
    pub async fn store_otp_grant(&self, write: GrantWrite, waiting: Waiting) -> DbResult<Outcome> {
        self.0.otp_grants.submit(write, waiting).await
    }
}
