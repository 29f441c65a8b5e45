//! The dashboard in a real browser: Debian's chromium driven by
//! playwright-core (tests/clients/dashboard.mjs) against a live `iris
//! serve` with an `echo` team and a user. Screenshots of the main pages
//! go to docs/img/, where the README shows them.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_browser() {
    let home = tempfile::tempdir().unwrap();
    let (_server, base) = serve_in(
        home.path(),
        "api:\n  port: 0\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    );
    let password = "Correct-Horse-9!x";
    let made = iris(home.path())
        .args([
            "user",
            "create",
            "--username",
            "ada",
            "--password",
            password,
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    succeeded(&made);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shots = root.join("docs/img");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(root.join("crates/iris-cli/tests/clients/dashboard.mjs"))
        .args([base.as_str(), "ada", password])
        .arg(&shots)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "a wrong password is refused",
        "it grew while streaming",
        "revoked: the API refuses the key",
        "the job completed with its result",
        "no request leaves the origin",
    ] {
        assert!(stdout.contains(check), "{check}: {stdout}");
    }
    for page in ["teams", "conversation", "keys", "jobs", "audit", "phone"] {
        assert!(
            shots.join(format!("dashboard-{page}.png")).exists(),
            "{page}"
        );
    }
}
