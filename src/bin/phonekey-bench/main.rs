//! phonekey-bench: starts the real `phonekey serve` binary on a fresh SQLite
//! file (and, with `--mysql URL`, on a fresh MariaDB database), drives it with
//! its own HTTP load generator, and reports requests/s, latency, errors, the
//! ratio to the same server's `/healthz`, and the server's peak RSS.
//!
//! Where a scenario writes or reads the database, a second figure ("db
//! only", storage.rs) is that request's statements made directly, without
//! the server: the database's ceiling for the scenario in the same run.
//!
//!   cargo build --release --features mysql
//!   target/release/phonekey-bench [--mysql mysql://root@127.0.0.1:3306/test] [--quick]

mod conn;
mod load;
mod sink;
mod storage;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hyper::Method;
use load::{Laps, Measured, Outcome};
use serde_json::{json, Value};

#[derive(Parser, Clone)]
#[command(
    name = "phonekey-bench",
    about = "Load benchmark for the phonekey server"
)]
struct Args {
    /// A short smoke run: checks that every scenario runs with zero errors.
    #[arg(long)]
    quick: bool,
    /// Also benchmark on MySQL/MariaDB; a fresh database is created on this server.
    #[arg(long, value_name = "URL")]
    mysql: Option<String>,
    /// Skip the SQLite server.
    #[arg(long)]
    no_sqlite: bool,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Runs per scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The phonekey binary (default: next to this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Skip the "db only" storage ceilings.
    #[arg(long)]
    no_db_only: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// Appends a line to this file when each measured window starts and
    /// ends, so that a profiler can be attached to the server for exactly
    /// that time (some scenarios first prepare their input for a while).
    #[arg(long, value_name = "FILE")]
    mark: Option<PathBuf>,
}

impl Args {
    fn settle(mut self) -> Args {
        if self.quick {
            self.duration = self.duration.min(0.5);
            self.warmup = self.warmup.min(0.2);
            self.runs = 1;
            self.connections = self.connections.min(16);
        }
        self
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn main() {
    let args = Args::parse().settle();
    if let Some(file) = &args.mark {
        load::mark_windows_in(file.clone());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("tokio runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("phonekey-bench: {message}");
    std::process::exit(2)
}

/// Fresh, valid phone numbers (US +1 415 2xx-xxxx upwards), never reused in one server's database.
struct Phones(AtomicU64);

impl Phones {
    fn next(&self) -> String {
        format!(
            "+1415{}",
            2_000_000 + self.0.fetch_add(1, Ordering::Relaxed) % 7_000_000
        )
    }
}

struct Server {
    child: Child,
    base: String,
    client_id: String,
    client_secret: String,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

fn server_binary(args: &Args) -> Result<PathBuf, String> {
    if let Some(path) = &args.server {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = me.with_file_name("phonekey");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "no phonekey binary at {}; build it or pass --server",
            path.display()
        ))
    }
}

async fn start_server(binary: &Path, database_url: &str, sink_url: &str) -> Result<Server, String> {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "phonekey-bench-{}",
        phonekey::secrets::random_hex(6)
    )));
    std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("PHONEKEY_LISTEN", format!("127.0.0.1:{port}")),
        ("PHONEKEY_SMS_PROVIDER", "webhook".into()),
        ("PHONEKEY_SMS_WEBHOOK_URL", sink_url.into()),
        // Limits off: every request here comes from one loopback address.
        ("PHONEKEY_OTP_RESEND_SECONDS", "0".into()),
        ("PHONEKEY_OTP_PER_PHONE_HOUR", "0".into()),
        ("PHONEKEY_OTP_PER_IP_HOUR", "0".into()),
        ("PHONEKEY_OTP_AUTO_CREATE_USERS", "true".into()),
        ("RUST_LOG", "warn".into()),
    ];
    let command = |args: &[&str]| {
        let mut c = Command::new(binary);
        c.args(args).current_dir(&dir.0);
        for (k, v) in &env {
            c.env(k, v);
        }
        c
    };
    let out = command(&[
        "client",
        "create",
        "--name",
        "bench",
        "--grant-types",
        "otp,refresh_token,client_credentials",
        "--json",
    ])
    .output()
    .map_err(|e| format!("running {}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "client create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let created: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.0.join("server.log")).map_err(|e| e.to_string())?;
    let child = command(&["serve"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{port}");
    let server = Server {
        child,
        base,
        client_id: created["client_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        client_secret: created["client_secret"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        _dir: dir,
    };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{}/readyz", server.base)).send().await {
            if r.status() == 200 {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the server did not become ready".into())
}

#[derive(serde::Serialize)]
struct ScenarioResult {
    name: &'static str,
    median: Measured,
    runs: Vec<Measured>,
    first_error: Option<String>,
    /// The scenario's statements alone, without the server (storage.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    db_only: Option<Box<ScenarioResult>>,
}

/// What every request needs. `http` is for setting up (not measured);
/// measured requests go over `conns`, one connection per load loop.
#[derive(Clone)]
struct Ctx {
    http: reqwest::Client,
    conns: Arc<conn::Conns>,
    base: Arc<str>,
    client_id: Arc<str>,
    client_secret: Arc<str>,
    codes: sink::Codes,
    phones: Arc<Phones>,
}

impl Ctx {
    async fn post(&self, path: &str, form: &[(&str, &str)], basic: bool) -> Result<Value, String> {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if basic {
            request = request.basic_auth(&*self.client_id, Some(&*self.client_secret));
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("{path}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    }

    /// A measured form POST on loop `worker`'s connection; the answer's
    /// body if its status is a success.
    async fn send_form(
        &self,
        worker: usize,
        path: &str,
        form: &[(&str, &str)],
        basic: bool,
    ) -> Result<Bytes, String> {
        let body = Some((conn::FORM, conn::form(form)));
        let (status, body) = self
            .conns
            .send(worker, Method::POST, path, body, basic)
            .await?;
        if !status.is_success() {
            return Err(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body)
    }

    /// `send_form`, with the JSON answer.
    async fn send_form_json(
        &self,
        worker: usize,
        path: &str,
        form: &[(&str, &str)],
        basic: bool,
    ) -> Result<Value, String> {
        let body = self.send_form(worker, path, form, basic).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    }

    async fn getcode(&self, phone: &str) -> Result<String, String> {
        self.post("/otp/getcode/", &[("phone", phone)], false)
            .await?;
        self.codes
            .take(phone)
            .ok_or_else(|| format!("no SMS reached the sink for {phone}"))
    }

    async fn otp_token(&self, phone: &str, code: &str) -> Result<Value, String> {
        self.post(
            "/o/token/",
            &[("grant_type", "otp"), ("phone", phone), ("code", code)],
            true,
        )
        .await
    }

    /// `n` fresh (phone, code) pairs, made `connections` at a time (not measured).
    async fn prepare_codes(
        &self,
        n: usize,
        connections: usize,
    ) -> Result<Vec<(String, String)>, String> {
        let pool = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let todo = Arc::new(AtomicU64::new(n as u64));
        let mut tasks = Vec::new();
        for _ in 0..connections.min(n.max(1)) {
            let (ctx, pool, todo) = (self.clone(), pool.clone(), todo.clone());
            tasks.push(tokio::spawn(async move {
                while todo
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1))
                    .is_ok()
                {
                    let phone = ctx.phones.next();
                    let code = ctx.getcode(&phone).await?;
                    if let Ok(mut p) = pool.lock() {
                        p.push((phone, code));
                    }
                }
                Ok::<_, String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        let codes = std::mem::take(&mut *pool.lock().map_err(|_| "poisoned")?);
        Ok(codes)
    }
}

fn finish(name: &'static str, runs: Vec<Measured>, first_error: Option<String>) -> ScenarioResult {
    ScenarioResult {
        name,
        median: load::median(runs.clone()),
        runs,
        first_error,
        db_only: None,
    }
}

impl Args {
    fn window(&self) -> (Duration, Duration) {
        (
            Duration::from_secs_f64(self.warmup),
            Duration::from_secs_f64(self.duration),
        )
    }
}

/// Runs the same step `args.runs` times.
async fn repeat<S, Fut>(
    args: &Args,
    name: &'static str,
    laps: Option<&Laps>,
    step: S,
) -> ScenarioResult
where
    S: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<Outcome>> + Send,
{
    let (warmup, duration) = args.window();
    let mut runs = Vec::new();
    let mut first_error = None;
    for _ in 0..args.runs {
        let (m, e) = load::run(args.connections, warmup, duration, laps, step.clone()).await;
        first_error = first_error.or(e);
        runs.push(m);
    }
    finish(name, runs, first_error)
}

async fn healthz(args: &Args, ctx: &Ctx) -> ScenarioResult {
    let ctx = ctx.clone();
    repeat(args, "healthz", None, move |worker| {
        let ctx = ctx.clone();
        async move {
            let r = ctx
                .conns
                .send(worker, Method::GET, "/healthz", None, false)
                .await;
            Some(match r {
                Ok((status, _)) if status.is_success() => Ok(()),
                Ok((status, _)) => Err(format!("healthz: {status}")),
                Err(e) => Err(e),
            })
        }
    })
    .await
}

async fn client_credentials(args: &Args, ctx: &Ctx) -> ScenarioResult {
    let ctx = ctx.clone();
    repeat(args, "client_credentials", None, move |worker| {
        let ctx = ctx.clone();
        async move {
            let form = [("grant_type", "client_credentials")];
            Some(
                ctx.send_form(worker, "/o/token/", &form, true)
                    .await
                    .map(drop),
            )
        }
    })
    .await
}

/// `grant_type=otp` with the code as proof, a fresh phone per request; the
/// codes are requested before each run and not counted.
async fn otp_token(args: &Args, ctx: &Ctx) -> Result<ScenarioResult, String> {
    let (warmup, duration) = args.window();
    let mut runs: Vec<Measured> = Vec::new();
    let mut first_error = None;
    // A first guess; later runs are sized by the last measured rate.
    let mut expected_rate = if args.quick { 10_000.0 } else { 8_000.0 };
    for _ in 0..args.runs {
        let need = (expected_rate * (args.warmup + args.duration) * 1.3).ceil() as usize
            + args.connections;
        let pool = Arc::new(Mutex::new(ctx.prepare_codes(need, args.connections).await?));
        let ctx = ctx.clone();
        let step = move |worker| {
            let (ctx, pool) = (ctx.clone(), pool.clone());
            async move {
                let (phone, code) = pool.lock().ok()?.pop()?;
                let form = [("grant_type", "otp"), ("phone", &phone), ("code", &code)];
                Some(
                    ctx.send_form(worker, "/o/token/", &form, true)
                        .await
                        .map(drop),
                )
            }
        };
        let (m, e) = load::run(args.connections, warmup, duration, None, step).await;
        first_error = first_error.or(e);
        expected_rate = m.rate.max(100.0);
        runs.push(m);
    }
    Ok(finish("otp_token", runs, first_error))
}

/// A whole login of a new phone: getcode → verifycode → user creation → otp grant.
/// Each of its four requests is also timed alone (`request_p99_ms`).
async fn otp_login(args: &Args, ctx: &Ctx) -> ScenarioResult {
    let ctx = ctx.clone();
    let laps = Laps::default();
    let recorder = laps.clone();
    repeat(args, "otp_login", Some(&laps), move |worker| {
        let (ctx, laps) = (ctx.clone(), recorder.clone());
        async move {
            let login = async {
                let phone = ctx.phones.next();
                let sent = Instant::now();
                ctx.send_form(worker, "/otp/getcode/", &[("phone", &phone)], false)
                    .await?;
                laps.record("getcode", sent);
                let code = ctx.codes.take(&phone).ok_or("no SMS reached the sink")?;
                let verify = [("phone", phone.as_str()), ("code", &code)];
                let sent = Instant::now();
                let verified = ctx.send_form_json(worker, "/otp/verifycode/", &verify, false).await?;
                laps.record("verifycode", sent);
                let ticket = verified["secret_identifier"].as_str().ok_or("no ticket")?;
                let user = json!({ "auto_username": true, "secret_identifier": ticket, "first_name": "Bench" });
                let sent = Instant::now();
                let (status, body) = ctx
                    .conns
                    .send(worker, Method::PUT, "/api/v1/user/", Some((conn::JSON, user.to_string())), false)
                    .await?;
                laps.record("user", sent);
                if status != 201 {
                    return Err(format!("user: {status} {}", String::from_utf8_lossy(&body)));
                }
                let grant = [("grant_type", "otp"), ("phone", &phone), ("secret_identifier", ticket)];
                let sent = Instant::now();
                ctx.send_form(worker, "/o/token/", &grant, true).await?;
                laps.record("otp grant", sent);
                Ok(())
            };
            Some(login.await)
        }
    })
    .await
}

/// Refresh-token rotation: each connection keeps rotating its own token.
async fn refresh(args: &Args, ctx: &Ctx) -> Result<ScenarioResult, String> {
    let mut chains = Vec::new();
    for (phone, code) in ctx
        .prepare_codes(args.connections, args.connections)
        .await?
    {
        let tokens = ctx.otp_token(&phone, &code).await?;
        let token = tokens["refresh_token"]
            .as_str()
            .ok_or("no refresh token")?
            .to_string();
        chains.push(Mutex::new(token));
    }
    let chains = Arc::new(chains);
    let ctx = ctx.clone();
    Ok(repeat(args, "refresh", None, move |worker| {
        let (ctx, chains) = (ctx.clone(), chains.clone());
        async move {
            let current = chains.get(worker)?.lock().ok()?.clone();
            let form = [("grant_type", "refresh_token"), ("refresh_token", &current)];
            let outcome = ctx
                .send_form_json(worker, "/o/token/", &form, true)
                .await
                .and_then(|v| {
                    let next = v["refresh_token"]
                        .as_str()
                        .ok_or("no refresh token")?
                        .to_string();
                    if let Some(Ok(mut slot)) = chains.get(worker).map(|m| m.lock()) {
                        *slot = next;
                    }
                    Ok(())
                });
            Some(outcome)
        }
    })
    .await)
}

/// RFC 7662 introspection of a valid access token, by a confidential client.
async fn introspect(args: &Args, ctx: &Ctx) -> Result<ScenarioResult, String> {
    let tokens = ctx
        .post("/o/token/", &[("grant_type", "client_credentials")], true)
        .await?;
    let token: Arc<str> = tokens["access_token"]
        .as_str()
        .ok_or("no access token")?
        .into();
    let ctx = ctx.clone();
    Ok(repeat(args, "introspect", None, move |worker| {
        let (ctx, token) = (ctx.clone(), token.clone());
        async move {
            let outcome = ctx
                .send_form_json(worker, "/o/introspect/", &[("token", &token)], true)
                .await
                .and_then(|v| {
                    if v["active"] == true {
                        Ok(())
                    } else {
                        Err(format!("token reported inactive: {v}"))
                    }
                });
            Some(outcome)
        }
    })
    .await)
}

/// A resource server verifying an access token against the JWKS, in this
/// process on one thread: verifications per second per core.
async fn jwt_verify(args: &Args, ctx: &Ctx) -> Result<ScenarioResult, String> {
    use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};
    let tokens = ctx
        .post("/o/token/", &[("grant_type", "client_credentials")], true)
        .await?;
    let token = tokens["access_token"]
        .as_str()
        .ok_or("no access token")?
        .to_string();
    let jwks: JwkSet = ctx
        .http
        .get(format!("{}/.well-known/jwks.json", ctx.base))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let kid = jsonwebtoken::decode_header(&token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let key = DecodingKey::from_jwk(jwks.find(&kid).ok_or("kid not published")?)
        .map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_aud = false;
    let mut runs = Vec::new();
    let mut first_error = None;
    for _ in 0..args.runs {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(args.duration);
        let (mut n, mut errors) = (0u64, 0u64);
        while Instant::now() < end {
            for _ in 0..64 {
                match jsonwebtoken::decode::<Value>(&token, &key, &validation) {
                    Ok(_) => n += 1,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        runs.push(Measured {
            requests: n,
            errors,
            seconds,
            rate: n as f64 / seconds,
            ..Measured::default()
        });
    }
    Ok(finish("jwt_verify", runs, first_error))
}

async fn scenarios(args: &Args, ctx: &Ctx) -> Result<Vec<ScenarioResult>, String> {
    let mut results = Vec::new();
    if args.wants("healthz") {
        results.push(healthz(args, ctx).await);
    }
    if args.wants("client_credentials") {
        results.push(client_credentials(args, ctx).await);
    }
    if args.wants("otp_token") {
        results.push(otp_token(args, ctx).await?);
    }
    if args.wants("otp_login") {
        results.push(otp_login(args, ctx).await);
    }
    if args.wants("refresh") {
        results.push(refresh(args, ctx).await?);
    }
    if args.wants("introspect") {
        results.push(introspect(args, ctx).await?);
    }
    if args.wants("jwt_verify") {
        results.push(jwt_verify(args, ctx).await?);
    }
    Ok(results)
}

fn print_table(backend: &str, args: &Args, results: &[ScenarioResult], rss: Option<f64>) {
    let ceiling = results
        .iter()
        .find(|r| r.name == "healthz")
        .map(|r| r.median.rate);
    println!(
        "\n{backend}: {} connections, {} run(s) x {:.1} s after {:.1} s warm-up, median run",
        args.connections, args.runs, args.duration, args.warmup
    );
    println!(
        "{:<20} {:>12} {:>9} {:>9} {:>8} {:>10} {:>10} {:>10}",
        "scenario", "per second", "p50 ms", "p99 ms", "errors", "/ healthz", "db only", "/ db only"
    );
    for r in results {
        let m = &r.median;
        let ratio = match (ceiling, r.name) {
            (_, "jwt_verify") | (None, _) => "-".to_string(),
            (Some(c), _) => format!("{:.2}", m.rate / c),
        };
        let (p50, p99) = if r.name == "jwt_verify" {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.2}", m.p50_ms), format!("{:.2}", m.p99_ms))
        };
        let (db_only, of_db) = match &r.db_only {
            Some(d) if d.median.rate > 0.0 => (
                format!("{:.0}", d.median.rate),
                format!("{:.2}", m.rate / d.median.rate),
            ),
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<20} {:>12.0} {:>9} {:>9} {:>8} {:>10} {:>10} {:>10}",
            r.name, m.rate, p50, p99, m.errors, ratio, db_only, of_db
        );
        if let (Some(p50), Some(p99)) = (m.request_p50_ms, m.request_p99_ms) {
            println!("{:<20} {:>12} {p50:>9.2} {p99:>9.2}", "  each request", "");
        }
        for k in &m.request_kinds {
            let name = format!("    {}", k.kind);
            println!("{name:<20} {:>12} {:>9.2} {:>9.2}", "", k.p50_ms, k.p99_ms);
        }
        for e in r
            .first_error
            .iter()
            .chain(r.db_only.iter().flat_map(|d| &d.first_error))
        {
            println!("    first error: {e}");
        }
    }
    if let Some(rss) = rss {
        println!("server peak RSS: {rss:.1} MiB");
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "date": chrono::Utc::now().to_rfc3339(),
    })
}

#[cfg(feature = "mysql")]
fn mysql_database(url: &str) -> Result<(String, impl Drop), String> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    struct Dropper(String, String);
    impl Drop for Dropper {
        fn drop(&mut self) {
            if let Ok(mut c) = diesel::MysqlConnection::establish(&self.0) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.1));
            }
        }
    }
    let name = format!("pk_bench_{}", phonekey::secrets::random_hex(5));
    let mut conn = diesel::MysqlConnection::establish(url).map_err(|e| format!("--mysql: {e}"))?;
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(|e| format!("--mysql: {e}"))?;
    Ok((with_database(url, &name)?, Dropper(url.to_string(), name)))
}

/// `url` naming database `name` instead; options such as `?unix_socket=` stay.
#[cfg(any(feature = "mysql", test))]
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("--mysql: {e}"))?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.into())
}

#[cfg(not(feature = "mysql"))]
fn mysql_database(_url: &str) -> Result<(String, ()), String> {
    Err("--mysql needs a build with `--features mysql`".into())
}

async fn run(args: Args) -> Result<bool, String> {
    let binary = server_binary(&args)?;
    let sink = sink::Sink::start()?;
    let mut targets: Vec<(&str, String)> = Vec::new();
    let mut keep = Vec::new();
    if !args.no_sqlite {
        targets.push(("sqlite", String::new()));
    }
    if let Some(url) = &args.mysql {
        let (db_url, dropper) = mysql_database(url)?;
        keep.push(Box::new(dropper) as Box<dyn std::any::Any>);
        targets.push(("mysql", db_url));
    }
    let mut report = serde_json::Map::new();
    let mut clean = true;
    for (backend, url) in targets {
        let dir_db = format!(
            "sqlite://{}",
            std::env::temp_dir()
                .join(format!(
                    "phonekey-bench-{}.db",
                    phonekey::secrets::random_hex(6)
                ))
                .display()
        );
        let database_url = if backend == "sqlite" {
            dir_db.clone()
        } else {
            url
        };
        let server = start_server(&binary, &database_url, &sink.url).await?;
        let ctx = Ctx {
            conns: Arc::new(conn::Conns::new(
                &server.base,
                args.connections,
                &server.client_id,
                &server.client_secret,
            )?),
            // Idle connections go before the server's 5-s keep-alive closes
            // them: a request sent as the server closes its connection fails.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(args.connections)
                .pool_idle_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
            base: server.base.clone().into(),
            client_id: server.client_id.clone().into(),
            client_secret: server.client_secret.clone().into(),
            codes: sink.codes.clone(),
            phones: Arc::new(Phones(AtomicU64::new(0))),
        };
        let mut results = scenarios(&args, &ctx).await?;
        let rss = server.peak_rss_mib();
        if !args.no_db_only {
            // While the server idles: its database, its client.
            let store = storage::Storage::open(&database_url, &server.client_id)?;
            for r in &mut results {
                r.db_only = storage::ceiling(&args, &ctx, &store, r.name, r.median.rate)
                    .await?
                    .map(Box::new);
            }
        }
        print_table(backend, &args, &results, rss);
        for r in &results {
            let ran =
                r.median.requests > 0 && r.db_only.as_ref().is_none_or(|d| d.median.requests > 0);
            let errors = r
                .runs
                .iter()
                .chain(r.db_only.iter().flat_map(|d| &d.runs))
                .map(|m| m.errors)
                .sum::<u64>();
            if !ran || errors > 0 {
                clean = false;
                eprintln!(
                    "phonekey-bench: {backend}/{}: {} requests, {errors} errors",
                    r.name, r.median.requests
                );
            }
        }
        report.insert(
            backend.to_string(),
            json!({ "scenarios": results, "server_peak_rss_mib": rss }),
        );
        drop(server);
        if backend == "sqlite" {
            let path = dir_db.trim_start_matches("sqlite://").to_string();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
    let out = json!({
        "machine": machine(),
        "settings": { "connections": args.connections, "runs": args.runs, "duration_s": args.duration, "warmup_s": args.warmup, "quick": args.quick },
        "results": report,
    });
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&out).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", args.json.display()))?;
    println!("\nresults written to {}", args.json.display());
    drop(keep);
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn only_the_database_name_changes() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/test", "pk_bench_1").as_deref(),
            Ok("mysql://root@127.0.0.1:3306/pk_bench_1")
        );
        assert_eq!(
            with_database(
                "mysql://root@localhost/test?unix_socket=/run/mysqld/mysqld.sock",
                "pk_bench_2"
            )
            .as_deref(),
            Ok("mysql://root@localhost/pk_bench_2?unix_socket=/run/mysqld/mysqld.sock")
        );
        assert!(with_database("not a url", "x").is_err());
    }
}
