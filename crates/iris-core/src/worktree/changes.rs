//! What an agent changed in its conversation's worktree (`session_diff`):
//! the files, and a unified diff of the worktree as it is now (committed,
//! uncommitted and untracked files) against the commit its branch started
//! from. Git runs as everywhere in this module: the agent's environment,
//! no system or global configuration, no hooks, no filters, and here also
//! no external diff or text conversion a repository could name.

use std::path::Path;

use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::{git_command, neutral_filters};
use crate::error::{ErrorKind, IrisError, Result};

/// The changes of one worktree conversation.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// The commit the conversation's branch started from.
    pub base: String,
    /// The commit its worktree is at now.
    pub head: String,
    /// The branch its worktree has checked out.
    pub branch: String,
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

/// Most files listed; past it the rest are counted in `omitted`.
const MAX_FILES: usize = 2000;
/// Most bytes of a listing git writes (names, counts) that are read.
const MAX_LISTING: usize = 4 * 1024 * 1024;
/// Longest the whole reading may take.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where git reads a worktree: its folder, and the repository's own git
/// folders for it, found from the team's repository (trusted), never from
/// the worktree's `.git` file or its `commondir` (the agent can rewrite
/// both, to point git at a repository of its own making).
struct Pinned {
    top: std::path::PathBuf,
    git_dir: std::path::PathBuf,
    common: std::path::PathBuf,
    filters: Vec<(String, String)>,
}

impl Pinned {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(git_command(&self.top));
        cmd.env("GIT_DIR", &self.git_dir)
            .env("GIT_COMMON_DIR", &self.common)
            .env("GIT_WORK_TREE", &self.top)
            .args(args)
            .stdout(std::process::Stdio::piped())
            // Never read: a pipe nobody reads would stall git once full.
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        super::neutral(&mut cmd, &self.filters);
        cmd
    }
}

/// The worktree `workdir` is in, as the repository at `repository` knows it.
async fn pin(workdir: &Path, repository: &Path) -> Result<Pinned> {
    let gone = || {
        IrisError::conflict(
            "the conversation's worktree is not on this node (it was removed, or another node made it)",
        )
    };
    let common = super::common_dir(repository).ok_or_else(gone)?;
    let mut found = None;
    if let Ok(mut entries) = tokio::fs::read_dir(common.join("worktrees")).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let Ok(gitdir) = tokio::fs::read_to_string(e.path().join("gitdir")).await else {
                continue;
            };
            let top = Path::new(gitdir.trim_end()).parent().map(Path::to_path_buf);
            if let Some(top) = top.filter(|t| workdir.starts_with(t)) {
                found = Some((e.path(), top));
                break;
            }
        }
    }
    let (git_dir, top) = found.ok_or_else(gone)?;
    if !top.is_dir() {
        return Err(gone());
    }
    let filters = neutral_filters(&common).await;
    Ok(Pinned {
        top,
        git_dir,
        common,
        filters,
    })
}

/// The changes in the worktree `workdir` (the folder the agent works in)
/// of the team's repository at `repository`, since `base` (recorded when
/// the worktree was made; for a worktree made before that was recorded,
/// where its branch meets the repository's `HEAD`), with at most
/// `max_bytes` of diff.
///
/// # Errors
/// The worktree is not on this node (another node made it, or it was
/// removed), git failed, or reading took longer than a minute.
pub async fn changes(
    workdir: &Path,
    repository: &Path,
    base: Option<&str>,
    max_bytes: usize,
) -> Result<Changes> {
    tokio::time::timeout(LIMIT, read(workdir, repository, base, max_bytes))
        .await
        .map_err(|_| {
            IrisError::new(
                ErrorKind::Timeout,
                "reading the worktree's changes took longer than a minute",
            )
        })?
}

async fn read(
    workdir: &Path,
    repository: &Path,
    base: Option<&str>,
    max_bytes: usize,
) -> Result<Changes> {
    let p = pin(workdir, repository).await?;
    let head = text(&p, &["rev-parse", "HEAD"]).await?.trim().to_owned();
    let base = match base {
        Some(b) => b.to_owned(),
        None => {
            let main = text_in(
                &p.common,
                &[
                    "--git-dir",
                    &p.common.display().to_string(),
                    "rev-parse",
                    "HEAD",
                ],
            )
            .await?;
            text(&p, &["merge-base", "HEAD", main.trim()])
                .await?
                .trim()
                .to_owned()
        }
    };
    // Every file as its content differs from `base` now (NUL-separated:
    // any name, as it is).
    let mut args = vec!["diff", "-z", "--numstat"];
    args.extend(DIFF);
    args.extend([base.as_str(), "--"]);
    let numstat = text(&p, &args).await?;
    let mut args = vec!["diff", "-z", "--name-status"];
    args.extend(DIFF);
    args.extend([base.as_str(), "--"]);
    let statuses = text(&p, &args).await?;
    let mut files = tracked(&statuses, &numstat);
    let untracked = text(&p, &["ls-files", "-z", "--others", "--exclude-standard"]).await?;
    let mut new_files: Vec<&str> = untracked.split('\0').filter(|l| !l.is_empty()).collect();
    new_files.sort_unstable();

    // The branch, from the worktree's own HEAD in the repository's folder.
    let branch = tokio::fs::read_to_string(p.git_dir.join("HEAD"))
        .await
        .ok()
        .and_then(|h| h.trim().strip_prefix("ref: refs/heads/").map(str::to_owned))
        .unwrap_or_default();
    let mut out = Changes {
        base: base.clone(),
        head,
        branch,
        files: Vec::new(),
        diff: String::new(),
        omitted: Vec::new(),
    };
    // The tracked files' patch, read no further than the cap allows.
    let mut args = vec!["diff"];
    args.extend(DIFF);
    args.extend([base.as_str(), "--"]);
    let (patch, cut) = capped(&p, &args, max_bytes).await?;
    let mut room = max_bytes;
    let shown: std::collections::HashSet<String> =
        take_whole_files(&patch, cut, &mut room, &mut out.diff)
            .into_iter()
            .collect();
    for f in &files {
        if !shown.contains(&f.path) {
            out.omitted.push(f.path.clone());
        }
    }
    // Untracked files, each against nothing (a few at most get a diff:
    // each costs a git process).
    let mut listed = files.len();
    for path in new_files {
        if listed >= MAX_FILES {
            out.omitted.push(path.to_owned());
            continue;
        }
        listed += 1;
        let fits = room > 0;
        let (patch, cut) = if fits {
            no_index(&p, path, room).await?
        } else {
            (String::new(), true)
        };
        let (additions, deletions) = if cut { (None, None) } else { lines_of(&patch) };
        files.push(ChangedFile {
            path: path.to_owned(),
            status: "untracked".into(),
            additions,
            deletions,
        });
        if cut || patch.is_empty() {
            out.omitted.push(path.to_owned());
        } else {
            room -= patch.len();
            out.diff.push_str(&patch);
        }
    }
    files.truncate(MAX_FILES);
    out.files = files;
    Ok(out)
}

/// Added and removed lines of a one-file patch (none for a binary one).
fn lines_of(patch: &str) -> (Option<u64>, Option<u64>) {
    if patch.contains("\nBinary files ") || patch.starts_with("Binary files ") {
        return (None, None);
    }
    let mut add = 0;
    let mut del = 0;
    for l in patch.lines() {
        if l.starts_with('+') && !l.starts_with("+++") {
            add += 1;
        } else if l.starts_with('-') && !l.starts_with("---") {
            del += 1;
        }
    }
    (Some(add), Some(del))
}

/// The tracked files of `-z --name-status` and `-z --numstat` output.
fn tracked(statuses: &str, numstat: &str) -> Vec<ChangedFile> {
    let mut files: Vec<ChangedFile> = Vec::new();
    let mut fields = statuses.split('\0');
    while let (Some(code), Some(path)) = (fields.next(), fields.next()) {
        if path.is_empty() || files.len() >= MAX_FILES {
            break;
        }
        let status = match code.chars().next() {
            Some('A') => "added",
            Some('D') => "deleted",
            Some('T') => "typechange",
            _ => "modified",
        };
        files.push(ChangedFile {
            path: path.to_owned(),
            status: status.into(),
            additions: None,
            deletions: None,
        });
    }
    let mut counts_of = std::collections::HashMap::new();
    for record in numstat.split('\0') {
        let mut parts = record.splitn(3, '\t');
        if let (Some(a), Some(d), Some(path)) = (parts.next(), parts.next(), parts.next()) {
            counts_of.insert(path, counts(&format!("{a}\t{d}")));
        }
    }
    for f in &mut files {
        if let Some(c) = counts_of.get(f.path.as_str()) {
            (f.additions, f.deletions) = *c;
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

/// The file a patch section is about (`diff --git a/<path> b/<path>`; a
/// name git had to quote is not recognised, and its file counts as not
/// shown).
fn section_path(section: &str) -> Option<String> {
    let first = section.lines().next()?;
    let rest = first.strip_prefix("diff --git a/")?;
    // "<path> b/<path>": the path is the first half.
    let len = rest.len().checked_sub(3)? / 2;
    rest.get(len..)?
        .starts_with(" b/")
        .then(|| rest.get(..len).map(str::to_owned))?
}

/// An untracked file against nothing, at most `limit` bytes (and whether
/// it was cut).
async fn no_index(p: &Pinned, path: &str, limit: usize) -> Result<(String, bool)> {
    let mut args = vec!["diff", "--no-index"];
    args.extend(DIFF);
    args.extend(["--", "/dev/null", path]);
    capped(p, &args, limit).await
}

/// What git writes for `args` in `p`, up to [`MAX_LISTING`] bytes.
async fn text(p: &Pinned, args: &[&str]) -> Result<String> {
    let (out, _) = capped(p, args, MAX_LISTING).await?;
    Ok(out)
}

/// [`text`] in the repository's own git folder (its `HEAD`).
async fn text_in(common: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::from(git_command(common));
    cmd.args(args)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| IrisError::internal("running git", e))?;
    if !out.status.success() {
        return Err(IrisError::new(
            ErrorKind::Internal,
            "reading the worktree's changes: the repository has no HEAD",
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run git with `args` in `p`, reading at most `limit` bytes of its output
/// (then it is stopped): the output, and whether it was cut. Exit status 1
/// is a diff's "there are differences".
async fn capped(p: &Pinned, args: &[&str], limit: usize) -> Result<(String, bool)> {
    let mut child = p
        .command(args)
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
        .wait()
        .await
        .map_err(|e| IrisError::internal("running git", e))?;
    if !matches!(status.code(), Some(0 | 1)) {
        return Err(IrisError::new(
            ErrorKind::Internal,
            format!(
                "reading the worktree's changes: git {} failed ({status})",
                args.first().copied().unwrap_or_default(),
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
            "M\0notes.txt\0A\0src/new.rs\0D\0old.txt\0",
            "1\t1\tnotes.txt\x003\t0\tsrc/new.rs\0-\t-\told.txt\0",
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
