//! The example API: `GET /me` for any valid token, `GET /reports` for tokens
//! with the `reports:read` scope.

use actix_web::{web, HttpRequest, HttpResponse};

use super::verifier::{BearerError, Verifier};

async fn me(verifier: web::Data<Verifier>, req: HttpRequest) -> Result<HttpResponse, BearerError> {
    let claims = verifier.authorize(&req, None).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sub": claims.sub, "client_id": claims.client_id, "scope": claims.scope, "exp": claims.exp,
    })))
}

async fn reports(
    verifier: web::Data<Verifier>,
    req: HttpRequest,
) -> Result<HttpResponse, BearerError> {
    let claims = verifier.authorize(&req, Some("reports:read")).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "reports": [], "for": claims.sub })))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/me", web::get().to(me))
        .route("/reports", web::get().to(reports));
}
