//! The agent's own transcript of a conversation, kept in the database.
//!
//! Claude Code keeps each conversation in a session file,
//! `<config>/projects/<folder>/<session id>.jsonl`, where `<config>` is
//! `$CLAUDE_CONFIG_DIR` or `$HOME/.claude` and `<folder>` is the absolute
//! working folder with every character but letters and digits made `-`.
//! `--resume` needs that file. Iris saves it after each turn and, before
//! resuming (or forking) a conversation whose file is not there — another
//! node, a new or wiped home — writes the saved one back, under the folder
//! name of where the agent works now.

use std::path::{Path, PathBuf};

use iris_storage::{Store, TranscriptRow};

use crate::clock::now_ms;

/// Where Claude Code keeps the transcript of `session_id` for an agent with
/// `env` working in `cwd`.
pub(crate) fn claude_file(
    env: &[(String, String)],
    cwd: &Path,
    session_id: &str,
) -> Option<PathBuf> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| PathBuf::from(v))
            .filter(|p| p.is_absolute())
    };
    let config = var("CLAUDE_CONFIG_DIR").or_else(|| var("HOME").map(|h| h.join(".claude")))?;
    let folder = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    Some(
        config
            .join("projects")
            .join(folder_name(&folder))
            .join(format!("{session_id}.jsonl")),
    )
}

/// Claude Code's name for a working folder: every character but ASCII
/// letters and digits becomes `-`.
pub(crate) fn folder_name(folder: &Path) -> String {
    folder
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Save the transcript at `file` (after a turn). Nothing to save is not
/// an error; a failure is logged, the conversation goes on.
pub(crate) async fn save(store: &Store, team: &str, session_id: &str, file: &Path, cwd: &Path) {
    let body = match tokio::fs::read_to_string(file).await {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(team, session = session_id, error = %e, "cannot read the agent's transcript to save it");
            return;
        }
    };
    let row = TranscriptRow {
        session_id: session_id.to_owned(),
        team: team.to_owned(),
        agent: "claude".into(),
        folder: cwd.display().to_string(),
        body,
        updated_at: now_ms(),
    };
    if let Err(e) = store.save_transcript(&row).await {
        tracing::warn!(team, session = session_id, error = %e, "cannot save the agent's transcript");
    }
}

/// Before `session_id` is resumed at `file`: if the file is missing, write
/// the saved transcript there. Whether it was restored.
pub(crate) async fn restore(store: &Store, team: &str, session_id: &str, file: &Path) -> bool {
    if tokio::fs::try_exists(file).await.unwrap_or(false) {
        return false;
    }
    let saved = match store.transcript(session_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(team, session = session_id, error = %e, "cannot read the saved transcript");
            return false;
        }
    };
    let written = async {
        if let Some(dir) = file.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(file, saved.body.as_bytes()).await
    };
    match written.await {
        Ok(()) => {
            tracing::info!(team, session = session_id, from = %saved.folder, "the conversation's transcript was restored from the database");
            true
        }
        Err(e) => {
            tracing::warn!(team, session = session_id, error = %e, "cannot restore the saved transcript");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_names_a_folder_by_its_letters_and_digits() {
        assert_eq!(
            folder_name(Path::new("/tmp/.tmpAb9/work_x")),
            "-tmp--tmpAb9-work-x"
        );
        let env = vec![("HOME".to_owned(), "/h".to_owned())];
        assert_eq!(
            claude_file(&env, Path::new("/no/such/w"), "s1").unwrap(),
            Path::new("/h/.claude/projects/-no-such-w/s1.jsonl")
        );
        let env = vec![
            ("HOME".to_owned(), "/h".to_owned()),
            ("CLAUDE_CONFIG_DIR".to_owned(), "/c".to_owned()),
        ];
        assert_eq!(
            claude_file(&env, Path::new("/w"), "s1").unwrap(),
            Path::new("/c/projects/-w/s1.jsonl")
        );
        assert!(claude_file(&[], Path::new("/w"), "s1").is_none());
    }
}
