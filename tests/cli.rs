//! The `phonekey` binary itself: zero-set-up serve, start-up errors, client
//! and superuser commands, and the console SMS provider's output.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::tempdir::Dir;

fn phonekey(dir: &Dir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phonekey"));
    cmd.current_dir(&dir.0);
    for (key, _) in std::env::vars() {
        if key.starts_with("PHONEKEY_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_settings_stop_start_up_with_one_line_naming_the_setting() {
    let dir = Dir::new();
    let cases = [
        ("DATABASE_URL", "postgres://db/x"),
        ("DATABASE_URL", "sqlite://"),
        ("PHONEKEY_SMS_PROVIDER", "carrier-pigeon"),
        ("PHONEKEY_LISTEN", "everywhere"),
        ("PHONEKEY_OTP_CODE_LENGTH", "twelve"),
        ("PHONEKEY_ISSUER", "ftp://x"),
    ];
    for (key, value) in cases {
        let out = phonekey(&dir)
            .arg("serve")
            .env(key, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with(&format!("phonekey: {key}:")),
            "{key}={value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[cfg(feature = "mysql")]
#[test]
fn unreachable_database_is_reported_without_the_password() {
    let dir = Dir::new();
    let out = phonekey(&dir)
        .arg("serve")
        .env("DATABASE_URL", "mysql://root:hunter2@127.0.0.1:1/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("phonekey: DATABASE_URL:"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn client_and_superuser_commands() {
    let dir = Dir::new();
    let out = phonekey(&dir).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = phonekey(&dir)
        .args([
            "client",
            "create",
            "--name",
            "Mobile",
            "--grant-types",
            "otp,refresh_token",
            "--scope",
            "read write",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["client_id"].as_str().unwrap().to_string();
    let secret = created["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43, "256-bit secret");

    let out = phonekey(&dir)
        .args(["client", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["client_id"], id.as_str());
    assert_eq!(
        list[0]["grant_types"],
        serde_json::json!(["otp", "refresh_token"])
    );
    assert_eq!(list[0]["scopes"], serde_json::json!(["read", "write"]));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(secret),
        "the secret is shown only once"
    );

    let out = phonekey(&dir)
        .args([
            "client",
            "create",
            "--name",
            "x",
            "--grant-types",
            "otp,teleport",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("teleport"));
    let out = phonekey(&dir)
        .args([
            "client",
            "create",
            "--name",
            "x",
            "--grant-types",
            "client_credentials",
            "--public",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let out = phonekey(&dir)
        .args(["client", "delete", &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = phonekey(&dir)
        .args(["client", "delete", &id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // An id that begins with '-' (one in 64 do) is an id, not an option.
    let out = phonekey(&dir)
        .args(["client", "delete", "-Tx"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no client -Tx"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = phonekey(&dir)
        .args([
            "createsuperuser",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = phonekey(&dir)
        .args(["createsuperuser", "--username", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "a second admin with the same name is refused"
    );
}

#[test]
fn config_file_sets_the_same_keys() {
    let dir = Dir::new();
    std::fs::write(
        dir.0.join("phonekey.toml"),
        "PHONEKEY_SMS_PROVIDER = \"smoke-signals\"\n",
    )
    .unwrap();
    let out = phonekey(&dir)
        .args(["--config", "phonekey.toml", "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PHONEKEY_SMS_PROVIDER"));
    std::fs::write(dir.0.join("bad.toml"), "NO_SUCH_KEY = 1\n").unwrap();
    let out = phonekey(&dir)
        .args(["--config", "bad.toml", "migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NO_SUCH_KEY"));
}

/// `phonekey serve` with nothing set: SQLite file in the working directory,
/// console SMS on stdout, and the code nowhere in the log.
#[tokio::test]
async fn serve_runs_out_of_the_box_and_the_code_appears_only_in_the_sms() {
    let dir = Dir::new();
    let port = free_port();
    let mut child = phonekey(&dir)
        .arg("serve")
        .env("PHONEKEY_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    });

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "serve did not come up");
    assert!(dir.0.join("phonekey.db").exists());
    let response = http
        .post(format!("{base}/otp/getcode/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("phone=%2B14155550123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let mut sms = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        let done = line.contains("end of SMS");
        sms.push(line);
        if done {
            break;
        }
    }
    let sms = sms.join("\n");
    let code: String = sms
        .rsplit('#')
        .next()
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 6, "the console SMS carries the code: {sms}");
    assert!(sms.contains("SMS to +14155550123"));

    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().unwrap();
    assert!(
        log.contains("console"),
        "start-up warns about the console provider: {log}"
    );
    assert!(
        !log.contains(&code),
        "the code must not appear in a log line: {log}"
    );
}

#[test]
fn keys_rotate_and_list() {
    let dir = Dir::new();
    let out = phonekey(&dir).arg("migrate").output().unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("applied {migrations} migration(s)")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for _ in 0..2 {
        let out = phonekey(&dir).args(["keys", "rotate"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("new signing key "));
    }
    let out = phonekey(&dir).args(["keys", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert_eq!(
        listing.matches("retired").count(),
        1,
        "the first key retires when the second starts: {listing}"
    );
}
