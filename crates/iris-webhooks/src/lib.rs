//! Outbound webhooks: deliveries written by the core (a job's callback, a
//! subscription's event) are sent by one [`Deliverer`], signed
//! ([`sign`]), to destinations checked against server-side request
//! forgery ([`guard`]), retried with backoff, every attempt recorded.

pub mod deliver;
pub mod guard;
pub mod sign;

pub use deliver::{Deliverer, DeliveryOptions};
pub use guard::AllowHosts;

/// The current time in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
