//! Status write-back: after each publish, the status entries of the compile
//! (`Compiled.status`) go to the `/status` subresource of their objects in
//! the Kubernetes API server, by server-side apply (field manager `lb`),
//! but only when they differ from what the object already carries as last
//! seen by the watcher (so a restart does not rewrite unchanged status).
//! Objects the API server does not hold (file-only objects) get no write.
//!
//! Gateway API routes share `status.parents` with other controllers (one
//! entry per controller and parent), and the list is atomic for
//! server-side apply: lb writes the entries of other controllers back as it
//! read them, with the object's `resourceVersion` as a precondition, so a
//! concurrent writer's entry is never lost (409 Conflict: read again, retry).
//!
//! When a Service or Ingress lb wrote stops being lb's (another class,
//! another type), its `status.loadBalancer.ingress` is removed by merge
//! patch, provided it is still what lb wrote; a route that no longer has a
//! parent of lb's loses lb's entries (and keeps the others).
//!
//! The writer runs as a task on the kube source's own thread and runtime and
//! takes only the latest status list from a `watch` channel, so the reload
//! loop never waits for it; it also looks again when the watcher sees an
//! object's status change (another writer may have removed lb's entries).
//! Every request has a deadline. A failed write is logged, counted and
//! retried with a short capped backoff or on the next publish, whichever is
//! first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::source::kube::KubeSource;

/// The status entries of one publish.
pub type StatusList = Arc<Vec<Value>>;

/// A leadership check: status is written only while it answers true.
pub type LeaderCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// lb's field manager for status writes.
pub const FIELD_MANAGER: &str = "lb";

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

/// Whether this instance may write status: set once, by the leader
/// election; unset, this instance always writes.
#[derive(Default)]
pub struct LeaderHook(OnceLock<LeaderCheck>);

impl LeaderHook {
    /// Installs the leadership check; the first one wins.
    pub fn set(&self, check: LeaderCheck) {
        let _ = self.0.set(check);
    }

    /// Whether this instance writes status now: true unless a check is
    /// installed and says this instance is not the leader.
    pub fn allows(&self) -> bool {
        self.0.get().is_none_or(|f| f())
    }
}

impl std::fmt::Debug for LeaderHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaderHook")
            .field(&self.0.get().map(|_| "set"))
            .finish()
    }
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

/// Whether `kind` is a Gateway API route (its `status.parents` is shared).
fn is_route(kind: &str) -> bool {
    matches!(
        kind,
        "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "TCPRoute" | "UDPRoute"
    )
}

/// The route status to write: the current `status.parents` entries of
/// other controllers, in their order, then lb's entries. `None` when the
/// current status has no other controller's entry (lb's status is written
/// as it is).
pub fn merge_parents(ours: &Value, current: Option<&Value>, controller: &str) -> Option<Value> {
    let others: Vec<&Value> = current?
        .get("parents")?
        .as_array()?
        .iter()
        .filter(|p| p.get("controllerName").and_then(Value::as_str) != Some(controller))
        .collect();
    if others.is_empty() {
        return None;
    }
    let mut parents: Vec<Value> = others.into_iter().cloned().collect();
    if let Some(mine) = ours.get("parents").and_then(Value::as_array) {
        parents.extend(mine.iter().cloned());
    }
    let mut merged = ours.clone();
    merged
        .as_object_mut()?
        .insert("parents".into(), Value::Array(parents));
    Some(merged)
}

/// Whether the current route status has an entry of `controller`.
fn has_our_parents(current: Option<&Value>, controller: &str) -> bool {
    current
        .and_then(|c| c.get("parents"))
        .and_then(Value::as_array)
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p.get("controllerName").and_then(Value::as_str) == Some(controller))
        })
}

/// The shortest wait before retrying failed writes.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest wait before retrying failed writes: an API server that has
/// just started refuses requests until its caches are filled, and a status
/// write should not then wait half a minute.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a follower checks whether it became the leader.
const LEADER_POLL: Duration = Duration::from_secs(1);

/// The writer's settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The deadline of each request.
    pub timeout: Duration,
    /// lb's Gateway API `controllerName` (its entries in route status).
    pub controller: String,
}

/// Runs the writer until the sender is dropped: on each new status list,
/// each status change the watcher sees, or after a retry wait, writes every
/// entry that differs.
pub(crate) async fn run(
    client: kube::Client,
    source: KubeSource,
    mut rx: watch::Receiver<StatusList>,
    cfg: WriterConfig,
) {
    let writer = Writer {
        client,
        source,
        cfg,
    };
    let mut written: BTreeMap<Key, Written> = BTreeMap::new();
    let mut retry = RETRY_MIN;
    let status_seen = writer.source.status_seen();
    // Why the next pass may not wait for a new publish.
    let mut again: Option<Duration> = None;
    let mut first = true;
    loop {
        let wait = again.unwrap_or(Duration::MAX);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return; },
            () = status_seen.notified(), if !first => {}
            () = tokio::time::sleep(wait), if again.is_some() => {}
        }
        first = false;
        let list = Arc::clone(&rx.borrow_and_update());
        if !writer.source.leader.allows() {
            // Another instance writes; what it writes is unknown here, so
            // start afresh (from the watcher's view) once leading.
            written.clear();
            again = Some(LEADER_POLL);
            continue;
        }
        if writer.write_all(&list, &mut written).await {
            again = Some(retry);
            retry = (retry * 2).min(RETRY_MAX);
        } else {
            again = None;
            retry = RETRY_MIN;
        }
    }
}

/// What lb wrote to an object (or found there already).
struct Written {
    status: Value,
    /// The object's resourceVersion after lb's write, when lb wrote.
    version: Option<u64>,
}

/// A resourceVersion as a number (etcd's revision; opaque to clients, but
/// every API server backed by etcd numbers them so).
fn resource_version(rv: &Option<String>) -> Option<u64> {
    rv.as_deref()?.parse().ok()
}

struct Writer {
    client: kube::Client,
    source: KubeSource,
    cfg: WriterConfig,
}

/// How one write ended.
enum Outcome {
    /// Written; the object's resourceVersion after the write.
    Written(Option<u64>),
    /// Another writer changed the object since lb read it.
    Conflict,
    Failed(String),
}

impl Writer {
    /// The API of `kind` at the version lb reads it, in `namespace` or cluster-wide.
    fn api(&self, kind: &str, namespace: Option<&str>) -> Option<Api<DynamicObject>> {
        let resource = self.source.resource_of(kind)?;
        Some(match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// The object as last seen by the watcher, or read now.
    async fn current(&self, key: &Key, fresh: bool) -> Option<Value> {
        if !fresh {
            return self.source.object(&key.0, key.1.as_deref(), &key.2);
        }
        let api = self.api(&key.0, key.1.as_deref())?;
        let got = tokio::time::timeout(self.cfg.timeout, api.get_status(&key.2)).await;
        match got {
            Ok(Ok(obj)) => serde_json::to_value(obj).ok(),
            _ => self.source.object(&key.0, key.1.as_deref(), &key.2),
        }
    }

    /// Applies `status` to the object's `/status` (field manager `lb`,
    /// forced); `resource_version` makes it conditional.
    async fn apply(&self, key: &Key, status: &Value, precondition: Option<&str>) -> Outcome {
        let (Some(api), Some(resource)) = (
            self.api(&key.0, key.1.as_deref()),
            self.source.resource_of(&key.0),
        ) else {
            return Outcome::Failed("kind not served".into());
        };
        let mut metadata = json!({"name": key.2, "namespace": key.1});
        if let Some(rv) = precondition {
            metadata["resourceVersion"] = rv.into();
        }
        let body = json!({
            "apiVersion": resource.api_version,
            "kind": key.0,
            "metadata": metadata,
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        let call = api.patch_status(&key.2, &params, &patch);
        match tokio::time::timeout(self.cfg.timeout, call).await {
            Ok(Ok(obj)) => Outcome::Written(resource_version(&obj.metadata.resource_version)),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Outcome::Conflict,
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Failed("no answer within the request timeout".into()),
        }
    }

    /// Writes lb's `status` for `key` unless the object carries it already;
    /// routes keep other controllers' entries. `Ok(Some(rv))`: written.
    async fn write_one(&self, key: &Key, ours: &Value) -> Result<Option<Option<u64>>, String> {
        for fresh in [false, true] {
            let Some(object) = self.current(key, fresh).await else {
                // Not held by the API server (a file object), or gone.
                return Ok(None);
            };
            // The watcher saw the Service change type since the compile (the
            // API server would refuse load balancer status on it): the next
            // publish knows better.
            if key.0 == "Service" && object["spec"]["type"] != "LoadBalancer" {
                return Ok(None);
            }
            let current = object.get("status");
            let merged = if is_route(&key.0) {
                merge_parents(ours, current, &self.cfg.controller)
            } else {
                None
            };
            let want = merged.as_ref().unwrap_or(ours);
            if current.is_some_and(|c| json_subset(want, c)) {
                return Ok(None);
            }
            // Other controllers' entries are copied: only onto the version read.
            let rv = merged
                .as_ref()
                .and_then(|_| object["metadata"]["resourceVersion"].as_str());
            match self.apply(key, want, rv).await {
                Outcome::Written(rv) => return Ok(Some(rv)),
                Outcome::Conflict if !fresh => continue,
                Outcome::Conflict => return Err("conflict with another writer".into()),
                Outcome::Failed(e) => return Err(e),
            }
        }
        Err("conflict with another writer".into())
    }

    fn count<T>(&self, result: &Result<Option<T>, String>, key: &Key, what: &str) -> bool {
        let counters = &self.source.status.status_writes;
        match result {
            Ok(Some(_)) => {
                counters.writes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(kind = key.0, name = key.2, "status {what}");
                false
            }
            Ok(None) => false,
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    kind = key.0,
                    namespace = key.1.as_deref().unwrap_or(""),
                    name = key.2,
                    "cannot write status (retrying): {e}"
                );
                true
            }
        }
    }

    /// Writes the entries of `list` that differ; true when any write failed.
    async fn write_all(&self, list: &[Value], written: &mut BTreeMap<Key, Written>) -> bool {
        let mut failed = false;
        let mut present = BTreeSet::new();
        for entry in list {
            let (Some(key), Some(status)) = (key_of(entry), entry.get("status")) else {
                continue;
            };
            present.insert(key.clone());
            // Written (or found) by lb and nobody wrote the object since (the
            // watcher may not have seen lb's write yet): nothing to do.
            let seen = self
                .source
                .object(&key.0, key.1.as_deref(), &key.2)
                .and_then(|o| {
                    resource_version(&o["metadata"]["resourceVersion"].as_str().map(str::to_owned))
                });
            if let Some(w) = written.get(&key)
                && w.status == *status
                && seen.is_none_or(|s| w.version.is_some_and(|mine| s <= mine))
            {
                continue;
            }
            let result = self.write_one(&key, status).await;
            match &result {
                Ok(Some(version)) => {
                    written.insert(
                        key.clone(),
                        Written {
                            status: status.clone(),
                            version: *version,
                        },
                    );
                }
                Ok(None) => {
                    written.insert(
                        key.clone(),
                        Written {
                            status: status.clone(),
                            version: seen,
                        },
                    );
                }
                Err(_) => {}
            }
            failed |= self.count(&result, &key, "written");
        }
        // Objects that stopped being lb's.
        let gone: Vec<(Key, Value)> = written
            .iter()
            .filter(|(k, _)| !present.contains(*k))
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect();
        for (key, was) in gone {
            let result = if is_route(&key.0) {
                self.drop_route_entries(&key).await
            } else if key.0 == "Service" || key.0 == "Ingress" {
                self.drop_load_balancer(&key, &was).await
            } else {
                Ok(None)
            };
            if result.is_ok() {
                written.remove(&key);
            }
            failed |= self.count(&result, &key, "removed: no longer served by lb");
        }
        failed
    }

    /// A route with no parent of lb's any more: its entries of lb's go, the
    /// other controllers' stay.
    async fn drop_route_entries(&self, key: &Key) -> Result<Option<Option<u64>>, String> {
        let Some(object) = self.current(key, false).await else {
            return Ok(None);
        };
        if !has_our_parents(object.get("status"), &self.cfg.controller) {
            return Ok(None);
        }
        self.write_one(key, &json!({"parents": []})).await
    }

    /// A Service or Ingress that stopped being lb's loses the load balancer
    /// status lb wrote (another controller's is left alone).
    async fn drop_load_balancer(
        &self,
        key: &Key,
        was: &Value,
    ) -> Result<Option<Option<u64>>, String> {
        let current = self.source.status_of(&key.0, key.1.as_deref(), &key.2);
        let Some(Some(current)) = current else {
            return Ok(None);
        };
        if !json_subset(was, &current) {
            return Ok(None);
        }
        let Some(api) = self.api(&key.0, key.1.as_deref()) else {
            return Ok(None);
        };
        let body = json!({"status": {"loadBalancer": {"ingress": null}}});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
        let call = api.patch_status(&key.2, &params, &patch);
        match tokio::time::timeout(self.cfg.timeout, call).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    kind = key.0,
                    name = key.2,
                    "status removed: no longer served by lb"
                );
                Ok(Some(None))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within the request timeout".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn route_status_keeps_other_controllers_entries() {
        let theirs = json!({"parentRef": {"name": "other-gw"}, "controllerName": "other.example/ctl", "conditions": [{"type": "Accepted"}]});
        let old_mine = json!({"parentRef": {"name": "gw"}, "controllerName": "lb.example.com/gateway-controller", "conditions": []});
        let new_mine = json!({"parentRef": {"name": "gw"}, "controllerName": "lb.example.com/gateway-controller", "conditions": [{"type": "Accepted"}]});
        let current = json!({"parents": [old_mine, theirs]});
        let ours = json!({"parents": [new_mine]});
        let merged =
            merge_parents(&ours, Some(&current), "lb.example.com/gateway-controller").unwrap();
        assert_eq!(merged, json!({"parents": [theirs, new_mine]}));
        // Stable: merging again onto the written result changes nothing.
        assert!(json_subset(
            &merge_parents(&ours, Some(&merged), "lb.example.com/gateway-controller").unwrap(),
            &merged
        ));
        // Only lb's entries: nothing to merge.
        assert!(
            merge_parents(
                &ours,
                Some(&json!({"parents": [old_mine]})),
                "lb.example.com/gateway-controller"
            )
            .is_none()
        );
        assert!(merge_parents(&ours, None, "lb.example.com/gateway-controller").is_none());
        assert!(has_our_parents(
            Some(&current),
            "lb.example.com/gateway-controller"
        ));
        assert!(!has_our_parents(
            Some(&json!({"parents": [theirs]})),
            "lb.example.com/gateway-controller"
        ));
    }

    #[test]
    fn writes_unless_the_leader_check_says_no() {
        let hook = LeaderHook::default();
        assert!(hook.allows());
        hook.set(Arc::new(|| false));
        assert!(!hook.allows());
        hook.set(Arc::new(|| true));
        assert!(!hook.allows(), "the first check wins");
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
