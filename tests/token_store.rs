//! New tokens stored by many requests at once: on MySQL they are gathered
//! into multi-row statements (`db::batch`), on SQLite into the writer's group
//! commit. The tests hold the database's writes while the requests queue up,
//! so that they are stored together, and put among them what must fail (a
//! row the database refuses, a refresh token spent before or by another
//! request of the same batch): that request fails, every other one is stored.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use phonekey::db::tokens::{self, AccessTokenRow, RefreshTokenRow};
use phonekey::db::{self, DbError, DbUrl, Pool, PoolOptions};
use phonekey::secrets;

const WRITERS: usize = 48;

fn row(jti: &str, client_id: &str) -> AccessTokenRow {
    AccessTokenRow {
        jti: jti.to_string(),
        client_id: client_id.to_string(),
        user_id: None,
        scope: "read".into(),
        family: None,
        issued_at: 1_800_000_000,
        expires_at: 1_800_003_600,
        revoked: false,
        audience: None,
        token_hash: Some(secrets::random_hex(32)),
    }
}

/// The connection behind a handle, taken from the pool if need be.
fn db_of(conn: &mut db::Conn) -> &mut db::DbConn {
    conn.db().expect("a connection")
}

fn migrated_pool(test_db: &common::TestDb) -> Pool {
    pool_of(test_db, WRITERS as u32 + 2)
}

fn pool_of(test_db: &common::TestDb, max_size: u32) -> Pool {
    let url = DbUrl::parse(&test_db.url()).expect("url");
    let pool = db::build_pool(
        &url,
        &PoolOptions {
            max_size,
            connect_timeout: Duration::from_secs(10),
        },
    );
    db::migrate(db_of(&mut pool.get().expect("connection"))).expect("migrate");
    pool
}

#[test]
fn concurrent_new_access_tokens_are_each_stored_or_refused_alone() {
    let test_db = common::TestDb::new();
    let pool = migrated_pool(&test_db);
    let taken = row(&secrets::ordered_id(12), "first");
    tokens::store_access(&mut pool.get().expect("connection"), taken.clone()).expect("store");

    let held = test_db.hold_writes("access_tokens");
    let start = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (pool, start) = (pool.clone(), start.clone());
            // One request in eight reuses a stored token's key.
            let jti = if i % 8 == 3 {
                taken.jti.clone()
            } else {
                secrets::ordered_id(12)
            };
            std::thread::spawn(move || {
                let mut conn = pool.get().expect("connection");
                start.wait();
                let result = tokens::store_access(&mut conn, row(&jti, "second"));
                (jti, result)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    held.release();
    let results: Vec<_> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread"))
        .collect();

    let mut conn = pool.get().expect("connection");
    let (mut stored, mut refused) = (0, 0);
    for (jti, result) in &results {
        let found = tokens::find_access(db_of(&mut conn), jti).expect("lookup");
        if *jti == taken.jti {
            assert!(
                matches!(result, Err(DbError::Conflict(_))),
                "a duplicate key: {result:?}"
            );
            let found = found.expect("the first row stays");
            assert_eq!(found.client_id, "first");
            assert_eq!(found.token_hash, taken.token_hash);
            refused += 1;
        } else {
            assert!(result.is_ok(), "{result:?}");
            let found = found.expect("a stored row");
            assert_eq!(found.client_id, "second");
            assert_eq!(found.scope, "read");
            assert!(!found.revoked);
            stored += 1;
        }
    }
    assert_eq!((stored, refused), (WRITERS - WRITERS / 8, WRITERS / 8));
}

fn refresh_row(pool: &Pool, token: &str, parent: Option<&str>) -> RefreshTokenRow {
    let backend = pool.get().expect("connection").backend();
    RefreshTokenRow {
        token_hash: tokens::refresh_key(backend, token),
        family: "family".into(),
        parent_hash: parent.map(|p| tokens::refresh_key(backend, p)),
        client_id: "app".into(),
        user_id: Some("user".into()),
        scope: "read".into(),
        issued_at: 1_800_000_000,
        expires_at: 1_801_000_000,
        used_at: None,
        revoked: false,
        resource: None,
    }
}

#[test]
fn concurrent_rotations_spend_each_token_once() {
    let test_db = common::TestDb::new();
    let pool = migrated_pool(&test_db);
    // Twelve live tokens, each presented by three requests at once, and four
    // spent before: one rotation per live token may win.
    let live: Vec<String> = (0..12).map(|_| secrets::ordered_secret()).collect();
    let spent: Vec<String> = (0..4).map(|_| secrets::ordered_secret()).collect();
    for token in live.iter().chain(&spent) {
        let row = refresh_row(&pool, token, None);
        tokens::insert_refresh(db_of(&mut pool.get().expect("connection")), &row).expect("insert");
    }
    for token in &spent {
        let mut conn = pool.get().expect("connection");
        let key = tokens::refresh_key(conn.backend(), token);
        assert!(tokens::spend_refresh(db_of(&mut conn), &key, 1_800_000_001).expect("spend"));
    }
    let presented: Vec<String> = live
        .iter()
        .flat_map(|t| [t.clone(), t.clone(), t.clone()])
        .chain(spent.iter().cloned())
        .collect();

    let held = test_db.hold_statements("refresh_tokens");
    let start = Arc::new(Barrier::new(presented.len()));
    let rotations: Vec<_> = presented
        .into_iter()
        .map(|old| {
            let (pool, start) = (pool.clone(), start.clone());
            let next = secrets::ordered_secret();
            let refresh = refresh_row(&pool, &next, Some(&old));
            let access = row(&secrets::ordered_id(12), "app");
            std::thread::spawn(move || {
                let mut conn = pool.get().expect("connection");
                start.wait();
                let jti = access.jti.clone();
                let key = tokens::refresh_key(conn.backend(), &old);
                let won = tokens::store_rotation(&mut conn, key, 1_800_000_002, access, refresh);
                (old, next, jti, won)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    held.release();

    let mut conn = pool.get().expect("connection");
    let mut winners = std::collections::HashMap::new();
    for rotation in rotations {
        let (old, next, jti, won) = rotation.join().expect("rotation thread");
        let won = won.expect("a rotation answers");
        let stored_refresh = tokens::find_refresh(db_of(&mut conn), &next).expect("lookup");
        let stored_access = tokens::find_access(db_of(&mut conn), &jti).expect("lookup");
        // A rotation stores its pair exactly when it wins.
        assert_eq!(stored_refresh.is_some(), won, "new refresh token of a win");
        assert_eq!(stored_access.is_some(), won, "new access token of a win");
        if won {
            assert!(!spent.contains(&old), "a token spent before won");
            assert!(
                winners.insert(old.clone(), next).is_none(),
                "two wins of one token"
            );
        }
        let old_row = tokens::find_refresh(db_of(&mut conn), &old)
            .expect("lookup")
            .expect("old row");
        assert!(
            old_row.used_at.is_some(),
            "every presented token ends spent"
        );
    }
    assert_eq!(winners.len(), live.len(), "each live token rotated once");
}

/// A write whose closure fails leaves nothing behind, and the connection it
/// ran on goes on working: on MySQL its transaction is rolled back, not left
/// open for the next `BEGIN` to commit.
#[test]
fn a_failed_transaction_stores_nothing_and_the_next_one_commits() {
    let test_db = common::TestDb::new();
    // One connection: the second write runs where the first failed.
    let pool = pool_of(&test_db, 1);
    let mut conn = pool.get().expect("connection");
    let failed = row(&secrets::ordered_id(12), "failed");
    let written = failed.clone();
    let result: Result<(), DbError> = conn.write_tx(move |c| {
        tokens::insert_access(c, &written)?;
        Err(DbError::Other("the request gave up".into()))
    });
    assert!(matches!(result, Err(DbError::Other(_))), "{result:?}");
    let kept = row(&secrets::ordered_id(12), "kept");
    let written = kept.clone();
    conn.write_tx(move |c| tokens::insert_access(c, &written))
        .expect("the next write commits");
    // A duplicate key fails its transaction the same way.
    let again = kept.clone();
    let result = conn.write_tx(move |c| tokens::insert_access(c, &again));
    assert!(matches!(result, Err(DbError::Conflict(_))), "{result:?}");
    drop(conn);

    let url = DbUrl::parse(&test_db.url()).expect("url");
    let mut other = db::connect_once(&url).expect("another connection");
    assert!(tokens::find_access(db_of(&mut other), &failed.jti)
        .expect("lookup")
        .is_none());
    assert!(tokens::find_access(db_of(&mut other), &kept.jti)
        .expect("lookup")
        .is_some());
}
