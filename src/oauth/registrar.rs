//! `Registrar` on the database: client lookup and authentication, exact
//! redirect URI matching, and our scope policy (the stock `negotiate`
//! ignores the requested scope).

use std::borrow::Cow;

use oxide_auth::primitives::registrar::{
    BoundClient, ClientUrl, ExactUrl, PreGrant, RegisteredUrl, Registrar, RegistrarError,
};
use oxide_auth::primitives::scope::Scope;

use super::clients::Client;
use super::store::OAuthStore;
use crate::db;
use crate::error::AppError;
use crate::secrets;

impl OAuthStore<'_> {
    /// The client, from the per-request cache, the process's client cache
    /// or the database.
    pub(super) fn load_client(&self, client_id: &str) -> Result<Client, RegistrarError> {
        if let Some(client) = self.client.borrow().as_ref().filter(|c| c.id == client_id) {
            return Ok(client.clone());
        }
        if !secrets::plausible_token(client_id) {
            return Err(RegistrarError::Unspecified);
        }
        if let Some(client) = self.core.clients.get(client_id) {
            *self.client.borrow_mut() = Some(client.clone());
            return Ok(client);
        }
        let found = self
            .conn()
            .db()
            .and_then(|c| db::clients::find(c, client_id));
        match found {
            Ok(Some(row)) => {
                let client = Client::from(row);
                self.core.clients.put(&client);
                *self.client.borrow_mut() = Some(client.clone());
                Ok(client)
            }
            Ok(None) => Err(RegistrarError::Unspecified),
            Err(e) => {
                self.fail(e.into());
                Err(RegistrarError::PrimitiveError)
            }
        }
    }
}

impl Registrar for OAuthStore<'_> {
    fn bound_redirect<'a>(&self, bound: ClientUrl<'a>) -> Result<BoundClient<'a>, RegistrarError> {
        let client = self.load_client(&bound.client_id)?;
        if client.disabled {
            return Err(RegistrarError::Unspecified);
        }
        if self.redirectless && bound.redirect_uri.is_none() {
            return Ok(BoundClient {
                client_id: bound.client_id,
                redirect_uri: Cow::Owned(RegisteredUrl::Semantic(super::issuer::no_redirect())),
            });
        }
        // Exact string match (RFC 9700 §4.1.3), except for the port of a
        // loopback URI (RFC 8252 §7.3); without a requested URI the client
        // must have exactly one registered (RFC 6749 §3.1.2.3).
        let uri = match &bound.redirect_uri {
            Some(requested) => client
                .redirect_uris
                .iter()
                .any(|u| {
                    u.as_str() == requested.as_str() || same_loopback_uri(u, &requested.to_url())
                })
                .then(|| requested.as_str().to_string()),
            None if client.redirect_uris.len() == 1 => client.redirect_uris.first().cloned(),
            None => None,
        }
        .ok_or(RegistrarError::Unspecified)?;
        let exact = ExactUrl::new(uri).map_err(|_| RegistrarError::Unspecified)?;
        Ok(BoundClient {
            client_id: bound.client_id,
            redirect_uri: Cow::Owned(RegisteredUrl::Exact(exact)),
        })
    }

    fn negotiate(
        &self,
        bound: BoundClient,
        scope: Option<Scope>,
    ) -> Result<PreGrant, RegistrarError> {
        let client = self.load_client(&bound.client_id)?;
        let requested = scope.map(|s| s.to_string());
        let granted = client.grant_scope(requested.as_deref()).map_err(|e| {
            self.fail(AppError::OAuth(e));
            RegistrarError::Unspecified
        })?;
        Ok(PreGrant {
            client_id: bound.client_id.into_owned(),
            redirect_uri: bound.redirect_uri.into_owned(),
            scope: granted
                .join(" ")
                .parse()
                .map_err(|_| RegistrarError::Unspecified)?,
        })
    }

    fn check(&self, client_id: &str, passphrase: Option<&[u8]>) -> Result<(), RegistrarError> {
        let client = self.load_client(client_id)?;
        if client.authenticate(passphrase) {
            Ok(())
        } else {
            Err(RegistrarError::Unspecified)
        }
    }
}

/// A native app's loopback redirect URI matches whatever port it listens on
/// (RFC 8252 §7.3); everything else must be identical.
fn same_loopback_uri(registered: &str, requested: &url::Url) -> bool {
    let Ok(mut registered) = url::Url::parse(registered) else {
        return false;
    };
    let loopback = matches!(
        registered.host(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
    ) || matches!(registered.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || registered.host_str() == Some("localhost");
    if registered.scheme() != "http" || !loopback || registered.set_port(requested.port()).is_err()
    {
        return false;
    }
    registered.as_str() == requested.as_str()
}

#[cfg(test)]
mod tests {
    use super::same_loopback_uri;

    #[test]
    fn loopback_ports_are_free_and_nothing_else_is() {
        let req = |u: &str| url::Url::parse(u).unwrap();
        assert!(same_loopback_uri(
            "http://127.0.0.1/cb",
            &req("http://127.0.0.1:53211/cb")
        ));
        assert!(same_loopback_uri(
            "http://[::1]:80/cb",
            &req("http://[::1]:9/cb")
        ));
        assert!(same_loopback_uri(
            "http://localhost:1/cb",
            &req("http://localhost:2/cb")
        ));
        assert!(!same_loopback_uri(
            "http://127.0.0.1/cb",
            &req("http://127.0.0.1:5/other")
        ));
        assert!(!same_loopback_uri(
            "https://127.0.0.1/cb",
            &req("https://127.0.0.1:5/cb")
        ));
        assert!(!same_loopback_uri(
            "http://example.com/cb",
            &req("http://example.com:81/cb")
        ));
        assert!(!same_loopback_uri(
            "http://127.0.0.1/cb",
            &req("http://127.0.0.2:5/cb")
        ));
    }
}
