//! `POST /otp/getcode/` and `POST /otp/verifycode/`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body;
use super::client_ip::client_ip;
use super::AppState;
use crate::error::{AppError, AppResult};
use crate::sms::{self, SmsMessage};
use crate::{otp, phone};

fn phone_param(state: &AppState, body: &serde_json::Value) -> AppResult<String> {
    let raw = body::required(body, "phone")?;
    phone::normalize(&raw, state.core.config.default_region).ok_or(AppError::InvalidPhone)
}

/// Issues a code for `phone` (within the limits) and sends it by SMS; a code
/// the provider could not send is dropped again.
pub(super) async fn send_code(
    state: &AppState,
    phone: &str,
    ip: String,
) -> AppResult<otp::NewCode> {
    let issued = {
        let phone = phone.to_string();
        // Its statements are batched on MySQL; on SQLite it runs on the writer.
        state
            .on_writer(move |conn, core| otp::issue_code(conn, core, &phone, &ip, core.now()))
            .await?
    };
    let core = &state.core;
    let message = SmsMessage {
        body: sms::render(
            &core.config.sms.template,
            &core.config.issuer_host(),
            &issued.code,
        ),
        to: phone.to_string(),
        code: issued.code.clone(),
    };
    if let Err(e) = state.sms.send(&message).await {
        tracing::warn!(provider = state.sms.name(), error = %e, "SMS not sent; code dropped");
        let id = issued.id;
        state
            .blocking(move |conn, _| otp::drop_code(conn, &id))
            .await?;
        return Err(AppError::SmsUnavailable);
    }
    Ok(issued)
}

pub async fn getcode(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let body = body::object(&req, payload).await?;
    let phone = phone_param(&state, &body)?;
    let ip = client_ip(&req, &state.core.config.trusted_proxies);
    let issued = send_code(&state, &phone, ip).await?;
    // The same answer whether or not the phone has a user.
    Ok(HttpResponse::Ok().json(json!({
        "phone": phone,
        "expires_in": issued.expires_in,
        "resend_in": issued.resend_in,
    })))
}

pub async fn verifycode(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let body = body::object(&req, payload).await?;
    let phone = phone_param(&state, &body)?;
    let code = body::required(&body, "code")?;
    // Its statements are batched on MySQL when the code is right; on SQLite
    // it runs on the writer.
    let ticket = state
        .on_writer(move |conn, core| otp::verify_for_ticket(conn, core, &phone, &code, core.now()))
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "secret_identifier": ticket.secret_identifier,
        "expires_in": ticket.expires_in,
        "user_exists": ticket.user_exists,
    })))
}
