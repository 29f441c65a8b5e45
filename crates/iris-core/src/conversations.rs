//! The conversations service: sessions looked up, created, forked and
//! deleted, and a conversation's own git worktree. A session is one
//! conversation between a caller and a team, keyed by `(from, to)` for the
//! pair's default one or by an explicit id; its id is the agent's own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

use iris_storage::{SessionRow, Store};

use crate::clock::now_ms;
use crate::error::{ErrorKind, IrisError, Result};
use crate::pool::Pool;
use crate::recorder::Recorder;
use crate::session_id::SessionId;
use crate::team::Team;
use crate::worktree::Isolation;

/// Sessions already looked up, so a message does not query for its
/// conversation each time. `started` in a cached row may be stale; the
/// pool's actor reads it fresh before it spawns. [`LocalSessions`] keeps
/// them in this process; a cluster's is told of other nodes' changes.
pub trait SessionCache: Send {
    /// The default session id of the pair `(from, to)`, if known.
    fn default_of(&self, from: &str, to: &str) -> Option<String>;
    /// A session by id, if known.
    fn row(&self, id: &str) -> Option<SessionRow>;
    /// Remember `row` (and, for a default one, its pair).
    fn keep(&mut self, row: &SessionRow);
    /// Forget session `id` (rebooted, deleted, moved to a worktree).
    fn forget(&mut self, id: &str);
}

/// [`SessionCache`] in this process's memory.
#[derive(Default)]
pub struct LocalSessions {
    defaults: HashMap<(String, String), String>,
    rows: HashMap<String, SessionRow>,
}

impl SessionCache for LocalSessions {
    fn default_of(&self, from: &str, to: &str) -> Option<String> {
        self.defaults
            .get(&(from.to_owned(), to.to_owned()))
            .cloned()
    }

    fn row(&self, id: &str) -> Option<SessionRow> {
        self.rows.get(id).cloned()
    }

    fn keep(&mut self, row: &SessionRow) {
        if row.is_default {
            self.defaults
                .insert((row.from_team.clone(), row.to_team.clone()), row.id.clone());
        }
        self.rows.insert(row.id.clone(), row.clone());
    }

    fn forget(&mut self, id: &str) {
        self.rows.remove(id);
        self.defaults.retain(|_, v| v != id);
    }
}

pub struct Conversations {
    store: Store,
    recorder: Recorder,
    pool: Pool,
    /// `IRIS_HOME`, under which worktrees go.
    home: PathBuf,
    /// Sessions in the database, kept in memory so status calls never query.
    count: AtomicI64,
    /// Serialises session creation; also guards the cache inside.
    cache: tokio::sync::Mutex<Box<dyn SessionCache>>,
    /// Held while a conversation gets its worktree (rare; keeps two first
    /// messages of one conversation from both creating it).
    worktrees: tokio::sync::Mutex<()>,
}

impl Conversations {
    pub(crate) async fn new(
        store: Store,
        recorder: Recorder,
        pool: Pool,
        home: PathBuf,
        cache: Box<dyn SessionCache>,
    ) -> Result<Self> {
        let count = store.count_sessions().await?;
        Ok(Conversations {
            store,
            recorder,
            pool,
            home,
            count: AtomicI64::new(count),
            cache: tokio::sync::Mutex::new(cache),
            worktrees: tokio::sync::Mutex::new(()),
        })
    }

    /// The session for an exact (from, to) pair, or the named one; created on
    /// first use. A named session must belong to `to`.
    pub async fn session(
        &self,
        from: &str,
        to: &str,
        session_id: Option<&str>,
    ) -> Result<SessionRow> {
        let mut cache = self.cache.lock().await;
        let id = match session_id {
            Some(id) => match SessionId::parse(id) {
                Some(id) => Some(id.into_string()),
                None => return Err(IrisError::validation("sessionId", "must be a UUID")),
            },
            None => cache.default_of(from, to),
        };
        if let Some(row) = id.as_ref().and_then(|id| cache.row(id)) {
            return check_team(row, to);
        }
        let found = match &id {
            Some(id) => self.store.session(id).await?,
            None => self.store.default_session(from, to).await?,
        };
        let row = match found {
            Some(row) => check_team(row, to)?,
            None => check_team(
                self.create(from, to, id.as_deref(), session_id.is_none(), None)
                    .await?,
                to,
            )?,
        };
        cache.keep(&row);
        Ok(row)
    }

    /// An existing session: the named one, or the default of the pair.
    pub async fn existing(
        &self,
        from: &str,
        to: &str,
        session_id: Option<&str>,
    ) -> Result<SessionRow> {
        // What these sessions are used for reads their turns: see every write first.
        self.recorder.flush().await;
        let found = match session_id {
            Some(id) => self.store.session(id).await?.filter(|s| s.to_team == to),
            None => self.store.default_session(from, to).await?,
        };
        found.ok_or_else(|| match session_id {
            Some(id) => IrisError::session_not_found(format!("`{id}` for team `{to}`")),
            None => IrisError::session_not_found(format!("from `{from}` to `{to}`")),
        })
    }

    /// A session by id alone, whatever its team (every write seen first).
    pub async fn by_id(&self, id: &str) -> Result<Option<SessionRow>> {
        self.recorder.flush().await;
        Ok(self.store.session(id).await?)
    }

    /// A new session row.
    pub async fn create(
        &self,
        from: &str,
        to: &str,
        id: Option<&str>,
        is_default: bool,
        fork_of: Option<String>,
    ) -> Result<SessionRow> {
        let now = now_ms();
        let row = SessionRow {
            id: id
                .map(str::to_owned)
                .unwrap_or_else(|| SessionId::fresh().into_string()),
            from_team: from.to_owned(),
            to_team: to.to_owned(),
            is_default,
            fork_of,
            started: false,
            message_count: 0,
            process_state: "stopped".into(),
            created_at: now,
            last_used_at: now,
            restarted_at: None,
            worktree: None,
        };
        // Another node may have made this session (the pair's default, a
        // named one) a moment ago: then that one is the session.
        let (row, new) = self.store.insert_session_once(&row).await?;
        if new {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(row)
    }

    /// How many sessions exist.
    pub fn count(&self) -> i64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Delete a session with its history, and forget it — unless a job of
    /// it has not ended (`None`: end its jobs, then call again).
    pub async fn delete(&self, id: &str) -> Result<Option<bool>> {
        self.recorder.flush().await;
        let Some(deleted) = self.store.delete_session(id).await? else {
            return Ok(None);
        };
        if deleted {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        self.forget(id).await;
        Ok(Some(deleted))
    }

    /// Forget a cached session (after reboot or delete changed it).
    pub async fn forget(&self, id: &str) {
        self.cache.lock().await.forget(id);
    }

    /// The conversation as its isolation wants it: with its own worktree
    /// when the call (`asked`) or the team says `worktree` and it has none
    /// yet. Every way a conversation starts goes through here (messages,
    /// streams, jobs, every transport), so isolation holds whatever starts it.
    pub async fn isolated(
        &self,
        team: &Team,
        session: SessionRow,
        asked: Option<Isolation>,
    ) -> Result<SessionRow> {
        let isolation = asked.unwrap_or(team.config.isolation);
        if isolation == Isolation::Worktree && session.worktree.is_none() {
            return self.give_worktree(team, session, asked.is_some()).await;
        }
        Ok(session)
    }

    /// Give a conversation its own git worktree before its agent starts.
    /// A conversation that already started keeps its folder: the agent's
    /// history is kept per folder, and moving would lose it (asked for on
    /// the call: `VALIDATION_ERROR`; by the team's option: it stays).
    async fn give_worktree(
        &self,
        team: &Team,
        session: SessionRow,
        asked: bool,
    ) -> Result<SessionRow> {
        let _one = self.worktrees.lock().await;
        // Another message of this conversation may have made it meanwhile,
        // or started it in the team's folder (written by the recorder).
        self.recorder.flush().await;
        let current = self.store.session(&session.id).await?.unwrap_or(session);
        if current.worktree.is_some() {
            self.forget(&current.id).await;
            return Ok(current);
        }
        if current.started {
            if asked {
                return Err(IrisError::validation(
                    "isolation",
                    "this conversation already started in the team's folder; a worktree is for a new conversation (another sessionId)",
                ));
            }
            return Ok(current);
        }
        // Git runs in the team's folder: a run-time team's must still be
        // under a root, and so must the repository a worktree checks out.
        team.check_folder()
            .and_then(|()| team.check_repository())
            .map_err(|problem| {
                IrisError::new(
                    ErrorKind::Forbidden,
                    format!("team `{}`: {problem}", team.name),
                )
            })?;
        let (dir, base) =
            crate::worktree::create(&self.home, &team.name, team.path(), &current.id).await?;
        let dir = dir.display().to_string();
        self.store
            .set_worktree(&current.id, Some(&dir), base.as_deref())
            .await?;
        let id = current.id.clone();
        self.pool
            .stop_where(
                |p| p.session_id == id,
                "the conversation moves to its own worktree",
            )
            .await;
        self.forget(&current.id).await;
        tracing::info!(team = %team.name, session = %current.id, worktree = %dir, "the conversation has its own git worktree");
        Ok(SessionRow {
            worktree: Some(dir),
            ..current
        })
    }
}

fn check_team(row: SessionRow, to: &str) -> Result<SessionRow> {
    if row.to_team != to {
        return Err(IrisError::session_not_found(format!(
            "`{}` for team `{to}`",
            row.id
        )));
    }
    Ok(row)
}
