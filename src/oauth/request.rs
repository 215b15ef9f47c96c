//! A token request as RFC 6749 reads it: form parameters that appear at most
//! once (§3.2), and client credentials from HTTP Basic (§2.3.1, whose id and
//! secret are form-urlencoded before base64) or from the body, never both.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::OAuthError;
use crate::phone;

/// Parameters that may hold a phone number: `phone` (otp grant) and
/// `username` (password grant, which takes a phone or a username).
const PHONE_PARAMS: [&str; 2] = ["phone", "username"];

#[derive(Debug)]
pub struct TokenRequest {
    params: HashMap<String, String>,
    basic: Option<(String, String)>,
    basic_malformed: bool,
    /// The E.164 form of each of `PHONE_PARAMS` that is a phone number, read
    /// with the rest of the request on the HTTP worker thread: libphonenumber
    /// keeps regex caches per thread that parses (about 1.5 MiB each), which
    /// on every thread of the blocking pool came to 20 MiB more RSS.
    phones: Vec<(&'static str, String)>,
}

/// Who the client says it is.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<String>,
    pub basic: bool,
}

impl TokenRequest {
    /// `body` is the raw form body; `authorization` the Authorization header,
    /// if sent once; `region` the one that national phone numbers are read in.
    pub fn parse(
        body: &[u8],
        authorization: Option<&str>,
        region: Option<phone::Region>,
    ) -> Result<TokenRequest, OAuthError> {
        let mut params = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(body) {
            if params.insert(key.to_string(), value.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {key:?} appears more than once"
                )));
            }
        }
        let (basic, basic_malformed) = match authorization {
            None => (None, false),
            Some(header) => match parse_basic(header) {
                Some(creds) => (Some(creds), false),
                None => (None, true),
            },
        };
        let phones = PHONE_PARAMS
            .into_iter()
            .filter_map(|key| {
                let value = params.get(key).filter(|v| !v.is_empty())?;
                Some((key, phone::normalize(value, region)?))
            })
            .collect();
        Ok(TokenRequest {
            params,
            basic,
            basic_malformed,
            phones,
        })
    }

    /// The E.164 form of parameter `key` (one of `PHONE_PARAMS`), if it is
    /// present and a valid phone number.
    pub fn phone_param(&self, key: &str) -> Option<&str> {
        debug_assert!(PHONE_PARAMS.contains(&key));
        self.phones
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, p)| p.as_str())
    }

    /// A parameter's value; an empty value counts as absent (RFC 6749 §3.1).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn credentials(&self) -> Result<ClientCredentials, OAuthError> {
        if self.basic_malformed {
            return Err(OAuthError::invalid_client(true));
        }
        let body_id = self.param("client_id");
        let body_secret = self.param("client_secret");
        match &self.basic {
            Some((id, secret)) => {
                if body_secret.is_some() {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method, not Basic and client_secret",
                    ));
                }
                if body_id.is_some_and(|b| b != id) {
                    return Err(OAuthError::invalid_request(
                        "client_id in the body differs from the Basic credentials",
                    ));
                }
                Ok(ClientCredentials {
                    client_id: id.clone(),
                    secret: Some(secret.clone()),
                    basic: true,
                })
            }
            None => match body_id {
                Some(id) => Ok(ClientCredentials {
                    client_id: id.to_string(),
                    secret: body_secret.map(str::to_string),
                    basic: false,
                }),
                None => Err(OAuthError::invalid_client(false)),
            },
        }
    }
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let id = form_decode(id)?;
    if id.is_empty() {
        return None;
    }
    Some((id, form_decode(secret)?))
}

fn form_decode(s: &str) -> Option<String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn duplicate_parameters_are_refused() {
        let err = TokenRequest::parse(b"grant_type=otp&grant_type=otp", None, None).unwrap_err();
        assert_eq!(err.kind, super::super::OAuthErrorKind::InvalidRequest);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let req = TokenRequest::parse(
            b"grant_type=otp",
            Some(&basic("my%20id", "a%2Bb+c%3A")),
            None,
        )
        .unwrap();
        let creds = req.credentials().unwrap();
        assert_eq!(creds.client_id, "my id");
        assert_eq!(creds.secret.as_deref(), Some("a+b c:"));
        assert!(creds.basic);
    }

    #[test]
    fn two_methods_are_refused() {
        let req = TokenRequest::parse(b"client_secret=x", Some(&basic("id", "s")), None).unwrap();
        assert!(req.credentials().is_err());
    }

    #[test]
    fn malformed_basic_is_invalid_client() {
        let req = TokenRequest::parse(b"", Some("Basic !!!"), None).unwrap();
        let err = req.credentials().unwrap_err();
        assert!(err.basic_auth_used);
    }

    #[test]
    fn body_credentials() {
        let req = TokenRequest::parse(b"client_id=abc&client_secret=s", None, None).unwrap();
        let creds = req.credentials().unwrap();
        assert_eq!(
            (
                creds.client_id.as_str(),
                creds.secret.as_deref(),
                creds.basic
            ),
            ("abc", Some("s"), false)
        );
    }
}
