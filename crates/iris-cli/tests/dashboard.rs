//! The dashboard in a real browser: Debian's chromium driven by
//! playwright-core (tests/clients/dashboard.mjs) against a live `iris
//! serve` with an `echo` team, a `claude` team (the real Claude Code CLI
//! on the local Messages API stub, `grantPermission: ask`) and a user.
//! Screenshots of the main pages go to a temporary folder, or to the
//! folder `IRIS_SCREENSHOTS` names: `scripts/screenshots.sh` refreshes
//! docs/img/ (where the README shows them) on purpose, so a test run
//! leaves the tree as it was.

#[path = "common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;
mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_browser() {
    let stub = anthropic_stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("work")).unwrap();
    let claude_home = home.path().join("claude-home");
    std::fs::create_dir_all(&claude_home).unwrap();
    // Teams made from the page work under a root outside Iris's home.
    let projects = tempfile::tempdir().unwrap();
    // A repository whose conversations each get a worktree: a command
    // agent writes its message into notes.txt there.
    let repo = projects.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "test@example.com"]);
    git(&repo, &["config", "user.name", "Test"]);
    std::fs::write(repo.join("notes.txt"), "original\n").unwrap();
    git(&repo, &["add", "notes.txt"]);
    git(&repo, &["commit", "-q", "-m", "start"]);
    let config = format!(
        "teamRoots: [{}]\napi:\n  port: 0\ndashboard:\n  http: 0\nsettings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\n  approvalTimeout: 120000\nwebhooks:\n  allowHosts: ['127.0.0.1']\n  retryBase: 50\n  retryMax: 100\n  maxAttempts: 2\nteams:\n  demo:\n    path: .\n    agent: echo\n  editor:\n    path: {}\n    agent: command\n    command: sh\n    args: ['-c', 'printf \"%s\\n\" \"$0\" > notes.txt; echo written']\n    isolation: worktree\n{}",
        projects.path().display(),
        repo.display(),
        claude_team(
            "guarded",
            &claude_home,
            &stub.url,
            "    grantPermission: ask\n"
        )
    );
    let (mut server, base) = serve_in(home.path(), &config);
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
    // A message from one team to another, for the teams graph.
    let (status, told) = http(
        &reqwest::Client::new(),
        reqwest::Method::POST,
        format!("{base}/api/v1/teams/tell"),
        Some(&key_in(home.path())),
        serde_json::json!({"toTeam": "demo", "fromTeam": "guarded", "message": "from another team", "timeout": 0}),
    )
    .await;
    assert_eq!(status, 200, "{told}");
    // A webhook receiver that refuses the first two deliveries.
    let (hook, hits) = receiver(2);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scratch = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("IRIS_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&shots).unwrap();
    // The browser script against the server at `base`, in `mode`.
    let browse = |base: String, mode: &'static str| {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(root.join("crates/iris-cli/tests/clients/dashboard.mjs"))
            .args([base.as_str(), "ada", password])
            .arg(&shots)
            .arg(projects.path())
            .arg(format!("{hook}/iris"))
            .arg(mode);
        async move { cmd.output().await.unwrap() }
    };
    let out = browse(base, "full").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(home.path().join("serve.err")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" request ")).collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    assert!(
        out.status.success(),
        "{stdout}\n{}\nserver log:\n{tail}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two refused attempts and the redelivery, each of the job's end.
    let got = hits.lock().unwrap().clone();
    assert!(
        got.len() >= 3
            && got
                .iter()
                .all(|(p, b)| p == "/iris" && b["event"] == "job.completed"),
        "{got:?}"
    );
    for check in [
        "a wrong password is refused",
        "it grew while streaming",
        "the teams graph shows who messaged whom",
        "the approval is shown in the conversation, in its place",
        "each turn says how it went",
        "the sign-in page: no serious or critical accessibility violations",
        "conversation: no serious or critical accessibility violations",
        "health: no serious or critical accessibility violations",
        "teams at a phone's width: no serious or critical accessibility violations",
        "a worktree conversation's changes are shown",
        "a webhook subscription is made, its secret shown once",
        "a failed delivery is redelivered from the page",
        "the audit chain verifies from the page",
        "turns, errors and latency are charted",
        "a running process shows its memory",
        "markdown rendered",
        "no markup from the agent runs",
        "it is shown as text",
        "an opened conversation shows its messages",
        "revoked: the API refuses the key",
        "the job completed with its result",
        "the approval appears without a reload",
        "the tool's output arrives",
        "no request leaves the origin",
    ] {
        assert!(stdout.contains(check), "{check}: {stdout}");
    }
    // Restarted: the conversations are still there, in the page.
    terminate(&mut server);
    let (_server, base) = serve_with(home.path(), &[]);
    let out = browse(base, "restarted").await;
    let again = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && again.contains("after a restart the conversations are listed and open"),
        "{again}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "teams",
        "conversation",
        "approvals",
        "keys",
        "jobs",
        "audit",
        "phone",
    ] {
        assert!(
            shots.join(format!("dashboard-{page}.png")).exists(),
            "{page}"
        );
    }
}
