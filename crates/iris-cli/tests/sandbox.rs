//! Confined agents (docs/security.md): a command team whose script tries
//! to read Iris's credentials and database, another team's folder and
//! another conversation's worktree, to write outside its folder and to
//! signal Iris — each attempt fails, the turn reports it, Iris goes on;
//! what is its own (its folder, its home and temporary folder, a worktree
//! with the repository's shared `.git`) works. Off, the same script reads
//! everything; where the kernel cannot confine, `sandbox.required` refuses
//! to start agents.

#[path = "common/anthropic_stub.rs"]
mod anthropic_stub;
mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

/// Each attempt prints `ALLOWED: what` or `denied: what`.
const PROBE: &str = r#"
try() { what="$1"; shift; if "$@" >/dev/null 2>&1; then echo "ALLOWED: $what"; else echo "denied: $what"; fi; }
try credentials cat "$IRIS_DIR/credentials"
try database cat "$IRIS_DIR/data/iris.db"
try config cat "$IRIS_DIR/config.yaml"
try home-listing ls "$IRIS_DIR"
try other-team cat "$OTHER/secret.txt"
try worktree sh -c "cat $IRIS_DIR/worktrees/repo/*/notes.txt"
try write-outside sh -c "echo x > $OUTSIDE/escaped.txt"
try write-tmp sh -c "echo x > /tmp/iris-probe-$$"
try signal-iris kill -0 "$PPID"
try iris-environ cat "/proc/$PPID/environ"
try write-own sh -c 'echo mine > mine.txt'
try own-tmp sh -c 'echo t > "$TMPDIR/t" && cat "$TMPDIR/t"'
try own-home sh -c 'echo h > "$HOME/.h" && cat "$HOME/.h"'
try system cat /etc/hostname
echo "done"
"#;

struct Layout {
    work: tempfile::TempDir,
    yaml: String,
}

/// Team folders outside Iris's home: `probe` (the script), `other` (a
/// secret), `repo` (a repository whose conversations get worktrees).
fn layout(home: &Path, sandbox: &str) -> Layout {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    for d in ["probe", "other", "repo"] {
        std::fs::create_dir_all(w.join(d)).unwrap();
    }
    std::fs::write(w.join("probe/probe.sh"), PROBE).unwrap();
    std::fs::write(w.join("other/secret.txt"), "the other team's secret").unwrap();
    // What `iris serve` writes at its first start (this Iris runs in the
    // test's process and makes none).
    std::fs::write(
        home.join("credentials"),
        "IRIS_API_KEY=iris_sk_live_secret\n",
    )
    .unwrap();
    let repo = w.join("repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("notes.txt"), "in the repository\n").unwrap();
    git(&repo, &["add", "notes.txt"]);
    git(
        &repo,
        &[
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=T",
            "commit",
            "-qm",
            "start",
        ],
    );
    let yaml = format!(
        "{sandbox}teams:\n  probe:\n    path: {probe}\n    agent: command\n    command: /bin/sh\n    args: [probe.sh]\n    env:\n      IRIS_DIR: {home}\n      OTHER: {other}\n      OUTSIDE: {outside}\n  other:\n    path: {other}\n    agent: echo\n  repo:\n    path: {repo}\n    agent: command\n    command: /bin/sh\n    args: ['-c', 'git config filter.x.smudge true 2>/dev/null && echo config-written || echo config-denied; echo change >> notes.txt && git add notes.txt && git -c user.email=a@example.com -c user.name=A commit -qm agent && echo committed; cat {repo}/notes.txt || echo main-folder-denied']\n    isolation: worktree\n  planter:\n    path: {repo}\n    agent: command\n    command: /bin/sh\n    args: ['-c', 'git config filter.pwn.smudge \"sh -c \\\"touch {marker}; cat\\\"\" && echo \"* filter=pwn\" > .git/info/attributes && echo planted']\n",
        probe = w.join("probe").display(),
        other = w.join("other").display(),
        repo = repo.display(),
        home = home.display(),
        outside = w.display(),
        marker = w.join("PLANTED-FILTER-RAN").display(),
    );
    Layout { work, yaml }
}

fn lines(answer: &serde_json::Value) -> String {
    answer["response"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_agent_reaches_only_what_is_its_own() {
    let home = tempfile::tempdir().unwrap();
    let l = layout(home.path(), "");
    let h = start_at(home, &l.yaml).await;
    // A worktree conversation first: its agent commits in its checkout
    // (the repository's .git is shared) but cannot read the main folder.
    let wt = h.tell("repo", "go").await.unwrap();
    let text = lines(&wt);
    assert!(text.contains("committed"), "{wt}");
    assert!(text.contains("main-folder-denied"), "{wt}");
    // Its repository's config (hooks, filters) is not its to write.
    assert!(text.contains("config-denied"), "{wt}");
    // A team working in the repository itself may plant a filter driver;
    // git as Iris runs it (a new conversation's worktree) never runs one.
    let planted = h.tell("planter", "go").await.unwrap();
    assert!(lines(&planted).contains("planted"), "{planted}");
    let fresh = h
        .call(
            "send_message",
            json!({"toTeam": "repo", "message": "again", "sessionId": "6f1c3e52-9d1a-4c3b-8e2f-0a1b2c3d4e5f", "timeout": 0}),
        )
        .await
        .unwrap();
    assert!(lines(&fresh).contains("committed"), "{fresh}");
    assert!(
        !l.work.path().join("PLANTED-FILTER-RAN").exists(),
        "a planted filter ran"
    );
    let probed = h.tell("probe", "go").await.unwrap();
    assert_eq!(probed["status"], "completed", "{probed}");
    let text = lines(&probed);
    assert!(text.contains("done"), "{text}");
    for denied in [
        "credentials",
        "database",
        "config",
        "home-listing",
        "other-team",
        "worktree",
        "write-outside",
        "write-tmp",
        "signal-iris",
        "iris-environ",
    ] {
        assert!(
            text.contains(&format!("denied: {denied}")),
            "{denied}:\n{text}"
        );
    }
    for allowed in ["write-own", "own-tmp", "own-home", "system"] {
        assert!(
            text.contains(&format!("ALLOWED: {allowed}")),
            "{allowed}:\n{text}"
        );
    }
    assert!(l.work.path().join("probe/mine.txt").exists());
    assert!(!l.work.path().join("escaped.txt").exists());
    // Its home and temporary folder are its own, under Iris's home.
    let own = h.home.path().join("agents/probe");
    assert!(own.join("home/.h").exists() && own.join("tmp/t").exists());
    // Iris is unharmed: the other teams answer.
    assert_eq!(
        lines(&h.tell("other", "still here").await.unwrap()),
        "still here"
    );
    let health = h.iris.pool().sandbox().status();
    assert_eq!(health["confining"], true, "{health}");
    assert!(health["abi"].as_i64().unwrap_or(0) >= 1, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_off_for_a_team_lets_it_read_everything() {
    let home = tempfile::tempdir().unwrap();
    let l = layout(home.path(), "");
    let yaml = l.yaml.replace(
        "    args: [probe.sh]\n",
        "    args: [probe.sh]\n    sandbox:\n      enabled: false\n",
    );
    let h = start_at(home, &yaml).await;
    let text = lines(&h.tell("probe", "go").await.unwrap());
    // (On Postgres there is no database file to read.)
    let sqlite = iris_storage::testing::postgres_server().is_none();
    let database = if sqlite { "database" } else { "credentials" };
    for allowed in ["credentials", database, "other-team", "write-outside"] {
        assert!(
            text.contains(&format!("ALLOWED: {allowed}")),
            "{allowed}:\n{text}"
        );
    }
    let health = h.iris.pool().sandbox().status();
    assert_eq!(health["unconfinedTeams"], json!(["probe"]), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_paths_and_tcp_ports_widen_and_narrow_it() {
    let home = tempfile::tempdir().unwrap();
    let l = layout(home.path(), "");
    let other = l.work.path().join("other");
    // The other team's folder, granted to the probe by name; TCP to one
    // port only (a listener on another is refused).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let yaml = l.yaml.replace(
        "    args: [probe.sh]\n",
        &format!(
            "    args: [probe.sh]\n    sandbox:\n      allowRead: [{}]\n      tcpPorts: [{open_port}]\n",
            other.display()
        ),
    );
    std::fs::write(
        l.work.path().join("probe/probe.sh"),
        format!(
            "{PROBE}\ntry tcp bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'\n\
             try tcp-listed bash -c 'exec 3<>/dev/tcp/127.0.0.1/{open_port}'\n"
        ),
    )
    .unwrap();
    let h = start_at(home, &yaml).await;
    let text = lines(&h.tell("probe", "go").await.unwrap());
    assert!(text.contains("ALLOWED: other-team"), "{text}");
    assert!(text.contains("denied: credentials"), "{text}");
    assert!(text.contains("denied: tcp\n"), "{text}");
    assert!(text.contains("ALLOWED: tcp-listed"), "{text}");
    drop((listener, open));
}

/// Where the kernel cannot confine (forced here), Iris starts and says so;
/// with `sandbox.required` no agent starts.
#[test]
fn without_landlock_iris_says_so_and_required_refuses_agents() {
    for required in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "api:\n  port: 0\n  requireAuth: false\nsandbox:\n  required: {required}\nteams:\n  demo:\n    path: .\n    agent: echo\n"
        );
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let mut cmd = iris(dir.path());
        cmd.arg("serve")
            .env(iris_agent::sandbox::FORCE_OFF_VAR, "1");
        let (_server, url) = spawn_serve(dir.path(), cmd);
        let get = |path: &str| {
            let out = Command::new("curl")
                .args(["-sS", &format!("{url}{path}")])
                .output()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let health = get("/health/detailed");
        assert_eq!(health["sandbox"]["supported"], false, "{health}");
        assert_eq!(health["sandbox"]["confining"], false, "{health}");
        assert!(
            health["sandbox"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("IRIS_SANDBOX_UNSUPPORTED"),
            "{health}"
        );
        let out = Command::new("curl")
            .args([
                "-sS",
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"toTeam":"demo","message":"hi","timeout":0}"#,
                &format!("{url}/api/v1/teams/tell"),
            ])
            .output()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let log = std::fs::read_to_string(dir.path().join("serve.err")).unwrap();
        if required {
            assert_eq!(answer["code"], "PROCESS_ERROR", "{answer}");
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("sandbox.required"),
                "{answer}"
            );
            assert!(log.contains("no agent will start"), "{log}");
        } else {
            assert_eq!(answer["response"], "hi", "{answer}");
            assert!(log.contains("they run unconfined"), "{log}");
        }
    }
}

/// The real Claude Code CLI, confined with the defaults (its own home
/// under Iris's, no HOME given): a Bash tool use the model asks for
/// cannot read Iris's credentials but writes in the team's folder; the
/// conversation goes on, and resumes after its process is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_claude_cli_works_confined() {
    let stub = anthropic_stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("credentials"),
        "IRIS_API_KEY=iris_sk_live_secret\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let yaml = format!(
        "settings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\n  shutdownGrace: 2000\nteams:\n  cc:\n    path: {work}\n    agent: claude\n    claudePath: {bin}\n    grantPermission: 'yes'\n    env:\n      ANTHROPIC_BASE_URL: {stub}\n      ANTHROPIC_API_KEY: sk-ant-test-not-a-real-key\n      DISABLE_AUTOUPDATER: '1'\n      DISABLE_TELEMETRY: '1'\n      DISABLE_ERROR_REPORTING: '1'\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1'\n",
        work = work.path().display(),
        bin = claude_bin().display(),
        stub = stub.url,
    );
    let creds = home.path().join("credentials");
    let h = start_at(home, &yaml).await;
    let command = format!(
        "cat {} || echo could-not-read; echo mine > mine.txt && echo wrote-own",
        creds.display()
    );
    let ask = format!(
        "MSG<tool Bash {}>",
        // The stub's marker ends at `>`: inside it, written as \u003e.
        json!({"command": command, "description": "probe"})
            .to_string()
            .replace('>', "\\u003e")
    );
    let one = h.tell("cc", &ask).await.unwrap();
    let said = one["response"].as_str().unwrap_or_default();
    assert!(said.contains("tool said:"), "{one}");
    assert!(
        said.contains("could-not-read") && said.contains("wrote-own"),
        "{one}"
    );
    assert!(!said.contains("iris_sk_live_secret"), "{one}");
    assert!(work.path().join("mine.txt").exists());
    // It reached the model API on loopback (TCP is open by default).
    assert!(
        stub.requests.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "the tool use and its result"
    );
    // Its session files are in its own home, under Iris's.
    let projects = h.home.path().join("agents/cc/home/.claude/projects");
    assert!(
        projects.is_dir(),
        "Claude Code kept its conversation in its home"
    );
    // Killed, it is resumed with the conversation.
    kill_first_process(&h, "cc").await;
    let two = h.tell("cc", "MSG<after the kill>").await.unwrap();
    assert_eq!(two["sessionId"], one["sessionId"]);
    let text = two["response"].as_str().unwrap_or_default();
    // The stub counts the prompts of the whole conversation it is sent:
    // the earlier one is in it only if the conversation was resumed.
    assert_eq!(
        text, "reply 2: after the kill",
        "resumed with its context: {two}"
    );
    h.stop().await;
}
