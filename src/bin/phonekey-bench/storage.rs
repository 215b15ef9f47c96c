//! The storage ceiling of a scenario ("db only"): the statements its
//! request makes, made with phonekey's own storage code from as many loops as
//! the server has pooled connections, in this process, with no HTTP, no form
//! parsing and no signing. It is the most that a server making those
//! statements could reach on this machine and database, so `per second ÷ db
//! only` says how much of a scenario's cost is the database's.
//!
//! Each function below mirrors one request's storage calls; keep them in
//! step with the grant they copy (named in its comment).

use std::sync::{Arc, Mutex};

use phonekey::db::tokens::{AccessTokenRow, RefreshTokenRow};
use phonekey::db::{self, Backend, Conn, DbUrl, Pool, PoolOptions};
use phonekey::error::AppError;
use phonekey::{secrets, users};

use crate::load::{self, Measured};
use crate::{finish, Args, Ctx, Phones, ScenarioResult};

/// The server's default `PHONEKEY_DB_POOL_SIZE`: its most concurrent statements.
const LOOPS: usize = 16;

#[derive(Clone)]
pub struct Storage {
    pool: Pool,
    backend: Backend,
    client_id: Arc<str>,
}

type Op = Result<(), String>;

impl Storage {
    pub fn open(database_url: &str, client_id: &str) -> Result<Storage, String> {
        let url = DbUrl::parse(database_url)?;
        let pool = db::build_pool(
            &url,
            &PoolOptions {
                max_size: LOOPS as u32,
                connect_timeout: std::time::Duration::from_secs(10),
            },
        );
        Ok(Storage {
            pool,
            backend: url.backend,
            client_id: client_id.into(),
        })
    }

    /// Runs `f` on a request's connection on the blocking pool, as the server does.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, AppError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.for_request();
            f(&mut conn).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn access_row(&self, user_id: Option<&str>, family: Option<&str>, now: i64) -> AccessTokenRow {
        AccessTokenRow {
            jti: secrets::ordered_id(12),
            client_id: self.client_id.to_string(),
            user_id: user_id.map(str::to_string),
            scope: String::new(),
            family: family.map(str::to_string),
            issued_at: now,
            expires_at: now + 3600,
            revoked: false,
            audience: None,
            token_hash: Some(secrets::random_hex(32)),
        }
    }

    fn refresh_row(
        &self,
        token: &str,
        parent: Option<&str>,
        user_id: &str,
        family: &str,
        now: i64,
    ) -> RefreshTokenRow {
        RefreshTokenRow {
            token_hash: db::tokens::refresh_key(self.backend, token),
            family: family.to_string(),
            parent_hash: parent.map(|p| db::tokens::refresh_key(self.backend, p)),
            client_id: self.client_id.to_string(),
            user_id: Some(user_id.to_string()),
            scope: String::new(),
            issued_at: now,
            expires_at: now + 1_209_600,
            used_at: None,
            revoked: false,
            resource: None,
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lost(what: &str) -> AppError {
    AppError::Internal(format!("{what} did not match"))
}

/// As `Issuer::issue` for client_credentials: one INSERT (on MySQL a row of a batched one).
async fn client_credentials(s: Storage) -> Op {
    let row = s.access_row(None, None, now());
    s.with_conn(move |conn| Ok(db::tokens::store_access(conn, row)?))
        .await
}

/// As introspection of a client's token: the joined lookup by `jti` (on MySQL batched).
async fn introspect(s: Storage, jti: Arc<str>) -> Op {
    let found = s
        .with_conn(move |conn| Ok(db::tokens::lookup_access_with_username(conn, &jti)?))
        .await?;
    found.map(drop).ok_or_else(|| "token not found".into())
}

/// As a refresh (`Issuer::recover_refresh`, then `issue_tokens`): the lookup,
/// then the rotation that spends the token and stores the new pair (one
/// transaction; on MySQL shared with concurrent rotations).
async fn refresh(s: Storage, chain: Arc<Mutex<String>>) -> Op {
    let old = chain.lock().map_err(|_| "poisoned")?.clone();
    let next = secrets::ordered_secret();
    let s2 = s.clone();
    let kept = next.clone();
    s.with_conn(move |conn| {
        let row = db::tokens::lookup_refresh(conn, &old)?.ok_or_else(|| lost("refresh lookup"))?;
        let now = now();
        let user = row.user_id.as_deref().unwrap_or_default();
        let access = s2.access_row(Some(user), Some(&row.family), now);
        let fresh = s2.refresh_row(&next, Some(&old), user, &row.family, now);
        if !db::tokens::store_rotation(conn, row.token_hash, now, access, fresh)? {
            return Err(lost("refresh spend"));
        }
        Ok(())
    })
    .await?;
    *chain.lock().map_err(|_| "poisoned")? = kept;
    Ok(())
}

/// As `grants::otp` with a code, for a phone without a user: the user
/// lookup, then one transaction that spends the code, creates the user and
/// stores the tokens (on MySQL `db::otp_grant`, batched with concurrent grants).
async fn otp_token(s: Storage, codes: Arc<Mutex<Vec<(String, String)>>>) -> Option<Op> {
    let (phone, hash) = codes.lock().ok()?.pop()?;
    let s2 = s.clone();
    let op = s.with_conn(move |conn| {
        if db::users::lookup_user_id_by_phone(conn, &phone)?.is_some() {
            return Err(AppError::Internal("the phone has a user".into()));
        }
        let now = now();
        let user_id = users::new_user_id();
        let family = secrets::ordered_id(12);
        let access = s2.access_row(Some(&user_id), Some(&family), now);
        let fresh = s2.refresh_row(&secrets::ordered_secret(), None, &user_id, &family, now);
        #[cfg(feature = "mysql")]
        if s2.backend == Backend::Mysql {
            use db::otp_grant::{GrantWrite, Outcome};
            use db::proofs::ProofKey;
            let write = GrantWrite {
                proof: ProofKey::Code {
                    hash,
                    max_attempts: 5,
                },
                new_user: Some(users::phone_user_rows(user_id, &phone, now)),
                phone,
                now,
                access,
                refresh: Some(fresh),
            };
            return match db::otp_grant::store(conn, write)? {
                Outcome::Stored => Ok(()),
                Outcome::NotStored => Err(lost("code")),
            };
        }
        conn.write_tx(move |c| {
            if !db::codes::spend_if_matches(c, &phone, &hash, 5, now)? {
                return Err(lost("code"));
            }
            users::user_for_phone_as(c, &phone, Some(user_id.clone()), now)?;
            db::tokens::insert_access(c, &access)?;
            db::tokens::insert_refresh(c, &fresh)?;
            Ok(())
        })
    });
    Some(op.await)
}

/// `n` fresh phones with a live code each (as getcode stores them), and the
/// code hash that spends it.
async fn prepare_codes(
    s: &Storage,
    phones: &Phones,
    n: usize,
) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|_| {
            let phone = phones.next();
            let hash = secrets::sha256_hex(phone.as_bytes());
            (phone, hash)
        })
        .collect();
    // LOOPS tasks, each storing its share in transactions of 500 codes.
    let share = n.div_ceil(LOOPS).max(1);
    let mut tasks = Vec::new();
    for part in pairs.chunks(share) {
        let (s, part) = (s.clone(), part.to_vec());
        tasks.push(tokio::spawn(async move {
            for batch in part.chunks(500) {
                let batch = batch.to_vec();
                s.with_conn(move |conn| conn.write_tx(move |c| store_codes(c, &batch)))
                    .await?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(pairs)
}

fn store_codes(conn: &mut db::DbConn, batch: &[(String, String)]) -> Result<(), AppError> {
    let now = now();
    for (phone, hash) in batch {
        let row = db::codes::CodeRow {
            id: secrets::ordered_id(10),
            phone: phone.clone(),
            code_hash: hash.clone(),
            created_at: now,
            expires_at: now + 300,
            attempts: 0,
            superseded_at: None,
            verified_at: None,
        };
        db::codes::replace(conn, &row)?;
    }
    Ok(())
}

/// The storage ceiling of `scenario` (as named in the table), if it has one.
pub async fn ceiling(
    args: &Args,
    ctx: &Ctx,
    s: &Storage,
    scenario: &'static str,
    http_rate: f64,
) -> Result<Option<ScenarioResult>, String> {
    let (warmup, duration) = args.window();
    let mut runs: Vec<Measured> = Vec::new();
    let mut first_error = None;
    // A first guess for sizing the otp codes; later runs use the last rate.
    let mut expected_rate = (http_rate * 1.5).max(1_000.0);
    for _ in 0..args.runs {
        let s = s.clone();
        let (m, e) = match scenario {
            "client_credentials" => {
                load::run(LOOPS, warmup, duration, None, move |_| {
                    let s = s.clone();
                    async move { Some(client_credentials(s).await) }
                })
                .await
            }
            "introspect" => {
                let row = s.access_row(None, None, now());
                let jti: Arc<str> = row.jti.clone().into();
                s.with_conn(move |conn| Ok(db::tokens::store_access(conn, row)?))
                    .await?;
                load::run(LOOPS, warmup, duration, None, move |_| {
                    let (s, jti) = (s.clone(), jti.clone());
                    async move { Some(introspect(s, jti).await) }
                })
                .await
            }
            "refresh" => {
                let mut chains = Vec::new();
                for _ in 0..LOOPS {
                    let token = secrets::ordered_secret();
                    let row = s.refresh_row(
                        &token,
                        None,
                        &users::new_user_id(),
                        &secrets::ordered_id(12),
                        now(),
                    );
                    s.with_conn(move |conn| {
                        conn.write_one(move |c| Ok(db::tokens::insert_refresh(c, &row)?))
                    })
                    .await?;
                    chains.push(Arc::new(Mutex::new(token)));
                }
                let chains = Arc::new(chains);
                load::run(LOOPS, warmup, duration, None, move |loop_no| {
                    let (s, chain) = (s.clone(), chains.get(loop_no).cloned());
                    async move { Some(refresh(s, chain?).await) }
                })
                .await
            }
            "otp_token" => {
                let need =
                    (expected_rate * (args.warmup + args.duration) * 1.3).ceil() as usize + LOOPS;
                let codes = Arc::new(Mutex::new(prepare_codes(&s, &ctx.phones, need).await?));
                load::run(LOOPS, warmup, duration, None, move |_| {
                    let (s, codes) = (s.clone(), codes.clone());
                    otp_token(s, codes)
                })
                .await
            }
            _ => return Ok(None),
        };
        first_error = first_error.or(e);
        expected_rate = m.rate.max(100.0);
        runs.push(m);
    }
    Ok(Some(finish(scenario, runs, first_error)))
}
