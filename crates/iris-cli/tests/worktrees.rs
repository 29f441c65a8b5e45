//! A git worktree per conversation: two conversations of a team with
//! `isolation: worktree` edit the same file, each in its own worktree on
//! its own branch, without seeing each other's change and without touching
//! the main checkout; the report names the worktree; deleting a clean
//! conversation removes its worktree, a dirty one is kept and reported; a
//! team whose folder is no git repository refuses the option, per team and
//! per call, leaving nothing behind.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with one commit of `notes.txt`.
fn repository(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["config", "user.email", "test@example.com"]);
    git(dir, &["config", "user.name", "Test"]);
    std::fs::write(dir.join("notes.txt"), "original\n").unwrap();
    git(dir, &["add", "notes.txt"]);
    git(dir, &["commit", "-q", "-m", "start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_conversation_edits_its_own_worktree() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: nextest runs this test alone in its process, and nothing
    // reads the environment concurrently here; Iris puts worktrees under
    // $IRIS_HOME, which must be this temporary folder, not ~/.iris.
    unsafe { std::env::set_var("IRIS_HOME", home.path()) };
    let repo = home.path().join("repo");
    repository(&repo);
    // A hook an agent could have planted: git as Iris runs it runs none.
    let hook = repo.join(".git/hooks/post-checkout");
    let marker = home.path().join("hook-ran");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Outside $IRIS_HOME: no team may work in Iris's own folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let plain = elsewhere.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    // A command agent that writes its prompt to notes.txt where it runs,
    // and answers with that folder.
    let yaml = format!(
        "teamRoots: [{}]\nteams:\n  editor:\n    path: {}\n    agent: command\n    command: sh\n    args: ['-c', 'printf \"%s\\n\" \"$0\" > notes.txt; pwd']\n    isolation: worktree\n  shared:\n    path: {}\n    agent: echo\n  plain:\n    path: {}\n    agent: echo\n",
        elsewhere.path().display(),
        repo.display(),
        repo.display(),
        plain.display()
    );
    let h = start_in(home, &yaml).await;
    let (a, b) = (uuid(), uuid());
    let tell = |session: &str, text: &str| {
        h.call(
            "send_message",
            json!({"toTeam": "editor", "message": text, "sessionId": session, "timeout": 0}),
        )
    };
    let wa = tell(&a, "from A").await.unwrap()["response"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    let wb = tell(&b, "from B").await.unwrap()["response"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(wa, wb);
    assert!(!marker.exists(), "the repository's post-checkout hook ran");
    let worktrees = h.home.path().join("worktrees").join("editor");
    assert!(
        Path::new(&wa).starts_with(std::fs::canonicalize(&worktrees).unwrap()),
        "{wa}"
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&wa).join("notes.txt")).unwrap(),
        "from A\n"
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&wb).join("notes.txt")).unwrap(),
        "from B\n"
    );
    // The main checkout is untouched; each conversation has its branch.
    assert_eq!(
        std::fs::read_to_string(repo.join("notes.txt")).unwrap(),
        "original\n"
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]), "main");
    let branches = git(&repo, &["branch", "--list", "iris/*"]);
    assert!(
        branches.contains(&format!("iris/{a}")) && branches.contains(&format!("iris/{b}")),
        "{branches}"
    );
    assert_eq!(
        git(Path::new(&wa), &["rev-parse", "--abbrev-ref", "HEAD"]),
        format!("iris/{a}")
    );
    // A second message of A works in the same worktree.
    assert_eq!(
        tell(&a, "again A").await.unwrap()["response"]
            .as_str()
            .unwrap()
            .trim(),
        wa
    );

    let report = h
        .call(
            "session_report",
            json!({"toTeam": "editor", "sessionId": a}),
        )
        .await
        .unwrap();
    assert_eq!(report["worktree"]["branch"], format!("iris/{a}"));
    assert_eq!(
        std::fs::canonicalize(report["worktree"]["path"].as_str().unwrap()).unwrap(),
        Path::new(&wa)
    );

    // A commits its change (clean); B leaves its edit uncommitted (dirty).
    git(Path::new(&wa), &["commit", "-q", "-am", "A's notes"]);
    let gone = h
        .call(
            "session_delete",
            json!({"toTeam": "editor", "sessionId": a}),
        )
        .await
        .unwrap();
    assert_eq!(gone["worktree"]["removed"], true, "{gone}");
    assert!(!Path::new(&wa).exists(), "a clean worktree is removed");
    assert!(
        git(&repo, &["branch", "--list", &format!("iris/{a}")]).contains(&a),
        "its branch (and commit) stay"
    );
    // The id used again: its branch (with A's commit) is checked out again.
    let again = tell(&a, "A once more").await.unwrap()["response"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(again, wa);
    assert_eq!(
        git(Path::new(&wa), &["log", "-1", "--format=%s"]),
        "A's notes"
    );
    let kept = h
        .call(
            "session_delete",
            json!({"toTeam": "editor", "sessionId": b}),
        )
        .await
        .unwrap();
    assert_eq!(kept["worktree"]["removed"], false, "{kept}");
    assert!(
        kept["worktree"]["keptBecause"]
            .as_str()
            .unwrap()
            .contains("uncommitted")
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&wb).join("notes.txt")).unwrap(),
        "from B\n",
        "never forced"
    );

    // A conversation that started in the team's folder stays there.
    h.tell("shared", "started here").await.unwrap();
    let e = h
        .call(
            "send_message",
            json!({"toTeam": "shared", "message": "x", "isolation": "worktree", "timeout": 0}),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("already started"), "{}", e.message);

    // No repository: refused, per call and per team, nothing left behind.
    let e = h
        .call(
            "send_message",
            json!({"toTeam": "plain", "message": "x", "isolation": "worktree", "timeout": 0}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind.code(), "VALIDATION_ERROR", "{}", e.message);
    assert!(e.message.contains("git repository"), "{}", e.message);
    assert!(!h.home.path().join("worktrees").join("plain").exists());
    let e = h
        .call("team_create", json!({"name": "nogit", "path": plain.display().to_string(), "profile": "echo", "isolation": "worktree"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind.code(), "VALIDATION_ERROR");
    assert!(
        format!("{:?} {}", e.details, e.message).contains("isolation"),
        "{e:?}"
    );
    // Without isolation the plain team works as before.
    assert_eq!(h.tell("plain", "hello").await.unwrap()["response"], "hello");
    h.stop().await;
}

/// A fresh session id (a UUID v4 from the kernel's generator).
fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_owned()
}
