//! The token endpoint: authenticates the client once, checks that it may use
//! the grant, and hands the request to the grant's flow. oxide-auth has no
//! hook for extension grants, so dispatch happens here.

use oxide_auth::primitives::registrar::{Registrar, RegistrarError};

use super::clients::{Client, GrantType};
use super::grants;
use super::request::{ClientCredentials, TokenRequest};
use super::store::{Issued, OAuthStore};
use super::{OAuthError, OAuthErrorKind};
use crate::core::Core;
use crate::db::Conn;
use crate::error::{AppError, AppResult};

/// Whether the grant's statements are all batched on MySQL (`db::batch`) in
/// the common case: client credentials, refresh, and the otp grant with a
/// proof that spends (introspection's are too). Measured for the otp grant:
/// MariaDB otp_token +29-36% on these threads, otp_login within noise.
pub fn statements_batched(request: &TokenRequest) -> bool {
    matches!(
        request.param("grant_type").and_then(GrantType::parse),
        Some(GrantType::ClientCredentials | GrantType::RefreshToken | GrantType::Otp)
    )
}

/// Whether the grant may run whole on SQLite's writer thread
/// (`AppState::on_writer`): the otp grant, which signs one token around its
/// writes. Measured in three pairs each: otp_login +15/+20/+31%, otp_token
/// +17/+25/-6%.
/// Client-credentials and refresh tokens were slower there (their signing
/// alone kept the one writer thread busy); they run detached instead
/// (`oauth::detached`: only their read and writes on the writer thread).
pub fn fits_on_writer(request: &TokenRequest) -> bool {
    matches!(
        request.param("grant_type").and_then(GrantType::parse),
        Some(GrantType::Otp)
    )
}

pub fn token(core: &Core, conn: &mut Conn, request: &TokenRequest) -> AppResult<Issued> {
    dispatch(&mut OAuthStore::new(core, conn), request)
}

/// `token` through a store set up by the caller (`oauth::detached`).
pub(super) fn dispatch(store: &mut OAuthStore<'_>, request: &TokenRequest) -> AppResult<Issued> {
    let grant_name = request
        .param("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let grant = GrantType::parse(grant_name).ok_or_else(|| {
        OAuthError::new(
            OAuthErrorKind::UnsupportedGrantType,
            format!("grant type {grant_name:?} is not supported"),
        )
    })?;
    let (client, credentials) = authenticate(store, request)?;
    if !client.allows(grant) {
        return Err(OAuthError::new(
            OAuthErrorKind::UnauthorizedClient,
            format!("this client may not use the {} grant", grant.as_str()),
        )
        .into());
    }
    store.requested_resource = client.resource(request.param("resource"))?;
    *store.audience.borrow_mut() = store.requested_resource.clone();
    match grant {
        GrantType::Otp => grants::otp(store, request, &client),
        GrantType::RefreshToken => grants::refresh(store, request, &credentials),
        GrantType::Password => grants::password(store, request, &client),
        GrantType::AuthorizationCode => grants::authorization_code(store, request, &client),
        GrantType::ClientCredentials if client.confidential => {
            grants::client_credentials(store, request, &credentials)
        }
        GrantType::ClientCredentials => Err(OAuthError::new(
            OAuthErrorKind::UnauthorizedClient,
            "client_credentials is for confidential clients only",
        )
        .into()),
    }
}

/// Authenticates the client of a token, introspection or revocation request
/// through the registrar: Basic or body credentials, or a public client's id.
pub(super) fn authenticate(
    store: &OAuthStore<'_>,
    request: &TokenRequest,
) -> AppResult<(Client, ClientCredentials)> {
    let credentials = request.credentials()?;
    match store.check(
        &credentials.client_id,
        credentials.secret.as_deref().map(str::as_bytes),
    ) {
        Ok(()) => {}
        Err(RegistrarError::Unspecified) => {
            return Err(OAuthError::invalid_client(credentials.basic).into())
        }
        Err(RegistrarError::PrimitiveError) => return Err(store_failure(store)),
    }
    let client = store
        .client()
        .ok_or_else(|| AppError::Internal("client vanished".into()))?;
    Ok((client, credentials))
}

/// The error a primitive recorded, or an internal error if it recorded none.
pub(super) fn store_failure(store: &OAuthStore<'_>) -> AppError {
    store
        .take_failure()
        .unwrap_or_else(|| AppError::Internal("an OAuth primitive failed".into()))
}
