//! An API that accepts phonekey's access tokens, validating them locally with
//! the JWKS. Run phonekey, then:
//!
//!   PHONEKEY_ISSUER=http://127.0.0.1:8080 cargo run --example resource_server
//!   curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:9090/me

mod app;
mod verifier;

use actix_web::{web, App, HttpServer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let issuer =
        std::env::var("PHONEKEY_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let audience = std::env::var("PHONEKEY_TOKEN_AUDIENCE").unwrap_or_else(|_| issuer.clone());
    let listen =
        std::env::var("RESOURCE_SERVER_LISTEN").unwrap_or_else(|_| "127.0.0.1:9090".into());
    let verifier = web::Data::new(verifier::Verifier::new(&issuer, &audience));
    println!("resource server on http://{listen}, trusting {issuer}");
    HttpServer::new(move || {
        App::new()
            .app_data(verifier.clone())
            .configure(app::configure)
    })
    .bind(listen)?
    .run()
    .await
}
