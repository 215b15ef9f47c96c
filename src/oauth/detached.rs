//! Token requests run without a database connection: the one read the
//! request needs (a refresh token's row; on MySQL, for the otp grant, the
//! phone's user) is made first, the flow and the signing then run with no
//! connection at all, on the HTTP worker, and the writes the flow would have
//! made are kept and made afterwards. On SQLite the read and the writes are
//! jobs on the writer thread; on MySQL rows of the batched statements,
//! awaited (`db::awaited`). Either way no thread is woken and waited for
//! between them. Every write is as conditional as on the ordinary path (a
//! rotation spends its token only if nobody has, an otp grant its proof), so
//! a row read a moment earlier changes nothing.
//!
//! A request whose flow wanted anything else from the database (a client
//! not in the cache, a wrong code to count) has written nothing and is run
//! again the ordinary way.

use std::cell::RefCell;

use super::clients::GrantType;
use super::issuer;
use super::request::TokenRequest;
use super::store::{Issued, OAuthStore};
use super::token;
use crate::core::Core;
use crate::db::tokens::{AccessTokenRow, RefreshTokenRow};
use crate::db::{self, Backend, Conn};
use crate::error::AppResult;
use crate::secrets;

#[cfg(feature = "mysql")]
use crate::db::{awaited::Awaited, otp_grant, Waiting};

/// A write a detached request would have made.
pub enum Deferred {
    /// A client's new access token.
    Access(AccessTokenRow),
    Rotation(Box<Rotation>),
    /// A spent refresh token came back: its family is revoked.
    RevokeFamily(String),
    /// MySQL: an otp grant's common case (`db::otp_grant`).
    #[cfg(feature = "mysql")]
    OtpGrant(Box<otp_grant::GrantWrite>),
}

/// A refresh token spent (the one stored under `old_key`) and its
/// successors stored; if someone spent it first, `family` is revoked.
pub struct Rotation {
    pub old_key: String,
    pub now: i64,
    pub access: AccessTokenRow,
    pub refresh: RefreshTokenRow,
    pub family: Option<String>,
}

/// What a request needs read before it can run detached.
pub enum Read {
    Nothing,
    RefreshToken(String),
    /// The user of this normalized phone.
    PhoneUser(String),
}

/// Whether `request` may run detached on `backend`, and what it needs read
/// first: client credentials and refresh; on MySQL the otp grant too (on
/// SQLite it runs whole on the writer thread: `token::fits_on_writer`).
pub fn plan(request: &TokenRequest, backend: Backend) -> Option<Read> {
    match request.param("grant_type").and_then(GrantType::parse)? {
        GrantType::ClientCredentials => Some(Read::Nothing),
        GrantType::RefreshToken => Some(match request.param("refresh_token") {
            Some(token) if secrets::plausible_token(token) => Read::RefreshToken(token.into()),
            // Refused without a lookup.
            _ => Read::Nothing,
        }),
        GrantType::Otp if backend == Backend::Mysql => Some(match request.phone_param("phone") {
            Some(phone) => Read::PhoneUser(phone.to_string()),
            None => Read::Nothing,
        }),
        _ => None,
    }
}

/// What the read found, for the flow.
#[derive(Default)]
pub struct Prefetched {
    refresh: Option<(String, Option<RefreshTokenRow>)>,
    phone_user: Option<(String, Option<String>)>,
}

impl Prefetched {
    /// The row of `token`, if it was read.
    pub(super) fn refresh_row(&self, token: &str) -> Option<Option<RefreshTokenRow>> {
        match &self.refresh {
            Some((read, row)) if read == token => Some(row.clone()),
            _ => None,
        }
    }

    /// The id of `phone`'s user, if it was read.
    pub(super) fn phone_user(&self, phone: &str) -> Option<Option<String>> {
        match &self.phone_user {
            Some((read, user)) if read == phone => Some(user.clone()),
            _ => None,
        }
    }
}

/// Makes the read a request needs on `conn` (on SQLite, on the writer
/// thread, whose page cache is warm: `Conn::read_for_write`).
pub fn read(conn: &mut Conn, read: Read) -> AppResult<Prefetched> {
    let mut found = Prefetched::default();
    match read {
        Read::Nothing => {}
        Read::RefreshToken(token) => {
            let row = db::tokens::find_refresh(conn.db()?, &token)?;
            found.refresh = Some((token, row));
        }
        Read::PhoneUser(phone) => {
            let user = db::users::lookup_user_id_by_phone(conn, &phone)?;
            found.phone_user = Some((phone, user));
        }
    }
    Ok(found)
}

/// MySQL: `read` as a row of a batched statement.
#[cfg(feature = "mysql")]
pub async fn read_awaited(db: &Awaited, read: Read, waiting: Waiting) -> AppResult<Prefetched> {
    let mut found = Prefetched::default();
    match read {
        Read::Nothing => {}
        Read::RefreshToken(token) => {
            let row = db.find_refresh(&token, waiting).await?;
            // Not found under its key: the flow looks under the earlier one
            // (and so runs the ordinary way).
            if row.is_some() || !db::tokens::may_have_earlier_key(Backend::Mysql, &token) {
                found.refresh = Some((token, row));
            }
        }
        Read::PhoneUser(phone) => {
            let user = db.user_id_by_phone(&phone, waiting).await?;
            found.phone_user = Some((phone, user));
        }
    }
    Ok(found)
}

pub enum Outcome {
    /// The answer, to be given once `writes` are made.
    Ran {
        answer: AppResult<Issued>,
        writes: Vec<Deferred>,
    },
    /// The flow needed the database: nothing was written; run the request
    /// the ordinary way.
    NeedsDatabase,
}

/// Runs the token request on `conn`, a detached connection (`Pool::detached`).
pub fn run(core: &Core, mut conn: Conn, request: &TokenRequest, read: Prefetched) -> Outcome {
    let mut store = OAuthStore::new(core, &mut conn);
    store.deferred = Some(RefCell::new(Vec::new()));
    store.prefetched = read;
    let answer = token::dispatch(&mut store, request);
    let writes = store
        .deferred
        .take()
        .map(RefCell::into_inner)
        .unwrap_or_default();
    drop(store);
    if conn.wanted_database() {
        return Outcome::NeedsDatabase;
    }
    Outcome::Ran { answer, writes }
}

/// Makes a detached request's writes, in order, on `conn` (on SQLite, on
/// the writer thread); a rotation that lost the race for its token is
/// refused as `invalid_grant`, as on the ordinary path.
pub fn store(conn: &mut Conn, writes: Vec<Deferred>) -> AppResult<()> {
    for write in writes {
        match write {
            Deferred::Access(row) => db::tokens::store_access(conn, row)?,
            Deferred::Rotation(r) => {
                let client_id = r.access.client_id.clone();
                if !db::tokens::store_rotation(conn, r.old_key, r.now, r.access, r.refresh)? {
                    return lost_rotation(conn, &client_id, r.family);
                }
            }
            Deferred::RevokeFamily(family) => issuer::revoke_family_on(conn, family),
            #[cfg(feature = "mysql")]
            Deferred::OtpGrant(write) => {
                if otp_grant::store(conn, *write)? == otp_grant::Outcome::NotStored {
                    // `store_awaited` says so instead; nothing sends it here.
                    return Err(crate::error::AppError::Internal(
                        "an otp grant stored apart from its request".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A rotation that lost its token to another request: the family is
/// revoked (on `conn`) and the request refused.
pub fn lost_rotation(conn: &mut Conn, client_id: &str, family: Option<String>) -> AppResult<()> {
    if let Some(family) = family {
        issuer::revoke_reused(conn, client_id, family);
    }
    Err(issuer::already_used())
}

/// What `store_awaited` did.
#[cfg(feature = "mysql")]
pub enum Stored {
    /// Every write is made.
    Done,
    /// A rotation lost its token to another request: `lost_rotation` (on a
    /// thread with a connection) revokes the family and refuses.
    Lost {
        client_id: String,
        family: Option<String>,
    },
    /// The otp grant's proof did not spend, or its phone got a user since
    /// it was read: nothing changed; run the request the ordinary way, which
    /// says why.
    NotStored,
    /// Writes that are not batched: `store` them with a connection.
    Elsewhere(Vec<Deferred>),
}

/// MySQL: the writes of a request that made one batched write, as a row
/// of its batched statement; any other writes are left to `store`.
#[cfg(feature = "mysql")]
pub async fn store_awaited(
    db: &Awaited,
    writes: Vec<Deferred>,
    waiting: Waiting,
) -> AppResult<Stored> {
    let [write] = match <[Deferred; 1]>::try_from(writes) {
        Ok(one) => one,
        Err(writes) => return Ok(Stored::Elsewhere(writes)),
    };
    match write {
        Deferred::Access(row) => db.store_access(row, waiting).await?,
        Deferred::Rotation(r) => {
            let client_id = r.access.client_id.clone();
            let spent = db
                .store_rotation(r.old_key, r.now, r.access, r.refresh, waiting)
                .await?;
            if !spent {
                let family = r.family;
                return Ok(Stored::Lost { client_id, family });
            }
        }
        Deferred::OtpGrant(write) => {
            if db.store_otp_grant(*write, waiting).await? == otp_grant::Outcome::NotStored {
                return Ok(Stored::NotStored);
            }
        }
        other => return Ok(Stored::Elsewhere(vec![other])),
    }
    Ok(Stored::Done)
}
