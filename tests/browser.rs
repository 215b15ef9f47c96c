//! The authorization pages in a real headless browser (Chromium through
//! ChromeDriver's WebDriver API): a person types a phone number and the SMS
//! code, allows the app, and the browser lands on a native app's loopback
//! redirect URI with a code that the app exchanges.
//!
//! `.ci/run` installs Chromium and ChromeDriver and sets
//! PHONEKEY_REQUIRE_BROWSER=1, so there this test cannot be skipped; on a
//! machine without them it says so and passes.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{new_phone, TestServer};
use phonekey::oauth::clients::{GrantType, NewClient};
use serde_json::{json, Value};
use sha2::Digest;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Option<Driver> {
        let found =
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists();
        if !found {
            assert!(
                std::env::var("PHONEKEY_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "PHONEKEY_REQUIRE_BROWSER=1 but {CHROMEDRIVER} or {CHROMIUM} is missing (apt-get install chromium chromium-driver)"
            );
            eprintln!("browser test not run: install chromium and chromium-driver to run it");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut driver = Driver {
            child,
            base,
            http,
            session: String::new(),
        };
        let started = Instant::now();
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok();
            if let Some(r) = ready {
                let status: Value = r.json().await.unwrap_or(Value::Null);
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created = driver
            .call(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
                    }
                }}}),
            )
            .await;
        driver.session = created["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Some(driver)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{}", self.base, path);
        let request = self.http.request(method.clone(), &url);
        let request = if method == reqwest::Method::POST {
            request.json(&body)
        } else {
            request
        };
        let response: Value = request
            .send()
            .await
            .expect("WebDriver call")
            .json()
            .await
            .expect("WebDriver JSON");
        assert!(
            response["value"]["error"].is_null(),
            "{method} {path}: {response}"
        );
        response["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn go(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &self.path("/url"),
            json!({ "url": url }),
        )
        .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, &self.path("/url"), Value::Null)
            .await
            .as_str()
            .expect("url")
            .to_string()
    }

    async fn text(&self) -> String {
        let body = self.find("body").await;
        self.call(
            reqwest::Method::GET,
            &self.path(&format!("/element/{body}/text")),
            Value::Null,
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// The element for a CSS selector, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let response: Value = self
                .http
                .post(format!("{}{}", self.base, self.path("/element")))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("find")
                .json()
                .await
                .expect("find JSON");
            if let Some(id) = response["value"]
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.starts_with("element-")))
                .and_then(|(_, v)| v.as_str())
            {
                return id.to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no element {css}: {response}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &self.path(&format!("/element/{id}/value")),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &self.path(&format!("/element/{id}/click")),
            json!({}),
        )
        .await;
    }

    async fn cookies(&self) -> Vec<Value> {
        self.call(reqwest::Method::GET, &self.path("/cookie"), Value::Null)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn wait_for_url(&self, prefix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.url().await;
            if url.starts_with(prefix) {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "browser stayed on {url}: {}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A native app's loopback listener: answers every request, remembers paths.
fn callback_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            if let Some(path) = head.split_whitespace().nth(1) {
                log.lock().expect("log").push(path.to_string());
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\nConnection: close\r\n\r\nYou may close.\n",
            );
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_chromium() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = TestServer::start_with(&[("PHONEKEY_OTP_AUTO_CREATE_USERS", "true")]);
    let (client_id, _) = server.register(&NewClient {
        name: "Desktop App".into(),
        confidential: false,
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
        scopes: vec!["profile".into()],
        resources: vec![],
    });
    let (port, seen) = callback_server();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let verifier = phonekey::secrets::random_urlsafe(48);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("scope", "profile"),
            ("state", "browser-state"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let phone = new_phone();

    driver
        .go(&server.url(&format!("/o/authorize/?{query}")))
        .await;
    assert!(driver.text().await.contains("Sign in to Desktop App"));
    driver.type_into("#phone", &phone).await;
    driver
        .click("form[action='/o/authorize/phone/'] button[type=submit]")
        .await;
    driver.find("#code").await;
    let code = server.sms.last_code(&phone);
    driver.type_into("#code", &code).await;
    driver
        .click("form[action='/o/authorize/code/'] button[type=submit]")
        .await;
    driver.find("button[value=approve]").await;
    assert!(driver
        .text()
        .await
        .contains("Allow Desktop App to use your account?"));

    // The browser keeps the session cookie and cannot read it from script.
    let cookies = driver.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "phonekey_session")
        .expect("session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");

    driver.click("button[value=approve]").await;
    let landed = driver.wait_for_url(&redirect).await;
    let landed = url::Url::parse(&landed).expect("url");
    let params: std::collections::HashMap<String, String> =
        landed.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "browser-state");
    assert!(seen
        .lock()
        .expect("log")
        .iter()
        .any(|p| p.starts_with("/callback?code=")));

    let response = server
        .http
        .post(server.url("/o/token/"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("redirect_uri", redirect.as_str()),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .expect("token");
    let (status, tokens, _) = common::split(response).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "profile");

    // A second authorization in the same browser skips the SMS step.
    driver
        .go(&server.url(&format!("/o/authorize/?{query}")))
        .await;
    driver.find("button[value=approve]").await;
    assert_eq!(server.sms.messages().len(), 1);
    driver
        .call(reqwest::Method::DELETE, &driver.path(""), Value::Null)
        .await;
}
