//! A git worktree per conversation: with `isolation: worktree` (a team's
//! option, or a send's parameter) a conversation's agent works in its own
//! checkout of the team's repository, on its own branch `iris/<session
//! id>`, under `$IRIS_HOME/worktrees/<team>/<session id>`, so several
//! conversations on one repository never see each other's edits.
//!
//! Iris touches the repository only through `git worktree add` (which
//! creates the branch) and `git worktree remove` (never `--force`): a
//! worktree with uncommitted, untracked or ignored files is kept when its
//! conversation is deleted, and so is the branch (the agent's commits
//! stay reachable).

mod changes;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IrisError, Result};

pub use changes::{ChangedFile, Changes, changes};

/// How a conversation's agent shares the team's folder.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// In the team's folder, as every other conversation.
    #[default]
    None,
    /// In its own git worktree and branch.
    Worktree,
}

/// The branch of a conversation's worktree: `iris/<session id>`, or
/// `iris-<session id>` in a repository where a branch named `iris` takes
/// the `iris/` name space (git cannot have both `iris` and `iris/…`).
pub fn branch(session_id: &str) -> String {
    format!("iris/{session_id}")
}

fn flat_branch(session_id: &str) -> String {
    format!("iris-{session_id}")
}

/// The branch a worktree has checked out, if it can be read.
pub fn branch_of(dir: &Path) -> Option<String> {
    let out = git_command(dir)
        .args(["symbolic-ref", "--quiet", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What git said, without the server's folders in it.
fn without_paths(text: &str, paths: &[(&Path, &str)]) -> String {
    let mut out = text.to_owned();
    for (p, name) in paths {
        out = out.replace(&p.display().to_string(), name);
    }
    out
}

/// `git -C dir` as Iris runs it on a team's repository, which an agent
/// may have written to: the environment of an agent (the allowlist, not
/// Iris's own), no system or global configuration, no hooks, no
/// filesystem monitor — nothing of the repository's choosing runs as Iris.
pub(crate) fn git_command(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new("git");
    c.env_clear()
        .envs(iris_agent::inherited_env())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        // A repository may name a promisor remote whose upload-pack is a
        // program of its choosing, run when an object is missing.
        .env("GIT_NO_LAZY_FETCH", "1")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            // Nor does a checkout go on into submodules (whose URLs the
            // repository names).
            "-c",
            "submodule.recurse=false",
        ])
        .arg("-C")
        .arg(dir)
        .stdin(std::process::Stdio::null());
    c
}

/// Longest one git command Iris runs on a team's repository may take.
pub(crate) const GIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Settings that make every filter driver the repository names
/// (`filter.<name>.*` in its config, which an agent may have written) a
/// no-op: git as Iris runs it never starts one (a smudge filter runs on
/// checkout, a clean filter on status). Given through the environment
/// ([`neutral`]), not `-c`, which cuts a name with `=` in it short.
pub(crate) async fn neutral_filters(dir: &Path) -> Vec<(String, String)> {
    let Ok(out) = tokio::process::Command::from(git_command(dir))
        .args([
            "config",
            "--null",
            "--name-only",
            "--get-regexp",
            r"^filter\.",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .await
    else {
        return Vec::new();
    };
    let names: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter_map(|l| {
            let rest = l.trim_end_matches('\n').strip_prefix("filter.")?;
            rest.rsplit_once('.').map(|(name, _)| name.to_owned())
        })
        .collect();
    names
        .iter()
        .flat_map(|n| {
            [
                (format!("filter.{n}.smudge"), "cat"),
                (format!("filter.{n}.clean"), "cat"),
                (format!("filter.{n}.process"), ""),
                (format!("filter.{n}.required"), "false"),
            ]
        })
        .map(|(k, v)| (k, v.to_owned()))
        .collect()
}

/// `settings` as git reads configuration from its environment
/// (`GIT_CONFIG_COUNT`, `GIT_CONFIG_KEY_<n>`, `GIT_CONFIG_VALUE_<n>`):
/// over the repository's own, whatever the names hold.
pub(crate) fn neutral(cmd: &mut tokio::process::Command, settings: &[(String, String)]) {
    cmd.env("GIT_CONFIG_COUNT", settings.len().to_string());
    for (i, (k, v)) in settings.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
            .env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
}

pub(crate) async fn git(dir: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let mut c = tokio::process::Command::from(git_command(dir));
    neutral(&mut c, &neutral_filters(dir).await);
    c.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Dropped (and killed) past the limit: a repository never holds Iris.
    let out = tokio::time::timeout(GIT_LIMIT, c.output())
        .await
        .map_err(|_| {
            format!(
                "git {} took longer than {} s",
                args.first().copied().unwrap_or_default(),
                GIT_LIMIT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The root of the git repository `path` is in, and `path` relative to it.
async fn repository(team: &str, path: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = git(path, &["rev-parse", "--show-toplevel"])
        .await
        .map(PathBuf::from)
        .map_err(|_| {
            IrisError::validation(
                "isolation",
                format!(
                    "team `{team}`: `isolation: worktree` needs a git repository, and {} is not in one",
                    path.display()
                ),
            )
        })?;
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let rel = canonical
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok((root, rel))
}

/// Create the worktree of conversation `session_id` of `team` (whose folder
/// is `path`), on a new branch from the repository's `HEAD`; returns the
/// folder the agent works in (the team's folder's place inside it) and the
/// commit it starts from (what its changes are shown against). A failure
/// leaves nothing behind.
pub async fn create(
    home: &Path,
    team: &str,
    path: &Path,
    session_id: &str,
) -> Result<(PathBuf, Option<String>)> {
    let (root, rel) = repository(team, path).await?;
    let dir = home.join("worktrees").join(team).join(session_id);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| IrisError::internal("creating the worktrees folder", e))?;
    }
    let dir_text = dir.display().to_string();
    if dir.join(".git").exists() {
        // Made before (its record was not written): taken as it is.
        return Ok((dir.join(rel), None));
    }
    let exists = async |name: &str| {
        git(
            &root,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{name}"),
            ],
        )
        .await
        .is_ok()
    };
    // `iris/<id>`, unless a branch `iris` is in the way (then a flat name).
    let name = if exists("iris").await {
        flat_branch(session_id)
    } else {
        branch(session_id)
    };
    // The branch outlives its worktree (a conversation deleted, then its
    // id used again): check it out again rather than fail on `-b`.
    let args: Vec<&str> = if exists(&name).await {
        vec!["worktree", "add", "--", &dir_text, &name]
    } else {
        vec!["worktree", "add", "-b", &name, "--", &dir_text, "HEAD"]
    };
    git(&root, &args).await.map_err(|e| {
        let said = without_paths(&e, &[(&dir, "<worktree>"), (&root, "<repository>")]);
        tracing::warn!(team, session = session_id, error = %e, "git worktree add failed");
        IrisError::conflict(format!(
            "team `{team}`: could not create the conversation's worktree on branch `{name}`: {said}"
        ))
        .with_details(serde_json::json!({"team": team, "sessionId": session_id, "branch": name}))
    })?;
    fill_submodules(&root, &dir).await;
    let base = git(&dir, &["rev-parse", "HEAD"]).await.ok();
    Ok((dir.join(rel), base))
}

/// Check out in worktree `dir` the submodules the main checkout `root`
/// has initialized, at the commits the superproject records, cloned from
/// the main checkout's own submodule repositories (no network). One that
/// cannot be filled is logged and left empty, as git would leave it.
async fn fill_submodules(root: &Path, dir: &Path) {
    let Ok(listed) = git(
        root,
        &[
            "config",
            "--file",
            ".gitmodules",
            "--get-regexp",
            r"^submodule\..*\.path$",
        ],
    )
    .await
    else {
        return; // none
    };
    for line in listed.lines() {
        let Some((key, path)) = line.split_once(' ') else {
            continue;
        };
        let Some(name) = key
            .strip_prefix("submodule.")
            .and_then(|k| k.strip_suffix(".path"))
        else {
            continue;
        };
        let source = root.join(path);
        if !source.join(".git").exists() {
            continue; // not initialized in the main checkout
        }
        let url = format!("submodule.{name}.url={}", source.display());
        let filled = git(
            dir,
            &[
                "-c",
                "protocol.file.allow=always",
                "-c",
                &url,
                "submodule",
                "update",
                "--init",
                "--no-fetch",
                "--",
                path,
            ],
        )
        .await;
        if let Err(e) = filled {
            tracing::warn!(submodule = %path, error = %e, "a submodule of the worktree could not be filled from the main checkout");
        }
    }
}

/// What deleting a conversation did with its worktree.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    pub path: String,
    pub branch: String,
    /// Removed (it was clean), or kept.
    pub removed: bool,
    /// Why it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
}

/// Remove a conversation's worktree if it is clean (no changes, no
/// untracked files); keep it otherwise. `workdir` is the folder the agent
/// worked in (inside the worktree).
pub async fn remove_if_clean(workdir: &Path, session_id: &str) -> Removal {
    let top = git(workdir, &["rev-parse", "--show-toplevel"]).await;
    let mut out = Removal {
        path: workdir.display().to_string(),
        branch: branch(session_id),
        removed: false,
        kept_because: None,
    };
    let top = match top {
        Ok(t) => PathBuf::from(t),
        Err(e) => {
            out.kept_because = Some(format!("not a worktree any more: {e}"));
            return out;
        }
    };
    out.path = top.display().to_string();
    if let Some(b) = branch_of(&top) {
        out.branch = b;
    }
    // Ignored files count too: `git worktree remove` would delete them
    // (a `.env`, build output), and nothing is deleted that was not committed.
    match git(&top, &["status", "--porcelain", "--ignored"]).await {
        Ok(s) if s.is_empty() => {}
        Ok(_) => {
            out.kept_because = Some("it has uncommitted, untracked or ignored files".into());
            return out;
        }
        Err(e) => {
            out.kept_because = Some(format!("git status failed: {e}"));
            return out;
        }
    }
    // From the main repository, not from inside the worktree being removed.
    let main = git(
        &top,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )
    .await
    .map(PathBuf::from)
    .ok()
    .and_then(|common| common.parent().map(Path::to_path_buf))
    .unwrap_or_else(|| top.clone());
    let top_text = top.display().to_string();
    match git(&main, &["worktree", "remove", &top_text]).await {
        Ok(_) => out.removed = true,
        Err(e) => out.kept_because = Some(format!("git worktree remove failed: {e}")),
    }
    out
}

/// Whether `path` is inside a git repository (for the configuration check).
pub fn is_repository(path: &Path) -> bool {
    top_level(path).is_some()
}

/// The shared git folder of the repository a worktree `path` checks out
/// (`<repository>/.git`): where its objects and refs are written.
pub fn common_dir(path: &Path) -> Option<PathBuf> {
    rev_parse(path, &["--path-format=absolute", "--git-common-dir"])
}

/// The top folder of the git repository `path` is in, if it is in one.
pub fn top_level(path: &Path) -> Option<PathBuf> {
    rev_parse(path, &["--show-toplevel"])
}

/// A path `git rev-parse` answers in `path`, if it is in a repository.
fn rev_parse(path: &Path, args: &[&str]) -> Option<PathBuf> {
    let out = git_command(path)
        .arg("rev-parse")
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
