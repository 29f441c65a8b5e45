//! The deliverer: one task that sends due deliveries, each attempt in its
//! own task (a slow receiver holds one slot, never the others), and
//! records every attempt. A delivery is claimed before it is tried (its
//! next attempt moved past the attempt's time limit), so one that was being
//! tried when Iris died is tried again after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iris_storage::{AttemptOutcome, AttemptRow, DeliveryRow, Store};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use tokio::sync::{Notify, Semaphore};

use crate::guard::{AllowHosts, GuardedResolver, redirect_policy};
use crate::sign;

/// How deliveries are sent.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Hosts that may resolve to internal addresses (see [`crate::guard`]).
    pub allow_hosts: Vec<String>,
    pub connect_timeout: Duration,
    /// Limit of one attempt, from connecting to the end of the response.
    pub timeout: Duration,
    /// Bytes of a response read at most (the rest is dropped).
    pub max_response_bytes: usize,
    /// Wait before the second attempt; doubled for each one after, up to
    /// `retry_max`, with jitter (half to all of it).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts per delivery before it is `failed`.
    pub max_attempts: i64,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Signs deliveries that have no secret of their own.
    pub signing_secret: String,
}

/// Headers a caller may not set on a callback: they are Iris's or HTTP's.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
    "x-iris-signature",
    "x-iris-delivery",
    "x-iris-event",
];

/// Check a callback's extra headers: valid names and values, none
/// reserved. The error names the header.
pub fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > 32 {
        return Err("at most 32 headers".into());
    }
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("`{k}` is not a valid header name"))?;
        if RESERVED.contains(&name.as_str()) {
            return Err(format!("`{k}` is set by Iris and may not be given"));
        }
        HeaderValue::from_str(v)
            .map_err(|_| format!("the value of `{k}` is not a valid header value"))?;
    }
    Ok(())
}

/// Methods a delivery may use.
pub const METHODS: &[&str] = &["POST", "PUT", "PATCH"];

struct Inner {
    store: Store,
    client: reqwest::Client,
    options: DeliveryOptions,
    wake: Notify,
    slots: Arc<Semaphore>,
}

/// Handle to the deliverer; cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

impl Deliverer {
    /// Build the HTTP client and start sending what is due (including what
    /// a previous run left pending).
    pub fn start(store: Store, options: DeliveryOptions) -> Result<Deliverer, String> {
        let allow = Arc::new(AllowHosts::new(&options.allow_hosts));
        let client = reqwest::Client::builder()
            // A proxy would connect for us, past the resolver's check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: allow.clone(),
            }))
            .redirect(redirect_policy(allow))
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .build()
            .map_err(|e| format!("building the webhook client: {e}"))?;
        let inner = Arc::new(Inner {
            store,
            client,
            slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
            options,
            wake: Notify::new(),
        });
        tokio::spawn(run(inner.clone()));
        Ok(Deliverer { inner })
    }

    /// Something was written: look for due deliveries now.
    pub fn poke(&self) {
        self.inner.wake.notify_one();
    }

    pub fn options(&self) -> &DeliveryOptions {
        &self.inner.options
    }
}

async fn run(inner: Arc<Inner>) {
    loop {
        let free = inner.slots.available_permits();
        if free > 0 && send_due(&inner, free).await > 0 {
            // More may be due.
            continue;
        }
        let now = now_ms();
        let wait = match inner.store.next_delivery_due().await {
            // Due now yet not sent (no free slot, or taken elsewhere):
            // look again soon or when something changes, without spinning.
            Ok(Some(at)) => Duration::from_millis((at - now).clamp(50, 5_000) as u64),
            _ => Duration::from_secs(5),
        };
        let _ = tokio::time::timeout(wait, inner.wake.notified()).await;
    }
}

/// Start attempts of what is due, in free slots; returns how many started.
async fn send_due(inner: &Arc<Inner>, free: usize) -> usize {
    let now = now_ms();
    let due = match inner.store.due_deliveries(now, free as i64).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "reading due webhook deliveries");
            return 0;
        }
    };
    let mut started = 0;
    let lease = (inner.options.timeout + inner.options.connect_timeout).as_millis() as i64 + 5_000;
    for d in due {
        let Ok(permit) = inner.slots.clone().try_acquire_owned() else {
            break;
        };
        match inner.store.claim_delivery(&d.id, now, now + lease).await {
            Ok(true) => {
                started += 1;
                let inner = inner.clone();
                tokio::spawn(async move {
                    attempt(&inner, d).await;
                    drop(permit);
                    inner.wake.notify_one();
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a webhook delivery"),
        }
    }
    started
}

/// Why an attempt failed, and whether trying again could help.
struct Failure {
    error: String,
    status: Option<u16>,
    final_: bool,
}

async fn attempt(inner: &Inner, d: DeliveryRow) {
    let n = d.attempts + 1;
    let at = now_ms();
    let started = Instant::now();
    let result = match secret_for(inner, &d).await {
        Ok(secret) => send(inner, &d, &secret).await,
        Err(f) => Err(f),
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    let (status, next, error, code) = match result {
        Ok(code) => ("delivered", at, None, Some(code)),
        Err(f) => {
            let out_of_attempts = f.final_ || n >= d.max_attempts;
            let next = at + backoff(&inner.options, n).as_millis() as i64;
            (
                if out_of_attempts { "failed" } else { "pending" },
                next,
                Some(f.error),
                f.status,
            )
        }
    };
    match status {
        "delivered" => {
            tracing::info!(delivery = %d.id, url = %d.url, attempt = n, "webhook delivered")
        }
        _ => {
            tracing::warn!(delivery = %d.id, url = %d.url, attempt = n, status, error = ?error, "webhook attempt failed")
        }
    }
    let outcome = AttemptOutcome {
        attempt: AttemptRow {
            n,
            at,
            duration_ms,
            response_status: code.map(i64::from),
            error,
        },
        status,
        next_attempt_at: next,
    };
    if let Err(e) = inner.store.record_attempt(&d.id, &outcome).await {
        tracing::warn!(delivery = %d.id, error = %e, "recording a webhook attempt");
    }
}

/// The secret that signs `d`: its webhook's, its job callback's, or the server's.
async fn secret_for(inner: &Inner, d: &DeliveryRow) -> Result<String, Failure> {
    let fail = |error: String| Failure {
        error,
        status: None,
        final_: true,
    };
    if let Some(id) = &d.webhook_id {
        return match inner.store.webhook(id).await {
            Ok(Some(w)) if w.active => Ok(w.secret),
            Ok(Some(_)) => Err(fail(format!("webhook `{id}` is inactive"))),
            Ok(None) => Err(fail(format!("webhook `{id}` was deleted"))),
            Err(e) => Err(Failure {
                error: e.to_string(),
                status: None,
                final_: false,
            }),
        };
    }
    if let Some(job) = &d.job_id {
        match inner.store.job(job).await {
            Ok(Some(j)) => {
                if let Some(secret) = j.job.callback.and_then(|c| c.secret) {
                    return Ok(secret);
                }
            }
            // Pruned: its secret went with it.
            Ok(None) => {}
            // Signing with the wrong secret would fail the receiver's check.
            Err(e) => {
                return Err(Failure {
                    error: e.to_string(),
                    status: None,
                    final_: false,
                });
            }
        }
    }
    Ok(inner.options.signing_secret.clone())
}

async fn send(inner: &Inner, d: &DeliveryRow, secret: &str) -> Result<u16, Failure> {
    let retry = |error: String| Failure {
        error,
        status: None,
        final_: false,
    };
    let method = reqwest::Method::from_bytes(d.method.as_bytes()).map_err(|e| Failure {
        error: format!("bad method `{}`: {e}", d.method),
        status: None,
        final_: true,
    })?;
    let mut headers = HeaderMap::new();
    for (k, v) in &d.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    let t = now_ms() / 1000;
    let ours = [
        (CONTENT_TYPE.as_str(), "application/json".to_owned()),
        (
            USER_AGENT.as_str(),
            concat!("Iris-Webhooks/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        ("x-iris-event", d.event.clone()),
        ("x-iris-delivery", d.id.clone()),
        (
            "x-iris-signature",
            sign::signature(secret, t, d.body.as_bytes()),
        ),
    ];
    for (k, v) in ours {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            headers.insert(k, v);
        }
    }
    let mut resp = inner
        .client
        .request(method, &d.url)
        .headers(headers)
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| retry(describe(&e)))?;
    let status = resp.status();
    // Read a bounded part of the answer, so the connection can be reused
    // and a huge or endless body costs nothing.
    let mut read = 0usize;
    while read <= inner.options.max_response_bytes {
        match resp.chunk().await {
            Ok(Some(c)) => read += c.len(),
            Ok(None) => break,
            Err(_) => break,
        }
    }
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(Failure {
            error: format!("the receiver answered {status}"),
            status: Some(status.as_u16()),
            final_: false,
        })
    }
}

/// An error with its causes (reqwest's own message hides the resolver's).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The wait after attempt `n` failed: `retry_base * 2^(n-1)`, at most
/// `retry_max`, then a random half to all of it (jitter spreads retries of
/// many deliveries that failed together).
pub fn backoff(o: &DeliveryOptions, n: i64) -> Duration {
    let exp = o
        .retry_base
        .saturating_mul(1u32 << (n.clamp(1, 20) - 1) as u32)
        .min(o.retry_max);
    let mut b = [0u8; 4];
    let r = getrandom::fill(&mut b)
        .map(|_| u32::from_le_bytes(b))
        .unwrap_or(0);
    let half = exp / 2;
    half + half.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

/// The current time in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DeliveryOptions {
        DeliveryOptions {
            allow_hosts: vec![],
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_response_bytes: 1024,
            retry_base: Duration::from_millis(1000),
            retry_max: Duration::from_millis(30_000),
            max_attempts: 5,
            concurrency: 4,
            signing_secret: "s".into(),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let o = opts();
        for (n, full) in [(1, 1000), (2, 2000), (3, 4000), (10, 30_000), (60, 30_000)] {
            let b = backoff(&o, n).as_millis() as u64;
            assert!((full / 2..=full).contains(&b), "attempt {n}: {b}");
        }
    }

    #[test]
    fn reserved_and_bad_headers_are_refused() {
        let h = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(check_headers(&h("Authorization", "Bearer x")).is_ok());
        assert!(
            check_headers(&h("X-Iris-Signature", "x"))
                .unwrap_err()
                .contains("set by Iris")
        );
        assert!(check_headers(&h("Host", "x")).is_err());
        assert!(
            check_headers(&h("bad header", "x"))
                .unwrap_err()
                .contains("not a valid header name")
        );
        assert!(check_headers(&h("X-A", "line\nbreak")).is_err());
    }
}
