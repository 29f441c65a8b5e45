//! What can go wrong with the database, with what was being done.

/// Why a write was refused: this node no longer holds the team's lease.
#[derive(Debug, thiserror::Error)]
#[error("node `{node}` no longer holds the lease of team `{team}`: another node took it over")]
pub struct Fenced {
    pub team: String,
    pub node: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StoreError {
    pub(crate) context: &'static str,
    #[source]
    pub(crate) source: sqlx::Error,
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    pub(crate) fn fenced(f: Fenced) -> Self {
        // Not a database failure: carried as the driver's "configuration"
        // error so the one error type stays; never counted unavailable.
        StoreError {
            context: "writing a team's work",
            source: sqlx::Error::Configuration(Box::new(f)),
        }
    }

    /// The write was refused: this node no longer holds the team's lease.
    pub fn fenced_by(&self) -> Option<&Fenced> {
        match &self.source {
            sqlx::Error::Configuration(e) => e.downcast_ref(),
            _ => None,
        }
    }

    /// A row refers to one that is gone (deleted meanwhile: a job written
    /// for a conversation being deleted).
    pub fn is_missing_reference(&self) -> bool {
        match &self.source {
            // Postgres: foreign_key_violation. SQLite: SQLITE_CONSTRAINT_FOREIGNKEY.
            sqlx::Error::Database(e) => {
                e.code().is_some_and(|c| c == "23503" || c == "787")
                    || e.message().contains("FOREIGN KEY constraint failed")
            }
            _ => false,
        }
    }

    /// The database could not be reached, or refused service for now (not
    /// a problem with the data): the request may succeed if tried again.
    pub fn is_unavailable(&self) -> bool {
        match &self.source {
            // Protocol: the conversation with the server broke off.
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(e) => e.code().is_some_and(|c| {
                // Postgres: connection exceptions (08), insufficient
                // resources (53), operator intervention such as a shutdown
                // or a statement timeout (57). SQLite: busy (5) and locked
                // (6), also as extended codes (the low byte is the code).
                let sqlite = c.parse::<i64>().ok().map(|n| n & 0xff);
                c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57")
                    || matches!(sqlite, Some(5 | 6))
            }),
            _ => false,
        }
    }
}

pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| StoreError { context, source })
    }
}

/// Waiting out a database outage for writes that must not be lost (the
/// recorder's, the audit trail's): after each failed attempt, [`again`]
/// says whether to try once more, having waited a little longer each time.
///
/// [`again`]: Patience::again
#[derive(Debug)]
pub struct Patience {
    started: std::time::Instant,
    wait: std::time::Duration,
    limit: std::time::Duration,
}

impl Patience {
    /// Longest the writers wait for an unreachable database before they
    /// give up on what they hold (and log it as lost).
    pub const WRITES: std::time::Duration = std::time::Duration::from_secs(300);

    pub fn new(limit: std::time::Duration) -> Self {
        Patience {
            started: std::time::Instant::now(),
            wait: std::time::Duration::from_millis(50),
            limit,
        }
    }

    /// After `e`: `true` (having waited) when the database is only
    /// unreachable and the limit has not passed.
    pub async fn again(&mut self, e: &StoreError, what: &str) -> bool {
        // A closed pool does not come back: Iris is stopping.
        let closed = matches!(e.source, sqlx::Error::PoolClosed);
        if closed || !e.is_unavailable() || self.started.elapsed() >= self.limit {
            return false;
        }
        if self.wait >= std::time::Duration::from_secs(1) {
            tracing::warn!(error = %e, "the database is not reachable; holding {what}");
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(std::time::Duration::from_secs(2));
        true
    }
}
