//! Every statement the storage layer makes for a request finds its rows
//! through an index. The statements are recorded as diesel runs them (its
//! instrumentation hook), so the check follows the real queries, and each
//! is checked with SQLite's `EXPLAIN QUERY PLAN`, which needs no data or
//! statistics to be deterministic. MariaDB's plans were checked by hand
//! over 20,000 rows per table (docs/performance.md, "Query plans").

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use diesel::connection::{Connection, InstrumentationEvent};
use diesel::sql_types::Text;
use diesel::{QueryableByName, RunQueryDsl};
use phonekey::db::{self, DbUrl};

#[derive(QueryableByName)]
struct PlanStep {
    #[diesel(sql_type = Text)]
    detail: String,
}

const NOW: i64 = 1_800_000_000;

#[test]
fn request_path_statements_find_rows_through_an_index() {
    let dir = common::tempdir::Dir::new();
    let url = DbUrl::parse(&format!("sqlite://{}", dir.0.join("plans.db").display())).expect("url");
    let mut once = db::connect_once(&url).expect("connect");
    let conn = once.db().expect("a connection");
    db::migrate(conn).expect("migrate");

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorder = seen.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            recorder.lock().expect("recorder").push(query.to_string());
        }
    });

    run_request_path_statements(conn);

    let statements: BTreeSet<String> = seen
        .lock()
        .expect("recorder")
        .iter()
        .map(|q| q.split(" -- binds:").next().unwrap_or(q).trim().to_string())
        .filter(|q| {
            let verb = q.split_whitespace().next().unwrap_or("").to_uppercase();
            matches!(verb.as_str(), "SELECT" | "UPDATE" | "DELETE")
        })
        .collect();
    // A recorder that saw nothing would pass every check below.
    assert!(
        statements.len() >= 20,
        "only {} statements recorded: {statements:#?}",
        statements.len()
    );

    let mut scans = Vec::new();
    for sql in &statements {
        let plan: Vec<PlanStep> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load(conn)
            .unwrap_or_else(|e| panic!("EXPLAIN of {sql}: {e}"));
        for step in plan {
            // "SCAN t" reads the whole table; "SEARCH t USING … INDEX" does not.
            if step.detail.starts_with("SCAN ") {
                scans.push(format!("{}\n    {sql}", step.detail));
            }
        }
    }
    assert!(scans.is_empty(), "full table scans:\n{}", scans.join("\n"));
}

/// Calls every storage function a request uses, with rows that exist where
/// a later statement of the same function only runs when one does.
fn run_request_path_statements(conn: &mut db::DbConn) {
    use db::*;

    let client = clients::ClientRow {
        client_id: "c1".into(),
        secret_hash: None,
        name: "app".into(),
        client_type: "public".into(),
        grant_types: "otp".into(),
        redirect_uris: String::new(),
        scopes: "read".into(),
        default_scope: "read".into(),
        created_at: NOW,
        disabled_at: None,
        resources: String::new(),
    };
    clients::insert(conn, &client).expect("client");
    clients::find(conn, "c1").expect("find client");

    let (user, account) = phonekey::users::phone_user_rows("u1".into(), "+14155550100", NOW);
    users::insert(conn, &user, Some(&account)).expect("user");
    users::find_by_phone(conn, "+14155550100").expect("by phone");
    users::phone_of(conn, "u1").expect("phone of");
    users::phone_taken(conn, "+14155550100").expect("phone taken");
    users::find_by_id(conn, "u1").expect("by id");
    users::find_by_username(conn, &user.username).expect("by username");

    let code = codes::CodeRow {
        id: "o1".into(),
        phone: "+14155550100".into(),
        code_hash: "h1".into(),
        created_at: NOW,
        expires_at: NOW + 300,
        attempts: 0,
        superseded_at: None,
        verified_at: None,
    };
    codes::replace(conn, &code).expect("code");
    codes::find_live(conn, "+14155550100").expect("live code");
    codes::spend_if_matches(conn, "+14155550100", "h1", 5, NOW).expect("spend code");
    codes::spend_attempt(conn, "o1", false, 5, NOW).expect("attempt");
    codes::attempts(conn, "o1").expect("attempts");
    codes::delete(conn, "o1").expect("delete code");

    let limit = rate_limits::Limit {
        window_seconds: 3600,
        max_hits: Some(1),
        cooldown: 0,
    };
    // The second hit is refused, which reads the bucket to say how long to wait.
    rate_limits::hit(conn, "phone:+14155550100", &limit, NOW).expect("hit");
    rate_limits::hit(conn, "phone:+14155550100", &limit, NOW).expect("refused hit");

    let ticket = tickets::TicketRow {
        ticket_hash: "t1".into(),
        phone: "+14155550100".into(),
        created_at: NOW,
        expires_at: NOW + 600,
        used_for_user_at: None,
        used_for_token_at: None,
    };
    tickets::insert(conn, &ticket).expect("ticket");
    tickets::find(conn, "t1").expect("find ticket");
    tickets::consume_for_user(conn, "t1", "+14155550100", NOW).expect("ticket for user");
    tickets::consume_for_token(conn, "t1", "+14155550100", NOW).expect("ticket for token");

    let auth_code = codes_auth::AuthCodeRow {
        code_hash: "a1".into(),
        client_id: "c1".into(),
        user_id: "u1".into(),
        scope: "read".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        extensions: "{}".into(),
        created_at: NOW,
        expires_at: NOW + 60,
        used_at: None,
        family: "f1".into(),
        redirect_uri_sent: true,
        resource: None,
    };
    codes_auth::insert(conn, &auth_code).expect("auth code");
    codes_auth::consume(conn, "a1", NOW).expect("consume auth code");
    codes_auth::find(conn, "a1").expect("find auth code");

    let session = sessions::SessionRow {
        session_hash: "s1".into(),
        user_id: "u1".into(),
        created_at: NOW,
        expires_at: NOW + 3600,
    };
    sessions::insert(conn, &session).expect("session");
    sessions::live_user(conn, "s1", NOW).expect("live session");
    sessions::delete(conn, "s1").expect("logout");

    let access = tokens::AccessTokenRow {
        jti: "j1".into(),
        client_id: "c1".into(),
        user_id: Some("u1".into()),
        scope: "read".into(),
        family: Some("f1".into()),
        issued_at: NOW,
        expires_at: NOW + 3600,
        revoked: false,
        audience: None,
        token_hash: Some("ah1".into()),
    };
    let refresh_token = phonekey::secrets::ordered_secret();
    let refresh = tokens::RefreshTokenRow {
        token_hash: tokens::refresh_key(conn.backend(), &refresh_token),
        family: "f1".into(),
        parent_hash: None,
        client_id: "c1".into(),
        user_id: Some("u1".into()),
        scope: "read".into(),
        issued_at: NOW,
        expires_at: NOW + 86_400,
        used_at: None,
        revoked: false,
        resource: None,
    };
    tokens::insert_access(conn, &access).expect("access token");
    tokens::insert_refresh(conn, &refresh).expect("refresh token");
    tokens::find_access(conn, "j1").expect("find access");
    tokens::find_access_with_username(conn, "j1").expect("introspect access");
    tokens::find_refresh(conn, &refresh_token).expect("find refresh");
    tokens::find_refresh_with_username(conn, &refresh_token).expect("introspect refresh");
    let key = tokens::refresh_key(conn.backend(), &refresh_token);
    tokens::spend_refresh(conn, &key, NOW).expect("spend refresh");
    tokens::revoke_access(conn, "j1").expect("revoke access");
    tokens::revoke_family(conn, "f1").expect("revoke family");

    settings::get(conn, "secret_key").expect("setting");
}
