//! Recent structured log records kept in a ring, for the `get_logs` operation.
//! The CLI installs [`RingLayer`] in its tracing subscriber.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    pub timestamp: i64,
    pub level: String,
    pub target: String,
    pub message: String,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}

pub struct LogRing {
    records: Mutex<VecDeque<LogRecord>>,
    capacity: Mutex<usize>,
}

/// The process-wide ring.
pub fn ring() -> Arc<LogRing> {
    static RING: OnceLock<Arc<LogRing>> = OnceLock::new();
    RING.get_or_init(|| {
        Arc::new(LogRing {
            records: Mutex::new(VecDeque::new()),
            capacity: Mutex::new(1000),
        })
    })
    .clone()
}

fn level_rank(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "trace" => 0,
        "debug" => 1,
        "info" => 2,
        "warn" => 3,
        _ => 4,
    }
}

impl LogRing {
    pub fn set_capacity(&self, n: usize) {
        if let Ok(mut c) = self.capacity.lock() {
            *c = n.max(1);
        }
    }

    fn push(&self, r: LogRecord) {
        let cap = self.capacity.lock().map(|c| *c).unwrap_or(1000);
        if let Ok(mut q) = self.records.lock() {
            while q.len() >= cap {
                q.pop_front();
            }
            q.push_back(r);
        }
    }

    /// Newest last: the newest `limit` records at `min_level` or above, of `team` if
    /// given, that `visible` accepts (it gets each record's team, if any).
    pub fn query(
        &self,
        min_level: &str,
        team: Option<&str>,
        visible: impl Fn(Option<&str>) -> bool,
        limit: usize,
    ) -> Vec<LogRecord> {
        let min = level_rank(min_level);
        let Ok(q) = self.records.lock() else {
            return Vec::new();
        };
        let mut out: Vec<LogRecord> = q
            .iter()
            .rev()
            .filter(|r| level_rank(&r.level) >= min)
            .filter(|r| {
                let of = r.fields.get("team").and_then(Value::as_str);
                team.is_none_or(|t| of == Some(t)) && visible(of)
            })
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// A tracing layer writing into the ring.
pub struct RingLayer {
    ring: Arc<LogRing>,
    min: Level,
}

impl RingLayer {
    pub fn new(min: Level) -> Self {
        RingLayer { ring: ring(), min }
    }
}

struct Fields<'a> {
    message: &'a mut String,
    fields: &'a mut Map<String, Value>,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.fields
                .insert(field.name().into(), format!("{value:?}").into());
        }
    }
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // Only Iris's own records, and not the access log (one per request):
        // either would flush the ring of what get_logs is for.
        if *meta.level() > self.min
            || !meta.target().starts_with("iris")
            || meta.target() == "iris::access"
        {
            return;
        }
        let mut message = String::new();
        let mut fields = Map::new();
        event.record(&mut Fields {
            message: &mut message,
            fields: &mut fields,
        });
        self.ring.push(LogRecord {
            timestamp: crate::clock::now_ms(),
            level: meta.level().to_string().to_lowercase(),
            target: meta.target().to_owned(),
            message,
            fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn records_are_kept_filtered_and_bounded() {
        let subscriber = tracing_subscriber::registry().with(RingLayer::new(Level::DEBUG));
        tracing::subscriber::with_default(subscriber, || {
            ring().set_capacity(3);
            tracing::debug!(team = "web", "one");
            tracing::info!(team = "api", "two");
            tracing::warn!(team = "web", n = 3, "three");
            tracing::error!("four");
        });
        let any = |_: Option<&str>| true;
        let all = ring().query("debug", None, any, 10);
        assert_eq!(
            all.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(),
            ["two", "three", "four"]
        );
        let web = ring().query("info", Some("web"), any, 10);
        assert_eq!(web.len(), 1);
        assert_eq!(web[0].fields["n"], 3);
        assert_eq!(ring().query("error", None, any, 10).len(), 1);
        // A caller limited to `api` sees that team's records only.
        let api_only = ring().query("debug", None, |t| t == Some("api"), 10);
        assert_eq!(api_only.len(), 1);
    }
}
