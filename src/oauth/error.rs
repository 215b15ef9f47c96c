//! RFC 6749 §5.2 errors (and RFC 8707's `invalid_target`): the only codes
//! the token endpoint speaks.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorKind {
    /// Missing, repeated or malformed parameter; more than one authentication method.
    InvalidRequest,
    /// Client authentication failed (unknown client, wrong secret, disabled).
    InvalidClient,
    /// The grant (code, ticket, refresh token, password) is invalid, expired,
    /// revoked, or was issued to another client.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The server does not know this grant type.
    UnsupportedGrantType,
    /// The scope is unknown, malformed, or exceeds what the client may ask for.
    InvalidScope,
    /// RFC 8707: the `resource` is malformed or not one the client may name.
    InvalidTarget,
}

impl OAuthErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            OAuthErrorKind::InvalidRequest => "invalid_request",
            OAuthErrorKind::InvalidClient => "invalid_client",
            OAuthErrorKind::InvalidGrant => "invalid_grant",
            OAuthErrorKind::UnauthorizedClient => "unauthorized_client",
            OAuthErrorKind::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorKind::InvalidScope => "invalid_scope",
            OAuthErrorKind::InvalidTarget => "invalid_target",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub kind: OAuthErrorKind,
    pub description: String,
    /// RFC 6749 §5.2: when the client tried HTTP Basic, invalid_client is a
    /// 401 with `WWW-Authenticate`.
    pub basic_auth_used: bool,
}

impl OAuthError {
    pub fn new(kind: OAuthErrorKind, description: impl Into<String>) -> OAuthError {
        OAuthError {
            kind,
            description: description.into(),
            basic_auth_used: false,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::InvalidGrant, description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorKind::InvalidScope, description)
    }

    pub fn invalid_client(basic_auth_used: bool) -> OAuthError {
        OAuthError {
            kind: OAuthErrorKind::InvalidClient,
            description: "client authentication failed".into(),
            basic_auth_used,
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.description)
    }
}

impl std::error::Error for OAuthError {}
