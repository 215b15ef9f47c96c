//! The test kit: the real app in-process on a free port, over real HTTP,
//! against a fresh database (SQLite file, or a new MariaDB database when
//! PHONEKEY_TEST_DATABASE is a mysql:// URL), with a real local HTTP server
//! standing in for the SMS provider, and a clock the test can move.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use phonekey::clock::ManualClock;
use phonekey::config::Config;
use phonekey::oauth::clients::{self, GrantType, NewClient};
use serde_json::Value;

pub mod browser;

pub const PHONE: &str = "+14155550123";

/// A fresh phone number per call, valid for libphonenumber (US 415 range).
pub fn new_phone() -> String {
    let n: u32 = 2_000_000 + rand::random::<u32>() % 8_000_000;
    format!("+1415{n:07}")
}

/// A fresh client IP per call, sent as X-Forwarded-For (the test server trusts loopback).
pub fn new_ip() -> String {
    let n: u32 = rand::random();
    format!(
        "10.{}.{}.{}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        (n & 0xfe) + 1
    )
}

/// Which database the suite runs on.
pub fn database_server() -> Option<String> {
    std::env::var("PHONEKEY_TEST_DATABASE")
        .ok()
        .filter(|u| u.starts_with("mysql://"))
}

pub enum TestDb {
    Sqlite(tempdir::Dir),
    Mysql { admin_url: String, name: String },
}

pub mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!(
                "phonekey-test-{}",
                phonekey::secrets::random_hex(8)
            ));
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestDb {
    pub fn new() -> TestDb {
        match database_server() {
            None => TestDb::Sqlite(tempdir::Dir::new()),
            Some(url) => {
                let name = format!("pk_test_{}", phonekey::secrets::random_hex(6));
                mysql_admin(&url, &format!("CREATE DATABASE {name}"));
                TestDb::Mysql {
                    admin_url: url,
                    name,
                }
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite://{}", dir.0.join("phonekey.db").display()),
            TestDb::Mysql { admin_url, name } => {
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(admin_url);
                format!("{base}/{name}")
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Mysql { .. } => "mysql",
        }
    }
}

/// The database's write lock, taken by a connection of the test's own: the
/// server's reads go on while its writes wait, so that racing requests can
/// all be made to read before any of them writes.
pub enum WritesHeld {
    Sqlite(diesel::SqliteConnection),
    #[cfg(feature = "mysql")]
    Mysql(diesel::MysqlConnection),
}

impl TestDb {
    /// Holds the write lock of SQLite, or on MySQL a read lock on `table`
    /// (the first table the writes to be held touch).
    pub fn hold_writes(&self, table: &str) -> WritesHeld {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        match self {
            TestDb::Sqlite(dir) => {
                let path = dir.0.join("phonekey.db");
                let mut conn = diesel::SqliteConnection::establish(&path.display().to_string())
                    .expect("open the test database");
                let _ = table;
                conn.batch_execute("BEGIN IMMEDIATE")
                    .expect("take the write lock");
                WritesHeld::Sqlite(conn)
            }
            TestDb::Mysql { .. } => self.lock_mysql_table(table, "READ"),
        }
    }

    /// MySQL: `LOCK TABLES table mode` on a connection of the test's own.
    fn lock_mysql_table(&self, table: &str, mode: &str) -> WritesHeld {
        #[cfg(feature = "mysql")]
        {
            use diesel::connection::SimpleConnection;
            use diesel::Connection;
            let mut conn = diesel::MysqlConnection::establish(&self.url()).expect("connect");
            conn.batch_execute(&format!("LOCK TABLES {table} {mode}"))
                .expect("lock the table");
            WritesHeld::Mysql(conn)
        }
        #[cfg(not(feature = "mysql"))]
        panic!("built without MySQL support: cannot lock {table} {mode}")
    }
}

impl TestDb {
    /// MySQL: locks `table` against every other session, reads included, so
    /// that the server's lookups in it queue up until the release. `None` on
    /// SQLite, whose readers no lock of a writer stops (WAL).
    pub fn hold_reads(&self, table: &str) -> Option<WritesHeld> {
        match self {
            TestDb::Sqlite(_) => None,
            TestDb::Mysql { .. } => Some(self.lock_mysql_table(table, "WRITE")),
        }
    }
}

impl TestDb {
    /// Holds back the server's statements on `table`: on MySQL all of them
    /// (`hold_reads`), on SQLite every write (`hold_writes`).
    pub fn hold_statements(&self, table: &str) -> WritesHeld {
        self.hold_reads(table)
            .unwrap_or_else(|| self.hold_writes(table))
    }
}

impl WritesHeld {
    pub fn release(self) {
        use diesel::connection::SimpleConnection;
        match self {
            WritesHeld::Sqlite(mut conn) => conn.batch_execute("COMMIT").expect("release"),
            #[cfg(feature = "mysql")]
            WritesHeld::Mysql(mut conn) => conn.batch_execute("UNLOCK TABLES").expect("release"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Mysql { admin_url, name } = self {
            mysql_admin(admin_url, &format!("DROP DATABASE IF EXISTS {name}"));
        }
    }
}

#[cfg(feature = "mysql")]
pub fn mysql_admin(url: &str, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn =
        diesel::MysqlConnection::establish(url).expect("connect to the MariaDB test server");
    conn.batch_execute(sql).expect("admin statement");
}

#[cfg(not(feature = "mysql"))]
pub fn mysql_admin(_url: &str, _sql: &str) {
    panic!("PHONEKEY_TEST_DATABASE asks for MySQL, but the tests were built without `--features mysql`");
}

/// What the stand-in SMS provider does with the next messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SmsMode {
    Deliver,
    Refuse,
}

/// A real HTTP server that receives the webhook provider's POSTs.
pub struct SmsSink {
    pub url: String,
    messages: Arc<Mutex<Vec<Value>>>,
    mode: Arc<Mutex<SmsMode>>,
    handle: actix_web::dev::ServerHandle,
}

impl SmsSink {
    pub fn start() -> SmsSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sms sink");
        let url = format!("http://{}/sms", listener.local_addr().expect("addr"));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(SmsMode::Deliver));
        let (m, md) = (messages.clone(), mode.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let (m, md) = (m.clone(), md.clone());
                    App::new().route(
                        "/sms",
                        web::post().to(move |body: web::Json<Value>| {
                            let (m, md) = (m.clone(), md.clone());
                            async move {
                                if *md.lock().unwrap() == SmsMode::Refuse {
                                    return HttpResponse::InternalServerError().finish();
                                }
                                m.lock().unwrap().push(body.into_inner());
                                HttpResponse::Ok().finish()
                            }
                        }),
                    )
                })
                .workers(1)
                .listen(listener)
                .expect("listen")
                .run();
                tx.send(server.handle()).expect("send handle");
                server.await
            })
        });
        let handle = rx.recv().expect("sms sink started");
        SmsSink {
            url,
            messages,
            mode,
            handle,
        }
    }

    pub fn set_mode(&self, mode: SmsMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn messages(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// How many SMS were sent to `phone`.
    pub fn sent_to(&self, phone: &str) -> usize {
        self.messages().iter().filter(|m| m["to"] == phone).count()
    }

    /// The code of the newest SMS to `phone`.
    pub fn last_code(&self, phone: &str) -> String {
        self.messages()
            .iter()
            .rev()
            .find(|m| m["to"] == phone)
            .and_then(|m| m["code"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no SMS to {phone}"))
    }
}

pub struct TestServer {
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub sms: SmsSink,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub config: Config,
    pub state: phonekey::http::AppState,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts the app with these settings over the test defaults.
    pub fn start_with(settings: &[(&str, &str)]) -> TestServer {
        let db = TestDb::new();
        TestServer::start_on(db, settings)
    }

    pub fn start_on(db: TestDb, settings: &[(&str, &str)]) -> TestServer {
        let sms = SmsSink::start();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let db_url = db.url();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", &db_url),
            ("PHONEKEY_LISTEN", &addr),
            ("PHONEKEY_SMS_PROVIDER", "webhook"),
            ("PHONEKEY_SMS_WEBHOOK_URL", &sms.url),
            ("PHONEKEY_SMS_TIMEOUT", "2"),
            ("PHONEKEY_TRUSTED_PROXIES", "127.0.0.1"),
            ("PHONEKEY_WORKERS", "2"),
            ("PHONEKEY_DB_TIMEOUT", "2"),
        ];
        pairs.extend_from_slice(settings);
        let config = Config::from_pairs(pairs).expect("test config");
        let clock = ManualClock::new();
        let state = phonekey::prepare(config.clone(), clock.clone()).expect("prepare");
        let shared = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = phonekey::serve(state, listener).expect("serve");
                tx.send(server.handle()).expect("send handle");
                server.await
            })
        });
        let handle = rx.recv().expect("server started");
        TestServer {
            base: format!("http://{addr}"),
            clock,
            sms,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            db,
            config,
            state: shared,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Registers a client directly in the database, as `phonekey client create` does.
    pub fn client(&self, grants: &[GrantType], confidential: bool) -> (String, Option<String>) {
        self.client_with_scopes(grants, confidential, &[])
    }

    pub fn client_with_scopes(
        &self,
        grants: &[GrantType],
        confidential: bool,
        scopes: &[&str],
    ) -> (String, Option<String>) {
        self.register(&NewClient {
            name: "test app".into(),
            confidential,
            grant_types: grants.to_vec(),
            redirect_uris: vec![],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            resources: vec![],
        })
    }

    pub fn register(&self, spec: &NewClient) -> (String, Option<String>) {
        let mut conn = phonekey::db::connect_once(&self.config.database).expect("connect");
        let (client, secret) =
            clients::create(&mut conn, spec, self.clock_now()).expect("create client");
        (client.id, secret)
    }

    /// What the upkeep thread does every few seconds: re-read the signing keys.
    pub fn reload_keys(&self) {
        let mut conn = self.state.pool.get().expect("pooled connection");
        let conn = conn.db().expect("a connection");
        self.state.core.reload_keys(conn).expect("reload keys");
    }

    /// Rewrites stored rows as an older build left them: runs `sql`, whose
    /// `?`s take `binds` as text, and returns how many rows it changed.
    pub fn rewrite_rows(&self, sql: &str, binds: &[&str]) -> usize {
        use diesel::connection::Connection;
        use diesel::sql_types::Text;
        use diesel::RunQueryDsl;
        type Db = <phonekey::db::DbConn as Connection>::Backend;

        let mut query = diesel::sql_query(sql).into_boxed::<Db>();
        for value in binds {
            query = query.bind::<Text, _>(*value);
        }
        let mut conn = self.state.pool.get().expect("a pooled connection");
        query
            .execute(conn.db().expect("a connection"))
            .expect("the rewrite")
    }

    pub fn clock_now(&self) -> i64 {
        use phonekey::clock::Clock;
        self.clock.now()
    }

    /// POSTs a form from a given client IP.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        ip: &str,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .http
            .post(self.url(path))
            .header("X-Forwarded-For", ip)
            .form(form)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    pub async fn put_json(
        &self,
        path: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .http
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        split(response).await
    }

    /// getcode from a fresh IP; returns the code the SMS provider received.
    pub async fn get_code(&self, phone: &str) -> String {
        let (status, body, _) = self
            .post_form("/otp/getcode/", &[("phone", phone)], &new_ip())
            .await;
        assert_eq!(status, 200, "getcode: {body}");
        self.sms.last_code(phone)
    }

    /// Waits out the resend cooldown on the test clock, then asks for a new code.
    pub async fn get_code_after_cooldown(&self, phone: &str) -> String {
        self.clock.advance(self.config.otp.resend_seconds + 1);
        self.get_code(phone).await
    }

    /// verifycode from a fresh IP: (status, body).
    pub async fn verify(&self, phone: &str, code: &str) -> (u16, Value) {
        let (status, body, _) = self
            .post_form(
                "/otp/verifycode/",
                &[("phone", phone), ("code", code)],
                &new_ip(),
            )
            .await;
        (status, body)
    }

    /// getcode + verifycode; returns the secret identifier.
    pub async fn verified_ticket(&self, phone: &str) -> String {
        let code = self.get_code(phone).await;
        let (status, body) = self.verify(phone, &code).await;
        assert_eq!(status, 200, "verifycode: {body}");
        body["secret_identifier"]
            .as_str()
            .expect("ticket")
            .to_string()
    }

    /// The whole sign-up: returns (ticket, user JSON).
    pub async fn signed_up_user(&self, phone: &str) -> (String, Value) {
        let ticket = self.verified_ticket(phone).await;
        let (status, user, _) = self
            .put_json(
                "/api/v1/user/",
                &serde_json::json!({ "auto_username": true, "secret_identifier": ticket, "account": { "phone": phone } }),
            )
            .await;
        assert_eq!(status, 201, "create user: {user}");
        (ticket, user)
    }

    /// A new user with a new phone, logged in with the otp grant by the given
    /// client; returns the phone and the token response.
    pub async fn user_tokens(&self, id: &str, secret: &str) -> (String, Value) {
        let phone = new_phone();
        let (ticket, _) = self.signed_up_user(&phone).await;
        let (status, tokens, _) = self.otp_grant(id, secret, &phone, &ticket).await;
        assert_eq!(status, 200, "otp grant: {tokens}");
        (phone, tokens)
    }

    /// The otp grant with a verification ticket, client authenticated by Basic.
    pub async fn otp_grant(
        &self,
        id: &str,
        secret: &str,
        phone: &str,
        ticket: &str,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.token_basic(
            id,
            secret,
            &[
                ("grant_type", "otp"),
                ("phone", phone),
                ("secret_identifier", ticket),
            ],
        )
        .await
    }

    /// POSTs to the token endpoint with HTTP Basic client authentication.
    pub async fn token_basic(
        &self,
        id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .http
            .post(self.url("/o/token/"))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .expect("request");
        split(response).await
    }
}

/// Rows in `table` of the database at `url` (either backend), read over a
/// connection of the test's own.
pub fn count_rows(url: &str, table: &str) -> i64 {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let url = phonekey::db::DbUrl::parse(url).expect("a database URL");
    let mut conn = phonekey::db::connect_once(&url).expect("open the database");
    diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
        .get_result::<Count>(conn.db().expect("a connection"))
        .expect("count")
        .n
}

/// A JWT's claims, unverified (other tests check signatures).
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}

/// Asserts a JSON error answer: its status and its `error` code.
#[track_caller]
pub fn expect_error(status: u16, body: &Value, want_status: u16, want_error: &str) {
    assert_eq!(
        (status, body["error"].as_str()),
        (want_status, Some(want_error)),
        "{body}"
    );
}

pub async fn split(response: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("non-JSON body (status {status}): {text:?}"));
    (status, body, headers)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        drop(self.sms.handle.stop(false));
    }
}
