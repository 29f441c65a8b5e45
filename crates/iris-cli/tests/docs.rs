//! Every shell block of the README, CONTRIBUTING.md and docs/ runs as
//! written, or says in the line before it why the suite does not run it
//! (`<!-- not run by the suite: … -->`).
//!
//! Each file's blocks run in order in one bash, as a reader pastes them
//! into one terminal: on a fresh `HOME` (so `~/.iris` is new), with the
//! `iris` built here and the pinned Claude Code CLI on the `PATH`, in a
//! network namespace of its own (`unshare -rn`, loopback only) so the
//! documented ports (1615, 3100) are free whatever else runs. The README
//! starts its own server; for the other files one runs as the README's
//! "Try it" leaves it (`iris serve` on the embedded defaults).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A fenced shell block of a Markdown file.
#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    code: String,
    /// Why the suite does not run it, when it says so.
    not_run: Option<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The documents a user reads, README first.
fn documents() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            name.ends_with(".md").then(|| format!("docs/{name}"))
        })
        .collect();
    docs.sort();
    let mut all = vec!["README.md".to_owned(), "CONTRIBUTING.md".to_owned()];
    all.extend(docs);
    all
}

fn blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        let lang = fence.strip_prefix("```").map(str::trim);
        let Some(lang) = lang.filter(|l| !l.is_empty()) else {
            // A block without a language, or a closing fence: skip it whole.
            if fence.starts_with("```") {
                i += 1;
                while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                    i += 1;
                }
            }
            i += 1;
            continue;
        };
        let start = i;
        i += 1;
        let mut code = String::new();
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            code.push_str(lines[i]);
            code.push('\n');
            i += 1;
        }
        i += 1;
        if !matches!(lang, "sh" | "bash" | "shell" | "console") {
            continue;
        }
        let before = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .copied()
            .unwrap_or_default();
        let not_run = before
            .trim()
            .strip_prefix("<!-- not run by the suite:")
            .and_then(|r| r.strip_suffix("-->"))
            .map(|r| r.trim().to_owned());
        out.push(Block {
            file: file.to_owned(),
            line: start + 1,
            code,
            not_run,
        });
    }
    out
}

#[test]
fn every_shell_block_runs_or_says_why_not() {
    let all: Vec<Block> = documents().iter().flat_map(|f| blocks(f)).collect();
    assert!(all.len() > 20, "the blocks were found: {}", all.len());
    for b in &all {
        if let Some(why) = &b.not_run {
            assert!(
                why.len() >= 20,
                "{}:{}: say why the suite does not run it",
                b.file,
                b.line
            );
        }
    }
    let bin = tempfile::tempdir().unwrap();
    for (name, target) in [("iris", iris_bin()), ("claude", claude_bin())] {
        std::os::unix::fs::symlink(target, bin.path().join(name)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for file in documents() {
        let runnable: Vec<&Block> = all
            .iter()
            .filter(|b| b.file == file && b.not_run.is_none())
            .collect();
        if runnable.is_empty() {
            continue;
        }
        ran += runnable.len();
        let out = run_file(&file, &runnable, &path);
        check(&file, &out);
    }
    assert!(ran >= 8, "{ran} blocks ran");
}

/// What a file's blocks printed.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run_file(file: &str, blocks: &[&Block], path: &str) -> Ran {
    let home = tempfile::tempdir().unwrap();
    let mut script = String::from("set -e -o pipefail\nip link set lo up\n");
    if file != "README.md" {
        // Iris as the README's "Try it" leaves it.
        script.push_str(
            "iris serve >\"$HOME/serve.log\" 2>&1 &\n\
             until curl -sf localhost:1615/ready >/dev/null; do sleep 0.2; done\n",
        );
    }
    for b in blocks {
        script.push_str(&format!("echo '### {}:{}' >&2\n{}", b.file, b.line, b.code));
    }
    // The servers a file started stop with it.
    script.push_str("echo '### done' >&2\nkill $(jobs -p) 2>/dev/null || true\nwait\n");
    let script_file = home.path().join("blocks.sh");
    std::fs::write(&script_file, &script).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-rn", "bash"])
        .arg(&script_file)
        .current_dir(root())
        .env("HOME", home.path())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "IRIS_HOME",
        "IRIS_CONFIG_PATH",
        "IRIS_DATABASE_URL",
        "IRIS_REDIS_URL",
        "IRIS_NODE_ID",
        "IRIS_API_KEY",
        "IRIS_URL",
    ] {
        cmd.env_remove(var);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().expect("unshare (util-linux) runs");
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(180);
    let waited = std::thread::spawn(move || child.wait_with_output());
    while !waited.is_finished() {
        if Instant::now() > deadline {
            // SAFETY: the process group this test started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = waited.join().unwrap().unwrap();
    // Whatever a block left running goes with its group.
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Each file ran to its end, no answer was an error body, and what a
/// reader is told to expect is there.
fn check(file: &str, out: &Ran) {
    let both = format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr);
    assert!(out.ok, "{file} stopped at the block named last:\n{both}");
    assert!(out.stderr.contains("### done"), "{file}:\n{both}");
    let compact: String = out.stdout.split_whitespace().collect();
    for code in ["\"statusCode\":4", "\"statusCode\":5"] {
        assert!(!compact.contains(code), "{file}: an error answer:\n{both}");
    }
    let expected: &[&str] = match file {
        "README.md" => &[
            "\"response\":\"hello\"",
            "event: complete",
            "\"response\": \"hi\"",
            "created; it is shown once",
            "audit_list",
            "hello",
            ": ok (1 team)",
        ],
        "docs/api.md" => &["all examples passed"],
        "docs/mcp.md" => &["iris-local", "iris-relay"],
        "docs/scale-out.md" => &["1 member, 1 up", "cluster.redisUrl is not set", " UTC"],
        "docs/security.md" => &["audit trail intact"],
        _ => &[],
    };
    for e in expected {
        assert!(both.contains(e), "{file}: `{e}` not in:\n{both}");
    }
    if file == "docs/mcp.md" {
        let connected = out.stdout.matches("Connected").count();
        assert_eq!(connected, 3, "claude mcp list reached all three:\n{both}");
    }
}
