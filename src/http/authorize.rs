//! The authorization pages of the code flow: `GET /o/authorize/` checks the
//! request and shows the phone page (or, with a login session, the consent
//! page); the phone page sends an SMS code (`POST /o/authorize/phone/`), the
//! code page logs the browser in (`POST /o/authorize/code/`), and the consent
//! page approves or denies (`POST /o/authorize/`). Every form carries the
//! authorization request's query string and a CSRF token, and every POST
//! checks the request again.

use std::collections::HashMap;

use actix_web::cookie::{time::Duration as CookieAge, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::otp::send_code;
use super::pages::{self, CodePage, ConsentPage, PhonePage};
use super::{body, client_ip::client_ip, AppState};
use crate::core::Core;
use crate::error::AppError;
use crate::oauth::authorize::{self, AuthRequest, Refusal};
use crate::oauth::store::OAuthStore;
use crate::sessions::{self, LoginError};
use crate::{phone, secrets};

const SESSION_COOKIE: &str = "phonekey_session";
const CSRF_COOKIE: &str = "phonekey_csrf";
const COOKIE_PATH: &str = "/o/authorize";
/// Forms here are a handful of short fields.
const FORM_LIMIT: usize = 16 * 1024;

/// What a page needs after the request was checked on the blocking pool.
enum Checked {
    Ok(Box<AuthRequest>, Option<Viewer>),
    Refused(Refusal),
}

/// The logged-in resource owner.
struct Viewer {
    user_id: String,
    phone: String,
}

/// Checks the authorization request and finds the session's user.
async fn check(
    state: &AppState,
    query: String,
    session: Option<String>,
) -> Result<Checked, AppError> {
    state
        .blocking(move |conn, core| {
            let now = core.now();
            let request = {
                let store = OAuthStore::new(core, conn);
                match authorize::validate(&store, &query) {
                    Ok(request) => request,
                    Err(Refusal::Failed(e)) => return Err(e),
                    Err(refusal) => return Ok(Checked::Refused(refusal)),
                }
            };
            let viewer = match session {
                Some(token) => match sessions::current_user(conn.db()?, &token, now)? {
                    Some(user) => Some(Viewer {
                        phone: sessions::phone_of(conn.db()?, &user.id)?.unwrap_or_default(),
                        user_id: user.id,
                    }),
                    None => None,
                },
                None => None,
            };
            Ok(Checked::Ok(Box::new(request), viewer))
        })
        .await
}

pub async fn show(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (csrf_cookie, fresh) = match req.cookie(CSRF_COOKIE) {
        Some(c) if secrets::plausible_token(c.value()) => (c.value().to_string(), false),
        _ => (secrets::random_urlsafe(32), true),
    };
    let csrf = csrf_token(&state.core, &csrf_cookie);
    let session = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string());
    let mut response = match check(&state, req.query_string().to_string(), session).await {
        Ok(Checked::Ok(request, Some(viewer))) => consent_page(&request, &csrf, &viewer.phone),
        Ok(Checked::Ok(request, None)) => phone_page(StatusCode::OK, &request, &csrf, "", None),
        Ok(Checked::Refused(refusal)) => refused(refusal),
        Err(e) => failed(&e),
    };
    if fresh {
        let cookie = cookie(&state.core, CSRF_COOKIE, csrf_cookie, None);
        if let Err(e) = response.add_cookie(&cookie) {
            tracing::error!(error = %e, "could not set the CSRF cookie");
        }
    }
    response
}

/// `POST /o/authorize/phone/`: sends the SMS code and shows the code page.
pub async fn phone(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (form, request, _) = match posted(&state, &req, payload, None).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let raw = form.field("phone");
    let Some(phone) = phone::normalize(raw, state.core.config.default_region) else {
        return phone_page(
            StatusCode::BAD_REQUEST,
            &request,
            &form.csrf,
            raw,
            Some(
                "That is not a valid phone number. Include the country code, e.g. +44 7700 900123."
                    .into(),
            ),
        );
    };
    let ip = client_ip(&req, &state.core.config.trusted_proxies);
    match send_code(&state, &phone, ip).await {
        Ok(_) => code_page(StatusCode::OK, &form, &phone, None),
        Err(AppError::RateLimited { retry_after }) => phone_page(
            StatusCode::TOO_MANY_REQUESTS,
            &request,
            &form.csrf,
            &phone,
            Some(format!(
                "Too many codes for now. Try again in {retry_after} seconds."
            )),
        ),
        Err(AppError::SmsUnavailable) => phone_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &request,
            &form.csrf,
            &phone,
            Some("We could not send the SMS. Try again in a moment.".into()),
        ),
        Err(e) => failed(&e),
    }
}

/// `POST /o/authorize/code/`: checks the code, logs the browser in and
/// goes back to the authorization request, which now shows consent.
pub async fn code(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (form, request, _) = match posted(&state, &req, payload, None).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let Some(phone) = phone::normalize(form.field("phone"), state.core.config.default_region)
    else {
        return phone_page(StatusCode::BAD_REQUEST, &request, &form.csrf, "", None);
    };
    let code = form.field("code").trim().to_string();
    let login = {
        let phone = phone.clone();
        state
            .blocking(move |conn, core| {
                Ok(sessions::log_in_with_code(
                    conn,
                    core,
                    &phone,
                    &code,
                    core.now(),
                ))
            })
            .await
    };
    let session = match login {
        Ok(Ok(session)) => session,
        Ok(Err(LoginError::NoUser)) => {
            return phone_page(
                StatusCode::FORBIDDEN,
                &request,
                &form.csrf,
                &phone,
                Some("No account uses this phone number.".into()),
            )
        }
        Ok(Err(LoginError::Failed(AppError::InvalidCode {
            attempts_left: Some(left),
        }))) if left > 0 => {
            let tries = if left == 1 { "try" } else { "tries" };
            return code_page(
                StatusCode::BAD_REQUEST,
                &form,
                &phone,
                Some(format!("That code is wrong. {left} {tries} left.")),
            );
        }
        Ok(Err(LoginError::Failed(AppError::InvalidCode { .. } | AppError::TooManyAttempts))) => {
            return phone_page(
                StatusCode::BAD_REQUEST,
                &request,
                &form.csrf,
                &phone,
                Some("The code has expired or was tried too often. Ask for a new one.".into()),
            )
        }
        Ok(Err(LoginError::Failed(AppError::InvalidRequest { description, .. }))) => {
            return code_page(StatusCode::BAD_REQUEST, &form, &phone, Some(description))
        }
        Ok(Err(LoginError::Failed(e))) | Err(e) => return failed(&e),
    };
    let mut response = see_other(&back_to(&request.query));
    let cookie = cookie(
        &state.core,
        SESSION_COOKIE,
        session.token,
        Some(state.core.config.session_ttl),
    );
    if let Err(e) = response.add_cookie(&cookie) {
        tracing::error!(error = %e, "could not set the session cookie");
    }
    tracing::info!(user_id = %session.user_id, client_id = %request.client.id, "browser logged in");
    response
}

/// `POST /o/authorize/`: the consent decision.
pub async fn decide(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let session = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string());
    let (form, request, viewer) = match posted(&state, &req, payload, session).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    // Logged out meanwhile: start the login again.
    let Some(viewer) = viewer else {
        return see_other(&back_to(&request.query));
    };
    match form.field("decision") {
        "approve" => {
            let user_id = viewer.user_id;
            let approved = state
                .blocking(move |conn, core| {
                    let mut store = OAuthStore::new(core, conn);
                    authorize::approve(&mut store, &request, &user_id)
                })
                .await;
            match approved {
                Ok(to) => see_other(to.as_str()),
                Err(e) => failed(&e),
            }
        }
        "deny" => see_other(authorize::deny(&request, &state.core.config.issuer).as_str()),
        _ => pages::error(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form did not say whether to allow or deny.",
        ),
    }
}

/// `POST /o/authorize/logout/`: ends the login session and starts over.
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let form = match Form::read(&state, &req, payload).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    if let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) {
        if let Err(e) = state
            .blocking(move |conn, _| sessions::end(conn, &token))
            .await
        {
            return failed(&e);
        }
    }
    let mut response = see_other(&back_to(&form.request));
    let mut gone = cookie(&state.core, SESSION_COOKIE, String::new(), None);
    gone.make_removal();
    if let Err(e) = response.add_cookie(&gone) {
        tracing::error!(error = %e, "could not clear the session cookie");
    }
    response
}

/// A POSTed form with a good CSRF token, and its authorization request,
/// checked again; or the page that says why not.
async fn posted(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    session: Option<String>,
) -> Result<(Form, Box<AuthRequest>, Option<Viewer>), HttpResponse> {
    let form = Form::read(state, req, payload).await?;
    match check(state, form.request.clone(), session).await {
        Ok(Checked::Ok(request, viewer)) => Ok((form, request, viewer)),
        Ok(Checked::Refused(refusal)) => Err(refused(refusal)),
        Err(e) => Err(failed(&e)),
    }
}

/// A POSTed form whose CSRF token matched its cookie.
struct Form {
    fields: HashMap<String, String>,
    csrf: String,
    request: String,
}

impl Form {
    async fn read(
        state: &AppState,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<Form, HttpResponse> {
        let bytes = body::read(payload, FORM_LIMIT).await.map_err(|_| {
            pages::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Bad request",
                "The form was too large.",
            )
        })?;
        let mut fields = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            fields
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
        let sent = fields.get("csrf").map(String::as_str).unwrap_or("");
        let expected = req
            .cookie(CSRF_COOKIE)
            .map(|c| csrf_token(&state.core, c.value()));
        if !expected.is_some_and(|e| !sent.is_empty() && secrets::ct_eq(&e, sent)) {
            return Err(pages::error(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The page was open too long or did not come from this site. Start the sign-in again from the application.",
            ));
        }
        Ok(Form {
            csrf: sent.to_string(),
            request: fields.get("request").cloned().unwrap_or_default(),
            fields,
        })
    }

    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or("")
    }
}

/// The CSRF token of a browser: bound to its CSRF cookie by our secret key,
/// so that another site can neither read nor forge it.
fn csrf_token(core: &Core, cookie: &str) -> String {
    core.hasher.hash(&[b"csrf", cookie.as_bytes()])
}

fn cookie(core: &Core, name: &'static str, value: String, max_age: Option<i64>) -> Cookie<'static> {
    let mut cookie = Cookie::build(name, value)
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(core.config.https())
        .finish();
    if let Some(seconds) = max_age {
        cookie.set_max_age(CookieAge::seconds(seconds));
    }
    cookie
}

fn phone_page(
    status: StatusCode,
    request: &AuthRequest,
    csrf: &str,
    phone: &str,
    error: Option<String>,
) -> HttpResponse {
    pages::render(
        pages::builder(status),
        &PhonePage {
            client_name: &request.client.name,
            csrf,
            request: &request.query,
            phone,
            error,
        },
    )
}

fn code_page(status: StatusCode, form: &Form, phone: &str, error: Option<String>) -> HttpResponse {
    pages::render(
        pages::builder(status),
        &CodePage {
            csrf: &form.csrf,
            request: &form.request,
            phone,
            error,
        },
    )
}

fn consent_page(request: &AuthRequest, csrf: &str, phone: &str) -> HttpResponse {
    pages::render(
        pages::builder(StatusCode::OK),
        &ConsentPage {
            client_name: &request.client.name,
            csrf,
            request: &request.query,
            phone,
            scopes: &request.scope,
        },
    )
}

/// The authorization page for a request's query string, re-encoded so that
/// whatever a form sent cannot break out of the Location header or the path.
fn back_to(query: &str) -> String {
    let clean: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url::form_urlencoded::parse(query.as_bytes()))
        .finish();
    format!("/o/authorize/?{clean}")
}

fn see_other(location: &str) -> HttpResponse {
    pages::builder(StatusCode::SEE_OTHER)
        .insert_header((header::LOCATION, location))
        .finish()
}

fn refused(refusal: Refusal) -> HttpResponse {
    match refusal {
        Refusal::Untrusted(message) => pages::error(
            StatusCode::BAD_REQUEST,
            "Invalid authorization request",
            &message,
        ),
        Refusal::Redirect(to) => see_other(to.as_str()),
        Refusal::Failed(e) => failed(&e),
    }
}

/// Errors the pages cannot handle: the database is away (503) or a bug (500).
fn failed(err: &AppError) -> HttpResponse {
    match err {
        AppError::Unavailable(detail) => {
            tracing::warn!(%detail, "dependency unavailable");
            let mut response = pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The service is briefly unavailable. Reload this page in a moment.",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
        other => {
            tracing::error!(error = ?other, "authorization page failed");
            pages::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The sign-in could not be completed.",
            )
        }
    }
}
