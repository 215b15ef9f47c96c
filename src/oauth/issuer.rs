//! `Issuer` on the database: access tokens are signed JWTs recorded by `jti`;
//! refresh tokens are random, stored as SHA-256, rotated on every use, and
//! grouped in families so that reuse of a spent one revokes them all
//! (RFC 9700 §4.14.2).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use oxide_auth::primitives::grant::{Extensions, Grant};
use oxide_auth::primitives::issuer::{IssuedToken, Issuer, RefreshedToken, TokenType};
use url::Url;

use super::detached::{Deferred, Rotation};
use super::keys::{AccessClaims, KeyRing};
use super::store::{Issued, OAuthStore};
use super::OAuthError;
use crate::db::{self, tokens::AccessTokenRow, tokens::RefreshTokenRow, Conn, DbConn};
use crate::error::{AppError, AppResult};
use crate::secrets;

/// Grants from the otp, password and client_credentials grants have no
/// redirect URI, but oxide-auth's `Grant` needs one.
static NO_REDIRECT: LazyLock<Url> =
    LazyLock::new(|| Url::parse("urn:ietf:wg:oauth:2.0:oob").expect("constant URL parses"));

pub fn no_redirect() -> Url {
    NO_REDIRECT.clone()
}

pub(super) fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Scope tokens sorted and space-separated, so that output is stable.
pub(super) fn scope_string(scope: &oxide_auth::primitives::scope::Scope) -> String {
    let mut tokens: Vec<&str> = scope.iter().collect();
    tokens.sort_unstable();
    tokens.join(" ")
}

/// Signed tokens and the rows that record them, ready to be stored.
pub(super) struct Prepared {
    issued: Issued,
    claims: AccessClaims,
    access_row: AccessTokenRow,
    refresh_row: Option<RefreshTokenRow>,
}

impl Prepared {
    /// The same tokens for user `owner` instead, signed with `keys` (for a
    /// login whose phone got its user from a concurrent login meanwhile).
    pub(super) fn for_owner(mut self, keys: &KeyRing, owner: &str) -> AppResult<Prepared> {
        self.claims.sub = owner.to_string();
        let token = keys.sign(&self.claims)?;
        self.access_row.user_id = Some(owner.to_string());
        self.access_row.token_hash = Some(secrets::sha256_hex(token.as_bytes()));
        if let Some(row) = self.refresh_row.as_mut() {
            row.user_id = Some(owner.to_string());
        }
        self.issued.access_token = token;
        Ok(self)
    }

    pub(super) fn owner(&self) -> &str {
        &self.claims.sub
    }

    /// The rows that record these tokens.
    #[cfg(feature = "mysql")]
    pub(super) fn rows(&self) -> (&AccessTokenRow, Option<&RefreshTokenRow>) {
        (&self.access_row, self.refresh_row.as_ref())
    }
}

/// Stores prepared tokens inside the caller's write transaction, after
/// spending the authorization code (by hash), if any: an exchange happens
/// once or not at all, and tokens exist as soon as the code counts as used.
/// (A refresh spends its token in `db::tokens::store_rotation`.)
pub(super) fn store_tokens(
    conn: &mut DbConn,
    tokens: &Prepared,
    spend_code: Option<&str>,
    now: i64,
) -> AppResult<()> {
    if let Some(code_hash) = spend_code {
        if !db::codes_auth::consume(conn, code_hash, now)? {
            return Err(AppError::OAuth(OAuthError::invalid_grant(
                "the authorization code was already used",
            )));
        }
    }
    db::tokens::insert_access(conn, &tokens.access_row)?;
    if let Some(row) = &tokens.refresh_row {
        db::tokens::insert_refresh(conn, row)?;
    }
    Ok(())
}

impl OAuthStore<'_> {
    /// Signs an access token for `grant` (and makes a refresh token when the
    /// grant calls for one) without touching the database, so that tokens
    /// are signed before their transaction opens (on SQLite, outside the one
    /// writer's turn, but for the otp grant, which runs whole on the writer:
    /// `token::fits_on_writer`). `spend` is the stored key of the refresh
    /// token being rotated, recorded as the new one's parent.
    pub(super) fn prepare_tokens(&self, grant: &Grant, spend: Option<&str>) -> AppResult<Prepared> {
        let core = self.core;
        let now = self.now;
        let ttl = core.config.tokens.access_ttl;
        let scope = scope_string(&grant.scope);
        let jti = secrets::ordered_id(12);
        let resource = self.audience.borrow().clone();
        let claims = AccessClaims {
            iss: core.config.issuer.clone(),
            sub: grant.owner_id.clone(),
            aud: resource
                .clone()
                .unwrap_or_else(|| core.config.tokens.audience.clone()),
            exp: now + ttl,
            iat: now,
            jti: jti.clone(),
            client_id: grant.client_id.clone(),
            scope: scope.clone(),
        };
        let access_token = core.keys().sign(&claims)?;
        // client_credentials tokens have the client as owner and no user.
        let user_id = (grant.owner_id != grant.client_id).then(|| grant.owner_id.clone());
        let refresh_token = self.with_refresh.then(secrets::ordered_secret);
        let backend = core.config.database.backend;
        let family = refresh_token.as_ref().map(|_| {
            self.family
                .borrow()
                .clone()
                .unwrap_or_else(|| secrets::ordered_id(12))
        });
        let access_row = AccessTokenRow {
            jti,
            client_id: grant.client_id.clone(),
            user_id: user_id.clone(),
            scope: scope.clone(),
            family: family.clone(),
            issued_at: now,
            expires_at: now + ttl,
            revoked: false,
            audience: resource.clone(),
            token_hash: Some(secrets::sha256_hex(access_token.as_bytes())),
        };
        let refresh_row =
            refresh_token
                .as_ref()
                .zip(family)
                .map(|(token, family)| RefreshTokenRow {
                    token_hash: db::tokens::refresh_key(backend, token),
                    family,
                    parent_hash: spend.map(str::to_string),
                    client_id: grant.client_id.clone(),
                    user_id,
                    scope: scope.clone(),
                    issued_at: now,
                    expires_at: now + core.config.tokens.refresh_ttl,
                    used_at: None,
                    revoked: false,
                    resource,
                });
        Ok(Prepared {
            issued: Issued {
                access_token,
                refresh_token,
                expires_in: ttl,
                scope,
            },
            claims,
            access_row,
            refresh_row,
        })
    }

    /// Signs and stores tokens for `grant` in a transaction of their own,
    /// spending `spend` (a refresh token's stored key) or the authorization
    /// code set in `spend_code` in it.
    fn issue_tokens(&self, grant: &Grant, spend: Option<&str>) -> AppResult<Issued> {
        let tokens = self.prepare_tokens(grant, spend)?;
        let spend_code = self.spend_code.borrow_mut().take();
        let now = self.now;
        // The writes own what they store (on SQLite they run on the writer
        // thread, on MySQL a rotation or a client's token may be batched with
        // other requests'), so the rows move into them.
        let issued = match (spend, spend_code) {
            // A rotation (a refresh grant always makes a new refresh token).
            (Some(old), None) => {
                let Prepared {
                    issued,
                    access_row,
                    refresh_row,
                    ..
                } = tokens;
                let refresh = refresh_row.ok_or_else(|| {
                    AppError::Internal("a refresh without a new refresh token".into())
                })?;
                let rotation = Rotation {
                    old_key: old.to_string(),
                    now,
                    access: access_row,
                    refresh,
                    family: self.family.borrow().clone(),
                };
                if let Some(Deferred::Rotation(r)) =
                    self.defer(Deferred::Rotation(Box::new(rotation)))
                {
                    if !db::tokens::store_rotation(
                        &mut self.conn(),
                        r.old_key,
                        now,
                        r.access,
                        r.refresh,
                    )? {
                        return Err(already_used());
                    }
                }
                issued
            }
            (Some(_), Some(_)) => {
                return Err(AppError::Internal(
                    "a refresh token and an authorization code spent at once".into(),
                ))
            }
            // client_credentials: one INSERT, no transaction needed.
            (None, None) if tokens.refresh_row.is_none() => {
                if let Some(Deferred::Access(row)) = self.defer(Deferred::Access(tokens.access_row))
                {
                    db::tokens::store_access(&mut self.conn(), row)?;
                }
                tokens.issued
            }
            (None, spend_code) => {
                let tokens = self.conn().write_tx(move |conn| {
                    store_tokens(conn, &tokens, spend_code.as_deref(), now)?;
                    Ok::<_, AppError>(tokens)
                })?;
                tokens.issued
            }
        };
        Ok(self.record(issued))
    }

    /// Keeps what was issued for `take_issued`, and returns it.
    pub(super) fn record_issued(&self, tokens: Prepared) -> Issued {
        self.record(tokens.issued)
    }

    fn record(&self, issued: Issued) -> Issued {
        *self.issued.borrow_mut() = Some(issued.clone());
        issued
    }
    pub(super) fn revoke_family(&self, family: &str) {
        if let Some(Deferred::RevokeFamily(family)) =
            self.defer(Deferred::RevokeFamily(family.to_string()))
        {
            revoke_family_on(&mut self.conn(), family);
        }
    }
}

/// Revokes every token of `family`. A failure is logged, not returned: the
/// request is refused either way.
pub(super) fn revoke_family_on(conn: &mut Conn, family: String) {
    if let Err(e) = conn.write_tx(move |conn| db::tokens::revoke_family(conn, &family)) {
        tracing::error!(error = %e, "could not revoke a refresh token family");
    }
}

/// A refresh that lost the race for its token: the other use makes this
/// one a reuse, so the family goes.
pub(super) fn revoke_reused(conn: &mut Conn, client_id: &str, family: String) {
    tracing::warn!(client_id = %client_id, "refresh token used twice; family revoked");
    revoke_family_on(conn, family);
}

/// What a refresh that lost the race for its token is told.
pub(super) fn already_used() -> AppError {
    AppError::OAuth(OAuthError::invalid_grant(
        "the refresh token was already used",
    ))
}

impl Issuer for OAuthStore<'_> {
    fn issue(&mut self, grant: Grant) -> Result<IssuedToken, ()> {
        let issued = self.issue_tokens(&grant, None).map_err(|e| self.fail(e))?;
        Ok(IssuedToken {
            token: issued.access_token,
            refresh: issued.refresh_token,
            until: timestamp(self.now + issued.expires_in),
            token_type: TokenType::Bearer,
        })
    }

    fn refresh(&mut self, _refresh: &str, grant: Grant) -> Result<RefreshedToken, ()> {
        // oxide-auth recovered this token's grant first (`recover_refresh`),
        // which found the key its row is stored under.
        let Some(old_key) = self.rotated_key.borrow_mut().take() else {
            self.fail(AppError::Internal(
                "a refresh of a token never looked up".into(),
            ));
            return Err(());
        };
        match self.issue_tokens(&grant, Some(&old_key)) {
            Ok(issued) => Ok(RefreshedToken {
                token: issued.access_token,
                refresh: issued.refresh_token,
                until: timestamp(self.now + issued.expires_in),
                token_type: TokenType::Bearer,
            }),
            Err(e) => {
                if matches!(e, AppError::OAuth(_)) {
                    if let Some(family) = self.family.borrow().clone() {
                        revoke_reused(&mut self.conn(), &grant.client_id, family);
                    }
                }
                self.fail(e);
                Err(())
            }
        }
    }

    fn recover_token<'a>(&'a self, token: &'a str) -> Result<Option<Grant>, ()> {
        let core = self.core;
        let Some(claims) =
            core.keys()
                .verify(token, &core.config.issuer, &core.config.tokens.audience)
        else {
            return Ok(None);
        };
        let row = self
            .conn()
            .db()
            .and_then(|c| db::tokens::find_access(c, &claims.jti))
            .map_err(|e| self.fail(e.into()))?;
        match row {
            Some(row) if !row.revoked && row.expires_at > self.now => Ok(Some(Grant {
                owner_id: claims.sub,
                client_id: row.client_id,
                scope: row.scope.parse().map_err(|_| ())?,
                redirect_uri: no_redirect(),
                until: timestamp(row.expires_at),
                extensions: Extensions::new(),
            })),
            _ => Ok(None),
        }
    }

    fn recover_refresh<'a>(&'a self, token: &'a str) -> Result<Option<Grant>, ()> {
        if !secrets::plausible_token(token) {
            return Ok(None);
        }
        let row = match self.prefetched.refresh_row(token) {
            Some(row) => row,
            None => db::tokens::lookup_refresh(&mut self.conn(), token)
                .map_err(|e| self.fail(e.into()))?,
        };
        let Some(row) = row else { return Ok(None) };
        if row.revoked {
            return Ok(None);
        }
        if row.used_at.is_some() {
            tracing::warn!(client_id = %row.client_id, "spent refresh token presented again; family revoked");
            self.revoke_family(&row.family);
            return Ok(None);
        }
        if row.expires_at <= self.now {
            return Ok(None);
        }
        // RFC 8707 §2.2: a refresh may name the resource it was granted for, no other.
        if self.requested_resource.is_some() && self.requested_resource != row.resource {
            self.fail(AppError::OAuth(OAuthError::new(
                super::OAuthErrorKind::InvalidTarget,
                "the refresh token was not granted for this resource",
            )));
            return Err(());
        }
        *self.audience.borrow_mut() = row.resource.clone();
        *self.family.borrow_mut() = Some(row.family.clone());
        *self.rotated_key.borrow_mut() = Some(row.token_hash);
        Ok(Some(Grant {
            owner_id: row.user_id.unwrap_or_else(|| row.client_id.clone()),
            client_id: row.client_id,
            scope: row.scope.parse().map_err(|_| ())?,
            redirect_uri: no_redirect(),
            until: timestamp(row.expires_at),
            extensions: Extensions::new(),
        }))
    }
}
