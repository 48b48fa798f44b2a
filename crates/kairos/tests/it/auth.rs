//! API keys through the real binary: protected mode refuses to serve other machines without a
//! key; a key made with `kairos auth create` on the data dir closes a running server to
//! anonymous callers within seconds; the CLI sends `--api-key` or `KAIROS_API_KEY`; a revoked
//! key stops working; the server never stores the token.

use std::process::Command;
use std::time::{Duration, Instant};

use kairos_catalog::testing::TestDatabase;

use crate::models::{json, kairos};
use crate::server::Server;

fn with_url(url: &str, key: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
    command
        .arg("--url")
        .arg(url)
        .args(args)
        .env("KAIROS_LOG", "warn");
    if let Some(key) = key {
        command.env("KAIROS_API_KEY", key);
    }
    command.output().unwrap()
}

/// Retries `probe` until it holds: the server looks for changed keys every half second.
async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn without_a_key_the_server_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = kairos(dir.path(), &["serve", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no API key is configured"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "a refused start announces no address"
    );
}

#[tokio::test]
async fn keys_close_the_server_and_the_cli_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let url = server.url.clone();
    // Open on loopback while no key exists.
    assert!(with_url(&url, None, &["fg", "list"]).status.success());

    let admin = json(&kairos(
        dir.path(),
        &["auth", "create", "--name", "ops", "--scope", "admin"],
    ));
    let token = admin["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("kairos_"), "{token}");
    eventually("anonymous callers are refused", || {
        let out = with_url(&url, None, &["fg", "list"]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("401")
    })
    .await;
    assert!(
        with_url(&url, Some(&token), &["fg", "list"])
            .status
            .success()
    );
    let flag = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["--url", &url, "--api-key", &token, "auth", "list"])
        .output()
        .unwrap();
    let listed = json(&flag);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!String::from_utf8_lossy(&flag.stdout).contains(&token[20..]));

    // A reader made through the server can read but not define.
    let reader = json(&with_url(
        &url,
        Some(&token),
        &["auth", "create", "--name", "dashboard", "--scope", "read"],
    ));
    let reader_token = reader["token"].as_str().unwrap();
    assert!(
        with_url(&url, Some(reader_token), &["fg", "list"])
            .status
            .success()
    );
    let denied = with_url(&url, Some(reader_token), &["auth", "list"]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403"));

    // Revoked: refused from then on.
    let id = reader["id"].as_str().unwrap();
    json(&with_url(&url, Some(&token), &["auth", "revoke", id]));
    let refused = with_url(&url, Some(reader_token), &["fg", "list"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    // The catalog holds digests only.
    let secret = token.rsplit('_').next().unwrap();
    for file in ["catalog.db", "catalog.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token's secret is in {file}"
        );
    }
    server.stop();
}

/// Two servers sharing one PostgreSQL catalog, as two replicas do: a key made through one
/// closes the other to anonymous callers, and a key revoked through one stops working on the
/// other, each within the key reload.
#[tokio::test]
async fn replicas_sharing_a_catalog_share_their_keys() {
    // The synchronous client that makes the database runs a runtime of its own.
    let create = || TestDatabase::create("kairos_auth_test");
    let Some(db) = tokio::task::spawn_blocking(create).await.unwrap() else {
        eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set");
        return;
    };
    let catalog = db.url();
    let env = [("KAIROS_CATALOG_URL", catalog.as_str())];
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start_with(a_dir.path(), &env).await;
    let b = Server::start_with(b_dir.path(), &env).await;

    let admin = json(&with_url(
        &a.url,
        None,
        &["auth", "create", "--name", "ops", "--scope", "admin"],
    ));
    let token = admin["token"].as_str().unwrap().to_string();
    let refused = |url: &str, key: Option<&str>| {
        let out = with_url(url, key, &["fg", "list"]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("401")
    };
    eventually("the other replica refuses anonymous callers", || {
        refused(&b.url, None)
    })
    .await;
    assert!(
        with_url(&b.url, Some(&token), &["fg", "list"])
            .status
            .success()
    );

    let reader = json(&with_url(
        &a.url,
        Some(&token),
        &["auth", "create", "--name", "dashboard", "--scope", "read"],
    ));
    let reader_token = reader["token"].as_str().unwrap();
    eventually("the other replica takes the new key", || {
        with_url(&b.url, Some(reader_token), &["fg", "list"])
            .status
            .success()
    })
    .await;
    let id = reader["id"].as_str().unwrap();
    json(&with_url(&b.url, Some(&token), &["auth", "revoke", id]));
    eventually(
        "the first replica refuses the key revoked on the other",
        || refused(&a.url, Some(reader_token)),
    )
    .await;
    a.stop();
    b.stop();
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}
