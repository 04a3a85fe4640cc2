//! Publication: swap a compiled snapshot in, bump the generation, log every
//! diagnostic and expose status, diagnostics, the load's compile and
//! publish times and the event-to-traffic time of the changes it carries on
//! the admin API.

use std::time::Instant;

use crate::admin::{AdminState, ControlView, ReloadResult};
use crate::check::load_and_compile;
use crate::compile::Compiled;
use crate::config::Config;
use crate::diag::Severity;
use crate::source::files::FileSource;

/// Loads every source, compiles and publishes; records how long the load
/// and compile took. Returns the new generation.
pub fn load_and_publish(state: &AdminState, cfg: &Config, source: &mut FileSource) -> u64 {
    let start = Instant::now();
    let compiled = load_and_compile(cfg, source);
    state.set_compile_time(start.elapsed());
    publish(state, cfg, compiled)
}

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
        conflicts: compiled.summary.conflicts.clone(),
    };
    let swap = Instant::now();
    let generation = state.snapshot.publish(compiled.snapshot);
    state.set_publish_time(swap.elapsed());
    // Ends the event-to-traffic interval of the changes this load carries.
    state.snapshot_published();
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
