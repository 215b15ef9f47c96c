//! Client applications as the OAuth layer sees them: grant types, scopes,
//! redirect URIs, and the secret policy.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use oxide_auth::primitives::registrar::{PasswordPolicy, RegistrarError};

use super::OAuthError;
use crate::db::{self, clients::ClientRow, Conn};
use crate::error::{AppError, AppResult};
use crate::secrets;

/// RFC 6749 §4.5 extension grant, under its absolute-URI name.
pub const OTP_GRANT_URN: &str = "urn:phonekey:params:oauth:grant-type:otp";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantType {
    Otp,
    RefreshToken,
    AuthorizationCode,
    ClientCredentials,
    Password,
}

impl GrantType {
    pub const ALL: [GrantType; 5] = [
        GrantType::Otp,
        GrantType::RefreshToken,
        GrantType::AuthorizationCode,
        GrantType::ClientCredentials,
        GrantType::Password,
    ];

    pub fn parse(name: &str) -> Option<GrantType> {
        Some(match name {
            "otp" | OTP_GRANT_URN => GrantType::Otp,
            "refresh_token" => GrantType::RefreshToken,
            "authorization_code" => GrantType::AuthorizationCode,
            "client_credentials" => GrantType::ClientCredentials,
            "password" => GrantType::Password,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::Otp => "otp",
            GrantType::RefreshToken => "refresh_token",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub confidential: bool,
    secret_hash: Option<String>,
    pub grant_types: Vec<GrantType>,
    pub redirect_uris: Vec<String>,
    /// Sorted, so that scope strings come out in a stable order.
    pub scopes: Vec<String>,
    pub default_scope: Vec<String>,
    pub created_at: i64,
    pub disabled: bool,
    /// RFC 8707 resources (absolute URIs) this client may name as a token's audience.
    pub resources: Vec<String>,
}

impl From<ClientRow> for Client {
    fn from(row: ClientRow) -> Client {
        Client {
            grant_types: split(&row.grant_types)
                .filter_map(|g| GrantType::parse(&g))
                .collect(),
            redirect_uris: split(&row.redirect_uris).collect(),
            scopes: sorted(split(&row.scopes)),
            default_scope: sorted(split(&row.default_scope)),
            confidential: row.client_type == "confidential",
            secret_hash: row.secret_hash,
            id: row.client_id,
            name: row.name,
            created_at: row.created_at,
            disabled: row.disabled_at.is_some(),
            resources: split(&row.resources).collect(),
        }
    }
}

fn split(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split_whitespace().map(str::to_string)
}

fn sorted(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.collect();
    v.sort();
    v.dedup();
    v
}

impl Client {
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Checks a presented secret. Public clients present none (or an empty one).
    pub fn authenticate(&self, secret: Option<&[u8]>) -> bool {
        if self.disabled {
            return false;
        }
        match (&self.secret_hash, secret) {
            (None, None) => !self.confidential,
            (None, Some(s)) => !self.confidential && s.is_empty(),
            (Some(stored), Some(s)) => Sha256Secrets.check(&self.id, s, stored.as_bytes()).is_ok(),
            (Some(_), None) => false,
        }
    }

    /// The audience a token gets for an RFC 8707 `resource` parameter: none
    /// means the default audience; anything else must be one of the client's
    /// resources (`invalid_target`).
    pub fn resource(&self, requested: Option<&str>) -> Result<Option<String>, OAuthError> {
        let Some(requested) = requested else {
            return Ok(None);
        };
        if !is_resource_uri(requested) {
            return Err(OAuthError::new(
                super::OAuthErrorKind::InvalidTarget,
                "resource must be an absolute URI without a fragment",
            ));
        }
        if !self.resources.iter().any(|r| r == requested) {
            return Err(OAuthError::new(
                super::OAuthErrorKind::InvalidTarget,
                format!("this client may not ask for tokens for {requested:?}"),
            ));
        }
        Ok(Some(requested.to_string()))
    }

    /// The scope a token gets: the request's if the client may have all of it,
    /// else the client's default when none was asked for. Sorted.
    pub fn grant_scope(&self, requested: Option<&str>) -> Result<Vec<String>, OAuthError> {
        let Some(requested) = requested else {
            return Ok(self.default_scope.clone());
        };
        let asked = sorted(split(requested));
        if let Some(bad) = asked.iter().find(|s| !self.scopes.contains(s)) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {bad:?} is not allowed for this client"
            )));
        }
        Ok(asked)
    }
}

/// How long a process trusts a client row it read: deleting or disabling a
/// client takes effect on every instance within this time.
pub const CLIENT_CACHE_FOR: Duration = Duration::from_secs(2);
const CLIENT_CACHE_MAX: usize = 10_000;

/// Client rows are read on every token, introspection and revocation call
/// and change rarely, so each process keeps them for `CLIENT_CACHE_FOR`
/// (measured: the lookup was 12% of a client_credentials token's server
/// time on SQLite, and one of four statements on MySQL).
#[derive(Default)]
pub struct ClientCache {
    entries: RwLock<HashMap<String, (Client, Instant)>>,
}

impl ClientCache {
    pub fn get(&self, client_id: &str) -> Option<Client> {
        // A panic cannot leave the map half-updated: every write is one insert or clear.
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(client_id)
            .filter(|(_, at)| at.elapsed() < CLIENT_CACHE_FOR)
            .map(|(client, _)| client.clone())
    }

    pub fn put(&self, client: &Client) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CLIENT_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < CLIENT_CACHE_FOR);
            if entries.len() >= CLIENT_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(client.id.clone(), (client.clone(), Instant::now()));
    }
}

/// Client secrets are 256-bit random values made by the server, not
/// passwords: SHA-256 is enough, and a slow hash would slow every token call.
pub struct Sha256Secrets;

impl PasswordPolicy for Sha256Secrets {
    fn store(&self, _client_id: &str, passphrase: &[u8]) -> Vec<u8> {
        secrets::sha256_hex(passphrase).into_bytes()
    }

    fn check(
        &self,
        _client_id: &str,
        passphrase: &[u8],
        stored: &[u8],
    ) -> Result<(), RegistrarError> {
        let presented = secrets::sha256_hex(passphrase);
        let stored = std::str::from_utf8(stored).map_err(|_| RegistrarError::Unspecified)?;
        if secrets::ct_eq(&presented, stored) {
            Ok(())
        } else {
            Err(RegistrarError::Unspecified)
        }
    }
}

/// What an operator asks for when registering a client.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub confidential: bool,
    pub grant_types: Vec<GrantType>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    /// RFC 8707 resources it may ask tokens for.
    pub resources: Vec<String>,
}

/// Registers a client; returns it and, for confidential clients, the secret,
/// which is shown once and stored only as a hash.
pub fn create(conn: &mut Conn, spec: &NewClient, now: i64) -> AppResult<(Client, Option<String>)> {
    validate(spec)?;
    let id = secrets::random_urlsafe(24);
    let secret = spec.confidential.then(|| secrets::random_urlsafe(32));
    let secret_hash = secret
        .as_ref()
        .map(|s| String::from_utf8_lossy(&Sha256Secrets.store(&id, s.as_bytes())).into_owned());
    let mut grant_types = spec.grant_types.clone();
    grant_types.sort();
    grant_types.dedup();
    let scopes = sorted(
        spec.scopes
            .iter()
            .flat_map(|s| split(s))
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let row = ClientRow {
        client_id: id,
        secret_hash,
        name: spec.name.trim().to_string(),
        client_type: if spec.confidential {
            "confidential"
        } else {
            "public"
        }
        .to_string(),
        grant_types: grant_types
            .iter()
            .map(|g| g.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        redirect_uris: spec.redirect_uris.join(" "),
        scopes: scopes.join(" "),
        default_scope: scopes.join(" "),
        created_at: now,
        disabled_at: None,
        resources: spec.resources.join(" "),
    };
    let row = conn.write_tx(move |conn| {
        db::clients::insert(conn, &row)?;
        Ok::<_, AppError>(row)
    })?;
    Ok((Client::from(row), secret))
}

/// RFC 8707 §2: an absolute URI without a fragment.
fn is_resource_uri(uri: &str) -> bool {
    matches!(url::Url::parse(uri), Ok(u) if u.fragment().is_none())
        && !uri.contains(char::is_whitespace)
}

fn validate(spec: &NewClient) -> AppResult<()> {
    let bad = |m: &str| Err(AppError::invalid_request(m));
    if spec.name.trim().is_empty() || spec.name.len() > 255 {
        return bad("name must be 1 to 255 characters");
    }
    if spec.grant_types.is_empty() {
        return bad("at least one grant type is required");
    }
    if !spec.confidential && spec.grant_types.contains(&GrantType::ClientCredentials) {
        return bad("client_credentials needs a confidential client");
    }
    if spec.grant_types.contains(&GrantType::AuthorizationCode) && spec.redirect_uris.is_empty() {
        return bad("authorization_code needs at least one redirect URI");
    }
    for uri in &spec.redirect_uris {
        match url::Url::parse(uri) {
            Ok(u) if u.fragment().is_none() && !uri.contains(char::is_whitespace) => {}
            _ => {
                return bad(&format!(
                    "{uri:?} is not an absolute URI without a fragment"
                ))
            }
        }
    }
    if let Some(bad_uri) = spec.resources.iter().find(|r| !is_resource_uri(r)) {
        return bad(&format!(
            "resource {bad_uri:?} is not an absolute URI without a fragment"
        ));
    }
    for scope in spec.scopes.iter().flat_map(|s| s.split_whitespace()) {
        if scope
            .parse::<oxide_auth::primitives::scope::Scope>()
            .is_err()
        {
            return bad(&format!("{scope:?} is not a valid scope token"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(confidential: bool) -> Client {
        let secret_hash =
            confidential.then(|| String::from_utf8(Sha256Secrets.store("c", b"s3cret")).unwrap());
        Client::from(ClientRow {
            client_id: "c".into(),
            secret_hash,
            name: "n".into(),
            client_type: if confidential {
                "confidential"
            } else {
                "public"
            }
            .into(),
            grant_types: "otp refresh_token".into(),
            redirect_uris: String::new(),
            scopes: "write read".into(),
            default_scope: "read".into(),
            created_at: 0,
            disabled_at: None,
            resources: "https://api.example/".into(),
        })
    }

    #[test]
    fn confidential_needs_the_secret() {
        let c = client(true);
        assert!(c.authenticate(Some(b"s3cret")));
        assert!(!c.authenticate(Some(b"s3cre")));
        assert!(!c.authenticate(Some(b"")));
        assert!(!c.authenticate(None));
    }

    #[test]
    fn public_takes_no_secret() {
        let c = client(false);
        assert!(c.authenticate(None));
        assert!(c.authenticate(Some(b"")));
        assert!(!c.authenticate(Some(b"x")));
    }

    #[test]
    fn scope_policy() {
        let c = client(true);
        assert_eq!(c.grant_scope(None).unwrap(), vec!["read"]);
        assert_eq!(
            c.grant_scope(Some("write read")).unwrap(),
            vec!["read", "write"]
        );
        assert_eq!(
            c.grant_scope(Some("admin")).unwrap_err().kind,
            super::super::OAuthErrorKind::InvalidScope
        );
    }

    #[test]
    fn resources() {
        let c = client(true);
        assert_eq!(c.resource(None).unwrap(), None);
        assert_eq!(
            c.resource(Some("https://api.example/")).unwrap().as_deref(),
            Some("https://api.example/")
        );
        for bad in ["https://other.example/", "api", "https://api.example/#x"] {
            assert_eq!(
                c.resource(Some(bad)).unwrap_err().kind,
                super::super::OAuthErrorKind::InvalidTarget
            );
        }
    }

    #[test]
    fn both_grant_names() {
        assert_eq!(GrantType::parse("otp"), Some(GrantType::Otp));
        assert_eq!(GrantType::parse(OTP_GRANT_URN), Some(GrantType::Otp));
        assert_eq!(GrantType::parse("implicit"), None);
    }
}
