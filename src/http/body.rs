//! Request bodies: read up to a limit, then parsed as JSON or as a form into
//! one JSON object, so that handlers see the same shape either way.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::error::{AppError, AppResult};

pub const BODY_LIMIT: usize = 64 * 1024;

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read(mut payload: web::Payload, limit: usize) -> AppResult<web::Bytes> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| AppError::invalid_request(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(AppError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
}

/// The body's media type; none counts as a form (what curl -d sends without a header is a form).
pub fn kind(req: &HttpRequest) -> AppResult<Kind> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(Kind::Form);
    };
    let value = value
        .to_str()
        .map_err(|_| AppError::invalid_request("unreadable Content-Type"))?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Kind::Json),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(Kind::Json),
        "application/x-www-form-urlencoded" | "" => Ok(Kind::Form),
        other => Err(AppError::invalid_request(format!(
            "unsupported Content-Type {other:?}; send application/json or application/x-www-form-urlencoded"
        ))),
    }
}

/// Reads and parses a JSON or form body into a JSON object. Form keys
/// `account.phone` and `account[phone]` become nested objects.
pub async fn object(req: &HttpRequest, payload: web::Payload) -> AppResult<Value> {
    let kind = kind(req)?;
    let bytes = read(payload, BODY_LIMIT).await?;
    match kind {
        Kind::Json => {
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                AppError::invalid_request(format!("the body is not valid JSON: {e}"))
            })?;
            if !value.is_object() {
                return Err(AppError::invalid_request("the JSON body must be an object"));
            }
            Ok(value)
        }
        Kind::Form => form_object(&bytes),
    }
}

fn form_object(bytes: &[u8]) -> AppResult<Value> {
    let mut root = Map::new();
    for (key, value) in url::form_urlencoded::parse(bytes) {
        let path: Vec<&str> = if let Some((outer, inner)) = key.split_once('[') {
            vec![outer, inner.trim_end_matches(']')]
        } else {
            key.split('.').collect()
        };
        let mut map = &mut root;
        for part in &path[..path.len() - 1] {
            let entry = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(inner) = entry else {
                return Err(AppError::invalid_request(format!(
                    "parameter {key:?} conflicts with another"
                )));
            };
            map = inner;
        }
        let last = path[path.len() - 1].to_string();
        if map
            .insert(last, Value::String(value.into_owned()))
            .is_some()
        {
            return Err(AppError::invalid_request(format!(
                "parameter {key:?} appears more than once"
            )));
        }
    }
    Ok(Value::Object(root))
}

/// A string parameter of a flat body; numbers are accepted as their text.
pub fn string(body: &Value, key: &str) -> AppResult<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(AppError::InvalidRequest {
            description: format!("{key} must be a string"),
            fields: Some(serde_json::json!({ key: "must be a string" })),
        }),
    }
}

/// A required string parameter.
pub fn required(body: &Value, key: &str) -> AppResult<String> {
    string(body, key)?.ok_or_else(|| AppError::InvalidRequest {
        description: format!("{key} is required"),
        fields: Some(serde_json::json!({ key: "required" })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_nesting() {
        let v = form_object(b"a=1&account.phone=%2B1&account[zip_code]=5").unwrap();
        assert_eq!(v["a"], "1");
        assert_eq!(v["account"]["phone"], "+1");
        assert_eq!(v["account"]["zip_code"], "5");
    }

    #[test]
    fn form_duplicates_and_conflicts() {
        assert!(form_object(b"a=1&a=2").is_err());
        assert!(form_object(b"account=1&account.phone=2").is_err());
    }
}
