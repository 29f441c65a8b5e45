//! Recording the audit trail off the request path: callers hand events to
//! an unbounded channel; one writer task appends them in batches (each batch
//! one transaction extending the hash chain, see `iris_storage::audit`).

use iris_storage::{AuditRow, Store};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::principal::Principal;

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Kept as an address; written as text only when an event is recorded.
    pub ip: Option<std::net::IpAddr>,
    /// Shared, so that every copy of a request's context is cheap.
    pub user_agent: Option<std::sync::Arc<str>>,
    pub request_id: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One thing that happened.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: Option<String>,
    pub actor_kind: Option<String>,
    pub action: String,
    pub resource: Option<String>,
    pub team: Option<String>,
    pub outcome: Outcome,
    pub severity: Severity,
    pub origin: Origin,
    pub details: Value,
}

impl AuditEvent {
    pub fn new(action: impl Into<String>, outcome: Outcome) -> Self {
        AuditEvent {
            actor: None,
            actor_kind: None,
            action: action.into(),
            resource: None,
            team: None,
            outcome,
            severity: match outcome {
                Outcome::Success => Severity::Info,
                Outcome::Failure | Outcome::Denied => Severity::Warning,
            },
            origin: Origin::default(),
            details: Value::Object(Default::default()),
        }
    }
    pub fn by(mut self, p: &Principal) -> Self {
        self.actor = Some(p.actor());
        self.actor_kind = Some(p.kind_name().to_owned());
        self
    }
    /// An actor that did not authenticate (a failed login names its login).
    pub fn claimed(mut self, who: impl Into<String>) -> Self {
        self.actor = Some(who.into());
        self.actor_kind = Some("unauthenticated".into());
        self
    }
    pub fn resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }
    pub fn team(mut self, t: Option<String>) -> Self {
        self.team = t;
        self
    }
    pub fn from(mut self, o: &Origin) -> Self {
        self.origin = o.clone();
        self
    }
    pub fn details(mut self, d: Value) -> Self {
        self.details = d;
        self
    }
    pub fn severity(mut self, s: Severity) -> Self {
        self.severity = s;
        self
    }

    fn into_row(self, ts: i64) -> AuditRow {
        AuditRow {
            seq: 0,
            id: format!("aud_{}", ulid::Ulid::new()),
            ts,
            actor: self.actor,
            actor_kind: self.actor_kind,
            action: self.action,
            resource: self.resource,
            team: self.team,
            result: match self.outcome {
                Outcome::Success => "success",
                Outcome::Failure => "failure",
                Outcome::Denied => "denied",
            }
            .into(),
            severity: match self.severity {
                Severity::Info => "info",
                Severity::Warning => "warning",
                Severity::Critical => "critical",
            }
            .into(),
            ip: self.origin.ip.map(|i| i.to_string()),
            user_agent: self.origin.user_agent.as_deref().map(str::to_owned),
            request_id: self.origin.request_id.as_deref().map(str::to_owned),
            details: self.details.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

enum Cmd {
    Record(Box<AuditEvent>, i64),
    Flush(oneshot::Sender<()>),
}

/// The handle events are recorded through; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::UnboundedSender<Cmd>>,
}

/// Records gathered into one transaction at most.
const BATCH: usize = 4096;

impl Auditor {
    /// Start the writer (needs a Tokio runtime). `enabled: false` records
    /// nothing. After each batch the chain's ends go to `witness`.
    pub fn start(store: Store, enabled: bool, witness: Option<std::path::PathBuf>) -> Self {
        if !enabled {
            return Auditor { tx: None };
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        tokio::spawn(async move {
            let mut rows = Vec::new();
            let mut waiters = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                while let Some(cmd) = next.take() {
                    match cmd {
                        Cmd::Record(e, ts) => rows.push(e.into_row(ts)),
                        Cmd::Flush(w) => waiters.push(w),
                    }
                    if rows.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                let mut patience = iris_storage::Patience::new(iris_storage::Patience::WRITES);
                let written = loop {
                    match store.append_audit(&mut rows).await {
                        Err(e) if patience.again(&e, "audit records").await => {}
                        other => break other,
                    }
                };
                if let Err(e) = written {
                    // Losing audit records silently would defeat their point.
                    tracing::error!(error = %e, lost = rows.len(), "cannot write audit records");
                } else if let Some(path) = &witness
                    && !rows.is_empty()
                {
                    crate::witness::write(&store, path).await;
                }
                rows.clear();
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        Auditor { tx: Some(tx) }
    }

    pub fn record(&self, event: AuditEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Record(Box::new(event), now_ms()));
        }
    }

    /// Wait until everything recorded so far is in the database.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (w, done) = oneshot::channel();
            if tx.send(Cmd::Flush(w)).is_ok() {
                let _ = done.await;
            }
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
