//! Security through the real `iris` binary: the first start's admin key and
//! credentials file, `iris key|user|audit`, revocation while a server runs,
//! keys never stored or logged in clear, `audit verify` catching tampering,
//! and refusing an open non-loopback bind.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const DEMO: &str = "api:\n  port: 0\nteams:\n  demo:\n    path: .\n    agent: echo\n";

fn run(dir: &Path, args: &[&str]) -> Output {
    iris(dir).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn status_with(url: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}/api/v1/status"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every byte of the database files.
async fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    if iris_storage::testing::postgres_server().is_some() {
        // Every row of every table, as Postgres prints it.
        let pool = raw_db(dir).await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for t in tables {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(t AS TEXT) FROM {t} t"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            all.extend(rows.join("\n").into_bytes());
        }
        return all;
    }
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_creates_an_admin_key_and_the_cli_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve_in(dir.path(), DEMO);
    let creds = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("credentials"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = creds
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY="))
        .expect("a key line")
        .to_owned();
    assert!(key.starts_with("iris_sk_live_"), "{creds}");
    // Printed once, on the server's standard output.
    let printed = text(&std::fs::read(dir.path().join("serve.out")).unwrap());
    assert_eq!(printed.matches(&key).count(), 1, "{printed}");
    assert_eq!(status_with(&url, &key).await, 200);
    let anon = reqwest::get(format!("{url}/api/v1/status")).await.unwrap();
    assert_eq!(anon.status(), 401);

    // The client commands read the credentials file.
    let out = run(dir.path(), &["call", "get_status"]);
    succeeded(&out);
    let out = run(dir.path(), &["key", "list", "--json"]);
    succeeded(&out);
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys["keys"][0]["name"], "admin");
    assert_eq!(keys["keys"][0]["scopes"], json!(["admin"]));
    assert!(
        !text(&out.stdout).contains(&key[20..]),
        "listings never show the key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_keys_work_at_once_and_a_cli_revocation_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve_in(dir.path(), DEMO);
    let out = run(
        dir.path(),
        &[
            "key",
            "create",
            "--name",
            "ci",
            "--scopes",
            "tell,status:read",
            "--teams",
            "demo",
            "--expires-in",
            "30d",
            "--rate-limit",
            "100/min",
        ],
    );
    succeeded(&out);
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with("iris_sk_live_") && key.len() >= 56, "{key}");
    assert!(text(&out.stderr).contains("shown once"));
    assert_eq!(status_with(&url, &key).await, 200);

    let out = run(
        dir.path(),
        &["key", "create", "--name", "bad", "--scopes", "root"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown scope"),
        "{}",
        text(&out.stderr)
    );

    // Through the running server: refused from the next request on.
    let out = run(dir.path(), &["key", "revoke", "ci"]);
    succeeded(&out);
    assert_eq!(status_with(&url, &key).await, 401);

    // Written to the database directly (--local): the server notices within
    // a moment (it watches the key revision, never queries per request).
    let out = run(
        dir.path(),
        &["key", "create", "--name", "ci2", "--role", "viewer"],
    );
    let key2 = text(&out.stdout).trim().to_owned();
    assert_eq!(status_with(&url, &key2).await, 200);
    let out = run(dir.path(), &["key", "revoke", &key2[..20], "--local"]);
    succeeded(&out);
    let mut refused = false;
    for _ in 0..40 {
        if status_with(&url, &key2).await == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a --local revocation reaches the running server");

    // Rotation prints a new key; the old one lives for the grace.
    let out = run(
        dir.path(),
        &["key", "create", "--name", "svc", "--role", "viewer"],
    );
    let old = text(&out.stdout).trim().to_owned();
    let out = run(dir.path(), &["key", "rotate", "svc", "--grace", "1h"]);
    succeeded(&out);
    let new = text(&out.stdout).trim().to_owned();
    assert_ne!(old, new);
    assert_eq!(status_with(&url, &old).await, 200);
    assert_eq!(status_with(&url, &new).await, 200);

    // Users.
    let out = run(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "ann",
            "--password",
            "Correct-Horse-42",
            "--email",
            "ann@example.com",
            "--role",
            "operator",
        ],
    );
    succeeded(&out);
    let out = run(dir.path(), &["user", "list"]);
    assert!(
        text(&out.stdout).contains("ann@example.com"),
        "{}",
        text(&out.stdout)
    );
    let out = run(dir.path(), &["user", "disable", "ann"]);
    assert!(out.status.success());
    let login = reqwest::Client::new()
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"username": "ann", "password": "Correct-Horse-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_never_stored_or_logged_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve_in(dir.path(), DEMO);
    let key = operator_key(dir.path());
    let first = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
    let first = first
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY="))
        .unwrap()
        .to_owned();
    // Use both, fail with a near miss, send a message, rotate.
    assert_eq!(status_with(&url, &key).await, 200);
    // The last character changed (to one it is not: a key may end in `x`).
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let near = format!("{}{last}", &key[..key.len() - 1]);
    assert_eq!(status_with(&url, &near).await, 401);
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/teams/tell?token={key}"))
        .bearer_auth(&key)
        .json(&json!({"toTeam": "demo", "message": "hi", "timeout": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out = run(dir.path(), &["key", "rotate", "ci"]);
    let rotated = text(&out.stdout).trim().to_owned();
    terminate(&mut server);

    let db = database_bytes(dir.path()).await;
    let logs = [
        std::fs::read(dir.path().join("serve.err")).unwrap(),
        std::fs::read(dir.path().join("serve.out")).unwrap(),
    ]
    .concat();
    let stdout = text(&std::fs::read(dir.path().join("serve.out")).unwrap());
    for k in [&key, &near, &rotated, &first] {
        let secret_part = &k[20..];
        assert!(
            !contains(&db, secret_part),
            "a key is in the database in clear"
        );
        let in_logs = text(&logs).matches(secret_part).count();
        let expected = usize::from(*k == first); // printed once at first start
        assert_eq!(in_logs, expected, "a key is in the server's output");
    }
    assert!(stdout.contains(&first));
    // What is stored: the SHA-256 of each key.
    assert!(contains(&db, &iris_core::auth::sha256_hex(&key)));
}

/// `iris key create --name ci --role operator`, printed key.
fn operator_key(dir: &Path) -> String {
    let out = run(
        dir,
        &["key", "create", "--name", "ci", "--role", "operator"],
    );
    succeeded(&out);
    text(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_catches_an_edited_or_deleted_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve_in(dir.path(), DEMO);
    let key = operator_key(dir.path());
    for _ in 0..3 {
        assert_eq!(status_with(&url, "iris_sk_live_nope").await, 401);
    }
    assert_eq!(status_with(&url, &key).await, 200);
    let out = run(dir.path(), &["audit", "list", "--action", "auth"]);
    succeeded(&out);
    let table = text(&out.stdout);
    assert!(table.contains("auth.failure"), "{table}");
    assert!(human_time(&table) && !epoch_ms(&table), "{table}");
    let out = run(dir.path(), &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    terminate(&mut server);

    // Offline, with the database: still intact.
    assert!(run(dir.path(), &["audit", "verify"]).status.success());
    let pool = raw_db(dir.path()).await;
    sqlx::query("UPDATE audit_log SET actor = 'user:someone-else' WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let out = run(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("record 2 was altered"),
        "{}",
        text(&out.stderr)
    );
    // Put it back, then delete one instead.
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["badSeq"], 2);
    sqlx::query("DELETE FROM audit_log WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap();
    let out = run(dir.path(), &["audit", "verify"]);
    assert!(!out.status.success());
    pool.close().await;
}

#[test]
fn an_open_api_on_a_public_address_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "api:\n  port: 0\n  host: 0.0.0.0\n  requireAuth: false\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )
    .unwrap();
    let out = run(dir.path(), &["serve"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--insecure"),
        "{}",
        text(&out.stderr)
    );
    // With --insecure it starts (and is stopped here).
    let mut child = Reap(
        iris(dir.path())
            .args(["serve", "--insecure"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..400 {
        if dir.path().join(".http.port").exists() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(up, "serve --insecure starts");
    assert!(child.0.try_wait().unwrap().is_none());
}
