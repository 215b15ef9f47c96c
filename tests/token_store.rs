//! New access tokens stored by many requests at once: on MySQL they are
//! gathered into multi-row INSERTs (`db::batch`), on SQLite into the writer's
//! group commit. The test holds the database's writes while the requests
//! queue up, so that they are stored together, and puts a row the database
//! must refuse among them: that one request fails, every other one is stored.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use phonekey::db::tokens::{self, AccessTokenRow};
use phonekey::db::{self, DbError, DbUrl, PoolOptions};
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

#[test]
fn concurrent_new_access_tokens_are_each_stored_or_refused_alone() {
    let test_db = common::TestDb::new();
    let url = DbUrl::parse(&test_db.url()).expect("url");
    let pool = db::build_pool(
        &url,
        &PoolOptions {
            max_size: WRITERS as u32 + 2,
            connect_timeout: Duration::from_secs(10),
        },
    );
    db::migrate(&mut pool.get().expect("connection")).expect("migrate");
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
        let found = tokens::find_access(&mut conn, jti).expect("lookup");
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
