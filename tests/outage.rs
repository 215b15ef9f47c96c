//! The database goes away mid-run: phonekey talks to MariaDB through a TCP
//! proxy that the test cuts and restores. Requests must get 503 within the
//! pool timeout, never hang or panic, and service must come back by itself
//! with no lost or duplicated rows. And a lock held elsewhere fails requests
//! with 503 after the configured wait instead of holding them.
#![cfg(feature = "mysql")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use phonekey::oauth::clients::GrantType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    /// While set, bytes are read but held: a server that stops answering
    /// without closing its connections.
    frozen: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

/// Copies one direction of a link, holding what it reads while `frozen`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let frozen = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, frozen2, links2) = (up.clone(), frozen.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the database is "down"
                    continue;
                }
                let frozen = frozen2.clone();
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(upstream).await {
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::join!(
                            pump(in_read, out_write, frozen.clone()),
                            pump(out_read, in_write, frozen),
                        );
                    }
                });
                links2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            up,
            frozen,
            links,
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn admin_url() -> String {
    database_server().unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".into())
}

/// A new MariaDB database reached through a new proxy: the proxy, the
/// database (dropped with it), its direct URL and its URL through the proxy.
async fn proxied_database(prefix: &str) -> (Proxy, TestDb, String, String) {
    let proxy = Proxy::start("127.0.0.1:3306").await;
    let name = format!("{prefix}_{}", phonekey::secrets::random_hex(5));
    let admin = admin_url();
    mysql_admin(&admin, &format!("CREATE DATABASE {name}"));
    let direct_url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let proxied_url = format!("mysql://root@127.0.0.1:{}/{name}", proxy.port);
    let db = TestDb::Mysql {
        admin_url: admin,
        name,
    };
    (proxy, db, direct_url, proxied_url)
}

/// A client that may use every grant here, and a user's refresh token.
async fn client_with_a_user(server: &TestServer) -> (String, String, String) {
    let (id, secret) = server.client(
        &[
            GrantType::Otp,
            GrantType::RefreshToken,
            GrantType::ClientCredentials,
        ],
        true,
    );
    let secret = secret.unwrap();
    let (_phone, tokens) = server.user_tokens(&id, &secret).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    (id, secret, refresh)
}

async fn rotate(
    server: &TestServer,
    id: &str,
    secret: &str,
    refresh: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    server.token_basic(id, secret, &form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_gives_503_and_recovers() {
    let (proxy, db, direct_url, proxied_url) = proxied_database("pk_outage").await;
    let server = TestServer::start_on(
        db,
        &[("DATABASE_URL", &proxied_url), ("PHONEKEY_DB_TIMEOUT", "2")],
    );

    let (id, secret, refresh) = client_with_a_user(&server).await;
    // A client's token is stored by the batching threads' own connections.
    let client_token = || server.token_basic(&id, &secret, &[("grant_type", "client_credentials")]);
    assert_eq!(client_token().await.0, 200);
    let access_before = count_rows(&direct_url, "access_tokens");
    let users_before = count_rows(&direct_url, "users");
    let refresh_before = count_rows(&direct_url, "refresh_tokens");

    proxy.cut();
    let other = new_phone();
    let started = Instant::now();
    let getcode = server
        .post_form("/otp/getcode/", &[("phone", &other)], &new_ip())
        .await;
    let refreshed = rotate(&server, &id, &secret, &refresh).await;
    let client = client_token().await;
    let ready = split(server.http.get(server.url("/readyz")).send().await.unwrap()).await;
    let elapsed = started.elapsed();
    for (status, body, _) in [&getcode, &refreshed, &client, &ready] {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    assert!(getcode.2.contains_key("retry-after"));
    assert!(
        elapsed < Duration::from_secs(15),
        "four requests took {elapsed:?}: no hang"
    );
    // healthz does not need the database.
    let (status, _, _) = split(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        server.sms.sent_to(&other),
        0,
        "no SMS while the database is down"
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, _) =
            split(server.http.get(server.url("/readyz")).send().await.unwrap()).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "service did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The refresh that failed during the outage spent nothing: the token still rotates once.
    let (status, body, _) = rotate(&server, &id, &secret, &refresh).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        count_rows(&direct_url, "refresh_tokens"),
        refresh_before + 1
    );
    assert_eq!(count_rows(&direct_url, "users"), users_before);
    assert_eq!(client_token().await.0, 200);
    // The rotation's access token, and this one.
    assert_eq!(count_rows(&direct_url, "access_tokens"), access_before + 2);
    // A second outage in which nothing is stored: the batching threads'
    // connections are lost unseen, and the first tokens after it still work.
    proxy.cut();
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..4 {
        let (status, body, _) = client_token().await;
        assert_eq!(status, 200, "{body}");
    }
    // And the whole flow works again.
    let (_, user) = server.signed_up_user(&other).await;
    assert_eq!(user["account"]["phone"], other.as_str());
    assert_eq!(count_rows(&direct_url, "users"), users_before + 1);
}

/// The database stops answering but keeps its connections open (a hung
/// server, a stalled network path): with no read timeout in the MySQL client
/// library a statement would wait forever. Every request answers 503 within
/// `PHONEKEY_REQUEST_TIMEOUT`, what was still queued when its request gave up
/// is never carried out, and service resumes when the database answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_stops_answering_gives_503_then_recovers() {
    let (proxy, db, direct_url, proxied_url) = proxied_database("pk_hung").await;
    let server = Arc::new(TestServer::start_on(
        db,
        &[
            ("DATABASE_URL", &proxied_url),
            ("PHONEKEY_DB_POOL_SIZE", "2"),
            ("PHONEKEY_DB_TIMEOUT", "1"),
            ("PHONEKEY_REQUEST_TIMEOUT", "3"),
        ],
    ));
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.unwrap();
    let client_token = {
        let server = server.clone();
        move || {
            let (server, id, secret) = (server.clone(), id.clone(), secret.clone());
            async move {
                let form = [("grant_type", "client_credentials")];
                server.token_basic(&id, &secret, &form).await
            }
        }
    };
    assert_eq!(client_token().await.0, 200);
    let codes_before = count_rows(&direct_url, "otp_codes");

    proxy.freeze();
    let started = Instant::now();
    // More getcodes than there are threads to run them (pool of 2: six
    // batching threads), so most are still queued when they give up.
    let phones: Vec<String> = (0..24).map(|_| new_phone()).collect();
    let getcodes: Vec<_> = phones
        .iter()
        .map(|phone| {
            let (server, phone) = (server.clone(), phone.clone());
            tokio::spawn(async move {
                server
                    .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
                    .await
            })
        })
        .collect();
    let token = tokio::spawn(client_token());
    let ready = split(server.http.get(server.url("/readyz")).send().await.unwrap()).await;
    let mut answers = vec![ready, token.await.unwrap()];
    for getcode in getcodes {
        answers.push(getcode.await.unwrap());
    }
    let elapsed = started.elapsed();
    for (status, body, _) in &answers {
        expect_error(*status, body, 503, "temporarily_unavailable");
    }
    assert!(
        elapsed < Duration::from_secs(8),
        "{} requests took {elapsed:?} with a 3 s request timeout",
        answers.len()
    );

    proxy.thaw();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client_token().await.0 != 200 {
        assert!(Instant::now() < deadline, "service did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Statements already sent when the database hung are carried out once it
    // answers; the requests still waiting for a thread are not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = count_rows(&direct_url, "otp_codes") - codes_before;
    assert!(
        stored <= 6,
        "{stored} of 24 abandoned getcodes stored their code after the database came back"
    );
    assert!(
        phones.iter().all(|p| server.sms.sent_to(p) == 0),
        "an SMS was sent for a getcode that was answered 503"
    );
    let phone = new_phone();
    let (_, user) = server.signed_up_user(&phone).await;
    assert_eq!(user["account"]["phone"], phone.as_str());
}

/// While the database does not answer, the requests waiting for it are
/// bounded (256 per pooled connection): past that, 503 at once, not a
/// queue that grows for as long as the hang lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_backlog_answers_503_at_once() {
    let (proxy, db, _, proxied_url) = proxied_database("pk_backlog").await;
    let server = Arc::new(TestServer::start_on(
        db,
        &[
            ("DATABASE_URL", &proxied_url),
            ("PHONEKEY_DB_POOL_SIZE", "1"),
            ("PHONEKEY_DB_TIMEOUT", "1"),
            ("PHONEKEY_REQUEST_TIMEOUT", "4"),
        ],
    ));
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.unwrap();
    let form = [("grant_type", "client_credentials")];
    assert_eq!(server.token_basic(&id, &secret, &form).await.0, 200);

    proxy.freeze();
    const ASKED: usize = 300;
    let tasks: Vec<_> = (0..ASKED)
        .map(|_| {
            let (server, id, secret) = (server.clone(), id.clone(), secret.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let (status, body, _) = server.token_basic(&id, &secret, &form).await;
                (status, body, started.elapsed())
            })
        })
        .collect();
    let mut at_once = 0;
    for task in tasks {
        let (status, body, took) = task.await.unwrap();
        expect_error(status, &body, 503, "temporarily_unavailable");
        assert!(took < Duration::from_secs(8), "a request took {took:?}");
        // The admitted ones wait for the 4 s timeout.
        if took < Duration::from_millis(3500) {
            at_once += 1;
        }
    }
    assert!(
        (ASKED - 256..ASKED).contains(&at_once),
        "{at_once} of {ASKED} answered at once: 256 may wait"
    );

    proxy.thaw();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.token_basic(&id, &secret, &form).await.0 != 200 {
        assert!(Instant::now() < deadline, "service did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A lock that another connection holds and does not let go (an operator's
/// `LOCK TABLES`, a stuck transaction; on SQLite another process's writer)
/// fails the requests that need it with 503 after `PHONEKEY_DB_TIMEOUT`,
/// instead of holding them for as long as the lock is held (MySQL's default
/// for a table lock is a year), and service resumes once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_held_elsewhere_gives_503_then_recovers() {
    let server = TestServer::start_with(&[("PHONEKEY_DB_TIMEOUT", "2")]);
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.unwrap();
    let client_token = || server.token_basic(&id, &secret, &[("grant_type", "client_credentials")]);
    assert_eq!(client_token().await.0, 200);

    let held = server.db.hold_writes("access_tokens");
    let started = Instant::now();
    let (status, body, _) = tokio::time::timeout(Duration::from_secs(8), client_token())
        .await
        .expect("a request waiting for a lock held elsewhere must not hang");
    let waited = started.elapsed();
    expect_error(status, &body, 503, "temporarily_unavailable");
    assert!(
        waited >= Duration::from_millis(1500),
        "it waited {waited:?} for the lock, not the 2 s asked"
    );
    held.release();

    let (status, body, _) = client_token().await;
    assert_eq!(status, 200, "{body}");
}

/// A login while another connection holds the writes back (on SQLite the
/// login's requests run whole on the writer thread, on MySQL in batches):
/// getcode and verifycode answer 503 after `PHONEKEY_DB_TIMEOUT` and change
/// nothing, so after the release the refused getcode's phone gets a code at
/// once (no cooldown was counted), no SMS went out for it, and the code that
/// verifycode presented still signs the user up and logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_while_writes_are_held_gives_503_and_changes_nothing() {
    let server = TestServer::start_with(&[("PHONEKEY_DB_TIMEOUT", "2")]);
    let (id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.unwrap();
    let (phone, refused_phone) = (new_phone(), new_phone());
    let code = server.get_code(&phone).await;

    let held = server.db.hold_writes("otp_codes");
    let (form, ip) = ([("phone", refused_phone.as_str())], new_ip());
    let getcode = server.post_form("/otp/getcode/", &form, &ip);
    let verify = server.verify(&phone, &code);
    let ((gc_status, gc_body, _), (v_status, v_body)) =
        tokio::time::timeout(Duration::from_secs(12), async {
            tokio::join!(getcode, verify)
        })
        .await
        .expect("requests waiting for writes held elsewhere must not hang");
    expect_error(gc_status, &gc_body, 503, "temporarily_unavailable");
    expect_error(v_status, &v_body, 503, "temporarily_unavailable");
    held.release();

    assert_eq!(
        server.sms.sent_to(&refused_phone),
        0,
        "an SMS for a refused getcode"
    );
    let (status, body, _) = server
        .post_form("/otp/getcode/", &[("phone", &refused_phone)], &new_ip())
        .await;
    assert_eq!(status, 200, "the refused getcode counted a hit: {body}");
    let (status, body) = server.verify(&phone, &code).await;
    assert_eq!(status, 200, "the refused verifycode spent the code: {body}");
    let ticket = body["secret_identifier"]
        .as_str()
        .expect("ticket")
        .to_string();
    let (status, user, _) = server
        .put_json(
            "/api/v1/user/",
            &serde_json::json!({ "auto_username": true, "secret_identifier": ticket }),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let (status, tokens, _) = server.otp_grant(&id, &secret, &phone, &ticket).await;
    assert_eq!(status, 200, "{tokens}");
}

/// A request whose statements are all batched on MySQL (a client's token, a
/// refresh, an otp grant whose proof spends; introspection too) takes no
/// pooled connection, and on SQLite no request does (it reads on its
/// thread's own connection), so they are served while every pooled
/// connection is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_served_while_every_pooled_connection_is_busy() {
    let server = TestServer::start_with(&[
        ("PHONEKEY_DB_POOL_SIZE", "2"),
        ("PHONEKEY_DB_TIMEOUT", "1"),
        ("PHONEKEY_OTP_RESEND_SECONDS", "0"),
    ]);
    let (id, secret, refresh) = client_with_a_user(&server).await;
    let phone = new_phone();
    server.signed_up_user(&phone).await;
    let ticket = server.verified_ticket(&phone).await;

    let held: Vec<_> = (0..2)
        .map(|_| server.state.pool.get().expect("a pooled connection"))
        .collect();
    let client = server
        .token_basic(&id, &secret, &[("grant_type", "client_credentials")])
        .await;
    let refreshed = rotate(&server, &id, &secret, &refresh).await;
    let logged_in = server.otp_grant(&id, &secret, &phone, &ticket).await;
    drop(held);

    for (status, body, _) in [&client, &refreshed, &logged_in] {
        assert_eq!(*status, 200, "{body}");
    }
}
