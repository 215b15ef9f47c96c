//! The disk under the SQLite database fills up: writes answer 503 (the
//! storage is down, as for a lost database), never 500, nothing is half
//! written, and service resumes once space is freed. The database lives on
//! a tmpfs of its own, so the test needs root to mount one (as `.ci/run`
//! runs); anyone else is told so and the test does nothing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use phonekey::oauth::clients::GrantType;

/// A 16 MiB tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!(
            "phonekey-small-disk-{}",
            phonekey::secrets::random_hex(6)
        ));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(SmallDisk(dir));
        }
        let _ = std::fs::remove_dir(&dir);
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        assert!(!root, "as root, mounting a tmpfs must work");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fills the rest of the disk with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // Fill the last partial block too.
    while file.write_all(&[0u8; 512]).is_ok() {}
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_gives_503_and_service_resumes_when_space_is_freed() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!(
            "storage_full: not root, so no tmpfs to fill; run the tests as root (as .ci/run does)"
        );
        return;
    };
    // SQLite on the small disk, whichever backend the rest of the suite uses.
    let db = TestDb::Sqlite(tempdir::Dir(disk.0.clone()));
    let server = TestServer::start_on(db, &[]);
    let (id, secret) = server.client(&[GrantType::ClientCredentials], true);
    let secret = secret.unwrap();
    let form = [("grant_type", "client_credentials")];
    assert_eq!(server.token_basic(&id, &secret, &form).await.0, 200);

    let filler = fill(&disk.0);
    // Writes that fit in pages the files already have may still pass;
    // sooner or later one needs a new page.
    let (mut refused, mut issued) = (0, 1);
    for _ in 0..2000 {
        let (status, body, _) = server.token_basic(&id, &secret, &form).await;
        if status == 200 {
            issued += 1;
            continue;
        }
        expect_error(status, &body, 503, "temporarily_unavailable");
        refused += 1;
        if refused == 5 {
            break;
        }
    }
    assert_eq!(refused, 5, "a full disk never refused a token");
    assert_eq!(
        count_rows(&server.db.url(), "access_tokens"),
        issued,
        "a refused token left a row"
    );
    let phone = new_phone();
    let (status, body, _) = server
        .post_form("/otp/getcode/", &[("phone", &phone)], &new_ip())
        .await;
    expect_error(status, &body, 503, "temporarily_unavailable");
    assert_eq!(
        server.sms.sent_to(&phone),
        0,
        "no SMS for a code that could not be stored"
    );

    std::fs::remove_file(filler).expect("free the space");
    let mut back = false;
    for _ in 0..20 {
        if server.token_basic(&id, &secret, &form).await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "service did not resume once space was freed");
    let (_, user) = server.signed_up_user(&phone).await;
    assert_eq!(user["account"]["phone"], phone.as_str());
}
