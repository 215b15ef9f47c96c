//! The domain's error: what went wrong, in the contract's terms. The HTTP
//! layer maps each variant to a status and JSON body in one place
//! (`http::error`); nothing below it knows about status codes.

use crate::db::DbError;
use crate::oauth::OAuthError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not a valid phone number")]
    InvalidPhone,
    /// Bad input; `fields` maps field names (nested objects for nested fields) to messages.
    #[error("{description}")]
    InvalidRequest {
        description: String,
        fields: Option<serde_json::Value>,
    },
    #[error("the code is wrong, expired or already used")]
    InvalidCode { attempts_left: Option<i32> },
    #[error("too many wrong codes; ask for a new code")]
    TooManyAttempts,
    #[error("too many requests")]
    RateLimited { retry_after: i64 },
    #[error("the SMS provider could not send the code")]
    SmsUnavailable,
    #[error("the secret identifier is unknown, expired or already used")]
    InvalidSecretIdentifier,
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    #[error("not found")]
    NotFound,
    #[error("the request body is too large")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    OAuth(#[from] OAuthError),
    #[error("the database is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn invalid_request(description: impl Into<String>) -> AppError {
        AppError::InvalidRequest {
            description: description.into(),
            fields: None,
        }
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(m) => AppError::Unavailable(m),
            // A lost race or lock timeout: the client may retry.
            DbError::Contention(m) => AppError::Unavailable(m),
            DbError::Conflict(m) => AppError::Internal(format!("unexpected conflict: {m}")),
            DbError::Other(m) => AppError::Internal(m),
            DbError::Detached => AppError::Internal("no database connection here".into()),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
