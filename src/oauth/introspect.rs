//! RFC 7662 token introspection and RFC 7009 revocation, for access tokens
//! (JWTs, looked up by `jti`) and refresh tokens (looked up by hash).

use serde_json::{json, Value};

use super::request::TokenRequest;
use super::store::OAuthStore;
use super::token::authenticate;
use super::OAuthError;
use crate::core::Core;
use crate::db::tokens::WithUsername;
use crate::db::{self, Conn};
use crate::error::AppResult;
use crate::secrets;

enum Found {
    Access(WithUsername<db::tokens::AccessTokenRow>),
    Refresh(WithUsername<db::tokens::RefreshTokenRow>),
}

/// Finds the token, trying the hinted kind first (RFC 7662 §2.1, RFC 7009 §2.1:
/// a wrong hint only costs a second look-up).
fn find(core: &Core, conn: &mut Conn, token: &str, hint: Option<&str>) -> AppResult<Option<Found>> {
    if token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(None);
    }
    let access = |conn: &mut Conn| -> AppResult<Option<Found>> {
        let Some(jti) = core.keys().claimed_jti(token) else {
            return Ok(None);
        };
        let Some(found) = db::tokens::lookup_access_with_username(conn, &jti)? else {
            return Ok(None);
        };
        // The token must be the one issued under this jti, byte for byte: its
        // stored hash says so for a fraction of what verifying the signature
        // costs. Tokens from before hashes were stored are verified instead.
        let genuine = match &found.0.token_hash {
            Some(hash) => secrets::ct_eq(hash, &secrets::sha256_hex(token.as_bytes())),
            None => core.keys().verified_jti(token).as_deref() == Some(jti.as_str()),
        };
        Ok(genuine.then_some(Found::Access(found)))
    };
    let refresh = |conn: &mut Conn| -> AppResult<Option<Found>> {
        if token.contains('.') {
            return Ok(None);
        }
        Ok(db::tokens::find_refresh_with_username(conn.db()?, token)?.map(Found::Refresh))
    };
    if hint == Some("refresh_token") {
        if let Some(found) = refresh(conn)? {
            return Ok(Some(found));
        }
        return access(conn);
    }
    if let Some(found) = access(conn)? {
        return Ok(Some(found));
    }
    refresh(conn)
}

/// `POST /o/introspect/`: for authenticated confidential clients (resource
/// servers). Anything not active — revoked, expired, spent, unknown, not
/// ours — is `{"active": false}` and nothing more.
pub fn introspect(core: &Core, conn: &mut Conn, request: &TokenRequest) -> AppResult<Value> {
    let store = OAuthStore::new(core, conn);
    let (client, credentials) = authenticate(&store, request)?;
    if !client.confidential {
        return Err(OAuthError::invalid_client(credentials.basic).into());
    }
    let token = request
        .param("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let now = core.now();
    let mut conn = store.conn();
    let found = find(core, &mut conn, token, request.param("token_type_hint"))?;
    let inactive = json!({ "active": false });
    let issuer = &core.config.issuer;
    Ok(match found {
        Some(Found::Access((row, username))) if !row.revoked && row.expires_at > now => {
            let sub = row.user_id.clone().unwrap_or_else(|| row.client_id.clone());
            let mut info = json!({
                "active": true, "token_type": "Bearer", "scope": row.scope, "client_id": row.client_id,
                "sub": sub, "exp": row.expires_at, "iat": row.issued_at, "iss": issuer,
                "aud": row.audience.as_deref().unwrap_or(&core.config.tokens.audience), "jti": row.jti,
            });
            if let Some(name) = username {
                info["username"] = json!(name);
            }
            info
        }
        Some(Found::Refresh((row, username)))
            if !row.revoked && row.used_at.is_none() && row.expires_at > now =>
        {
            let sub = row.user_id.clone().unwrap_or_else(|| row.client_id.clone());
            let mut info = json!({
                "active": true, "token_type": "refresh_token", "scope": row.scope, "client_id": row.client_id,
                "sub": sub, "exp": row.expires_at, "iat": row.issued_at, "iss": issuer,
            });
            if let Some(name) = username {
                info["username"] = json!(name);
            }
            info
        }
        _ => inactive,
    })
}

/// `POST /o/revoke_token/`: revokes a token of the requesting client. A
/// refresh token takes its whole family with it, access tokens included.
/// Unknown tokens and other clients' tokens answer the same 200 (RFC 7009 §2.2).
pub fn revoke(core: &Core, conn: &mut Conn, request: &TokenRequest) -> AppResult<()> {
    let store = OAuthStore::new(core, conn);
    let (client, _) = authenticate(&store, request)?;
    let token = request
        .param("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let mut conn = store.conn();
    match find(core, &mut conn, token, request.param("token_type_hint"))? {
        Some(Found::Refresh((row, _))) if row.client_id == client.id => {
            conn.write_tx(move |c| db::tokens::revoke_family(c, &row.family))?;
        }
        Some(Found::Access((row, _))) if row.client_id == client.id => {
            conn.write_tx(move |c| db::tokens::revoke_access(c, &row.jti))?;
        }
        _ => {}
    }
    Ok(())
}
