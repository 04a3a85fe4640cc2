//! Process-wide logging setup: human-readable lines on stderr, filtered by
//! `LB_LOG` (same syntax as `RUST_LOG`), `info` by default.

use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber. Safe to call more than once.
pub fn init() {
    let filter = EnvFilter::try_from_env("LB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
