//! Logs go to stderr (JSON with `IRIS_LOG_FORMAT=json`) and into the ring
//! that `get_logs` reads.

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// `default` is the filter used when `IRIS_LOG` is not set. rmcp is held
/// to warnings unless `IRIS_LOG` says otherwise: it logs three lines at
/// `info` for every MCP request.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_env("IRIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},rmcp=warn")));
    let json = std::env::var("IRIS_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .with_target(false);
    let registry =
        tracing_subscriber::registry().with(iris_core::logs::RingLayer::new(Level::DEBUG));
    if json {
        let _ = registry.with(fmt.json().with_filter(filter)).try_init();
    } else {
        let _ = registry.with(fmt.with_filter(filter)).try_init();
    }
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
