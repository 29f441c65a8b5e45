//! A git worktree per conversation: two conversations of a team with
//! `isolation: worktree` edit the same file, each in its own worktree on
//! its own branch, without seeing each other's change and without touching
//! the main checkout; the report names the worktree; deleting a clean
//! conversation removes its worktree, a dirty one is kept and reported; a
//! team whose folder is no git repository refuses the option, per team and
//! per call, leaving nothing behind.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

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

/// Wait until job `id` has ended; its record.
async fn job_end(h: &Harness, id: &str) -> serde_json::Value {
    for _ in 0..400 {
        let j = h.call("job_get", json!({"jobId": id})).await.unwrap();
        if !matches!(j["status"].as_str(), Some("queued" | "running")) {
            return j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("job {id} did not end");
}

/// Isolation holds whatever starts a conversation (a job too, and the
/// conversation's later messages); a branch named `iris` in the
/// repository does not stop worktrees, and a branch git refuses is a
/// clear error; initialized submodules are filled from the main checkout,
/// without network; one UUID in any spelling is one conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_odd_branches_submodules_and_id_spellings() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: as above: this test runs alone in its process.
    unsafe { std::env::set_var("IRIS_HOME", home.path()) };
    let lib = home.path().join("lib");
    repository(&lib);
    let repo = home.path().join("repo");
    repository(&repo);
    git(&repo, &["branch", "iris"]);
    git(
        &repo,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &lib.display().to_string(),
            "lib",
        ],
    );
    git(&repo, &["commit", "-q", "-m", "a submodule"]);
    let yaml = format!(
        "teams:\n  editor:\n    path: {}\n    agent: command\n    command: sh\n    args: ['-c', 'printf \"%s\\n\" \"$0\" > notes.txt; pwd; cat lib/notes.txt']\n    isolation: worktree\n",
        repo.display()
    );
    let h = start_in(home, &yaml).await;
    let worktrees = h.home.path().join("worktrees").join("editor");

    // A job starts the conversation: in its own worktree, submodule filled.
    let a = uuid();
    let job = h
        .call(
            "job_execute",
            json!({"team": "editor", "task": "from a job", "sessionId": a}),
        )
        .await
        .unwrap();
    let done = job_end(&h, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let out = done["result"].as_str().unwrap().to_owned();
    let wa = out.lines().next().unwrap().trim().to_owned();
    assert!(
        Path::new(&wa).starts_with(std::fs::canonicalize(&worktrees).unwrap()),
        "the job ran in {wa}"
    );
    assert!(out.contains("original"), "the submodule is filled: {out}");
    // Its later messages stay there.
    let next = h
        .call(
            "send_message",
            json!({"toTeam": "editor", "message": "then", "sessionId": a, "timeout": 0}),
        )
        .await
        .unwrap();
    assert_eq!(
        next["response"].as_str().unwrap().lines().next(),
        Some(wa.as_str())
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("notes.txt")).unwrap(),
        "original\n",
        "the main checkout is untouched"
    );
    // The branch: `iris-<id>`, as `iris` is taken; `iris` untouched.
    let report = h
        .call("session_report", json!({"sessionId": a}))
        .await
        .unwrap();
    assert_eq!(
        report["worktree"]["branch"],
        format!("iris-{a}"),
        "{report}"
    );
    assert_eq!(
        git(&repo, &["rev-parse", "iris"]),
        git(&repo, &["rev-parse", "main~1"])
    );

    // One UUID in five spellings is one conversation, answered canonically.
    let b = uuid();
    let plain = b.replace('-', "");
    let spellings = [
        b.to_uppercase(),
        format!("{{{b}}}"),
        plain.clone(),
        format!("urn:uuid:{b}"),
        b.clone(),
    ];
    let mut dirs = std::collections::BTreeSet::new();
    for s in &spellings {
        let r = h
            .call(
                "send_message",
                json!({"toTeam": "editor", "message": "x", "sessionId": s, "timeout": 0}),
            )
            .await
            .unwrap_or_else(|e| panic!("{s}: {e:?}"));
        assert_eq!(r["sessionId"], b, "{s}");
        dirs.insert(
            r["response"]
                .as_str()
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let report = h
        .call("session_report", json!({"sessionId": b.to_uppercase()}))
        .await
        .unwrap();
    assert_eq!(report["messageCount"], 5, "{report}");
    let made: Vec<_> = std::fs::read_dir(&worktrees).unwrap().collect();
    assert_eq!(made.len(), 2, "one worktree per conversation");
    let e = h
        .call(
            "send_message",
            json!({"toTeam": "editor", "message": "x", "sessionId": "not-a-uuid"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind.code(), "VALIDATION_ERROR");

    // A branch git refuses: a clear CONFLICT, not a 500, nothing left.
    let c = uuid();
    git(&repo, &["branch", &format!("iris-{c}/x")]);
    let e = h
        .call(
            "send_message",
            json!({"toTeam": "editor", "message": "x", "sessionId": c, "timeout": 0}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind.code(), "CONFLICT", "{}", e.message);
    assert!(e.message.contains(&format!("iris-{c}")), "{}", e.message);
    assert!(
        !e.message.contains(&repo.display().to_string()),
        "no server paths: {}",
        e.message
    );
    h.stop().await;
}

/// `session_diff`: what a worktree conversation's agent changed —
/// committed, uncommitted and untracked — against the commit its branch
/// started from (not the repository's `HEAD`, which moved on), within a
/// size cap of whole files, through the registry and REST; a conversation
/// without a worktree has nothing to compare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worktree_conversations_changes_against_where_it_started() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: as in the first test of this file.
    unsafe { std::env::set_var("IRIS_HOME", home.path()) };
    let repo = home.path().join("repo");
    repository(&repo);
    let started = git(&repo, &["rev-parse", "HEAD"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let plain = elsewhere.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    // Writes its prompt to notes.txt, a new file, and a large one.
    let yaml = format!(
        "teamRoots: [{}]\nteams:\n  editor:\n    path: {}\n    agent: command\n    command: sh\n    args: ['-c', 'printf \"%s\\n\" \"$0\" > notes.txt; printf \"new\\n\" > added.txt; head -c 3000 /dev/zero | tr \"\\0\" x > large.txt; pwd']\n    isolation: worktree\n  plain:\n    path: {}\n    agent: echo\n",
        elsewhere.path().display(),
        repo.display(),
        plain.display()
    );
    let h = start_in(home, &yaml).await;
    let a = uuid();
    let done = h
        .call(
            "send_message",
            json!({"toTeam": "editor", "message": "from A", "sessionId": a, "timeout": 0}),
        )
        .await
        .unwrap();
    let wa = done["response"].as_str().unwrap().trim().to_owned();
    // The agent commits its notes; the repository's main branch moves on.
    git(Path::new(&wa), &["commit", "-q", "-am", "A's notes"]);
    std::fs::write(repo.join("other.txt"), "on main\n").unwrap();
    git(&repo, &["add", "other.txt"]);
    git(&repo, &["commit", "-q", "-m", "main moves on"]);

    let d = h
        .call("session_diff", json!({"sessionId": a}))
        .await
        .unwrap();
    assert_eq!(d["base"], started.as_str(), "{d}");
    assert_eq!(
        d["head"],
        git(Path::new(&wa), &["rev-parse", "HEAD"]).as_str()
    );
    assert_eq!(d["branch"], format!("iris/{a}"));
    let files: Vec<(String, String, Option<u64>)> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
                f["additions"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("notes.txt".into(), "modified".into(), Some(1)),
            ("added.txt".into(), "untracked".into(), Some(1)),
            ("large.txt".into(), "untracked".into(), Some(1)),
        ],
        "{d}"
    );
    let diff = d["diff"].as_str().unwrap();
    assert!(diff.contains("-original\n+from A\n"), "{diff}");
    assert!(
        diff.contains("+new\n") && diff.contains("xxxxxxxx"),
        "{diff}"
    );
    assert!(
        !diff.contains("on main"),
        "main's own commit is not the agent's"
    );
    assert_eq!(d["omitted"], json!([]));

    // A cap: whole files that fit, the others listed.
    let small = h
        .call("session_diff", json!({"sessionId": a, "maxBytes": 400}))
        .await
        .unwrap();
    let diff = small["diff"].as_str().unwrap();
    assert!(diff.len() <= 400, "{}", diff.len());
    assert!(
        diff.contains("+from A") && !diff.contains("xxxxxxxx"),
        "{diff}"
    );
    assert!(
        small["omitted"]
            .as_array()
            .unwrap()
            .contains(&json!("large.txt")),
        "{small}"
    );

    // Over REST, by the conversation's id.
    let (server, key) = h.serve_with_key("admin").await;
    let (status, v) = http(
        &reqwest::Client::new(),
        reqwest::Method::GET,
        format!(
            "http://{}/api/v1/cache/{a}/diff?maxBytes=100000",
            server.addr
        ),
        Some(&key),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["files"], d["files"]);
    // A key limited to another team: as if it did not exist; a viewer
    // reads it, as it reads the conversation's report.
    let (other, _) = h.key("operator", Some(&["plain"]), None).await;
    let (viewer, _) = h.key("viewer", None, None).await;
    for (k, expected) in [(&other, 404), (&viewer, 200)] {
        let (status, v) = http(
            &reqwest::Client::new(),
            reqwest::Method::GET,
            format!("http://{}/api/v1/cache/{a}/diff", server.addr),
            Some(k),
            serde_json::Value::Null,
        )
        .await;
        assert_eq!(status, expected, "{v}");
        assert_eq!(v.get("files").is_some(), expected == 200, "{v}");
    }

    // What an agent could plant to make Iris's git run a program: a
    // filter whose name holds `=` (named by the worktree's attributes), and
    // its worktree's `.git` pointed at a repository of its own making with
    // a filter, a monitor and a lazy-fetch remote that run a program.
    // Iris reads the worktree through the repository's own folders: none
    // runs, and the diff is the real one.
    let ran = elsewhere.path().join("ran");
    let run = format!("touch {}", ran.display());
    git(&repo, &["config", "filter.x=y.clean", &run]);
    std::fs::write(Path::new(&wa).join(".gitattributes"), "* filter=x=y\n").unwrap();
    let evil = elsewhere.path().join("evil");
    git(elsewhere.path(), &["init", "-q", "evil"]);
    for (k, v) in [
        ("filter.z.clean", run.as_str()),
        ("core.fsmonitor", run.as_str()),
        ("remote.r.url", "file:///nowhere"),
        ("remote.r.promisor", "true"),
        ("remote.r.uploadpack", run.as_str()),
        ("extensions.partialClone", "r"),
    ] {
        git(&evil, &["config", k, v]);
    }
    std::fs::write(
        Path::new(&wa).join(".git"),
        format!("gitdir: {}\n", evil.join(".git").display()),
    )
    .unwrap();
    let after = h
        .call("session_diff", json!({"sessionId": a}))
        .await
        .unwrap();
    assert!(!ran.exists(), "a program named by the repository ran");
    assert!(
        after["diff"].as_str().unwrap().contains("+from A"),
        "the real worktree was read: {after}"
    );
    assert_eq!(after["branch"], format!("iris/{a}"), "{after}");

    // A conversation in its team's folder: nothing to compare.
    h.tell("plain", "hi").await.unwrap();
    let e = h
        .call("session_diff", json!({"toTeam": "plain"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, iris_core::ErrorKind::Conflict, "{e:?}");
    assert!(e.message.contains("not in a worktree"), "{}", e.message);
}
