//! Publication: swap a compiled snapshot in, bump the generation, log every
//! diagnostic and expose status and diagnostics on the admin API.

use crate::admin::{AdminState, ControlView, ReloadResult};
use crate::compile::Compiled;
use crate::config::Config;
use crate::diag::Severity;

/// Publishes `compiled` and returns the new generation.
pub fn publish(state: &AdminState, cfg: &Config, compiled: Compiled) -> u64 {
    let mut errors = 0usize;
    for d in &compiled.diagnostics {
        match d.severity {
            Severity::Error => {
                errors += 1;
                tracing::error!("{d}");
            }
            Severity::Warning => tracing::warn!("{d}"),
        }
    }
    let view = ControlView {
        config: serde_json::to_value(cfg).unwrap_or_default(),
        status: compiled.status,
        diagnostics: compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let generation = state.snapshot.publish(compiled.snapshot);
    state.set_view(view);
    state.count_reload(if errors == 0 {
        ReloadResult::Ok
    } else {
        ReloadResult::Partial
    });
    tracing::info!(
        generation,
        invalid = errors,
        "published snapshot: {}",
        compiled.summary.one_line()
    );
    generation
}
