//! The measured requests: one bare hyper HTTP/1.1 connection per load loop,
//! kept alive. reqwest's pool, URL parsing and request building cost the load
//! generator more CPU per request than the server spends on a cheap one, and
//! both run on the same cores: every cycle saved here goes to the server.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";

type Sender = SendRequest<Full<Bytes>>;

/// Answers slower than this count as errors.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A connection idle this long is replaced before the server's 5-s
/// keep-alive closes it: a request sent as the server closes would fail.
const MAX_IDLE: Duration = Duration::from_secs(2);

pub struct Conns {
    addr: String,
    host: HeaderValue,
    basic: HeaderValue,
    /// One connection per load loop, opened on first use, after a failure
    /// and after `MAX_IDLE`; with the time it was last used.
    slots: Vec<Mutex<Option<(Sender, Instant)>>>,
}

impl Conns {
    /// `base` is `http://host:port`.
    pub fn new(base: &str, count: usize, client_id: &str, secret: &str) -> Result<Conns, String> {
        let addr = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// address: {base}"))?
            .to_string();
        let basic = format!("Basic {}", STANDARD.encode(format!("{client_id}:{secret}")));
        Ok(Conns {
            host: HeaderValue::from_str(&addr).map_err(|e| e.to_string())?,
            basic: HeaderValue::from_str(&basic).map_err(|e| e.to_string())?,
            addr,
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Sends one request on loop `worker`'s connection; returns the status
    /// and the body.
    pub async fn send(
        &self,
        worker: usize,
        method: Method,
        path: &str,
        body: Option<(&'static str, String)>,
        basic: bool,
    ) -> Result<(StatusCode, Bytes), String> {
        let slot = self
            .slots
            .get(worker)
            .ok_or_else(|| format!("no connection {worker}"))?;
        let mut slot = slot.lock().await;
        let mut sender = match slot.take() {
            Some((s, used)) if !s.is_closed() && used.elapsed() < MAX_IDLE => s,
            _ => self.connect().await?,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if basic {
            request = request.header(AUTHORIZATION, self.basic.clone());
        }
        let request = match body {
            Some((content_type, body)) => request
                .header(CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(body))),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| e.to_string())?;
        let exchange = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{path}: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let answer = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{path}: no answer in {TIMEOUT:?}"))??;
        // Only a connection that completed its exchange is used again.
        *slot = Some((sender, Instant::now()));
        Ok(answer)
    }

    async fn connect(&self) -> Result<Sender, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
