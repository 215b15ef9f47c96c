//! The authorization request of the code flow (RFC 6749 §4.1, RFC 7636):
//! checked in the RFC's order, so that nothing is sent to a redirect URI
//! before the client and that URI are trusted, and turned into an
//! authorization code when the resource owner approves. The HTML pages that
//! carry it are in `http::authorize`; nothing here knows about HTTP.

use std::collections::HashMap;

use oxide_auth::code_grant::extensions::Pkce;
use oxide_auth::primitives::authorizer::Authorizer;
use oxide_auth::primitives::grant::{Extensions, Grant};
use oxide_auth::primitives::registrar::{ClientUrl, ExactUrl, Registrar, RegistrarError};
use url::Url;

use super::authorizer::CODE_TTL;
use super::clients::{Client, GrantType};
use super::issuer::timestamp;
use super::store::OAuthStore;
use crate::error::AppError;
use crate::secrets;

/// Why an authorization request is refused.
#[derive(Debug)]
pub enum Refusal {
    /// The client or the redirect URI cannot be trusted: the error is shown
    /// to the resource owner and never sent anywhere (RFC 6749 §4.1.2.1).
    Untrusted(String),
    /// Sent back to the client: the redirect URI with `error` and `state`.
    Redirect(Url),
    Failed(AppError),
}

impl From<AppError> for Refusal {
    fn from(err: AppError) -> Self {
        Refusal::Failed(err)
    }
}

/// An authorization request that passed every check.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client: Client,
    pub redirect_uri: Url,
    pub redirect_uri_sent: bool,
    pub scope: Vec<String>,
    /// RFC 8707: the resource the tokens are for (their `aud`).
    pub resource: Option<String>,
    pub state: Option<String>,
    /// The PKCE challenge, encoded by oxide-auth, for the grant's extensions.
    pkce: Option<oxide_auth::primitives::grant::Value>,
    /// The query string it came from, which the HTML forms carry along.
    pub query: String,
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters (an S256 challenge is 43).
pub fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Checks an authorization request given as its query string.
pub fn validate(store: &OAuthStore<'_>, query: &str) -> Result<AuthRequest, Refusal> {
    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        params
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    let single = |name: &str| -> Result<Option<&str>, String> {
        match params.get(name).map(Vec::as_slice) {
            None => Ok(None),
            Some([one]) if one.is_empty() => Ok(None),
            Some([one]) => Ok(Some(one.as_str())),
            Some(_) => Err(format!("{name} is given more than once")),
        }
    };

    // Until the client and its redirect URI are known, errors stay here.
    let client_id = single("client_id")
        .map_err(Refusal::Untrusted)?
        .ok_or_else(|| Refusal::Untrusted("The request names no client (client_id).".into()))?;
    let requested_uri = single("redirect_uri").map_err(Refusal::Untrusted)?;
    let requested_url = match requested_uri {
        Some(uri) => Some(
            ExactUrl::new(uri.to_string())
                .map_err(|_| Refusal::Untrusted("The redirect_uri is not a valid URL.".into()))?,
        ),
        None => None,
    };
    let bound = store.bound_redirect(ClientUrl {
        client_id: client_id.into(),
        redirect_uri: requested_url.map(std::borrow::Cow::Owned),
    });
    let bound = match bound {
        Ok(bound) => bound,
        Err(RegistrarError::PrimitiveError) => {
            return Err(Refusal::Failed(store.take_failure().unwrap_or_else(|| {
                AppError::Internal("client lookup failed".into())
            })))
        }
        Err(RegistrarError::Unspecified) => {
            return Err(Refusal::Untrusted(match store.load_client(client_id) {
                Ok(client) if !client.disabled && requested_uri.is_some() => {
                    "The redirect_uri is not registered for this application.".into()
                }
                Ok(client) if !client.disabled => {
                    "The request must name one of the application's redirect URIs.".into()
                }
                _ => "The application is unknown or disabled.".into(),
            }))
        }
    };
    let redirect_uri = bound.redirect_uri.to_url();
    let client = store
        .load_client(client_id)
        .map_err(|_| AppError::Internal("client vanished".into()))?;

    // From here on, errors go back to the client.
    let state = single("state").ok().flatten().map(str::to_string);
    let refuse = |error: &str, description: &str| {
        Refusal::Redirect(error_redirect(
            &redirect_uri,
            error,
            description,
            state.as_deref(),
            &store.core.config.issuer,
        ))
    };
    let get = |name: &str| single(name).map_err(|e| refuse("invalid_request", &e));
    if params.get("state").is_some_and(|v| v.len() > 1) {
        return Err(refuse("invalid_request", "state is given more than once"));
    }
    match get("response_type")? {
        None => return Err(refuse("invalid_request", "response_type is required")),
        Some("code") => {}
        Some(_) => {
            return Err(refuse(
                "unsupported_response_type",
                "only response_type=code is supported",
            ))
        }
    }
    if !client.allows(GrantType::AuthorizationCode) {
        return Err(refuse(
            "unauthorized_client",
            "this client may not use the authorization code flow",
        ));
    }
    let challenge = get("code_challenge")?;
    let method = get("code_challenge_method")?;
    if challenge.is_some_and(|c| !is_pkce_string(c)) {
        return Err(refuse(
            "invalid_request",
            "code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]",
        ));
    }
    // Public clients must use PKCE; S256 only, so no downgrade to plain.
    let pkce = if client.confidential {
        Pkce::optional()
    } else {
        Pkce::required()
    };
    let pkce = match (challenge, method) {
        (None, Some(_)) => {
            return Err(refuse(
                "invalid_request",
                "code_challenge_method without code_challenge",
            ))
        }
        (None, None) if !client.confidential => {
            return Err(refuse(
                "invalid_request",
                "PKCE is required for public clients: send code_challenge with code_challenge_method=S256",
            ))
        }
        (Some(_), None | Some("plain")) => {
            return Err(refuse(
                "invalid_request",
                "code_challenge_method must be S256",
            ))
        }
        (challenge, method) => pkce
            .challenge(method.map(Into::into), challenge.map(Into::into))
            .map_err(|()| refuse("invalid_request", "code_challenge_method must be S256"))?,
    };
    let scope = client
        .grant_scope(get("scope")?)
        .map_err(|e| refuse("invalid_scope", &e.description))?;
    let resource = client
        .resource(get("resource")?)
        .map_err(|e| refuse("invalid_target", &e.description))?;

    Ok(AuthRequest {
        client,
        redirect_uri,
        redirect_uri_sent: requested_uri.is_some(),
        scope,
        resource,
        state,
        pkce,
        query: query.to_string(),
    })
}

/// The resource owner approved: stores an authorization code for `user_id`
/// and returns where to send the browser.
pub fn approve(
    store: &mut OAuthStore<'_>,
    request: &AuthRequest,
    user_id: &str,
) -> Result<Url, AppError> {
    let mut extensions = Extensions::new();
    if let Some(pkce) = &request.pkce {
        extensions.set(&Pkce::required(), pkce.clone());
    }
    let grant = Grant {
        owner_id: user_id.to_string(),
        client_id: request.client.id.clone(),
        scope: request
            .scope
            .join(" ")
            .parse()
            .map_err(|_| AppError::Internal("a granted scope does not parse".into()))?,
        redirect_uri: request.redirect_uri.clone(),
        until: timestamp(store.now + CODE_TTL),
        extensions,
    };
    *store.family.borrow_mut() = Some(secrets::ordered_id(12));
    store.redirect_uri_sent = request.redirect_uri_sent;
    *store.audience.borrow_mut() = request.resource.clone();
    let code = store.authorize(grant).map_err(|()| {
        store
            .take_failure()
            .unwrap_or_else(|| AppError::Internal("could not store the code".into()))
    })?;
    let mut to = request.redirect_uri.clone();
    {
        let mut pairs = to.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(state) = &request.state {
            pairs.append_pair("state", state);
        }
        // RFC 9207: tells the client which server answered.
        pairs.append_pair("iss", &store.core.config.issuer);
    }
    Ok(to)
}

/// The resource owner said no (RFC 6749 §4.1.2.1 `access_denied`).
pub fn deny(request: &AuthRequest, issuer: &str) -> Url {
    error_redirect(
        &request.redirect_uri,
        "access_denied",
        "the resource owner denied the request",
        request.state.as_deref(),
        issuer,
    )
}

fn error_redirect(
    redirect_uri: &Url,
    error: &str,
    description: &str,
    state: Option<&str>,
    issuer: &str,
) -> Url {
    let mut to = redirect_uri.clone();
    {
        let mut pairs = to.query_pairs_mut();
        pairs.append_pair("error", error);
        pairs.append_pair("error_description", description);
        if let Some(state) = state {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("iss", issuer);
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_strings() {
        assert!(is_pkce_string(&"a".repeat(43)));
        assert!(is_pkce_string(&"A-._~9".repeat(20)));
        assert!(!is_pkce_string(&"a".repeat(42)));
        assert!(!is_pkce_string(&"a".repeat(129)));
        assert!(!is_pkce_string(&format!("{}+", "a".repeat(43))));
    }
}
