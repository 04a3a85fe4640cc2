//! Objects from the Kubernetes API server.
//!
//! API discovery (every [`DISCOVERY_INTERVAL`]) tells which kinds the server
//! serves and at which version ([`discovery`]); each served kind gets a
//! watcher per namespace lb reads (or one for all namespaces), all on a
//! thread of their own with its own runtime so a long compile on the control
//! thread never stalls them ([`watch`]). A kind that is not served (the
//! Gateway API CRDs are not installed) is empty and holds nothing back; once
//! it is served it is watched, and when it is no longer served its objects
//! are dropped.
//!
//! The current objects are kept as [`RawObject`]s (origin
//! [`Origin::kubernetes`](lb_compile::raw::Origin::kubernetes)); each change
//! after the initial sync is sent as a change into the reload loop, where
//! bursts coalesce like file events.

mod backoff;
pub mod discovery;
mod health;
pub mod kinds;
pub mod status_writer;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::ApiResource;

use super::files::Change;
use crate::config::KubernetesSource;
pub use backoff::MAX_BACKOFF;
pub use health::KubeStatus;
use kinds::spec_of;
pub use kinds::{KindInfo, watched};
use lb_compile::raw::RawObject;

/// How often lb asks the API server which kinds it serves (a CRD installed
/// later is watched within about this long; this also probes the server
/// while it is unreachable).
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// How long the API server's events must be quiet before a reload: a write
/// arrives as whole objects (one event each), not in pieces as files do, so
/// this only gathers the events of one `kubectl apply` or controller pass.
pub const API_DEBOUNCE: Duration = Duration::from_millis(20);

/// Objects of one watch by (namespace, name).
type KindObjects = BTreeMap<(Option<String>, String), RawObject>;

/// What one watcher covers: a kind in one namespace, or in all of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchKey {
    /// The kind.
    pub kind: &'static str,
    /// The namespace; `None`: every namespace (or a cluster-scoped kind).
    pub namespace: Option<String>,
}

/// The watches `spec` needs under `cfg`: one per configured namespace, or one
/// for every namespace (cluster-scoped kinds: always one).
pub fn watch_keys(spec: &KindInfo, cfg: &KubernetesSource) -> Vec<WatchKey> {
    let key = |namespace: Option<&String>| WatchKey {
        kind: spec.kind,
        namespace: namespace.cloned(),
    };
    if !spec.namespaced {
        return vec![key(None)];
    }
    let scope = if spec.kind == "Secret" {
        cfg.secret_scope()
    } else if cfg.namespaces.is_empty() {
        None
    } else {
        Some(&cfg.namespaces[..])
    };
    match scope {
        None => vec![key(None)],
        Some(list) => list
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|ns| key(Some(ns)))
            .collect(),
    }
}

#[derive(Debug, Default)]
struct State {
    /// The current objects of every watch.
    objects: BTreeMap<WatchKey, KindObjects>,
    /// Watches whose initial list has not completed.
    pending: BTreeSet<WatchKey>,
    /// Whether discovery answered at least once.
    discovered: bool,
    /// The version each served kind is read at.
    served: discovery::Served,
}

/// The Kubernetes API server source: the current objects of every served
/// kind and the connection status. Dropping it does not stop the watcher
/// thread; lb runs it for the life of the process.
#[derive(Debug, Clone)]
pub struct KubeSource {
    state: Arc<Mutex<State>>,
    /// Connection health and counters.
    pub status: Arc<KubeStatus>,
    /// The latest published status entries, for the status writer.
    status_out: Arc<tokio::sync::watch::Sender<self::status_writer::StatusList>>,
    /// Woken when the watcher sees an object's status change.
    status_seen: Arc<tokio::sync::Notify>,
    /// Whether this instance writes status (the leader election's say).
    leader: Arc<self::status_writer::LeaderHook>,
}

impl KubeSource {
    /// Lets the leader election decide whether this instance writes
    /// status (see [`status_writer::LeaderHook`]); the first check wins.
    pub fn set_leader_check(&self, check: self::status_writer::LeaderCheck) {
        self.leader.set(check);
    }

    /// Starts discovery and the watchers on a thread of its own. Changes
    /// after the initial sync go to `changes`. Fails only when the thread
    /// cannot start; an unusable kubeconfig or an unreachable server is
    /// logged and retried.
    pub fn start(
        cfg: &KubernetesSource,
        writer: self::status_writer::WriterConfig,
        changes: std::sync::mpsc::Sender<(Instant, ())>,
    ) -> std::io::Result<KubeSource> {
        let (status_out, status_in) = tokio::sync::watch::channel(Arc::default());
        let source = KubeSource {
            state: Arc::default(),
            status: Arc::default(),
            status_out: Arc::new(status_out),
            status_seen: Arc::default(),
            leader: Arc::default(),
        };
        // The kube client's TLS takes the process-wide provider; lb-http
        // names its provider explicitly, so installing one here is safe.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (cfg, shared) = (cfg.clone(), source.clone());
        std::thread::Builder::new()
            .name("lb-kube".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("cannot start the kubernetes source runtime: {e}");
                        return;
                    }
                };
                rt.block_on(shared.run(cfg, writer, changes, status_in));
            })?;
        Ok(source)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every current object, in a deterministic order (kind, namespace, name).
    pub fn objects(&self) -> Vec<RawObject> {
        let state = self.lock();
        let mut all: Vec<RawObject> = state
            .objects
            .values()
            .flat_map(|objs| objs.values().cloned())
            .collect();
        drop(state);
        all.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
        all
    }

    /// Waits until discovery answered and the initial list of every served
    /// kind completed, logging every 10 s while it has not.
    pub async fn wait_synced(&self) {
        let started = Instant::now();
        let mut last_log = started;
        while !self.status.is_synced() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                let (discovered, pending) = {
                    let s = self.lock();
                    (
                        s.discovered,
                        s.pending.iter().map(|k| k.kind).collect::<BTreeSet<_>>(),
                    )
                };
                tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    discovered,
                    waiting_for = ?pending,
                    "waiting for the initial list from the kubernetes API server"
                );
            }
        }
    }

    /// Hands the status entries of a publish to the status writer (which
    /// runs on this source's thread); never blocks.
    pub fn write_status(&self, status: Vec<serde_json::Value>) {
        self.status_out.send_replace(Arc::new(status));
    }

    /// The object as last seen by the watcher: `None` when the API server
    /// does not hold it (as far as lb watches).
    pub fn object(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<serde_json::Value> {
        let state = self.lock();
        let id = (namespace.map(str::to_owned), name.to_owned());
        state
            .objects
            .iter()
            .filter(|(k, _)| {
                k.kind == kind && (k.namespace.is_none() || k.namespace.as_deref() == namespace)
            })
            .find_map(|(_, objs)| objs.get(&id))
            .and_then(|o| o.doc.value().cloned())
    }

    /// The `.status` of an object as last seen by the watcher: `None` when
    /// the API server does not hold the object, `Some(None)` when it has no
    /// status.
    pub fn status_of(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Option<serde_json::Value>> {
        self.object(kind, namespace, name)
            .map(|o| o.get("status").cloned())
    }

    /// The resource of `kind` at the version lb reads it, while served.
    pub fn resource_of(&self, kind: &str) -> Option<ApiResource> {
        let spec = spec_of(kind)?;
        let version = *self.lock().served.get(spec.kind)?;
        Some(kinds::resource(spec, version))
    }

    /// Replaces a watch's objects after a (re)list; true when anything differs.
    fn replace(&self, key: &WatchKey, listed: KindObjects) -> bool {
        let mut state = self.lock();
        let objs = state.objects.entry(key.clone()).or_default();
        let changed = *objs != listed;
        *objs = listed;
        changed
    }

    fn upsert(&self, key: &WatchKey, raw: RawObject) -> bool {
        let mut state = self.lock();
        let objs = state.objects.entry(key.clone()).or_default();
        let id = (raw.namespace.clone(), raw.name.clone());
        let (changed, status_changed) = match objs.get(&id) {
            Some(old) => (
                !kinds::same_for_compile(old, &raw),
                old.doc.value().and_then(|v| v.get("status"))
                    != raw.doc.value().and_then(|v| v.get("status")),
            ),
            None => (true, false),
        };
        objs.insert(id, raw);
        drop(state);
        if status_changed {
            self.status_seen.notify_one();
        }
        changed
    }

    /// Notified whenever the watcher sees an object's status change.
    pub fn status_seen(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.status_seen)
    }

    fn remove(&self, key: &WatchKey, raw: &RawObject) -> bool {
        let mut state = self.lock();
        state
            .objects
            .get_mut(key)
            .and_then(|objs| objs.remove(&(raw.namespace.clone(), raw.name.clone())))
            .is_some()
    }

    /// A watch's initial list completed.
    fn listed(&self, key: &WatchKey) {
        let mut state = self.lock();
        state.pending.remove(key);
        self.check_synced(&state);
    }

    fn check_synced(&self, state: &State) {
        if state.discovered && state.pending.is_empty() && !self.status.is_synced() {
            self.status.set_synced();
        }
    }

    async fn run(
        self,
        cfg: KubernetesSource,
        writer: self::status_writer::WriterConfig,
        changes: std::sync::mpsc::Sender<(Instant, ())>,
        status_in: tokio::sync::watch::Receiver<self::status_writer::StatusList>,
    ) {
        // Requests (discovery, status) have a deadline; watches are long polls.
        let (client, watch_client) = self.connect(&cfg).await;
        tokio::spawn(self::status_writer::run(
            client.clone(),
            self.clone(),
            status_in,
            writer,
        ));
        let mut watches: BTreeMap<WatchKey, (&'static str, tokio::task::JoinHandle<()>)> =
            BTreeMap::new();
        let mut first = true;
        loop {
            match tokio::time::timeout(cfg.request_timeout, discovery::discover(&client)).await {
                Ok(Ok(found)) => {
                    self.status.contact_ok();
                    let served = discovery::resolve(&found);
                    if first {
                        first = false;
                        let absent = discovery::absent(&served);
                        if !absent.is_empty() {
                            tracing::info!(
                                "the kubernetes API server does not serve {} (Gateway API CRDs not installed?): lb reads none of them, and watches each within {}s of it being served",
                                absent.join(", "),
                                DISCOVERY_INTERVAL.as_secs()
                            );
                        }
                    }
                    self.apply(&cfg, &watch_client, served, &mut watches, &changes);
                }
                Ok(Err(e)) => self.status.contact_failed("discovery", &e),
                Err(_) => self
                    .status
                    .contact_failed("discovery", &"no answer within the request timeout"),
            }
            tokio::time::sleep(DISCOVERY_INTERVAL).await;
        }
    }

    /// Starts the watches of newly served kinds (or of a new version), stops
    /// those of kinds no longer served and drops their objects.
    fn apply(
        &self,
        cfg: &KubernetesSource,
        client: &kube::Client,
        served: discovery::Served,
        watches: &mut BTreeMap<WatchKey, (&'static str, tokio::task::JoinHandle<()>)>,
        changes: &std::sync::mpsc::Sender<(Instant, ())>,
    ) {
        let mut want: BTreeMap<WatchKey, (&'static KindInfo, &'static str)> = BTreeMap::new();
        for (kind, version) in &served {
            let Some(spec) = spec_of(kind) else { continue };
            for key in watch_keys(spec, cfg) {
                want.insert(key, (spec, version));
            }
        }
        let mut dropped = false;
        let mut state = self.lock();
        let had = std::mem::replace(&mut state.served, served.clone());
        let stale: Vec<WatchKey> = watches
            .iter()
            .filter(|(k, (v, _))| want.get(*k).is_none_or(|(_, wv)| wv != v))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some((_, task)) = watches.remove(&key) {
                task.abort();
            }
            state.pending.remove(&key);
            if !want.contains_key(&key) {
                dropped |= state.objects.remove(&key).is_some_and(|o| !o.is_empty());
            }
        }
        for (key, (spec, version)) in want {
            if watches.contains_key(&key) {
                continue;
            }
            if state.discovered && had.get(spec.kind) != Some(&version) {
                tracing::info!(
                    kind = spec.kind,
                    version,
                    "the kubernetes API server serves {} now: watching it",
                    spec.kind
                );
            }
            state.pending.insert(key.clone());
            let task = tokio::spawn(watch::run(
                self.clone(),
                client.clone(),
                key.clone(),
                *spec,
                version,
                changes.clone(),
            ));
            watches.insert(key, (version, task));
        }
        for kind in had.keys().filter(|k| !served.contains_key(*k)) {
            tracing::info!(
                kind,
                "the kubernetes API server no longer serves {kind}: its objects are dropped"
            );
        }
        state.discovered = true;
        self.status
            .watched_kinds
            .store(served.len(), std::sync::atomic::Ordering::Relaxed);
        self.check_synced(&state);
        drop(state);
        if dropped && self.status.is_synced() {
            self.status
                .events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = changes.send((Instant::now(), ()));
        }
    }

    /// Builds the clients (for requests, for watches), retrying (with
    /// backoff) while the kubeconfig or the service account cannot be used.
    async fn connect(&self, cfg: &KubernetesSource) -> (kube::Client, kube::Client) {
        let mut backoff = backoff::CappedBackoff::new();
        loop {
            let clients = match crate::kube_client::client(cfg).await {
                Ok(c) => crate::kube_client::watch_client(cfg).await.map(|w| (c, w)),
                Err(e) => Err(e),
            };
            match clients {
                Ok(c) => return c,
                Err(e) => {
                    self.status.contact_failed("client", &e);
                    let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// `lb serve`'s start of the source: when `[sources] kubernetes` is set,
/// starts it, registers its status for `/metrics` and waits for the initial
/// list of every kind, so the first snapshot (and the listeners, bound after
/// it) never lack the API server's objects. `None` when SIGTERM or SIGINT
/// arrived while waiting. The receiver yields the changes after the sync.
pub async fn start_and_sync(
    cfg: &crate::config::Config,
    state: &crate::control_state::ControlState,
) -> Option<(
    Option<KubeSource>,
    tokio::sync::mpsc::UnboundedReceiver<Change>,
)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let Some(k) = &cfg.sources.kubernetes else {
        return Some((None, rx));
    };
    // Events are coalesced into bursts like file events (bounded debounce).
    let (raw_tx, raw_rx) = std::sync::mpsc::channel();
    let coalescer = std::thread::Builder::new()
        .name("lb-kube-events".into())
        .spawn(move || {
            super::files::coalesce(
                &raw_rx,
                |()| true,
                |change| tx.send(change).is_ok(),
                API_DEBOUNCE,
                super::files::MAX_DELAY,
            );
        });
    if let Err(e) = coalescer {
        tracing::error!("cannot start the kubernetes event thread: {e}");
        return Some((None, rx));
    }
    let writer = self::status_writer::WriterConfig {
        timeout: k.request_timeout,
        controller: cfg.gateway.controller_name.clone(),
    };
    let source = match KubeSource::start(k, writer, raw_tx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start the kubernetes source thread: {e}");
            return Some((None, rx));
        }
    };
    state.register_metrics(Arc::clone(&source.status) as Arc<dyn crate::control_state::MetricWriter>);
    tracing::info!("waiting for the initial list from the kubernetes API server");
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        source.wait_synced().await;
        return Some((Some(source), rx));
    };
    tokio::select! {
        () = source.wait_synced() => {}
        _ = term.recv() => return None,
        _ = int.recv() => return None,
    }
    tracing::info!(
        objects = source.objects().len(),
        "initial list from the kubernetes API server done"
    );
    Some((Some(source), rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml: &str) -> KubernetesSource {
        crate::config::Config::parse(
            &format!("[sources]\nkubernetes = {{ in_cluster = true{toml} }}\n"),
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .sources
        .kubernetes
        .unwrap()
    }

    fn keys(kind: &str, c: &KubernetesSource) -> Vec<Option<String>> {
        watch_keys(spec_of(kind).unwrap(), c)
            .into_iter()
            .map(|k| k.namespace)
            .collect()
    }

    #[test]
    fn watches_follow_the_configured_namespaces() {
        let all = cfg("");
        assert_eq!(keys("Ingress", &all), [None]);
        assert_eq!(keys("Secret", &all), [None]);
        let two = cfg(", namespaces = [\"b\", \"a\", \"b\"]");
        let ab = [Some("a".to_owned()), Some("b".to_owned())];
        assert_eq!(keys("Ingress", &two), ab);
        assert_eq!(keys("Secret", &two), ab);
        // Cluster-scoped kinds are read cluster-wide.
        assert_eq!(keys("Namespace", &two), [None]);
        assert_eq!(keys("GatewayClass", &two), [None]);
        let secrets = cfg(", secret_namespaces = [\"tls\"]");
        assert_eq!(keys("Ingress", &secrets), [None]);
        assert_eq!(keys("Secret", &secrets), [Some("tls".to_owned())]);
        let none = cfg(", namespaces = [\"a\"], secret_namespaces = []");
        assert!(keys("Secret", &none).is_empty());
    }
}
