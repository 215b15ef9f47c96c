//! Grants that are ours (otp) or whose oxide-auth flow needs our request
//! adapter (refresh_token). Each ends in the same `Issuer::issue`/`refresh`.

use std::borrow::Cow;

use oxide_auth::code_grant::client_credentials as cc_flow;
use oxide_auth::code_grant::error::AccessTokenErrorType;
use oxide_auth::code_grant::extensions::Pkce;
use oxide_auth::code_grant::refresh as refresh_flow;
use oxide_auth::primitives::grant::{Extensions, Grant};
use oxide_auth::primitives::issuer::Issuer;
use oxide_auth::primitives::registrar::{BoundClient, RegisteredUrl, Registrar};

use super::authorize::is_pkce_string;
use super::authorizer::decode_extensions;
use super::clients::{Client, GrantType};
#[cfg(feature = "mysql")]
use super::issuer::Prepared;
use super::issuer::{no_redirect, store_tokens, timestamp};
use super::request::{ClientCredentials, TokenRequest};
use super::store::{Issued, OAuthStore};
use super::token::store_failure;
use super::{OAuthError, OAuthErrorKind};
use crate::error::{AppError, AppResult};
use crate::{db, otp, secrets, users};

/// `grant_type=otp`: a phone plus proof of it, either a verification ticket
/// (`secret_identifier`) or the SMS `code` itself. A phone without proof is
/// refused: the seed's phone-only call let any client log in as anyone.
pub fn otp(
    store: &mut OAuthStore<'_>,
    request: &TokenRequest,
    client: &Client,
) -> AppResult<Issued> {
    let core = store.core;
    request
        .param("phone")
        .ok_or_else(|| OAuthError::invalid_request("phone is required"))?;
    let phone = request
        .phone_param("phone")
        .ok_or_else(|| OAuthError::invalid_request("phone is not a valid phone number"))?;
    let proof = match (request.param("secret_identifier"), request.param("code")) {
        (Some(ticket), None) => otp::Proof::Ticket(ticket),
        (None, Some(code)) => otp::Proof::Code(code),
        (Some(_), Some(_)) => {
            return Err(
                OAuthError::invalid_request("send secret_identifier or code, not both").into(),
            )
        }
        (None, None) => {
            return Err(OAuthError::invalid_request(
                "a proof of the phone is required: secret_identifier (from verifycode) or code",
            )
            .into())
        }
    };
    // The scope is settled before the proof is spent, so a bad scope costs no code.
    let scope = client.grant_scope(request.param("scope"))?;

    // One transaction spends the proof, creates the user if need be and
    // stores the tokens: a proof is spent exactly when tokens exist, and a
    // login costs one commit. The token is signed before it, for the phone's
    // user as read now or for the user about to be created.
    let now = store.now;
    let known = match store.prefetched.phone_user(phone) {
        Some(known) => known,
        None => db::users::lookup_user_id_by_phone(&mut store.conn(), phone)?,
    };
    let auto_create = core.config.otp.auto_create_users;
    // An id is drawn only for a user that may be created.
    let new_id = (known.is_none() && auto_create).then(users::new_user_id);
    let Some(user_id) = known.or_else(|| new_id.clone()) else {
        // As with a wrong proof, the attempt counts: the proof is spent.
        otp::consume_proof(&mut store.conn(), core, phone, proof, now, |_| Ok(()))
            .map_err(as_invalid_grant)?;
        return Err(no_user());
    };
    let grant = user_grant(store, client, user_id, scope)?;
    store.with_refresh = client.allows(GrantType::RefreshToken);
    let tokens = store.prepare_tokens(&grant, None)?;
    // On MySQL the common case is stored with concurrent grants, or alone by
    // one procedure call; what it leaves unstored takes the path below,
    // which says why.
    #[cfg(feature = "mysql")]
    let tokens = match store_common_case(store, phone, &proof, new_id.as_deref(), tokens)? {
        Ok(tokens) => return Ok(store.record_issued(tokens)),
        Err(tokens) => tokens,
    };
    let (keys, new_phone) = (core.keys(), phone.to_string());
    let tokens = otp::consume_proof(&mut store.conn(), core, phone, proof, now, move |conn| {
        let tokens = match new_id {
            // Nobody had this phone when it was read above: create its user,
            // or take the one a concurrent first login made since (and sign
            // for that one).
            Some(id) => {
                let owner = users::user_for_phone_as(conn, &new_phone, Some(id), now)?.id;
                if owner == tokens.owner() {
                    tokens
                } else {
                    tokens.for_owner(&keys, &owner)?
                }
            }
            // The user read above, not read again (one statement fewer): one
            // deleted since then gets tokens, as a moment earlier it would have.
            None => tokens,
        };
        store_tokens(conn, &tokens, None, now)?;
        Ok(tokens)
    })
    .map_err(as_invalid_grant)?;
    Ok(store.record_issued(tokens))
}

/// The otp grant's write in its common case on MySQL (`db::otp_grant`: one
/// procedure call, or a share of a batch with concurrent grants): the tokens back in `Ok` once
/// stored, in `Err` when the step-by-step path must run (another backend, a
/// malformed proof, or nothing was stored).
#[cfg(feature = "mysql")]
fn store_common_case(
    store: &OAuthStore<'_>,
    phone: &str,
    proof: &otp::Proof<'_>,
    new_id: Option<&str>,
    tokens: Prepared,
) -> AppResult<Result<Prepared, Prepared>> {
    use super::detached::Deferred;
    use db::otp_grant::{GrantWrite, Outcome};
    use db::proofs::ProofKey;
    let (core, now) = (store.core, store.now);
    if core.config.database.backend != db::Backend::Mysql {
        return Ok(Err(tokens));
    }
    let Some(hash) = otp::proof_hash(core, phone, proof) else {
        return Ok(Err(tokens));
    };
    let proof = match proof {
        otp::Proof::Code(_) => ProofKey::Code {
            hash,
            max_attempts: core.config.otp.max_attempts,
        },
        otp::Proof::Ticket(_) => ProofKey::Ticket { hash },
    };
    let (access, refresh) = tokens.rows();
    let write = GrantWrite {
        phone: phone.to_string(),
        proof,
        now,
        new_user: new_id.map(|id| users::phone_user_rows(id.to_string(), phone, now)),
        access: access.clone(),
        refresh: refresh.cloned(),
    };
    let Some(Deferred::OtpGrant(write)) = store.defer(Deferred::OtpGrant(Box::new(write))) else {
        // Kept for later, as if stored: a detached request's caller stores it.
        return Ok(Ok(tokens));
    };
    Ok(match db::otp_grant::store(&mut store.conn(), *write)? {
        Outcome::Stored => Ok(tokens),
        Outcome::NotStored => Err(tokens),
    })
}

fn no_user() -> AppError {
    OAuthError::invalid_grant("no user has this phone; create one with /api/v1/user/ first").into()
}

/// The grant a user's tokens carry, after the registrar's scope negotiation.
fn user_grant(
    store: &OAuthStore<'_>,
    client: &Client,
    user_id: String,
    scope: Vec<String>,
) -> AppResult<Grant> {
    let bound = BoundClient {
        client_id: Cow::Borrowed(client.id.as_str()),
        redirect_uri: Cow::Owned(RegisteredUrl::Semantic(no_redirect())),
    };
    let scope = scope.join(" ").parse().ok();
    let pre = store
        .negotiate(bound, scope)
        .map_err(|_| store_failure(store))?;
    Ok(Grant {
        owner_id: user_id,
        client_id: pre.client_id,
        scope: pre.scope,
        redirect_uri: pre.redirect_uri.into_url(),
        until: timestamp(store.now + store.core.config.tokens.access_ttl),
        extensions: Extensions::new(),
    })
}

/// Issues tokens to `user_id` through the registrar's scope negotiation and
/// the issuer, as every user grant ends.
fn issue_for_user(
    store: &mut OAuthStore<'_>,
    client: &Client,
    user_id: String,
    scope: Vec<String>,
) -> AppResult<Issued> {
    let grant = user_grant(store, client, user_id, scope)?;
    store.with_refresh = client.allows(GrantType::RefreshToken);
    store.issue(grant).map_err(|()| store_failure(store))?;
    store.take_issued()
}

/// `grant_type=password` (RFC 6749 §4.3; legacy, for clients that allow it):
/// a username or a phone, and the user's password. Unknown users and wrong
/// passwords get the same answer after the same Argon2 work.
pub fn password(
    store: &mut OAuthStore<'_>,
    request: &TokenRequest,
    client: &Client,
) -> AppResult<Issued> {
    let login = request
        .param("username")
        .ok_or_else(|| OAuthError::invalid_request("username is required"))?;
    let password = request
        .param("password")
        .ok_or_else(|| OAuthError::invalid_request("password is required"))?;
    let scope = client.grant_scope(request.param("scope"))?;
    let user = {
        let mut held = store.conn();
        let conn = held.db()?;
        let by_phone = match request.phone_param("username") {
            Some(p) => db::users::find_by_phone(conn, p)?,
            None => None,
        };
        match by_phone {
            Some(user) => Some(user),
            None => db::users::find_by_username(conn, login)?,
        }
    };
    let stored = user
        .as_ref()
        .filter(|u| u.is_active)
        .and_then(|u| u.password_hash.clone());
    let verified = users::verify_password(stored.as_deref(), password);
    let Some(user) = user.filter(|_| verified) else {
        return Err(OAuthError::invalid_grant("the username or password is wrong").into());
    };
    issue_for_user(store, client, user.id, scope)
}

/// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6). The
/// code is spent in the transaction that stores the tokens, so of racing
/// exchanges one wins; any later use of the code revokes what it issued.
pub fn authorization_code(
    store: &mut OAuthStore<'_>,
    request: &TokenRequest,
    client: &Client,
) -> AppResult<Issued> {
    let code = request
        .param("code")
        .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let bad_code =
        || OAuthError::invalid_grant("the authorization code is invalid, expired or used");
    if !secrets::plausible_token(code) {
        return Err(bad_code().into());
    }
    let hash = secrets::sha256_hex(code.as_bytes());
    let row = crate::db::codes_auth::find(store.conn().db()?, &hash)?;
    let Some(row) = row.filter(|r| r.client_id == client.id) else {
        return Err(bad_code().into());
    };
    let reused = |store: &OAuthStore<'_>| {
        tracing::warn!(client_id = %client.id, "authorization code used twice; its tokens are revoked");
        store.revoke_family(&row.family);
    };
    if row.used_at.is_some() {
        reused(store);
        return Err(bad_code().into());
    }
    if row.expires_at <= store.now {
        return Err(bad_code().into());
    }
    // RFC 6749 §4.1.3: required and identical if the authorization request had it.
    match request.param("redirect_uri") {
        Some(uri) if uri != row.redirect_uri => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            )
            .into())
        }
        None if row.redirect_uri_sent => {
            return Err(OAuthError::invalid_request(
                "redirect_uri is required: the authorization request had one",
            )
            .into())
        }
        _ => {}
    }
    // RFC 8707 §2.2: the token request may repeat the code's resource, no other.
    if store.requested_resource.is_some() && store.requested_resource != row.resource {
        return Err(OAuthError::new(
            OAuthErrorKind::InvalidTarget,
            "the authorization code was not granted for this resource",
        )
        .into());
    }
    *store.audience.borrow_mut() = row.resource.clone();
    let mut extensions = decode_extensions(&row.extensions)
        .ok_or_else(|| AppError::Internal("a stored authorization code is corrupt".into()))?;
    let challenge = extensions.remove(&Pkce::required());
    let verifier = request.param("code_verifier");
    if challenge.is_none() && verifier.is_some() {
        // RFC 9700 §4.8.2: a verifier without a challenge is a downgrade attempt.
        return Err(OAuthError::invalid_grant(
            "code_verifier sent, but the authorization request had no code_challenge",
        )
        .into());
    }
    let pkce = if client.confidential {
        Pkce::optional()
    } else {
        Pkce::required()
    };
    if verifier.is_some_and(|v| !is_pkce_string(v))
        || pkce.verify(challenge, verifier.map(Into::into)).is_err()
    {
        return Err(OAuthError::invalid_grant(
            "the code_verifier does not match the code_challenge",
        )
        .into());
    }
    let grant = Grant {
        owner_id: row.user_id,
        client_id: row.client_id,
        scope: row
            .scope
            .parse()
            .map_err(|_| AppError::Internal("a stored scope does not parse".into()))?,
        redirect_uri: no_redirect(),
        until: timestamp(row.expires_at),
        extensions,
    };
    *store.spend_code.borrow_mut() = Some(hash);
    *store.family.borrow_mut() = Some(row.family.clone());
    if store.issue(grant).is_err() {
        let err = store_failure(store);
        if matches!(err, AppError::OAuth(_)) {
            // Lost the race for the code: the winner's tokens are revoked too.
            reused(store);
        }
        return Err(err);
    }
    store.take_issued()
}

/// The token endpoint speaks RFC 6749 codes only: every failed proof is invalid_grant.
fn as_invalid_grant(err: AppError) -> AppError {
    match err {
        AppError::InvalidCode { .. }
        | AppError::TooManyAttempts
        | AppError::InvalidSecretIdentifier => {
            OAuthError::invalid_grant("the proof is wrong, expired or already used").into()
        }
        other => other,
    }
}

/// `grant_type=refresh_token` through oxide-auth's refresh flow.
pub fn refresh(
    store: &mut OAuthStore<'_>,
    request: &TokenRequest,
    credentials: &ClientCredentials,
) -> AppResult<Issued> {
    let adapter = RefreshRequest {
        request,
        client_id: &credentials.client_id,
        secret: credentials.secret.as_deref().unwrap_or(""),
    };
    match refresh_flow::refresh(store, &adapter) {
        Ok(_) => store.take_issued(),
        Err(refresh_flow::Error::Invalid(mut description)) => {
            let kind = error_kind(description.description().kind());
            let message = match kind {
                OAuthErrorKind::InvalidRequest => "refresh_token is required",
                OAuthErrorKind::InvalidScope => "the scope exceeds the one originally granted",
                _ => "the refresh token is invalid, expired, revoked or already used",
            };
            Err(OAuthError::new(kind, message).into())
        }
        Err(refresh_flow::Error::Unauthorized(..)) => {
            Err(OAuthError::invalid_client(credentials.basic).into())
        }
        Err(refresh_flow::Error::Primitive) => Err(store_failure(store)),
    }
}

fn error_kind(kind: AccessTokenErrorType) -> OAuthErrorKind {
    match kind {
        AccessTokenErrorType::InvalidRequest => OAuthErrorKind::InvalidRequest,
        AccessTokenErrorType::InvalidScope => OAuthErrorKind::InvalidScope,
        AccessTokenErrorType::UnsupportedGrantType => OAuthErrorKind::UnsupportedGrantType,
        AccessTokenErrorType::UnauthorizedClient => OAuthErrorKind::UnauthorizedClient,
        AccessTokenErrorType::InvalidClient => OAuthErrorKind::InvalidClient,
        _ => OAuthErrorKind::InvalidGrant,
    }
}

/// `grant_type=client_credentials` through oxide-auth's flow: the client is
/// the resource owner (`sub` is its id) and gets no refresh token (RFC 6749 §4.4.3).
pub fn client_credentials(
    store: &mut OAuthStore<'_>,
    request: &TokenRequest,
    credentials: &ClientCredentials,
) -> AppResult<Issued> {
    store.with_refresh = false;
    store.redirectless = true;
    let adapter = CredentialsRequest {
        request,
        client_id: &credentials.client_id,
        secret: credentials.secret.as_deref().unwrap_or(""),
    };
    let failed = |store: &OAuthStore<'_>, err: cc_flow::Error| -> AppError {
        match err {
            cc_flow::Error::Invalid(mut description) => {
                let kind = error_kind(description.description().kind());
                OAuthError::new(kind, "the client credentials request is invalid").into()
            }
            cc_flow::Error::Unauthorized(..) => {
                OAuthError::invalid_client(credentials.basic).into()
            }
            // Ignore: the registrar refused to bind or negotiate; it recorded why.
            cc_flow::Error::Ignore | cc_flow::Error::Primitive(_) => store_failure(store),
        }
    };
    let pending = cc_flow::client_credentials(store, &adapter).map_err(|e| failed(store, e))?;
    pending
        .issue(store, credentials.client_id.clone(), false)
        .map_err(|e| failed(store, e))?;
    store.take_issued()
}

impl cc_flow::Endpoint for OAuthStore<'_> {
    fn registrar(&self) -> &dyn Registrar {
        self
    }

    fn issuer(&mut self) -> &mut dyn Issuer {
        self
    }

    fn extension(&mut self) -> &mut dyn cc_flow::Extension {
        &mut self.no_extension
    }
}

/// The client authenticated in the dispatcher; the flow sees the same
/// credentials once, as if from Basic, and never the body copies.
struct CredentialsRequest<'a> {
    request: &'a TokenRequest,
    client_id: &'a str,
    secret: &'a str,
}

impl cc_flow::Request for CredentialsRequest<'_> {
    fn valid(&self) -> bool {
        true
    }

    fn authorization(&self) -> Option<(Cow<'_, str>, Cow<'_, [u8]>)> {
        Some((
            Cow::Borrowed(self.client_id),
            Cow::Borrowed(self.secret.as_bytes()),
        ))
    }

    fn scope(&self) -> Option<Cow<'_, str>> {
        self.request.param("scope").map(Cow::Borrowed)
    }

    fn grant_type(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed("client_credentials"))
    }

    fn extension(&self, key: &str) -> Option<Cow<'_, str>> {
        match key {
            "client_id" | "client_secret" => None,
            _ => self.request.param(key).map(Cow::Borrowed),
        }
    }
}

impl refresh_flow::Endpoint for OAuthStore<'_> {
    fn registrar(&self) -> &dyn Registrar {
        self
    }

    fn issuer(&mut self) -> &mut dyn Issuer {
        self
    }
}

/// Hands the already-parsed request to the refresh flow. The client
/// authenticated in the dispatcher, by Basic or body; the flow checks again
/// (from the store's cache) and matches the token's client against it.
struct RefreshRequest<'a> {
    request: &'a TokenRequest,
    client_id: &'a str,
    secret: &'a str,
}

impl refresh_flow::Request for RefreshRequest<'_> {
    fn valid(&self) -> bool {
        true
    }

    fn refresh_token(&self) -> Option<Cow<'_, str>> {
        self.request.param("refresh_token").map(Cow::Borrowed)
    }

    fn scope(&self) -> Option<Cow<'_, str>> {
        self.request.param("scope").map(Cow::Borrowed)
    }

    fn grant_type(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed("refresh_token"))
    }

    fn authorization(&self) -> Option<(Cow<'_, str>, Cow<'_, [u8]>)> {
        Some((
            Cow::Borrowed(self.client_id),
            Cow::Borrowed(self.secret.as_bytes()),
        ))
    }

    fn extension(&self, key: &str) -> Option<Cow<'_, str>> {
        self.request.param(key).map(Cow::Borrowed)
    }
}
