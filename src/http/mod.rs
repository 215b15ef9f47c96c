//! HTTP: routes, shared state, and thin handlers that parse, call the domain
//! on the blocking pool, and shape the response.

mod authorize;
mod body;
mod client_ip;
mod error;
mod lane;
mod meta;
mod otp;
mod pages;
mod token;
mod users;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::middleware::{Logger, NormalizePath, TrailingSlash};
use actix_web::{web, HttpResponse};

use crate::core::Core;
use crate::db::{Backend, Conn, Pool};
use crate::error::{AppError, AppResult};
use crate::sms::SmsProvider;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub core: Arc<Core>,
    pub sms: Arc<dyn SmsProvider>,
    /// MySQL: where requests whose statements are all batched run.
    lane: Option<Arc<lane::Lane>>,
    backlog: Arc<Backlog>,
}

/// Requests whose database work may be queued or running at once, per
/// pooled connection: far more than load needs (at 10,000 requests a
/// second 4,096 wait 0.4 s), few enough that a database that stops
/// answering cannot grow the queues without end.
const BACKLOG_PER_CONNECTION: usize = 256;

impl AppState {
    pub fn new(pool: Pool, core: Arc<Core>, sms: Arc<dyn SmsProvider>) -> AppState {
        // Three threads per pooled connection: a batch takes up to 64 rows.
        let lane = match pool.backend() {
            Backend::Mysql => lane::Lane::start(3 * pool.max_size() as usize).map(Arc::new),
            Backend::Sqlite => None,
        };
        let backlog = Arc::new(Backlog {
            jobs: AtomicUsize::new(0),
            max: BACKLOG_PER_CONNECTION * pool.max_size() as usize,
        });
        AppState {
            pool,
            core,
            sms,
            lane,
            backlog,
        }
    }

    /// `blocking` for a request whose statements are batched on MySQL: there
    /// it runs on the lane, with a connection taken only if it needs one.
    pub async fn batched<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn, &Core) -> AppResult<T> + Send + 'static,
    {
        let Some(lane) = &self.lane else {
            return self.blocking(f).await;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let (given_up, job) = self.admit(f)?;
        let sent = lane.run(Box::new(move || {
            let _ = reply.send(job());
        }));
        if !sent {
            return Err(AppError::Internal(
                "the batched-requests lane is gone".into(),
            ));
        }
        let answer = async {
            answer.await.map_err(|_| {
                AppError::Internal("a request failed on the batched-requests lane".into())
            })?
        };
        self.within_timeout(answer, given_up).await
    }

    /// `batched` for a request whose database work is its writes and little
    /// else (no password hash, at most one signature): on SQLite it runs
    /// whole on the writer thread, inside the group commit, and is awaited
    /// there, which spares the hops to and from a blocking thread; `f` then
    /// holds up the other writes while it runs.
    pub async fn on_writer<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn, &Core) -> AppResult<T> + Send + 'static,
    {
        if self.pool.backend() != Backend::Sqlite {
            return self.batched(f).await;
        }
        let (given_up, admitted) = self.admission()?;
        let core = self.core.clone();
        let job = move |conn: &mut Conn| {
            admitted.start()?;
            f(conn, &core)
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pool.run_on_writer(job, move |result| {
            let _ = reply.send(result.map_err(AppError::from).and_then(|r| r));
        });
        let answer = async {
            answer
                .await
                .map_err(|_| AppError::Internal("a request failed on the SQLite writer".into()))?
        };
        self.within_timeout(answer, given_up).await
    }

    /// Runs `f` with a pooled connection on the blocking thread pool: diesel
    /// never runs on an executor thread.
    pub async fn blocking<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn, &Core) -> AppResult<T> + Send + 'static,
    {
        let (given_up, job) = self.admit(f)?;
        let answer = async {
            web::block(job)
                .await
                .map_err(|_| AppError::Internal("the blocking pool is gone".into()))?
        };
        self.within_timeout(answer, given_up).await
    }

    /// Takes a place in the backlog for `f`, a request's database work, or
    /// 503 at once when it is full. Returns the flag that `within_timeout`
    /// sets when the request gives up, and the job to run: it gives the place
    /// back when it ends, and does nothing if its request has given up by
    /// then, so that the jobs queued behind a database that stopped
    /// answering are not carried out for nobody once it answers again.
    fn admit<T, F>(
        &self,
        f: F,
    ) -> AppResult<(
        Arc<AtomicBool>,
        impl FnOnce() -> AppResult<T> + Send + 'static,
    )>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn, &Core) -> AppResult<T> + Send + 'static,
    {
        let (given_up, admitted) = self.admission()?;
        let (pool, core) = (self.pool.clone(), self.core.clone());
        let job = move || {
            admitted.start()?;
            with_connection(&pool, &core, f)
        };
        Ok((given_up, job))
    }

    /// MySQL: a place in the backlog for a row of a batched statement that
    /// the request awaits, and the flag `within_timeout` sets if it gives up.
    #[cfg(feature = "mysql")]
    fn waiting(&self) -> AppResult<(Arc<AtomicBool>, crate::db::Waiting)> {
        let (given_up, admitted) = self.admission()?;
        Ok((
            given_up.clone(),
            crate::db::Waiting::new(given_up, admitted),
        ))
    }

    /// `admit`'s place in the backlog and its flag, for a job built elsewhere.
    fn admission(&self) -> AppResult<(Arc<AtomicBool>, Admitted)> {
        let place = self.backlog.take().ok_or_else(|| {
            AppError::Unavailable("too many requests are waiting for the database".into())
        })?;
        let given_up = Arc::new(AtomicBool::new(false));
        let admitted = Admitted {
            _place: place,
            given_up: given_up.clone(),
        };
        Ok((given_up, admitted))
    }

    /// Waits for a request's database work at most `PHONEKEY_REQUEST_TIMEOUT`
    /// (a server that stops answering holds its statements forever); then
    /// 503, and the work is dropped if it has not started yet.
    async fn within_timeout<T>(
        &self,
        answer: impl std::future::Future<Output = AppResult<T>>,
        given_up: Arc<AtomicBool>,
    ) -> AppResult<T> {
        match tokio::time::timeout(self.core.config.request_timeout, answer).await {
            Ok(result) => result,
            Err(_) => {
                given_up.store(true, Ordering::Relaxed);
                Err(AppError::Unavailable(
                    "the database did not answer within PHONEKEY_REQUEST_TIMEOUT".into(),
                ))
            }
        }
    }
}

/// How many requests' database work is queued or running, and the most
/// that may be.
struct Backlog {
    jobs: AtomicUsize,
    max: usize,
}

impl Backlog {
    fn take(self: &Arc<Self>) -> Option<Place> {
        if self.jobs.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.jobs.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Place(self.clone()))
    }
}

/// A job let into the backlog: its place, held until the job ends, and
/// whether its request has given up waiting.
struct Admitted {
    _place: Place,
    given_up: Arc<AtomicBool>,
}

impl Admitted {
    /// Whether the job should still run: not if its request has given up.
    fn start(&self) -> AppResult<()> {
        if self.given_up.load(Ordering::Relaxed) {
            return Err(AppError::Unavailable("the request had given up".into()));
        }
        Ok(())
    }
}

/// One job's place in the backlog, given back when dropped.
struct Place(Arc<Backlog>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.jobs.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `f` with a request's connection and tells the pool how it went.
fn with_connection<T>(
    pool: &Pool,
    core: &Core,
    f: impl FnOnce(&mut Conn, &Core) -> AppResult<T>,
) -> AppResult<T> {
    let mut conn = pool.for_request();
    let result = f(&mut conn, core);
    conn.record(matches!(result, Err(AppError::Unavailable(_))));
    result
}

/// Every route. Paths are registered without their trailing slash;
/// `NormalizePath` makes both spellings work.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/otp/getcode", otp::getcode))
        .service(post("/otp/verifycode", otp::verifycode))
        .service(
            web::resource("/api/v1/user")
                .route(web::put().to(users::create))
                .route(web::post().to(users::create))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/o/authorize")
                .route(web::get().to(authorize::show))
                .route(web::head().to(authorize::show))
                .route(web::post().to(authorize::decide))
                .default_service(web::to(method_not_allowed)),
        )
        .service(post("/o/authorize/phone", authorize::phone))
        .service(post("/o/authorize/code", authorize::code))
        .service(post("/o/authorize/logout", authorize::logout))
        .service(post("/o/token", token::token))
        .service(post("/o/extended_token", token::token))
        .service(post("/o/introspect", token::introspect))
        .service(post("/o/revoke_token", token::revoke))
        .service(get(
            "/.well-known/oauth-authorization-server",
            meta::metadata,
        ))
        .service(get("/.well-known/jwks.json", meta::jwks))
        .service(get("/healthz", meta::healthz))
        .service(get("/readyz", meta::readyz))
        .default_service(web::to(not_found));
}

/// The middleware every app gets, around `configure`.
pub fn app(
    state: AppState,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(web::Data::new(state))
        .wrap(NormalizePath::new(TrailingSlash::Trim))
        // %U: the path without the query string, so nothing secret reaches the log.
        .wrap(
            Logger::new("%a %{method}xi %U %s %b %Dms")
                .custom_request_replace("method", |req| req.method().to_string())
                .exclude("/healthz")
                .log_target("phonekey::http"),
        )
        .configure(configure)
}

fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(method_not_allowed))
}

fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn not_found() -> AppResult<HttpResponse> {
    Err(AppError::NotFound)
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(serde_json::json!({
        "error": "invalid_request",
        "error_description": "this method is not allowed here",
    }))
}
