//! The database end to end: two `iris serve` processes on one database
//! (one audit chain, one job per idempotency key), `iris db copy` both ways
//! with the audit chain still verifying, `iris db migrate`, and (on
//! Postgres) a database outage under traffic: 503s, `/ready` false, and
//! service again without a restart. The suite runs these on SQLite and on
//! Postgres (scripts/test.sh).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const CONFIG: &str = "api:\n  port: 0\n  rateLimit:\n    maxRequests: 1000000\n    perIp: 1000000/min\n    messages: 1000000/min\nteams:\n  demo:\n    path: .\n    agent: echo\n";

fn db_url(dir: &Path) -> String {
    iris_storage::testing::database_url(dir)
}

async fn post(client: &reqwest::Client, url: String, key: &str, body: Value) -> (u16, Value) {
    http(client, reqwest::Method::POST, url, Some(key), body).await
}

async fn get(client: &reqwest::Client, url: String, key: &str) -> (u16, Value) {
    http(client, reqwest::Method::GET, url, Some(key), Value::Null).await
}

/// Two nodes on the database of `a`: (their servers, their base URLs, the admin key).
fn two_nodes(a: &Path, b: &Path) -> ([Reap; 2], [String; 2], String) {
    let (one, url_a) = serve_in(a, CONFIG);
    std::fs::write(b.join("config.yaml"), CONFIG).unwrap();
    let (two, url_b) = serve_on(b, &db_url(a));
    ([one, two], [url_a, url_b], key_in(a))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_appending_to_the_audit_trail_leave_one_chain() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut servers, urls, key) = two_nodes(a.path(), b.path());
    let client = reqwest::Client::new();
    // Each new key is an audit record; both nodes write at once.
    let mut calls = Vec::new();
    for i in 0..40 {
        let url = format!("{}/api/v1/admin/keys", urls[i % 2]);
        let (client, key) = (client.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            post(
                &client,
                url,
                &key,
                json!({"name": format!("k{i}"), "role": "viewer"}),
            )
            .await
        }));
    }
    for c in calls {
        let (status, v) = c.await.unwrap();
        assert_eq!(status, 200, "{v}");
    }
    for s in &mut servers {
        terminate(s);
    }
    let out = iris(a.path())
        .args(["audit", "verify", "--local"])
        .output()
        .unwrap();
    succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let created = iris(a.path())
        .args([
            "audit",
            "list",
            "--local",
            "--action",
            "key.create",
            "--limit",
            "1000",
            "--json",
        ])
        .output()
        .unwrap();
    succeeded(&created);
    let list: Value = serde_json::from_slice(&created.stdout).unwrap();
    let n = list["logs"].as_array().map(Vec::len).unwrap_or_default();
    assert!(n >= 40, "40 keys made, {n} recorded: {list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_given_one_idempotency_key_at_once_make_one_job() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_servers, urls, key) = two_nodes(a.path(), b.path());
    let client = reqwest::Client::new();
    for round in 0..15 {
        let sends = urls.clone().map(|base| {
            let req = client
                .post(format!("{base}/api/v1/teams/demo/execute"))
                .bearer_auth(&key)
                .header("Idempotency-Key", format!("deploy-{round}"))
                .json(&json!({"task": format!("deploy {round}")}));
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        });
        let [x, y] = sends;
        let ((s1, j1), (s2, j2)) = (x.await.unwrap(), y.await.unwrap());
        assert_eq!((s1, s2), (202, 202), "{j1} {j2}");
        assert_eq!(j1["jobId"], j2["jobId"], "round {round}: {j1} {j2}");
    }
    let (status, list) = get(&client, format!("{}/api/v1/jobs?limit=100", urls[0]), &key).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["pagination"]["total"], 15, "{list}");
}

/// Run `iris` in `home` with `args`; its output.
fn run(home: &Path, args: &[&str]) -> std::process::Output {
    iris(home).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_copy_moves_an_installation_there_and_back() {
    let a = tempfile::tempdir().unwrap();
    let (mut server, base) = serve_in(a.path(), CONFIG);
    let key = key_in(a.path());
    let client = reqwest::Client::new();
    let (status, told) = post(
        &client,
        format!("{base}/api/v1/teams/tell"),
        &key,
        json!({"toTeam": "demo", "message": "remember me", "timeout": 0}),
    )
    .await;
    assert_eq!(status, 200, "{told}");
    let (status, job) = post(
        &client,
        format!("{base}/api/v1/teams/demo/execute"),
        &key,
        json!({"task": "a job to keep"}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, j) = get(
            &client,
            format!("{base}/api/v1/jobs/{}", job["jobId"].as_str().unwrap()),
            &key,
        )
        .await;
        if j["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(&mut server);

    // Away: on Postgres runs to a SQLite file, on SQLite runs to another file.
    let away = a.path().join("away.db");
    let away_url = iris_storage::sqlite_url(&away);
    let out = run(a.path(), &["db", "copy", "--to", &away_url]);
    succeeded(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["audit"]["ok"], true, "{report}");
    assert_eq!(report["tables"]["turns"], 2, "{report}");
    assert_eq!(report["tables"]["jobs"], 1, "{report}");
    // A target that holds something is refused, and left as it was.
    let again = run(a.path(), &["db", "copy", "--to", &away_url]);
    assert!(!again.status.success());
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("--overwrite"), "{why}");
    let forced = run(a.path(), &["db", "copy", "--to", &away_url, "--overwrite"]);
    succeeded(&forced);
    let forced: Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(forced["rows"], report["rows"], "{forced}");

    // And back, to a new installation on the suite's backend, which runs:
    // its chain verifies, with the witness the copy wrote for it.
    let b = tempfile::tempdir().unwrap();
    let back = run(
        b.path(),
        &["db", "copy", "--from", &away_url, "--to", &db_url(b.path())],
    );
    succeeded(&back);
    let back: Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(back["rows"], report["rows"], "{back}");
    assert!(
        back["witness"].is_string(),
        "the target got a witness: {back}"
    );
    std::fs::write(b.path().join("config.yaml"), CONFIG).unwrap();
    let verify = run(b.path(), &["audit", "verify"]);
    succeeded(&verify);
    let (_server, base_b) = serve_with(b.path(), &[]);
    assert!(
        !b.path().join("credentials").exists(),
        "the copied keys are there: no new admin key"
    );
    let (status, history) = get(
        &client,
        format!("{base_b}/api/v1/messages/history?limit=10"),
        &key,
    )
    .await;
    assert_eq!(status, 200, "the old key works on the copy: {history}");
    assert!(history.to_string().contains("remember me"), "{history}");
}

#[test]
fn db_migrate_brings_a_database_to_this_build_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let out = run(dir.path(), &["db", "migrate"]);
    succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["after"], v["latest"], "{v}");
    let out = run(dir.path(), &["db", "migrate"]);
    succeeded(&out);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        again["before"], again["latest"],
        "nothing left to apply: {again}"
    );
    let bad = run(
        dir.path(),
        &["db", "migrate", "--url", "mysql://localhost/x"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("sqlite: or postgres://"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// A Postgres server of the test's own on a free port, which it may stop.
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = OwnPostgres { dir, bin, port };
        if unsafe { libc::geteuid() } == 0 {
            // PostgreSQL refuses to run as root.
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = pg.dir.path().join("data");
        let init = pg
            .as_owner(&pg.bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .unwrap();
        succeeded(&init);
        pg.ctl("start");
        pg
    }

    fn as_owner(&self, program: &Path) -> std::process::Command {
        if unsafe { libc::geteuid() } == 0 {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    fn ctl(&self, what: &str) {
        let mut c = self.as_owner(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-w", "-t", "60"]);
        if what == "start" {
            c.arg("-o").arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ));
            c.arg("-l").arg(self.dir.path().join("log"));
        } else {
            c.args(["-m", "fast"]);
        }
        let out = c.arg(what).output().unwrap();
        succeeded(&out);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_under_traffic_is_503_then_service_again_without_a_restart() {
    if iris_storage::testing::postgres_server().is_none() {
        eprintln!("the outage test runs in the Postgres run of the suite (IRIS_TEST_POSTGRES)");
        return;
    }
    let pg = OwnPostgres::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.yaml"),
        format!("database:\n  connectTimeout: 1000\n  statementTimeout: 5000\n{CONFIG}"),
    )
    .unwrap();
    let (mut server, base) = serve_on(home.path(), &pg.url());
    let key = key_in(home.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tell = {
        let (client, key, base) = (client.clone(), key.clone(), base.clone());
        move |text: String| {
            let (client, key, base) = (client.clone(), key.clone(), base.clone());
            async move {
                post(
                    &client,
                    format!("{base}/api/v1/teams/tell"),
                    &key,
                    json!({"toTeam": "demo", "message": text, "timeout": 0}),
                )
                .await
            }
        }
    };
    let history = {
        let (client, key, base) = (client.clone(), key.clone(), base.clone());
        move || {
            let (client, key, base) = (client.clone(), key.clone(), base.clone());
            async move {
                get(
                    &client,
                    format!("{base}/api/v1/messages/history?limit=5"),
                    &key,
                )
                .await
            }
        }
    };
    let (status, v) = tell("before the outage".into()).await;
    assert_eq!(status, 200, "{v}");

    // Traffic throughout: every answer is a success or a 503, never a 500.
    // (A message may even be answered while the database is down: its
    // writes wait for the database, and must arrive.)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let (tell, history) = (tell.clone(), history.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut answered = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let text = format!("load {i}");
                let (status, v) = tell(text.clone()).await;
                if status == 200 {
                    answered.push(text);
                }
                seen.push((status, v));
                seen.push(history().await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (seen, answered)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.ctl("stop");
    // Requests that need the database fail fast and say why; the server
    // is not ready; it lives.
    let deadline = Instant::now() + Duration::from_secs(15);
    let down = loop {
        let (status, v) = history().await;
        if status == 503 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no 503 while the database is down: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(down["code"], "SERVICE_UNAVAILABLE", "{down}");
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let (status, health) = get(&client, format!("{base}/health/detailed"), &key).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["database"]["ok"], false, "{health}");
    assert_eq!(health["database"]["backend"], "postgres", "{health}");
    assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.ctl("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(format!("{base}/ready")).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, v) = tell("after the outage".into()).await;
    assert_eq!(status, 200, "{v}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, answered) = load.await.unwrap();
    assert!(
        seen.iter().any(|(s, _)| *s == 503),
        "the traffic saw the outage"
    );
    for (status, v) in &seen {
        assert!(
            *status == 200 || (*status == 503 && v["code"] == "SERVICE_UNAVAILABLE"),
            "{status} {v}"
        );
    }
    let (status, health) = get(&client, format!("{base}/health/detailed"), &key).await;
    assert_eq!(status, 200, "{health}");
    assert!(health["database"]["latencyMs"].is_number(), "{health}");
    assert!(
        health["database"]["pool"]["max"].as_u64() >= Some(1),
        "{health}"
    );
    terminate(&mut server);
    // Nothing half-written: every turn that answered is there whole, and
    // the audit chain verifies.
    let out = iris(home.path())
        .env("IRIS_DATABASE_URL", pg.url())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    succeeded(&out);
    let err = std::fs::read_to_string(home.path().join("serve.err")).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    let pool = {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&pg.url()).await.unwrap()
    };
    let unfinished: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM turns WHERE status IN ('queued', 'running')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unfinished, 0, "turns left half-way");
    let done: Vec<String> =
        sqlx::query_scalar("SELECT request FROM turns WHERE status = 'completed'")
            .fetch_all(&pool)
            .await
            .unwrap();
    for text in answered
        .iter()
        .map(String::as_str)
        .chain(["before the outage", "after the outage"])
    {
        assert!(
            done.iter().any(|d| d == text),
            "`{text}` was answered but its turn is not in the database; the server said:\n{}",
            err.lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
