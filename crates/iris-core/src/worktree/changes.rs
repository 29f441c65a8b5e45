//! What an agent changed in its conversation's worktree (`session_diff`):
//! the files, and a unified diff of the worktree as it is now (committed,
//! uncommitted and untracked files) against the commit its branch started
//! from. Git runs as everywhere in this module: the agent's environment,
//! no system or global configuration, no hooks, no filters, and here also
//! no external diff or text conversion a repository could name.

use std::path::Path;

use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::{git, git_command, neutral_filters};
use crate::error::{ErrorKind, IrisError, Result};

/// The changes of one worktree conversation.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// The commit the conversation's branch started from.
    pub base: String,
    /// The commit its worktree is at now.
    pub head: String,
    /// Every changed file, in path order (untracked ones last).
    pub files: Vec<ChangedFile>,
    /// The unified diff of the files that fit in `maxBytes`, whole files
    /// only.
    pub diff: String,
    /// Files whose diff did not fit (listed in `files`, not in `diff`).
    pub omitted: Vec<String>,
}

/// One changed file.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangedFile {
    pub path: String,
    /// `added`, `modified`, `deleted`, `typechange` or `untracked`.
    pub status: String,
    /// Lines added and removed; absent for a binary file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletions: Option<u64>,
}

/// The options every diff here runs with: no program of the repository's
/// choosing (external diff, textconv), paths as they are, no renames
/// (each file once, by its own name).
const DIFF: [&str; 6] = [
    "--no-ext-diff",
    "--no-textconv",
    "--no-color",
    "--no-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
];

/// The changes in the worktree `workdir` (the folder the agent works in)
/// since `base` (recorded when the worktree was made; for a worktree made
/// before that was recorded, where its branch meets the repository's
/// `HEAD`), with at most `max_bytes` of diff.
///
/// # Errors
/// The folder is gone (another node made it, or it was removed), or git
/// failed.
pub async fn changes(workdir: &Path, base: Option<&str>, max_bytes: usize) -> Result<Changes> {
    if !workdir.is_dir() {
        return Err(IrisError::conflict(
            "the conversation's worktree is not on this node (it was removed, or another node made it)",
        ));
    }
    let failed = |what: &str, e: String| {
        IrisError::new(
            ErrorKind::Internal,
            format!("reading the worktree's changes: {what}: {e}"),
        )
    };
    let top = git(workdir, &["rev-parse", "--show-toplevel"])
        .await
        .map_err(|e| failed("git rev-parse", e))?;
    let top = Path::new(&top);
    let head = git(top, &["rev-parse", "HEAD"])
        .await
        .map_err(|e| failed("git rev-parse HEAD", e))?;
    let base = match base {
        Some(b) => b.to_owned(),
        None => started_from(top)
            .await
            .map_err(|e| failed("finding where the branch started", e))?,
    };
    // Every file as its content differs from `base` now.
    let mut args = vec!["diff", "--numstat"];
    args.extend(DIFF);
    args.extend([base.as_str(), "--"]);
    let numstat = git(top, &args).await.map_err(|e| failed("git diff", e))?;
    let mut args = vec!["diff", "--name-status"];
    args.extend(DIFF);
    args.extend([base.as_str(), "--"]);
    let statuses = git(top, &args).await.map_err(|e| failed("git diff", e))?;
    let mut files = tracked(&statuses, &numstat);
    let untracked = git(
        top,
        &["ls-files", "--others", "--exclude-standard", "--full-name"],
    )
    .await
    .map_err(|e| failed("git ls-files", e))?;
    let mut new_files: Vec<&str> = untracked.lines().filter(|l| !l.is_empty()).collect();
    new_files.sort_unstable();

    let mut out = Changes {
        base: base.clone(),
        head,
        files: Vec::new(),
        diff: String::new(),
        omitted: Vec::new(),
    };
    // The tracked files' patch, read no further than the cap allows.
    let mut args = vec!["diff"];
    args.extend(DIFF);
    args.extend([base.as_str(), "--"]);
    let (patch, cut) = capped(top, &args, max_bytes).await?;
    let mut room = max_bytes;
    let shown = take_whole_files(&patch, cut, &mut room, &mut out.diff);
    for f in &files {
        if !shown.contains(&f.path) {
            out.omitted.push(f.path.clone());
        }
    }
    // Untracked files, each against nothing.
    for path in new_files {
        let stat = no_index(top, &["--numstat"], path, 64 * 1024).await?;
        let (additions, deletions) = counts(stat.0.lines().next().unwrap_or_default());
        files.push(ChangedFile {
            path: path.to_owned(),
            status: "untracked".into(),
            additions,
            deletions,
        });
        if room == 0 {
            out.omitted.push(path.to_owned());
            continue;
        }
        let (patch, cut) = no_index(top, &[], path, room).await?;
        if cut || patch.len() > room {
            out.omitted.push(path.to_owned());
        } else {
            room -= patch.len();
            out.diff.push_str(&patch);
        }
    }
    out.files = files;
    Ok(out)
}

/// Where the worktree's branch meets the repository's `HEAD`.
async fn started_from(top: &Path) -> std::result::Result<String, String> {
    let common = git(
        top,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )
    .await?;
    let main = git(Path::new(&common), &["rev-parse", "HEAD"]).await?;
    git(top, &["merge-base", "HEAD", &main]).await
}

/// The tracked files of `--name-status` and `--numstat` output.
fn tracked(statuses: &str, numstat: &str) -> Vec<ChangedFile> {
    let mut files: Vec<ChangedFile> = statuses
        .lines()
        .filter_map(|l| {
            let (code, path) = l.split_once('\t')?;
            let status = match code.chars().next()? {
                'A' => "added",
                'D' => "deleted",
                'T' => "typechange",
                _ => "modified",
            };
            Some(ChangedFile {
                path: path.to_owned(),
                status: status.into(),
                additions: None,
                deletions: None,
            })
        })
        .collect();
    for l in numstat.lines() {
        let mut parts = l.splitn(3, '\t');
        let (Some(a), Some(d), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let Some(f) = files.iter_mut().find(|f| f.path == path) {
            (f.additions, f.deletions) = counts(&format!("{a}\t{d}\t"));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// Added and removed lines of one `--numstat` line (`-` for binary).
fn counts(line: &str) -> (Option<u64>, Option<u64>) {
    let mut parts = line.split('\t');
    let n = |p: Option<&str>| p.and_then(|v| v.parse().ok());
    (n(parts.next()), n(parts.next()))
}

/// From `patch` (cut short if `cut`), the files' sections that fit in
/// `room`, appended to `out`; `room` shrinks by what was taken. Returns the
/// paths shown.
fn take_whole_files(patch: &str, cut: bool, room: &mut usize, out: &mut String) -> Vec<String> {
    let mut shown = Vec::new();
    let mut sections: Vec<&str> = Vec::new();
    let mut rest = patch;
    while let Some(start) = rest.find("diff --git ") {
        let after = &rest[start + 1..];
        let end = after
            .find("\ndiff --git ")
            .map_or(rest.len(), |i| start + 1 + i + 1);
        sections.push(&rest[start..end]);
        rest = &rest[end..];
    }
    let last = sections.len();
    for (i, s) in sections.into_iter().enumerate() {
        // The last section of a patch cut short is incomplete.
        if (cut && i + 1 == last) || s.len() > *room {
            continue;
        }
        *room -= s.len();
        out.push_str(s);
        if let Some(path) = section_path(s) {
            shown.push(path);
        }
    }
    shown
}

/// The file a patch section is about (`diff --git a/<path> b/<path>`).
fn section_path(section: &str) -> Option<String> {
    let first = section.lines().next()?;
    let rest = first.strip_prefix("diff --git a/")?;
    // "<path> b/<path>": the path is the first half.
    let len = rest.len().checked_sub(3)? / 2;
    rest.get(len..)?
        .starts_with(" b/")
        .then(|| rest.get(..len).map(str::to_owned))?
}

/// `git diff --no-index [flags] /dev/null <path>` in `top`: an untracked
/// file against nothing, at most `limit` bytes (and whether it was cut).
async fn no_index(top: &Path, flags: &[&str], path: &str, limit: usize) -> Result<(String, bool)> {
    let mut args = vec!["diff", "--no-index"];
    args.extend(DIFF);
    args.extend(flags);
    args.extend(["--", "/dev/null", path]);
    capped(top, &args, limit).await
}

/// Run git with `args` in `top`, reading at most `limit` bytes of its
/// output (then it is stopped): the output, and whether it was cut.
/// Exit status 1 is a diff's "there are differences".
async fn capped(top: &Path, args: &[&str], limit: usize) -> Result<(String, bool)> {
    let mut cmd = tokio::process::Command::from(git_command(top));
    cmd.args(neutral_filters(top).await)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| IrisError::internal("running git", e))?;
    let mut out = Vec::new();
    let cut = match child.stdout.take() {
        Some(stdout) => {
            let mut limited = stdout.take(limit as u64 + 1);
            limited
                .read_to_end(&mut out)
                .await
                .map_err(|e| IrisError::internal("reading git's output", e))?;
            out.len() > limit
        }
        None => false,
    };
    if cut {
        out.truncate(limit);
        let _ = child.kill().await;
        return Ok((String::from_utf8_lossy(&out).into_owned(), true));
    }
    let status = child
        .wait_with_output()
        .await
        .map_err(|e| IrisError::internal("running git", e))?;
    if !matches!(status.status.code(), Some(0 | 1)) {
        return Err(IrisError::new(
            ErrorKind::Internal,
            format!(
                "reading the worktree's changes: git {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&status.stderr).trim()
            ),
        ));
    }
    Ok((String::from_utf8_lossy(&out).into_owned(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_is_taken_whole_files_first_within_its_room() {
        let patch = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/long name b/long name\n+++ b/long name\n+0123456789012345678901234567890123456789\n";
        let mut out = String::new();
        let mut room = 60;
        let shown = take_whole_files(patch, false, &mut room, &mut out);
        assert_eq!(shown, ["x"]);
        assert!(out.starts_with("diff --git a/x b/x\n") && out.ends_with("+b\n"));
        let mut all = String::new();
        let mut room = 10_000;
        let shown = take_whole_files(patch, false, &mut room, &mut all);
        assert_eq!(shown, ["x", "long name"]);
        assert_eq!(all, patch);
        // Cut short: the last section is not shown.
        let mut part = String::new();
        let shown = take_whole_files(&patch[..patch.len() - 5], true, &mut 10_000, &mut part);
        assert_eq!(shown, ["x"]);
    }

    #[test]
    fn name_status_and_numstat_make_one_list() {
        let files = tracked(
            "M\tnotes.txt\nA\tsrc/new.rs\nD\told.txt\n",
            "1\t1\tnotes.txt\n3\t0\tsrc/new.rs\n-\t-\told.txt\n",
        );
        let got: Vec<(&str, &str, Option<u64>)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.status.as_str(), f.additions))
            .collect();
        assert_eq!(
            got,
            [
                ("notes.txt", "modified", Some(1)),
                ("old.txt", "deleted", None),
                ("src/new.rs", "added", Some(3)),
            ]
        );
    }
}
