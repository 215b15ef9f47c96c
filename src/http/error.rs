//! The one place where errors become HTTP: status, JSON body
//! (`{"error", "error_description", ...}`, RFC 6749 §5.2 shape) and headers.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::error::AppError;
use crate::oauth::OAuthErrorKind;

impl AppError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::InvalidPhone => (StatusCode::BAD_REQUEST, "invalid_phone"),
            AppError::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            AppError::InvalidCode { .. } => (StatusCode::BAD_REQUEST, "invalid_code"),
            AppError::TooManyAttempts => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            AppError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AppError::SmsUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "sms_unavailable"),
            AppError::InvalidSecretIdentifier => {
                (StatusCode::BAD_REQUEST, "invalid_secret_identifier")
            }
            AppError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            AppError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            // RFC 6749 §5.2: invalid_client is 401; the rest of the token errors are 400.
            AppError::OAuth(e) if e.kind == OAuthErrorKind::InvalidClient => {
                (StatusCode::UNAUTHORIZED, e.kind.code())
            }
            AppError::OAuth(e) => (StatusCode::BAD_REQUEST, e.kind.code()),
            AppError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }

    fn description(&self) -> String {
        match self {
            AppError::OAuth(e) => e.description.clone(),
            AppError::PayloadTooLarge { limit } => {
                format!("the request body is larger than {limit} bytes")
            }
            AppError::Unavailable(_) => "the database is unavailable; try again shortly".into(),
            AppError::Internal(_) => "an internal error occurred".into(),
            other => other.to_string(),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        match self {
            AppError::Internal(detail) => tracing::error!(%detail, "internal error"),
            AppError::Unavailable(detail) => tracing::warn!(%detail, "dependency unavailable"),
            _ => {}
        }
        let mut body = Map::new();
        body.insert("error".into(), json!(code));
        body.insert("error_description".into(), json!(self.description()));
        let mut response = HttpResponse::build(status);
        match self {
            AppError::InvalidRequest {
                fields: Some(fields),
                ..
            } => {
                body.insert("fields".into(), fields.clone());
            }
            AppError::Conflict { field } => {
                body.insert("fields".into(), json!({ *field: "already taken" }));
            }
            AppError::InvalidCode {
                attempts_left: Some(n),
            } => {
                body.insert("attempts_left".into(), json!(n));
            }
            AppError::RateLimited { retry_after } => {
                body.insert("retry_after".into(), json!(retry_after));
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            AppError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            AppError::OAuth(e) => {
                response
                    .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
                response.insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")));
                if e.kind == OAuthErrorKind::InvalidClient && e.basic_auth_used {
                    response.insert_header((
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"phonekey\", charset=\"UTF-8\""),
                    ));
                }
            }
            _ => {}
        }
        response.json(Value::Object(body))
    }
}
