//! Single use under real concurrency: 20 requests in flight at once against
//! the real server and database; exactly one may win.

mod common;

use common::*;
use phonekey::oauth::clients::GrantType;

const RACERS: usize = 20;

async fn statuses<F, Fut>(make: F) -> Vec<(u16, serde_json::Value)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, serde_json::Value, reqwest::header::HeaderMap)>
        + Send
        + 'static,
{
    let handles: Vec<_> = (0..RACERS).map(|_| tokio::spawn(make())).collect();
    let mut out = Vec::new();
    for h in handles {
        let (status, body, _) = h.await.expect("request task");
        out.push((status, body));
    }
    out
}

/// Logins that create their user, and codes without a resend cooldown.
const LOGINS_ANY_TIME: [(&str, &str); 2] = [
    ("PHONEKEY_OTP_AUTO_CREATE_USERS", "true"),
    ("PHONEKEY_OTP_RESEND_SECONDS", "0"),
];

/// A server with `settings`, to be shared by racing tasks, and a
/// confidential client allowed `grants`: (server, client id, secret).
fn server_and_client(
    settings: &[(&str, &str)],
    grants: &[GrantType],
) -> (std::sync::Arc<TestServer>, String, String) {
    let server = TestServer::start_with(settings);
    let (id, secret) = server.client(grants, true);
    (
        std::sync::Arc::new(server),
        id,
        secret.expect("a confidential client's secret"),
    )
}

fn count(results: &[(u16, serde_json::Value)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_verifycode_yields_one_ticket() {
    let server = std::sync::Arc::new(TestServer::start());
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let results = statuses(|| {
        let (server, phone, code) = (server.clone(), phone.clone(), code.clone());
        async move {
            server
                .post_form(
                    "/otp/verifycode/",
                    &[("phone", &phone), ("code", &code)],
                    &new_ip(),
                )
                .await
        }
    })
    .await;
    assert_eq!(count(&results, 200), 1, "{results:?}");
    for (status, body) in &results {
        assert!(
            *status == 200
                || (*status == 400 && body["error"] == "invalid_code")
                || (*status == 429 && body["error"] == "too_many_attempts"),
            "{status} {body}"
        );
    }
}

/// 20 wrong guesses at once: only the first five count (each answer that
/// counted says how many are left), the rest are refused, and afterwards
/// even the right code is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_guesses_count_at_most_five() {
    let server = std::sync::Arc::new(TestServer::start());
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let results = statuses(|| {
        let (server, phone) = (server.clone(), phone.clone());
        async move {
            server
                .post_form(
                    "/otp/verifycode/",
                    &[("phone", &phone), ("code", wrong)],
                    &new_ip(),
                )
                .await
        }
    })
    .await;
    let counted: Vec<i64> = results
        .iter()
        .filter_map(|(_, body)| body["attempts_left"].as_i64())
        .collect();
    assert_eq!(counted.len(), 5, "{results:?}");
    let mut left = counted.clone();
    left.sort_unstable();
    assert_eq!(
        left,
        [0, 1, 2, 3, 4],
        "each counted guess saw its own count"
    );
    assert_eq!(count(&results, 429), RACERS - 5, "{results:?}");
    let (status, body) = server.verify(&phone, &code).await;
    expect_error(status, &body, 429, "too_many_attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_refreshes_yield_one_new_pair() {
    let server = std::sync::Arc::new(TestServer::start());
    let (id, secret) = server.client(&[GrantType::Otp, GrantType::RefreshToken], true);
    let secret = secret.unwrap();
    let (_phone, tokens) = server.user_tokens(&id, &secret).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    // Every racer reads the token as unused before any of them can spend it.
    let held = server.db.hold_writes("refresh_tokens");
    let racing = statuses(|| {
        let (server, id, secret, refresh) =
            (server.clone(), id.clone(), secret.clone(), refresh.clone());
        async move {
            server
                .token_basic(
                    &id,
                    &secret,
                    &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
                )
                .await
        }
    });
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        held.release();
    };
    let (results, ()) = tokio::join!(racing, release);
    assert_eq!(count(&results, 200), 1, "{results:?}");
    assert_eq!(count(&results, 400), RACERS - 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s == 400)
        .all(|(_, b)| b["error"] == "invalid_grant"));
    // The losers were uses of a spent token: the family is revoked, and the
    // winner's new refresh token with it.
    let (_, winner) = results.iter().find(|(s, _)| *s == 200).expect("one winner");
    let successor = winner["refresh_token"]
        .as_str()
        .expect("a new refresh token");
    let (status, body, _) = server
        .token_basic(
            &id,
            &secret,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", successor),
            ],
        )
        .await;
    expect_error(status, &body, 400, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_getcode_respects_the_cooldown() {
    let server = std::sync::Arc::new(TestServer::start());
    let phone = new_phone();
    let results = statuses(|| {
        let (server, phone) = (server.clone(), phone.clone());
        async move {
            server
                .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
                .await
        }
    })
    .await;
    assert_eq!(count(&results, 200), 1, "{results:?}");
    assert_eq!(count(&results, 429), RACERS - 1, "{results:?}");
    assert_eq!(server.sms.messages().len(), 1, "exactly one SMS went out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_ticket_use_yields_one_user_and_one_token() {
    let server = std::sync::Arc::new(TestServer::start());
    let (id, secret) = server.client(&[GrantType::Otp], true);
    let secret = secret.unwrap();
    let phone = new_phone();
    let ticket = server.verified_ticket(&phone).await;
    let users = statuses(|| {
        let (server, ticket) = (server.clone(), ticket.clone());
        async move {
            server
                .put_json(
                    "/api/v1/user/",
                    &serde_json::json!({ "auto_username": true, "secret_identifier": ticket }),
                )
                .await
        }
    })
    .await;
    assert_eq!(count(&users, 201), 1, "{users:?}");
    let tokens = statuses(|| {
        let (server, id, secret, phone, ticket) = (
            server.clone(),
            id.clone(),
            secret.clone(),
            phone.clone(),
            ticket.clone(),
        );
        async move { server.otp_grant(&id, &secret, &phone, &ticket).await }
    })
    .await;
    assert_eq!(count(&tokens, 200), 1, "{tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_first_logins_of_one_phone_make_one_user() {
    // Each login reads "no user yet", signs for the user it is about to
    // create, and stores its tokens in the transaction that spends its proof:
    // all but the first must find the new user there and sign again for it.
    let (server, id, secret) = server_and_client(
        &[
            ("PHONEKEY_OTP_AUTO_CREATE_USERS", "true"),
            ("PHONEKEY_OTP_RESEND_SECONDS", "0"),
            ("PHONEKEY_OTP_PER_PHONE_HOUR", "0"),
        ],
        &[GrantType::Otp],
    );
    let phone = new_phone();
    let mut tickets = Vec::new();
    for _ in 0..RACERS {
        tickets.push(server.verified_ticket(&phone).await);
    }
    // The racers' writes wait behind a lock of the test's own until all of
    // them have read that the phone has no user yet.
    let held = server.db.hold_writes("verification_tickets");
    let handles: Vec<_> = tickets
        .into_iter()
        .map(|ticket| {
            let (server, id, secret, phone) =
                (server.clone(), id.clone(), secret.clone(), phone.clone());
            tokio::spawn(async move { server.otp_grant(&id, &secret, &phone, &ticket).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    held.release();
    let mut subjects = std::collections::HashSet::new();
    for h in handles {
        let (status, body, _) = h.await.expect("request task");
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().expect("access token");
        let sub = jwt_claims(token)["sub"].as_str().expect("sub").to_string();
        // The stored record agrees with the signed token.
        let (status, info, _) = server
            .post_form(
                "/o/introspect/",
                &[
                    ("token", token),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ],
                &new_ip(),
            )
            .await;
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["active"], true, "{info}");
        assert_eq!(info["sub"], sub.as_str(), "{info}");
        subjects.insert(sub);
    }
    assert_eq!(subjects.len(), 1, "one user for one phone: {subjects:?}");
}

/// Many logins and refreshes at once, each for another phone or token: on
/// MySQL their lookups (a phone's user, a refresh token) are answered by one
/// statement per batch (`db::batch`, held back here until they have queued),
/// and each request must be answered for its own phone or token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_logins_and_refreshes_each_get_their_own_user() {
    let (server, id, secret) =
        server_and_client(&LOGINS_ANY_TIME, &[GrantType::Otp, GrantType::RefreshToken]);
    // Half the phones have a user, half get one at their login; every
    // signed-up user also has a refresh token to rotate.
    let mut logins = Vec::new();
    let mut refreshes = Vec::new();
    for i in 0..RACERS / 2 {
        let phone = new_phone();
        if i % 2 == 0 {
            let (ticket, user) = server.signed_up_user(&phone).await;
            let (status, tokens, _) = server.otp_grant(&id, &secret, &phone, &ticket).await;
            assert_eq!(status, 200, "{tokens}");
            let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
            refreshes.push((refresh, user["id"].as_str().unwrap().to_string()));
            let ticket = server.verified_ticket(&phone).await;
            logins.push((
                phone,
                ticket,
                Some(user["id"].as_str().unwrap().to_string()),
            ));
        } else {
            let ticket = server.verified_ticket(&phone).await;
            logins.push((phone, ticket, None));
        }
    }
    let held = server.db.hold_reads("accounts");
    let held_refresh = server.db.hold_reads("refresh_tokens");
    let login_tasks: Vec<_> = logins
        .into_iter()
        .map(|(phone, ticket, user)| {
            let (server, id, secret) = (server.clone(), id.clone(), secret.clone());
            tokio::spawn(async move {
                let answer = server.otp_grant(&id, &secret, &phone, &ticket).await;
                (answer, user)
            })
        })
        .collect();
    let refresh_tasks: Vec<_> = refreshes
        .into_iter()
        .map(|(refresh, user)| {
            let (server, id, secret) = (server.clone(), id.clone(), secret.clone());
            tokio::spawn(async move {
                let form = [("grant_type", "refresh_token"), ("refresh_token", &refresh)];
                (server.token_basic(&id, &secret, &form).await, Some(user))
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    for held in [held, held_refresh].into_iter().flatten() {
        held.release();
    }
    let mut new_users = std::collections::HashSet::new();
    for task in login_tasks.into_iter().chain(refresh_tasks) {
        let ((status, body, _), user) = task.await.expect("request task");
        assert_eq!(status, 200, "{body}");
        let sub = jwt_claims(body["access_token"].as_str().unwrap())["sub"]
            .as_str()
            .unwrap()
            .to_string();
        match user {
            Some(user) => assert_eq!(sub, user),
            None => assert!(new_users.insert(sub), "a new user per new phone"),
        }
    }
    assert_eq!(new_users.len(), RACERS / 4);
}

/// Another code of the same length.
fn wrong_code(code: &str) -> String {
    code.chars()
        .map(|c| if c == '1' { '2' } else { '1' })
        .collect()
}

/// What one racing otp grant must get.
enum Expect {
    /// A phone without a user, with its right code: tokens for a new user.
    NewUser,
    /// A signed-up user's ticket: tokens for that user.
    User(String),
    /// One of two requests presenting one proof: one of the two gets tokens.
    OneOfTwo(&'static str),
    /// A wrong code: refused, and the right one still works after it.
    Wrong { right_code: String },
}

/// Many otp grants at once, held back until they have queued (on MySQL they
/// then share one transaction, `db::otp_grant`): right codes of phones
/// without a user, tickets of signed-up users, a code and a ticket presented
/// twice, wrong codes. Each is answered for its own phone and proof as it
/// would be alone, and what it was answered is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_otp_grants_each_spend_their_own_proof() {
    let (server, id, secret) =
        server_and_client(&LOGINS_ANY_TIME, &[GrantType::Otp, GrantType::RefreshToken]);
    // (phone, form field of the proof, proof, what it must get)
    let mut grants: Vec<(String, &str, String, Expect)> = Vec::new();
    for _ in 0..6 {
        let phone = new_phone();
        let code = server.get_code(&phone).await;
        grants.push((phone, "code", code, Expect::NewUser));
    }
    for _ in 0..4 {
        let phone = new_phone();
        let (_, user) = server.signed_up_user(&phone).await;
        let ticket = server.verified_ticket(&phone).await;
        let user = user["id"].as_str().expect("user id").to_string();
        grants.push((phone, "secret_identifier", ticket, Expect::User(user)));
    }
    let phone = new_phone();
    let code = server.get_code(&phone).await;
    for _ in 0..2 {
        grants.push((
            phone.clone(),
            "code",
            code.clone(),
            Expect::OneOfTwo("code"),
        ));
    }
    let phone = new_phone();
    server.signed_up_user(&phone).await;
    let ticket = server.verified_ticket(&phone).await;
    for _ in 0..2 {
        let expect = Expect::OneOfTwo("ticket");
        grants.push((phone.clone(), "secret_identifier", ticket.clone(), expect));
    }
    for _ in 0..2 {
        let phone = new_phone();
        let right_code = server.get_code(&phone).await;
        let wrong = wrong_code(&right_code);
        grants.push((phone, "code", wrong, Expect::Wrong { right_code }));
    }

    let held = server.db.hold_statements("otp_codes");
    let tasks: Vec<_> = grants
        .into_iter()
        .map(|(phone, field, proof, expect)| {
            let (server, id, secret) = (server.clone(), id.clone(), secret.clone());
            tokio::spawn(async move {
                let form = [("grant_type", "otp"), ("phone", &phone), (field, &proof)];
                let answer = server.token_basic(&id, &secret, &form).await;
                (phone, answer, expect)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    held.release();

    let mut new_users = std::collections::HashSet::new();
    let mut twice_won = std::collections::HashMap::new();
    for task in tasks {
        let (phone, (status, body, _), expect) = task.await.expect("request task");
        let sub = || -> String {
            let claims = jwt_claims(body["access_token"].as_str().expect("access token"));
            claims["sub"].as_str().expect("sub").to_string()
        };
        match expect {
            Expect::NewUser => {
                assert_eq!(status, 200, "{body}");
                assert!(new_users.insert(sub()), "a new user per new phone");
            }
            Expect::User(user) => {
                assert_eq!(status, 200, "{body}");
                assert_eq!(sub(), user);
            }
            Expect::OneOfTwo(proof) => {
                *twice_won.entry(proof).or_insert(0) += usize::from(status == 200);
                if status != 200 {
                    expect_error(status, &body, 400, "invalid_grant");
                    continue;
                }
            }
            Expect::Wrong { right_code } => {
                expect_error(status, &body, 400, "invalid_grant");
                let form = [
                    ("grant_type", "otp"),
                    ("phone", &phone),
                    ("code", &right_code),
                ];
                let (status, body, _) = server.token_basic(&id, &secret, &form).await;
                assert_eq!(status, 200, "the right code after a wrong one: {body}");
            }
        }
        if status != 200 {
            continue;
        }
        // Both tokens were stored, for the user the access token names.
        let access = body["access_token"].as_str().expect("access token");
        let (status, info, _) = server
            .post_form(
                "/o/introspect/",
                &[
                    ("token", access),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ],
                &new_ip(),
            )
            .await;
        assert_eq!(
            (status, &info["active"]),
            (200, &serde_json::json!(true)),
            "{info}"
        );
        assert_eq!(info["sub"], sub().as_str(), "{info}");
        let refresh = body["refresh_token"].as_str().expect("refresh token");
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
        let (status, rotated, _) = server.token_basic(&id, &secret, &form).await;
        assert_eq!(status, 200, "{rotated}");
        assert_eq!(
            jwt_claims(rotated["access_token"].as_str().unwrap())["sub"],
            sub().as_str()
        );
    }
    assert_eq!(new_users.len(), 6);
    assert_eq!(twice_won.get("code"), Some(&1), "a code spent once");
    assert_eq!(twice_won.get("ticket"), Some(&1), "a ticket spent once");
}

/// Runs `make(i)` for every `i` at once while `held` keeps the server's
/// statements waiting, then releases it; the answers in order.
async fn held_back<F, Fut>(
    held: WritesHeld,
    n: usize,
    make: F,
) -> Vec<(u16, serde_json::Value, reqwest::header::HeaderMap)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (u16, serde_json::Value, reqwest::header::HeaderMap)>
        + Send
        + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    held.release();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

/// Many verifycodes, then many sign-ups, at once, each held back until they
/// have queued (on MySQL each kind then shares one transaction): right codes
/// of new phones and of phones with a user, a code presented twice, a wrong
/// code; then tickets of new phones, a ticket presented twice, one username
/// asked for by two phones. Each gets the answer it would get alone, and
/// what it was answered is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_verifycodes_and_sign_ups_each_get_their_own_answer() {
    let (server, id, secret) =
        server_and_client(&[("PHONEKEY_OTP_RESEND_SECONDS", "0")], &[GrantType::Otp]);
    // (phone, code sent, whether the phone has a user)
    let mut asks: Vec<(String, String, bool)> = Vec::new();
    for i in 0..8 {
        let phone = new_phone();
        let has_user = i >= 6;
        if has_user {
            server.signed_up_user(&phone).await;
        }
        let code = server.get_code(&phone).await;
        asks.push((phone, code, has_user));
    }
    let twice = asks[0].clone();
    asks.push(twice);
    let wrong_phone = new_phone();
    let right_code = server.get_code(&wrong_phone).await;
    let wrong = wrong_code(&right_code);
    asks.push((wrong_phone.clone(), wrong, false));

    let held = server.db.hold_statements("otp_codes");
    let asked = std::sync::Arc::new(asks.clone());
    let answers = held_back(held, asks.len(), |i| {
        let (server, asked) = (server.clone(), asked.clone());
        async move {
            let (phone, code, _) = &asked[i];
            let form = [("phone", phone.as_str()), ("code", code.as_str())];
            server.post_form("/otp/verifycode/", &form, &new_ip()).await
        }
    })
    .await;
    // The first phone's code was presented twice: one of the two wins.
    let first_wins: Vec<bool> = [0, 8].iter().map(|&i| answers[i].0 == 200).collect();
    assert_eq!(first_wins.iter().filter(|w| **w).count(), 1, "{answers:?}");
    let mut tickets = Vec::new();
    for (i, ((phone, _, has_user), (status, body, _))) in asks.iter().zip(&answers).enumerate() {
        if *phone == wrong_phone {
            expect_error(*status, body, 400, "invalid_code");
            assert_eq!(body["attempts_left"], 4, "{body}");
            continue;
        }
        if *status != 200 {
            assert!(i == 0 || i == 8, "{status} {body}");
            expect_error(*status, body, 400, "invalid_code");
            continue;
        }
        assert_eq!(body["user_exists"], *has_user, "{body}");
        let ticket = body["secret_identifier"]
            .as_str()
            .expect("ticket")
            .to_string();
        if !has_user {
            tickets.push((phone.clone(), ticket));
        }
    }
    let (status, body) = server.verify(&wrong_phone, &right_code).await;
    assert_eq!(status, 200, "the right code after a wrong one: {body}");
    assert_eq!(tickets.len(), 6);

    // Sign-ups, held back twice: the first four new phones' tickets with the
    // first one twice (stored together), then the last two phones asking for
    // one username (the batch fails on it and is run again one by one).
    let username = format!("racer{}", &new_phone()[1..]);
    let mut sign_ups: Vec<(String, String, Option<String>)> = tickets
        .iter()
        .map(|(phone, ticket)| (phone.clone(), ticket.clone(), None))
        .collect();
    for sign_up in &mut sign_ups[4..6] {
        sign_up.2 = Some(username.clone());
    }
    sign_ups.insert(4, sign_ups[0].clone());
    let mut answers = Vec::new();
    for round in [&sign_ups[..5], &sign_ups[5..]] {
        let held = server.db.hold_statements("verification_tickets");
        let asked = std::sync::Arc::new(round.to_vec());
        answers.extend(
            held_back(held, round.len(), |i| {
                let (server, asked) = (server.clone(), asked.clone());
                async move {
                    let (_, ticket, username) = &asked[i];
                    let body = match username {
                        Some(name) => {
                            serde_json::json!({ "username": name, "secret_identifier": ticket })
                        }
                        None => serde_json::json!({ "auto_username": true, "secret_identifier": ticket }),
                    };
                    server.put_json("/api/v1/user/", &body).await
                }
            })
            .await,
        );
    }
    let created: Vec<bool> = answers.iter().map(|(status, ..)| *status == 201).collect();
    assert_eq!(
        [created[0], created[4]].iter().filter(|c| **c).count(),
        1,
        "a ticket creates one user: {answers:?}"
    );
    assert_eq!(
        [created[5], created[6]].iter().filter(|c| **c).count(),
        1,
        "a username is taken once: {answers:?}"
    );
    for (i, ((phone, ticket, _), (status, body, _))) in sign_ups.iter().zip(&answers).enumerate() {
        if *status != 201 {
            match i {
                0 | 4 => expect_error(*status, body, 400, "invalid_secret_identifier"),
                5 | 6 => expect_error(*status, body, 409, "conflict"),
                _ => panic!("sign-up {i}: {status} {body}"),
            }
            continue;
        }
        assert_eq!(body["account"]["phone"], phone.as_str(), "{body}");
        // The stored user is the phone's: its ticket logs it in.
        let (status, tokens, _) = server.otp_grant(&id, &secret, phone, ticket).await;
        assert_eq!(status, 200, "{tokens}");
        let sub = jwt_claims(tokens["access_token"].as_str().unwrap())["sub"].clone();
        assert_eq!(sub, body["id"], "{tokens}");
    }
    // The phone that lost the username race has no user.
    let loser = if created[5] {
        &sign_ups[6]
    } else {
        &sign_ups[5]
    };
    let (status, body, _) = server.otp_grant(&id, &secret, &loser.0, &loser.1).await;
    expect_error(status, &body, 400, "invalid_grant");
}

/// The codes SMS'd to `phone`, oldest first.
fn codes_sent(server: &TestServer, phone: &str) -> Vec<String> {
    let messages = server.sms.messages();
    let to_phone = messages.iter().filter(|m| m["to"] == phone);
    to_phone
        .map(|m| m["code"].as_str().expect("code").to_string())
        .collect()
}

/// Many getcodes at once, held back until they have queued (on MySQL they
/// then share one transaction, `db::codes::issue_many`): new phones, one
/// phone asked for twice, five phones from one address with a limit of three
/// an hour. Each is counted against its own limits, a refused one against
/// none, and every code sent is the phone's live one; with no cooldown, a
/// phone asked for twice keeps only one live code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_getcodes_each_count_against_their_own_limits() {
    let server = std::sync::Arc::new(TestServer::start_with(&[("PHONEKEY_OTP_PER_IP_HOUR", "3")]));
    let shared_ip = new_ip();
    let twice = new_phone();
    // (phone, client address)
    let mut asks: Vec<(String, String)> = (0..4).map(|_| (new_phone(), new_ip())).collect();
    asks.push((twice.clone(), new_ip()));
    asks.push((twice.clone(), new_ip()));
    asks.extend((0..5).map(|_| (new_phone(), shared_ip.clone())));
    let held = server.db.hold_statements("rate_limits");
    let asked = std::sync::Arc::new(asks.clone());
    let answers = held_back(held, asks.len(), |i| {
        let (server, asked) = (server.clone(), asked.clone());
        async move {
            let (phone, ip) = &asked[i];
            server
                .post_form("/otp/getcode/", &[("phone", phone)], ip)
                .await
        }
    })
    .await;
    let sent: Vec<bool> = answers.iter().map(|(status, ..)| *status == 200).collect();
    assert!(sent[..4].iter().all(|s| *s), "{answers:?}");
    assert_eq!(sent[4..6].iter().filter(|s| **s).count(), 1, "{answers:?}");
    assert_eq!(sent[6..].iter().filter(|s| **s).count(), 3, "{answers:?}");
    for ((phone, _), (status, body, _)) in asks.iter().zip(&answers) {
        if *status != 200 {
            expect_error(*status, body, 429, "rate_limited");
            if *phone != twice {
                // Refused by the address's limit: the phone's own limit
                // counted nothing, so another address may ask at once.
                let (status, body, _) = server
                    .post_form("/otp/getcode/", &[("phone", phone)], &new_ip())
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        }
        let codes = codes_sent(&server, phone);
        assert_eq!(codes.len(), 1, "one SMS to {phone}");
        if *phone == twice && *status != 200 {
            continue;
        }
        let (status, body) = server.verify(phone, &codes[0]).await;
        assert_eq!(status, 200, "the code sent is live: {body}");
    }

    // Without a cooldown every ask for one phone is served, and each code
    // supersedes the one before, whichever order they were stored in (three
    // asks: the first to arrive may be stored alone, the others together).
    let server = std::sync::Arc::new(TestServer::start_with(&[(
        "PHONEKEY_OTP_RESEND_SECONDS",
        "0",
    )]));
    let phone = new_phone();
    let held = server.db.hold_statements("rate_limits");
    let answers = held_back(held, 3, |_| {
        let (server, phone) = (server.clone(), phone.clone());
        async move {
            server
                .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
                .await
        }
    })
    .await;
    assert!(
        answers.iter().all(|(status, ..)| *status == 200),
        "{answers:?}"
    );
    let codes = codes_sent(&server, &phone);
    assert_eq!(codes.len(), 3);
    let mut verified = 0;
    for code in &codes {
        let (status, body) = server.verify(&phone, code).await;
        match status {
            200 => verified += 1,
            _ => expect_error(status, &body, 400, "invalid_code"),
        }
    }
    assert_eq!(verified, 1, "one live code per phone");
}

/// Two instances whose clocks differ by two seconds share the per-address
/// limit (three an hour): hits alternate between them, the one ahead first,
/// and the limit counts all five, refusing only the two over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clock_ahead_on_another_instance_does_not_refuse_hits() {
    let settings = [("PHONEKEY_OTP_PER_IP_HOUR", "3")];
    let behind = TestServer::start_with(&settings);
    let url = behind.db.url();
    let ahead = TestServer::start_on(TestDb::new(), &[settings[0], ("DATABASE_URL", &url)]);
    ahead
        .clock
        .advance(behind.clock_now() - ahead.clock_now() + 2);
    let ip = new_ip();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let server = if i % 2 == 0 { &ahead } else { &behind };
        let (status, body, _) = server
            .post_form("/otp/getcode/", &[("phone", &new_phone())], &ip)
            .await;
        if status != 200 {
            expect_error(status, &body, 429, "rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

/// Two servers on one database, as two processes are (each with its own
/// pool, writer and batching threads), take getcodes at once: the limits
/// hold across them. Five phones from one address with a limit of three an
/// hour, and one phone asked for by six requests, alternately on each server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_hold_across_two_server_processes() {
    let settings = [("PHONEKEY_OTP_PER_IP_HOUR", "3")];
    let first = std::sync::Arc::new(TestServer::start_with(&settings));
    let url = first.db.url();
    let second = std::sync::Arc::new(TestServer::start_on(
        TestDb::new(),
        &[settings[0], ("DATABASE_URL", &url)],
    ));
    // As two machines' clocks do, the second runs ahead (each test server's
    // clock starts at the time it was made, a second apart under load).
    second.clock.advance(2);
    let shared_ip = new_ip();
    let phone = new_phone();
    let mut asks: Vec<(String, String)> =
        (0..5).map(|_| (new_phone(), shared_ip.clone())).collect();
    asks.extend((0..6).map(|_| (phone.clone(), new_ip())));
    let held = first.db.hold_statements("rate_limits");
    let asked = std::sync::Arc::new(asks.clone());
    let answers = held_back(held, asks.len(), |i| {
        let server = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let asked = asked.clone();
        async move {
            let (phone, ip) = &asked[i];
            server
                .post_form("/otp/getcode/", &[("phone", phone)], ip)
                .await
        }
    })
    .await;
    for (status, body, _) in &answers {
        if *status != 200 {
            expect_error(*status, body, 429, "rate_limited");
        }
    }
    let sent = |range: std::ops::Range<usize>| {
        answers[range]
            .iter()
            .filter(|(status, ..)| *status == 200)
            .count()
    };
    assert_eq!(
        sent(0..5),
        3,
        "three codes an hour from one address: {answers:?}"
    );
    assert_eq!(
        sent(5..11),
        1,
        "one code per cooldown for one phone: {answers:?}"
    );
}
