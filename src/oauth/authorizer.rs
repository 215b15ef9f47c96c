//! `Authorizer` on the database: authorization codes are random, stored as
//! SHA-256 with the grant (extensions included, where PKCE keeps its
//! challenge), live 60 s, and are consumed by a conditional update, so that
//! of two racing exchanges exactly one gets the grant.

use std::collections::BTreeMap;

use oxide_auth::primitives::authorizer::Authorizer;
use oxide_auth::primitives::grant::{Extensions, Grant, Value};
use serde::{Deserialize, Serialize};

use super::issuer::{scope_string, timestamp};
use super::store::OAuthStore;
use crate::db::{self, codes_auth::AuthCodeRow};
use crate::error::AppError;
use crate::secrets;

/// RFC 6749 §4.1.2 recommends at most 10 minutes; a minute is plenty.
pub const CODE_TTL: i64 = 60;

#[derive(Serialize, Deserialize)]
struct StoredExtension {
    private: bool,
    value: Option<String>,
}

fn encode_extensions(extensions: &Extensions) -> String {
    let mut map = BTreeMap::new();
    for (key, value) in extensions.public() {
        map.insert(
            key.to_string(),
            StoredExtension {
                private: false,
                value: value.map(str::to_string),
            },
        );
    }
    for (key, value) in extensions.private() {
        map.insert(
            key.to_string(),
            StoredExtension {
                private: true,
                value: value.map(str::to_string),
            },
        );
    }
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

pub(super) fn decode_extensions(json: &str) -> Option<Extensions> {
    let map: BTreeMap<String, StoredExtension> = serde_json::from_str(json).ok()?;
    let mut extensions = Extensions::new();
    for (key, stored) in map {
        let value = if stored.private {
            Value::private(stored.value)
        } else {
            Value::public(stored.value)
        };
        extensions.set_raw(key, value);
    }
    Some(extensions)
}

impl Authorizer for OAuthStore<'_> {
    fn authorize(&mut self, grant: Grant) -> Result<String, ()> {
        let code = secrets::random_urlsafe(32);
        let row = AuthCodeRow {
            code_hash: secrets::sha256_hex(code.as_bytes()),
            client_id: grant.client_id.clone(),
            user_id: grant.owner_id.clone(),
            scope: scope_string(&grant.scope),
            redirect_uri: grant.redirect_uri.to_string(),
            extensions: encode_extensions(&grant.extensions),
            created_at: self.now,
            expires_at: self.now + CODE_TTL,
            used_at: None,
            family: self
                .family
                .borrow()
                .clone()
                .unwrap_or_else(|| secrets::ordered_id(12)),
            redirect_uri_sent: self.redirect_uri_sent,
            resource: self.audience.borrow().clone(),
        };
        self.conn()
            .write_tx(move |c| db::codes_auth::insert(c, &row))
            .map_err(|e| self.fail(e.into()))?;
        Ok(code)
    }

    fn extract(&mut self, code: &str) -> Result<Option<Grant>, ()> {
        if !secrets::plausible_token(code) {
            return Ok(None);
        }
        let hash = secrets::sha256_hex(code.as_bytes());
        let now = self.now;
        let won = self
            .conn()
            .write_tx({
                let hash = hash.clone();
                move |c| db::codes_auth::consume(c, &hash, now)
            })
            .map_err(|e| self.fail(e.into()))?;
        if !won {
            return Ok(None);
        }
        let row = self
            .conn()
            .db()
            .and_then(|c| db::codes_auth::find(c, &hash))
            .map_err(|e| self.fail(e.into()))?;
        let Some(row) = row else { return Ok(None) };
        let (Ok(scope), Ok(redirect_uri), Some(extensions)) = (
            row.scope.parse(),
            url::Url::parse(&row.redirect_uri),
            decode_extensions(&row.extensions),
        ) else {
            self.fail(AppError::Internal(
                "a stored authorization code is corrupt".into(),
            ));
            return Err(());
        };
        Ok(Some(Grant {
            owner_id: row.user_id,
            client_id: row.client_id,
            scope,
            redirect_uri,
            until: timestamp(row.expires_at),
            extensions,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_survive_storage() {
        let mut e = Extensions::new();
        e.set_raw("pkce".into(), Value::private(Some("S256:abc".into())));
        e.set_raw("flag".into(), Value::public(None));
        let back = decode_extensions(&encode_extensions(&e)).unwrap();
        assert_eq!(back, e);
    }
}
