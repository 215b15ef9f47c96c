//! Client-credentials and refresh requests run without a database
//! connection, for SQLite: the one read a refresh needs (its token's row) is
//! made first, where the writes run, the flow and the signing then run with
//! no connection at all (on the HTTP worker, so no blocking thread is woken
//! and waited for), and the writes the flow would have made are kept and
//! made afterwards, again where writes run. Every write is as conditional
//! as it is on the ordinary path (a rotation spends its token only if
//! nobody has), so a row read a moment earlier changes nothing.
//!
//! A request whose flow wanted anything else from the database (a client
//! not in the cache, say) has written nothing and is run again the ordinary
//! way.

use std::cell::RefCell;

use super::clients::GrantType;
use super::issuer;
use super::request::TokenRequest;
use super::store::{Issued, OAuthStore};
use super::token;
use crate::core::Core;
use crate::db::tokens::{AccessTokenRow, RefreshTokenRow};
use crate::db::{self, Conn};
use crate::error::AppResult;
use crate::secrets;

/// A write a detached request would have made.
pub enum Deferred {
    /// A client's new access token.
    Access(AccessTokenRow),
    /// A refresh token spent (the one stored under `old_key`) and its
    /// successors stored; if someone spent it first, `family` is revoked.
    Rotation {
        old_key: String,
        now: i64,
        access: AccessTokenRow,
        refresh: Box<RefreshTokenRow>,
        family: Option<String>,
    },
    /// A spent refresh token came back: its family is revoked.
    RevokeFamily(String),
}

/// What a request needs read before it can run detached.
pub enum Read {
    Nothing,
    RefreshToken(String),
}

/// Whether `request` may run detached, and what it needs read first.
pub fn plan(request: &TokenRequest) -> Option<Read> {
    match request.param("grant_type").and_then(GrantType::parse)? {
        GrantType::ClientCredentials => Some(Read::Nothing),
        GrantType::RefreshToken => Some(match request.param("refresh_token") {
            Some(token) if secrets::plausible_token(token) => Read::RefreshToken(token.into()),
            // Refused without a lookup.
            _ => Read::Nothing,
        }),
        _ => None,
    }
}

/// What `read` found, for `run`.
pub struct Prefetched(Option<(String, Option<RefreshTokenRow>)>);

/// Makes the read a request needs (on SQLite, on the writer thread, whose
/// page cache is warm: `Conn::read_for_write`).
pub fn read(conn: &mut Conn, read: Read) -> AppResult<Prefetched> {
    Ok(Prefetched(match read {
        Read::Nothing => None,
        Read::RefreshToken(token) => {
            let row = db::tokens::find_refresh(conn.db()?, &token)?;
            Some((token, row))
        }
    }))
}

pub enum Outcome {
    /// The answer, to be given once `writes` are made (`store`).
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
    store.prefetched = read.0;
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

/// Makes a detached request's writes, in order (on SQLite, on the writer
/// thread); a rotation that lost the race for its token is refused as
/// `invalid_grant`, as on the ordinary path.
pub fn store(conn: &mut Conn, writes: Vec<Deferred>) -> AppResult<()> {
    for write in writes {
        match write {
            Deferred::Access(row) => db::tokens::store_access(conn, row)?,
            Deferred::Rotation {
                old_key,
                now,
                access,
                refresh,
                family,
            } => {
                let client_id = access.client_id.clone();
                if !db::tokens::store_rotation(conn, old_key, now, access, *refresh)? {
                    if let Some(family) = family {
                        issuer::revoke_reused(conn, &client_id, family);
                    }
                    return Err(issuer::already_used());
                }
            }
            Deferred::RevokeFamily(family) => issuer::revoke_family_on(conn, family),
        }
    }
    Ok(())
}
