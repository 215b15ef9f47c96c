//! Expired rows are deleted after the grace period; live ones stay.

mod common;

use common::*;
use phonekey::oauth::clients::GrantType;

#[tokio::test]
async fn purge_deletes_only_what_expired_before_the_cutoff() {
    let server = TestServer::start();
    let (id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let (_phone, tokens) = server.user_tokens(&id, &secret).await;
    let tables = [
        "otp_codes",
        "verification_tickets",
        "access_tokens",
        "refresh_tokens",
        "rate_limits",
    ];
    let before: Vec<i64> = tables
        .iter()
        .map(|t| count_rows(&server.db.url(), t))
        .collect();
    assert!(before.iter().all(|&n| n > 0), "{before:?}");

    let now = server.clock_now();
    let mut conn = phonekey::db::connect_once(&server.config.database).unwrap();
    // Nothing has expired yet.
    assert_eq!(
        phonekey::db::purge::expired(&mut conn, now, now - 90_000).unwrap(),
        0
    );
    assert_eq!(
        tables
            .iter()
            .map(|t| count_rows(&server.db.url(), t))
            .collect::<Vec<_>>(),
        before
    );

    // Past every expiry (refresh tokens live 14 days) and every counter's idleness.
    let later = now + 15 * 86_400;
    let purged = phonekey::db::purge::expired(&mut conn, later, later - 90_000).unwrap();
    assert_eq!(purged as i64, before.iter().sum::<i64>());
    for t in tables {
        assert_eq!(count_rows(&server.db.url(), t), 0, "{t}");
    }
    // Users and clients are not expiring data.
    assert_eq!(count_rows(&server.db.url(), "users"), 1);
    assert_eq!(count_rows(&server.db.url(), "applications"), 1);
    drop(tokens);
}

#[tokio::test]
async fn purge_works_in_batches() {
    let server = TestServer::start_with(&[
        ("PHONEKEY_OTP_RESEND_SECONDS", "0"),
        ("PHONEKEY_OTP_PER_IP_HOUR", "0"),
        ("PHONEKEY_OTP_PER_PHONE_HOUR", "0"),
    ]);
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.unwrap();
    // More tokens than one batch (1000) would delete.
    let mut tasks = Vec::new();
    let server = std::sync::Arc::new(server);
    for _ in 0..8 {
        let (server, id, secret) = (server.clone(), id.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..160 {
                let (status, _, _) = server
                    .token_basic(&id, &secret, &[("grant_type", "client_credentials")])
                    .await;
                assert_eq!(status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(count_rows(&server.db.url(), "access_tokens"), 1280);
    let later = server.clock_now() + 2 * 86_400;
    let mut conn = phonekey::db::connect_once(&server.config.database).unwrap();
    assert_eq!(
        phonekey::db::purge::expired(&mut conn, later, later).unwrap(),
        1280
    );
    assert_eq!(count_rows(&server.db.url(), "access_tokens"), 0);
}
