//! HTML pages (askama templates in `templates/`), and the headers every page
//! gets: not cached, not framed, no referrer, no scripts.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, HttpResponseBuilder};
use askama::Template;

#[derive(Template)]
#[template(path = "authorize/phone.html")]
pub struct PhonePage<'a> {
    pub client_name: &'a str,
    pub csrf: &'a str,
    pub request: &'a str,
    pub phone: &'a str,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "authorize/code.html")]
pub struct CodePage<'a> {
    pub csrf: &'a str,
    pub request: &'a str,
    pub phone: &'a str,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "authorize/consent.html")]
pub struct ConsentPage<'a> {
    pub client_name: &'a str,
    pub csrf: &'a str,
    pub request: &'a str,
    pub phone: &'a str,
    pub scopes: &'a [String],
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

/// Response headers for every page and every redirect of the HTML flow.
pub fn builder(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // No `form-action`: browsers apply it to the redirect to the client.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ));
    builder
}

/// Renders `page` with `status` into `builder`; a template that fails to
/// render (it cannot, short of a bug) becomes a plain 500.
pub fn render(mut builder: HttpResponseBuilder, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => builder.content_type("text/html; charset=utf-8").body(html),
        Err(e) => {
            tracing::error!(error = %e, "a page did not render");
            HttpResponse::InternalServerError().finish()
        }
    }
}

pub fn error(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    render(builder(status), &ErrorPage { title, message })
}
