//! Publication: swap a compiled snapshot in, bump the generation, log every
//! diagnostic and expose status, diagnostics, the load's compile and
//! publish times and the event-to-traffic time of the changes it carries on
//! the admin API.

use std::time::Instant;

use crate::config::Config;
use crate::control_state::{ControlState, ControlView, ReloadResult};
use crate::pipeline::load_and_compile;
use crate::source::files::FileSource;
use lb_compile::compile::Compiled;
use lb_compile::diag::{Diagnostic, Severity};

/// Loads every source, compiles and publishes; records how long the load
/// and compile took. Returns the new generation.
pub fn load_and_publish(state: &ControlState, cfg: &Config, source: &mut FileSource) -> u64 {
    let start = Instant::now();
    let compiled = load_and_compile(cfg, source);
    state.set_compile_time(start.elapsed());
    publish(state, cfg, compiled)
}

/// Publishes `compiled` and returns the new generation.
pub fn publish(state: &ControlState, cfg: &Config, compiled: Compiled) -> u64 {
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
        status: status_view(compiled.status, &compiled.diagnostics),
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

/// The admin `/status` list: the compile's status entries, each with the
/// diagnostics about its object under `diagnostics`; an object that has
/// diagnostics but no status entry (an Ingress refused for an invalid
/// value, say) gets an entry of its own with `kind`, `metadata` and
/// `diagnostics` only. The entries written back to the API server are the
/// compile's own, without these.
fn status_view(mut status: Vec<serde_json::Value>, diags: &[Diagnostic]) -> Vec<serde_json::Value> {
    use std::collections::BTreeMap;
    type Key = (String, String, String);
    let mut by_object: BTreeMap<Key, Vec<serde_json::Value>> = BTreeMap::new();
    for d in diags {
        let (Some(kind), Some(name)) = (&d.kind, &d.name) else {
            continue;
        };
        let key = (
            kind.clone(),
            d.namespace.clone().unwrap_or_default(),
            name.clone(),
        );
        by_object.entry(key).or_default().push(serde_json::json!({
            "severity": d.severity,
            "field": d.field,
            "message": d.to_string(),
        }));
    }
    let key_of = |e: &serde_json::Value| -> Key {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        (
            text(&e["kind"]),
            text(&e["metadata"]["namespace"]),
            text(&e["metadata"]["name"]),
        )
    };
    for entry in &mut status {
        if let Some(list) = by_object.remove(&key_of(entry)) {
            entry["diagnostics"] = serde_json::Value::Array(list);
        }
    }
    for ((kind, namespace, name), list) in by_object {
        let mut metadata = serde_json::json!({ "name": name });
        if !namespace.is_empty() {
            metadata["namespace"] = serde_json::Value::String(namespace);
        }
        status.push(serde_json::json!({
            "kind": kind,
            "metadata": metadata,
            "diagnostics": list,
        }));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_join_their_objects_status_or_get_an_entry() {
        let status = vec![serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"namespace": "a", "name": "served"},
            "status": {"loadBalancer": {}},
        })];
        let diags = [
            Diagnostic::warning("one rule ignored")
                .object("Ingress", Some("a"), "served")
                .field("spec.rules[1]"),
            Diagnostic::error("bad host")
                .object("Ingress", Some("a"), "refused")
                .field("spec.rules[0].host"),
            Diagnostic::error("no object named"),
        ];
        let view = status_view(status, &diags);
        assert_eq!(view.len(), 2);
        assert_eq!(view[0]["status"], serde_json::json!({"loadBalancer": {}}));
        assert_eq!(view[0]["diagnostics"][0]["severity"], "warning");
        assert_eq!(view[0]["diagnostics"][0]["field"], "spec.rules[1]");
        assert_eq!(view[1]["kind"], "Ingress");
        assert_eq!(
            view[1]["metadata"],
            serde_json::json!({"namespace": "a", "name": "refused"})
        );
        assert!(view[1].get("status").is_none());
        assert_eq!(view[1]["diagnostics"][0]["severity"], "error");
        assert!(
            view[1]["diagnostics"][0]["message"]
                .as_str()
                .unwrap()
                .contains("bad host")
        );
    }
}
