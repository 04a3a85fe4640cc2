//! Status write-back: after each publish, the status entries of the compile
//! (`Compiled.status`) go to the `/status` subresource of their objects in
//! the Kubernetes API server, by server-side apply (field manager `lb`,
//! forced), but only when they differ from what lb last wrote and from what
//! the object already carries as last seen by the watcher (so a restart does
//! not rewrite unchanged status). Objects the API server does not hold
//! (file-only objects) get no write. When a Service or Ingress lb wrote
//! stops being lb's (another class, another type), its
//! `status.loadBalancer.ingress` is removed by merge patch, provided it is
//! still what lb wrote.
//!
//! The writer runs as a task on the kube source's own thread and runtime and
//! takes only the latest status list from a `watch` channel, so the reload
//! loop never waits for it. A failed write is logged, counted and retried
//! with a short capped backoff or on the next publish, whichever is first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use tokio::sync::watch;

use crate::source::kube::{KINDS, KindSpec, KubeSource};

/// The status entries of one publish.
pub type StatusList = Arc<Vec<Value>>;

/// A leadership check: status is written only while it answers true.
pub type LeaderCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WriteCounters {
    writes: AtomicU64,
    errors: AtomicU64,
}

impl WriteCounters {
    /// Appends `lb_status_writes_total` and `lb_status_write_errors_total`.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP lb_status_writes_total Status subresource writes to the Kubernetes API server that succeeded.\n# TYPE lb_status_writes_total counter\nlb_status_writes_total {}",
            self.writes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lb_status_write_errors_total Status subresource writes to the Kubernetes API server that failed (retried).\n# TYPE lb_status_write_errors_total counter\nlb_status_write_errors_total {}",
            self.errors.load(Ordering::Relaxed)
        );
    }
}

/// The leadership hook: unset means this instance always writes.
static LEADER: OnceLock<LeaderCheck> = OnceLock::new();

/// Installs the leadership check (for a leader elector); the first one wins.
pub fn set_leader_check(check: LeaderCheck) {
    let _ = LEADER.set(check);
}

/// Whether this instance writes status now: true unless a leader check is
/// installed and says this instance is not the leader.
pub fn should_write() -> bool {
    LEADER.get().is_none_or(|f| f())
}

/// Object identity: (kind, namespace, name).
type Key = (String, Option<String>, String);

fn key_of(entry: &Value) -> Option<Key> {
    let kind = entry["kind"].as_str()?.to_owned();
    let md = &entry["metadata"];
    let name = md["name"].as_str()?.to_owned();
    let ns = md["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Some((kind, ns, name))
}

/// Whether every field of `want` is in `have` with the same value (objects
/// may carry more keys, e.g. other field managers' or server defaults;
/// arrays match element by element).
pub fn json_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| json_subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| json_subset(a, b))
        }
        _ => want == have,
    }
}

/// The shortest wait before retrying failed writes.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest wait before retrying failed writes.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often a follower checks whether it became the leader.
const LEADER_POLL: Duration = Duration::from_secs(1);

/// Runs the writer until the sender is dropped: on each new status list (or
/// after a retry wait), writes every entry that differs.
pub(crate) async fn run(
    client: kube::Client,
    source: KubeSource,
    mut rx: watch::Receiver<StatusList>,
) {
    let mut written: BTreeMap<Key, Value> = BTreeMap::new();
    let mut retry = RETRY_MIN;
    // Why the next pass may not wait for a new publish.
    let mut again: Option<Duration> = None;
    loop {
        match again {
            Some(wait) => tokio::select! {
                r = rx.changed() => if r.is_err() { return; },
                () = tokio::time::sleep(wait) => {}
            },
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
        let list = Arc::clone(&rx.borrow_and_update());
        if !should_write() {
            // Another instance writes; what it writes is unknown here, so
            // start afresh (from the watcher's view) once leading.
            written.clear();
            again = Some(LEADER_POLL);
            continue;
        }
        if write_all(&client, &source, &list, &mut written).await {
            again = Some(retry);
            retry = (retry * 2).min(RETRY_MAX);
        } else {
            again = None;
            retry = RETRY_MIN;
        }
    }
}

/// The API of one kind, in `namespace` or cluster-wide.
fn object_api(
    client: &kube::Client,
    spec: &KindSpec,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &spec.resource()),
        None => Api::all_with(client.clone(), &spec.resource()),
    }
}

/// Writes the entries of `list` that differ; true when any write failed.
async fn write_all(
    client: &kube::Client,
    source: &KubeSource,
    list: &[Value],
    written: &mut BTreeMap<Key, Value>,
) -> bool {
    let counters = &source.status.status_writes;
    let mut failed = false;
    let mut present = std::collections::BTreeSet::new();
    for entry in list {
        let (Some(key), Some(status)) = (key_of(entry), entry.get("status")) else {
            continue;
        };
        present.insert(key.clone());
        if written.get(&key) == Some(status) {
            continue;
        }
        // Only objects the API server holds; skip what they already carry.
        let Some(current) = source.status_of(&key.0, key.1.as_deref(), &key.2) else {
            continue;
        };
        if current.as_ref().is_some_and(|c| json_subset(status, c)) {
            written.insert(key, status.clone());
            continue;
        }
        let Some(spec) = KINDS.iter().find(|k| k.kind == key.0) else {
            continue;
        };
        let api = object_api(client, spec, key.1.as_deref());
        let body = serde_json::json!({
            "apiVersion": spec.api_version(),
            "kind": spec.kind,
            "metadata": {"name": key.2, "namespace": key.1},
            "status": status,
        });
        let params = PatchParams::apply("lb").force();
        match api
            .patch_status(&key.2, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                counters.writes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(kind = key.0, name = key.2, "status written");
                written.insert(key, status.clone());
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                failed = true;
                tracing::warn!(
                    kind = key.0,
                    namespace = key.1.as_deref().unwrap_or(""),
                    name = key.2,
                    "cannot write status (retrying): {e}"
                );
            }
        }
    }
    // Objects that stopped being lb's: their load balancer status goes,
    // when it is still what lb wrote (another controller's is left alone).
    written.retain(|k, _| present.contains(k) || matches!(k.0.as_str(), "Service" | "Ingress"));
    let gone: Vec<(Key, Value)> = written
        .iter()
        .filter(|(k, _)| !present.contains(*k) && (k.0 == "Service" || k.0 == "Ingress"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, was) in gone {
        let current = source.status_of(&key.0, key.1.as_deref(), &key.2);
        let Some(Some(current)) = current else {
            written.remove(&key);
            continue;
        };
        if !json_subset(&was, &current) {
            written.remove(&key);
            continue;
        }
        let Some(spec) = KINDS.iter().find(|k| k.kind == key.0) else {
            continue;
        };
        let api = object_api(client, spec, key.1.as_deref());
        let body = serde_json::json!({"status": {"loadBalancer": {"ingress": null}}});
        match api
            .patch_status(&key.2, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                counters.writes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    kind = key.0,
                    name = key.2,
                    "status removed: no longer served by lb"
                );
                written.remove(&key);
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                failed = true;
                tracing::warn!(
                    kind = key.0,
                    name = key.2,
                    "cannot remove status (retrying): {e}"
                );
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_allows_extra_keys_not_other_values() {
        let want = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
        let have =
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}, "x": 1});
        assert!(json_subset(&want, &have));
        let other = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.5"}]}});
        assert!(!json_subset(&want, &other));
        let longer = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}});
        assert!(!json_subset(&want, &longer));
    }

    #[test]
    fn writes_by_default() {
        assert!(should_write());
    }

    #[test]
    fn metrics_are_named() {
        let c = WriteCounters::default();
        c.writes.fetch_add(2, Ordering::Relaxed);
        let mut out = String::new();
        c.write_metrics(&mut out);
        assert!(out.contains("lb_status_writes_total 2"), "{out}");
        assert!(out.contains("lb_status_write_errors_total 0"), "{out}");
    }
}
