//! Outbound webhooks: deliveries written by the core (a job's callback, a
//! subscription's event) are sent by one [`Deliverer`], signed
//! ([`sign`]), to destinations checked against server-side request
//! forgery ([`guard`]), retried with backoff, every attempt recorded.

pub mod deliver;
pub mod guard;
pub mod sign;

pub use deliver::{Deliverer, DeliveryOptions};
pub use guard::AllowHosts;
