//! Which backends get active health checks: the Service annotations
//! `lb.example.com/health-check` (`tcp` or `http:/path`) and
//! `lb.example.com/health-check-interval`, read at compile time. The
//! checker that probes them is [`crate::health`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lb_http::snapshot::HealthCheck;

use crate::diag::Diagnostic;
use crate::model::Object;
use crate::settings::parse_duration;
use crate::store::Store;

/// Service annotation turning active checks on: `tcp` or `http:<path>`.
pub const HEALTH_CHECK_ANNOTATION: &str = "lb.example.com/health-check";
/// Service annotation setting the probe interval (default 5s, at least 100ms).
pub const HEALTH_INTERVAL_ANNOTATION: &str = "lb.example.com/health-check-interval";
/// Default time between probes of one endpoint.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The health checks the Services in `services` ask for, by (namespace, name).
pub fn checks(
    store: &Store,
    services: &BTreeSet<(String, String)>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<(String, String), HealthCheck> {
    let mut out = BTreeMap::new();
    for (ns, name) in services {
        let Some(obj @ Object::Service(svc)) = store.find("Service", Some(ns), name) else {
            continue;
        };
        let Some(ann) = svc.value.metadata.annotations.as_ref() else {
            continue;
        };
        let Some(kind) = ann.get(HEALTH_CHECK_ANNOTATION) else {
            continue;
        };
        let field = |a: &str| format!("metadata.annotations[{a}]");
        let http_path = match kind.trim() {
            "tcp" => None,
            k => match k.strip_prefix("http:") {
                Some(p) if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) => {
                    Some(p.to_owned())
                }
                _ => {
                    diags.push(
                        obj.diagnostic(
                            Diagnostic::warning(format!(
                                "{kind:?} is not \"tcp\" or \"http:/path\"; no health check"
                            ))
                            .field(field(HEALTH_CHECK_ANNOTATION)),
                        ),
                    );
                    continue;
                }
            },
        };
        let interval = match ann.get(HEALTH_INTERVAL_ANNOTATION) {
            None => DEFAULT_INTERVAL,
            Some(v) => match parse_duration(v) {
                Ok(d) if d >= Duration::from_millis(100) => d,
                _ => {
                    diags.push(
                        obj.diagnostic(
                            Diagnostic::warning(format!(
                                "{v:?} is not a duration of at least 100ms; 5s is used"
                            ))
                            .field(field(HEALTH_INTERVAL_ANNOTATION)),
                        ),
                    );
                    DEFAULT_INTERVAL
                }
            },
        };
        let interval_ms = interval.as_millis() as u64;
        out.insert(
            (ns.clone(), name.clone()),
            HealthCheck {
                http_path,
                interval_ms,
                timeout_ms: interval_ms.clamp(100, 2000),
            },
        );
    }
    out
}
