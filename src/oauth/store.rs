//! The per-request bundle that oxide-auth's flows drive: one database
//! connection behind the `Registrar` (registrar.rs) and `Issuer` (issuer.rs)
//! traits. oxide-auth's primitives are synchronous and report failures as
//! `()`, so the store keeps the reason for the caller to map.

use std::cell::{RefCell, RefMut};

use super::clients::Client;
use super::detached::{Deferred, Prefetched};
use crate::core::Core;
use crate::db::Conn;
use crate::error::{AppError, AppResult};

/// An access token (and refresh token) as issued, for the response.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: i64,
    pub scope: String,
}

pub struct OAuthStore<'a> {
    pub(super) core: &'a Core,
    conn: RefCell<&'a mut Conn>,
    pub(super) now: i64,
    /// The client loaded by the last `check`, so a flow that checks again costs no query.
    pub(super) client: RefCell<Option<Client>>,
    /// Why the last primitive call failed, when it was not the client's fault.
    pub(super) failure: RefCell<Option<AppError>>,
    /// Whether `issue` adds a refresh token (not for client_credentials).
    pub(super) with_refresh: bool,
    /// Grants without a redirect (client_credentials) bind to a placeholder
    /// instead of requiring a registered redirect URI.
    pub(super) redirectless: bool,
    /// The family new tokens join (set by a refresh, an authorization code
    /// or an approval); `None` starts a new one.
    pub(super) family: RefCell<Option<String>>,
    /// The stored key (`token_hash`) of the refresh token a refresh rotates,
    /// set when `recover_refresh` finds it.
    pub(super) rotated_key: RefCell<Option<String>>,
    /// The authorization code (by hash) that `issue` spends in the same
    /// transaction as it stores the tokens.
    pub(super) spend_code: RefCell<Option<String>>,
    /// Whether the authorization request being approved named its redirect URI.
    pub(super) redirect_uri_sent: bool,
    /// The RFC 8707 resource the request named, checked against the client.
    pub(super) requested_resource: Option<String>,
    /// The `aud` of the tokens `issue` makes (and of a code `authorize`
    /// stores); `None` is the configured default audience.
    pub(super) audience: RefCell<Option<String>>,
    pub(super) issued: RefCell<Option<Issued>>,
    /// Set when the request runs without a connection (`oauth::detached`):
    /// the writes it would have made, for its caller to make afterwards.
    pub(super) deferred: Option<RefCell<Vec<Deferred>>>,
    /// What a detached request read beforehand.
    pub(super) prefetched: Prefetched,
    /// oxide-auth's client_credentials flow asks for an extension system; we have none.
    pub(super) no_extension: (),
}

impl<'a> OAuthStore<'a> {
    pub fn new(core: &'a Core, conn: &'a mut Conn) -> OAuthStore<'a> {
        OAuthStore {
            now: core.now(),
            core,
            conn: RefCell::new(conn),
            client: RefCell::new(None),
            failure: RefCell::new(None),
            with_refresh: true,
            redirectless: false,
            family: RefCell::new(None),
            rotated_key: RefCell::new(None),
            spend_code: RefCell::new(None),
            redirect_uri_sent: false,
            requested_resource: None,
            audience: RefCell::new(None),
            issued: RefCell::new(None),
            deferred: None,
            prefetched: Prefetched::default(),
            no_extension: (),
        }
    }

    pub fn conn(&self) -> RefMut<'_, &'a mut Conn> {
        self.conn.borrow_mut()
    }

    /// Keeps `write` for later if this store defers its writes; gives it
    /// back if it must be made now.
    pub(super) fn defer(&self, write: Deferred) -> Option<Deferred> {
        match &self.deferred {
            Some(deferred) => {
                deferred.borrow_mut().push(write);
                None
            }
            None => Some(write),
        }
    }

    pub(super) fn fail(&self, err: AppError) {
        *self.failure.borrow_mut() = Some(err);
    }

    pub fn take_failure(&self) -> Option<AppError> {
        self.failure.borrow_mut().take()
    }

    /// What the last `issue` produced; every flow that succeeded issued something.
    pub fn take_issued(&self) -> AppResult<Issued> {
        self.issued
            .borrow_mut()
            .take()
            .ok_or_else(|| AppError::Internal("issuer returned no token".into()))
    }

    pub fn client(&self) -> Option<Client> {
        self.client.borrow().clone()
    }
}
