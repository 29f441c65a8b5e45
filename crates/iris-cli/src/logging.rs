//! Logs go to stderr (JSON with `IRIS_LOG_FORMAT=json`) and into the ring
//! that `get_logs` reads.

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// `default` is the filter used when `IRIS_LOG` is not set.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_env("IRIS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("IRIS_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry =
        tracing_subscriber::registry().with(iris_core::logs::RingLayer::new(Level::DEBUG));
    if json {
        let _ = registry.with(fmt.json().with_filter(filter)).try_init();
    } else {
        let _ = registry.with(fmt.with_filter(filter)).try_init();
    }
}
