//! The SMS provider as the benchmark sees it: a local HTTP server receiving
//! the webhook's POSTs and remembering each phone's latest code.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};

#[derive(Clone, Default)]
pub struct Codes(Arc<Mutex<HashMap<String, String>>>);

impl Codes {
    pub fn take(&self, phone: &str) -> Option<String> {
        self.0.lock().ok()?.remove(phone)
    }
}

#[derive(serde::Deserialize)]
struct Sms {
    to: String,
    code: String,
}

pub struct Sink {
    pub url: String,
    pub codes: Codes,
    handle: actix_web::dev::ServerHandle,
}

impl Sink {
    pub fn start() -> Result<Sink, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("sms sink: {e}"))?;
        let url = format!(
            "http://{}/sms",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let codes = Codes::default();
        let store = codes.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let store = store.clone();
                    App::new().route(
                        "/sms",
                        web::post().to(move |sms: web::Json<Sms>| {
                            let store = store.clone();
                            async move {
                                if let Ok(mut map) = store.0.lock() {
                                    map.insert(sms.0.to, sms.0.code);
                                }
                                HttpResponse::Ok().finish()
                            }
                        }),
                    )
                })
                .workers(1)
                .listen(listener)?
                .run();
                let _ = tx.send(server.handle());
                server.await
            })
        });
        let handle = rx
            .recv()
            .map_err(|_| "sms sink did not start".to_string())?;
        Ok(Sink { url, codes, handle })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}
