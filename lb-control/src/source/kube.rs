//! Objects from the Kubernetes API server: one kube-rs watcher per kind
//! (list, then watch from the list's resourceVersion; resume after a dropped
//! watch; relist on 410 Gone; bookmarks on; capped exponential backoff with
//! jitter between failed attempts), all running on their own thread with its
//! own runtime so a long compile on the control thread never stalls them.
//!
//! The current objects of every kind are kept as [`RawObject`]s (origin
//! [`Origin::kubernetes`]); each change after the initial sync is sent as a
//! [`Change`] into the reload loop, where bursts coalesce like file events.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};

use super::files::Change;
use super::{Origin, RawObject};
use crate::config::KubernetesSource;

/// One watched kind: where it lives in the API and how it is filtered.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// The resource's plural name in URLs.
    pub plural: &'static str,
    /// A field selector, if only some objects matter.
    pub fields: Option<&'static str>,
}

const fn spec(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> KindSpec {
    KindSpec {
        group,
        version,
        kind,
        plural,
        fields: None,
    }
}

/// Every kind lb watches.
pub const KINDS: &[KindSpec] = &[
    spec("", "v1", "Namespace", "namespaces"),
    spec("", "v1", "Service", "services"),
    spec("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    KindSpec {
        fields: Some("type=kubernetes.io/tls"),
        ..spec("", "v1", "Secret", "secrets")
    },
    spec("", "v1", "Pod", "pods"),
    spec("networking.k8s.io", "v1", "IngressClass", "ingressclasses"),
    spec("networking.k8s.io", "v1", "Ingress", "ingresses"),
    spec(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    spec(
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
    ),
    spec("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
    spec("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
    spec("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
    spec(
        "gateway.networking.k8s.io",
        "v1beta1",
        "ReferenceGrant",
        "referencegrants",
    ),
    spec(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TLSRoute",
        "tlsroutes",
    ),
    spec(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TCPRoute",
        "tcproutes",
    ),
];

impl KindSpec {
    /// `apiVersion` of the kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind's resource for a dynamic `Api`.
    pub(crate) fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

/// The API server connection's health, for `/metrics` and the log.
#[derive(Debug, Default)]
pub struct KubeStatus {
    /// Whether the last contact with the API server succeeded.
    up: AtomicBool,
    /// Whether the current outage was logged (once per outage).
    outage_logged: AtomicBool,
    /// Watch events received after the initial sync.
    events: AtomicU64,
    /// Kinds whose initial list completed.
    synced_kinds: AtomicUsize,
    /// Status write-back counters (`lb_status_writes_total`, ...).
    pub status_writes: crate::status_writer::WriteCounters,
}

impl KubeStatus {
    /// Whether the API server is reachable as far as lb knows.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether the initial list of every kind completed.
    pub fn is_synced(&self) -> bool {
        self.synced_kinds.load(Ordering::SeqCst) >= KINDS.len()
    }

    /// Appends `lb_source_kubernetes_up` and `lb_source_kubernetes_events_total`.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP lb_source_kubernetes_up Whether the Kubernetes API server is reachable (0: serving the last snapshot).\n# TYPE lb_source_kubernetes_up gauge\nlb_source_kubernetes_up {}",
            u8::from(self.is_up())
        );
        let _ = writeln!(
            out,
            "# HELP lb_source_kubernetes_events_total Watch events received from the Kubernetes API server after the initial sync.\n# TYPE lb_source_kubernetes_events_total counter\nlb_source_kubernetes_events_total {}",
            self.events.load(Ordering::Relaxed)
        );
        self.status_writes.write_metrics(out);
    }

    fn contact_ok(&self) {
        self.up.store(true, Ordering::Relaxed);
        if self.outage_logged.swap(false, Ordering::Relaxed) {
            tracing::info!("kubernetes API server reachable again");
        }
    }

    fn contact_failed(&self, kind: &str, e: &dyn std::fmt::Display) {
        self.up.store(false, Ordering::Relaxed);
        if !self.outage_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                kind,
                "kubernetes API server unreachable ({e}); serving the last snapshot until it is back"
            );
        } else {
            tracing::debug!(kind, "kubernetes watch failed: {e}");
        }
    }
}

/// Objects of one kind by (namespace, name).
type KindObjects = BTreeMap<(Option<String>, String), RawObject>;

/// The Kubernetes API server source: the current objects of every kind and
/// the connection status. Dropping it does not stop the watcher thread; lb
/// runs it for the life of the process.
#[derive(Debug, Clone)]
pub struct KubeSource {
    objects: Arc<Mutex<BTreeMap<&'static str, KindObjects>>>,
    /// Connection health and counters.
    pub status: Arc<KubeStatus>,
    /// The latest published status entries, for the status writer.
    status_out: Arc<tokio::sync::watch::Sender<crate::status_writer::StatusList>>,
}

impl KubeSource {
    /// Starts watching every kind on a thread of its own. Changes after the
    /// initial sync go to `changes`. Fails only when the thread cannot start;
    /// an unusable kubeconfig or an unreachable server is logged and retried.
    pub fn start(
        cfg: &KubernetesSource,
        changes: std::sync::mpsc::Sender<(Instant, ())>,
    ) -> std::io::Result<KubeSource> {
        let (status_out, status_in) = tokio::sync::watch::channel(Arc::default());
        let source = KubeSource {
            objects: Arc::default(),
            status: Arc::default(),
            status_out: Arc::new(status_out),
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
                rt.block_on(shared.run(cfg, changes, status_in));
            })?;
        Ok(source)
    }

    /// Every current object, in a deterministic order (kind, namespace, name).
    pub fn objects(&self) -> Vec<RawObject> {
        let Ok(objects) = self.objects.lock() else {
            return Vec::new();
        };
        let mut kinds: Vec<_> = objects.iter().collect();
        kinds.sort_by_key(|(k, _)| **k);
        kinds
            .into_iter()
            .flat_map(|(_, objs)| objs.values().cloned())
            .collect()
    }

    /// Waits until the initial list of every kind completed, logging every
    /// 10 s while it has not.
    pub async fn wait_synced(&self) {
        let started = Instant::now();
        let mut last_log = started;
        while !self.status.is_synced() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    synced = self.status.synced_kinds.load(Ordering::SeqCst),
                    kinds = KINDS.len(),
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

    /// The `.status` of an object as last seen by the watcher: `None` when
    /// the API server does not hold the object, `Some(None)` when it has no
    /// status.
    pub fn status_of(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Option<serde_json::Value>> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let obj = objects
            .get(kind)?
            .get(&(namespace.map(str::to_owned), name.to_owned()))?;
        Some(obj.value.get("status").cloned())
    }

    async fn run(
        self,
        cfg: KubernetesSource,
        changes: std::sync::mpsc::Sender<(Instant, ())>,
        status_in: tokio::sync::watch::Receiver<crate::status_writer::StatusList>,
    ) {
        let client = self.connect(&cfg).await;
        tokio::spawn(crate::status_writer::run(
            client.clone(),
            self.clone(),
            status_in,
        ));
        for spec in KINDS {
            tokio::spawn(
                self.clone()
                    .watch_kind(client.clone(), *spec, changes.clone()),
            );
        }
        // While an outage lasts, resumed watches yield no event on success:
        // probe with a cheap list so `lb_source_kubernetes_up` comes back.
        let probe: Api<DynamicObject> = Api::all_with(client, &KINDS[0].resource());
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !self.status.is_up() && self.status.is_synced() {
                match probe.list(&ListParams::default().limit(1)).await {
                    Ok(_) => self.status.contact_ok(),
                    Err(e) => tracing::debug!("kubernetes probe failed: {e}"),
                }
            }
        }
    }

    /// Builds the client, retrying (with backoff) while the kubeconfig or
    /// the service account cannot be used.
    async fn connect(&self, cfg: &KubernetesSource) -> kube::Client {
        let mut backoff = CappedBackoff::new();
        loop {
            match crate::kube_client::client(cfg).await {
                Ok(c) => return c,
                Err(e) => {
                    self.status.contact_failed("client", &e);
                    let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn watch_kind(
        self,
        client: kube::Client,
        spec: KindSpec,
        changes: std::sync::mpsc::Sender<(Instant, ())>,
    ) {
        let api: Api<DynamicObject> = Api::all_with(client, &spec.resource());
        let mut wc = watcher::Config {
            bookmarks: true,
            ..watcher::Config::default()
        };
        if let Some(fields) = spec.fields {
            wc = wc.fields(fields);
        }
        let stream = watcher::watcher(api, wc).backoff(CappedBackoff::new());
        let mut stream = std::pin::pin!(stream);
        let mut relist: Option<KindObjects> = None;
        let mut synced = false;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    tracing::info!(
                        kind = spec.kind,
                        "resourceVersion expired (410 Gone): relisting"
                    );
                    continue;
                }
                Err(e) => {
                    self.status.contact_failed(spec.kind, &e);
                    continue;
                }
            };
            self.status.contact_ok();
            let changed = match event {
                Event::Init => {
                    relist = Some(KindObjects::new());
                    false
                }
                Event::InitApply(obj) => {
                    if let Some(raw) = raw_object(&spec, obj) {
                        relist
                            .get_or_insert_default()
                            .insert((raw.namespace.clone(), raw.name.clone()), raw);
                    }
                    false
                }
                Event::InitDone => {
                    let listed = relist.take().unwrap_or_default();
                    let changed = self.replace(spec.kind, listed);
                    if !synced {
                        synced = true;
                        self.status.synced_kinds.fetch_add(1, Ordering::SeqCst);
                        tracing::debug!(kind = spec.kind, "initial list done");
                    }
                    changed
                }
                Event::Apply(obj) => raw_object(&spec, obj).is_some_and(|raw| self.upsert(raw)),
                Event::Delete(obj) => raw_object(&spec, obj).is_some_and(|raw| self.remove(&raw)),
            };
            if changed && self.status.is_synced() {
                self.status.events.fetch_add(1, Ordering::Relaxed);
                if changes.send((Instant::now(), ())).is_err() {
                    return;
                }
            }
        }
    }

    fn with_kind<R>(&self, kind: &'static str, f: impl FnOnce(&mut KindObjects) -> R) -> R {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        f(objects.entry(kind).or_default())
    }

    /// Replaces a kind's objects after a (re)list; true when anything differs.
    fn replace(&self, kind: &'static str, listed: KindObjects) -> bool {
        self.with_kind(kind, |objs| {
            let changed = *objs != listed;
            *objs = listed;
            changed
        })
    }

    fn upsert(&self, raw: RawObject) -> bool {
        let kind = KINDS
            .iter()
            .find(|k| k.kind == raw.kind)
            .map_or("", |k| k.kind);
        self.with_kind(kind, |objs| {
            let key = (raw.namespace.clone(), raw.name.clone());
            let changed = objs
                .get(&key)
                .is_none_or(|old| !same_for_compile(old, &raw));
            objs.insert(key, raw);
            changed
        })
    }

    fn remove(&self, raw: &RawObject) -> bool {
        let kind = KINDS
            .iter()
            .find(|k| k.kind == raw.kind)
            .map_or("", |k| k.kind);
        self.with_kind(kind, |objs| {
            objs.remove(&(raw.namespace.clone(), raw.name.clone()))
                .is_some()
        })
    }
}

/// `lb serve`'s start of the source: when `[sources] kubernetes` is set,
/// starts it, registers its status for `/metrics` and waits for the initial
/// list of every kind, so the first snapshot (and the listeners, bound after
/// it) never lack the API server's objects. `None` when SIGTERM or SIGINT
/// arrived while waiting. The receiver yields the changes after the sync.
pub async fn start_and_sync(
    cfg: &crate::config::Config,
    state: &crate::admin::AdminState,
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
                super::files::DEBOUNCE,
                super::files::MAX_DELAY,
            );
        });
    if let Err(e) = coalescer {
        tracing::error!("cannot start the kubernetes event thread: {e}");
        return Some((None, rx));
    }
    let source = match KubeSource::start(k, raw_tx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start the kubernetes source thread: {e}");
            return Some((None, rx));
        }
    };
    let _ = state.kubernetes.set(Arc::clone(&source.status));
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

/// Whether two versions of an object compile the same: they differ at most
/// in `metadata.resourceVersion` and, except for Services and Gateways
/// (whose status carries the addresses allocation reads back), in
/// `status`. lb's own status writes come back as such events and cause no
/// reload.
fn same_for_compile(a: &RawObject, b: &RawObject) -> bool {
    if a == b {
        return true;
    }
    let strip = |raw: &RawObject| {
        let mut v = raw.value.clone();
        if let Some(map) = v.as_object_mut() {
            if raw.kind != "Service" && raw.kind != "Gateway" {
                map.remove("status");
            }
            if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("resourceVersion");
            }
        }
        v
    };
    a.kind == b.kind && a.origin == b.origin && strip(a) == strip(b)
}

/// A watched object as a [`RawObject`]: kind and apiVersion filled in (list
/// items carry neither), managedFields dropped.
pub fn raw_object(spec: &KindSpec, obj: DynamicObject) -> Option<RawObject> {
    let mut value = serde_json::to_value(obj).ok()?;
    let map = value.as_object_mut()?;
    map.insert("kind".into(), spec.kind.into());
    map.insert("apiVersion".into(), spec.api_version().into());
    if spec.kind == "Pod" {
        // Only a Pod's identity and labels are used (NetworkPolicy
        // selectors); a cluster's Pods are many and their specs large.
        map.retain(|k, _| k == "kind" || k == "apiVersion" || k == "metadata");
    }
    let metadata = map.get_mut("metadata")?.as_object_mut()?;
    metadata.remove("managedFields");
    if spec.kind == "Pod" {
        metadata.remove("annotations");
        metadata.remove("ownerReferences");
    }
    let name = metadata.get("name")?.as_str()?.to_owned();
    let namespace = metadata
        .get("namespace")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Some(RawObject {
        kind: spec.kind.to_owned(),
        api_version: spec.api_version(),
        namespace,
        name,
        value,
        origin: Origin::kubernetes(),
    })
}

/// The shortest wait between failed attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between failed attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Exponential backoff (x2 from [`MIN_BACKOFF`], capped at [`MAX_BACKOFF`])
/// with full jitter in the upper half, reset after a success.
#[derive(Debug)]
struct CappedBackoff {
    next: Duration,
    seed: u64,
}

impl CappedBackoff {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.subsec_nanos().into())
            | 1;
        Self {
            next: MIN_BACKOFF,
            seed,
        }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift64: jitter only, not security.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        let half = base / 2;
        let jitter = half.mul_f64((self.seed % 1000) as f64 / 1000.0);
        Some(half + jitter)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut b = CappedBackoff::new();
        let waits: Vec<_> = (0..12).map(|_| b.next().unwrap()).collect();
        assert!(waits[0] <= MIN_BACKOFF && waits[0] >= MIN_BACKOFF / 2);
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF));
        assert!(waits[11] >= MAX_BACKOFF / 2);
        b.reset();
        assert!(b.next().unwrap() <= MIN_BACKOFF);
    }

    #[test]
    fn list_items_get_kind_and_api_version() {
        let spec = KINDS.iter().find(|k| k.kind == "HTTPRoute").unwrap();
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r", "namespace": "team", "managedFields": [{}], "resourceVersion": "7"},
            "spec": {"hostnames": ["a.example.com"]}
        }))
        .unwrap();
        let raw = raw_object(spec, obj).unwrap();
        assert_eq!(raw.kind, "HTTPRoute");
        assert_eq!(raw.api_version, "gateway.networking.k8s.io/v1");
        assert_eq!(raw.namespace.as_deref(), Some("team"));
        assert_eq!(raw.name, "r");
        assert_eq!(raw.value["kind"], "HTTPRoute");
        assert_eq!(raw.value["spec"]["hostnames"][0], "a.example.com");
        assert!(raw.value["metadata"].get("managedFields").is_none());
        assert!(raw.origin.is_kubernetes());
    }

    #[test]
    fn pods_keep_identity_and_labels_only() {
        let spec = KINDS.iter().find(|k| k.kind == "Pod").unwrap();
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "team", "labels": {"app": "web"},
                "annotations": {"big": "x"}, "resourceVersion": "9"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let raw = raw_object(spec, obj).unwrap();
        assert_eq!(raw.value["metadata"]["labels"]["app"], "web");
        assert!(raw.value.get("spec").is_none() && raw.value.get("status").is_none());
        assert!(raw.value["metadata"].get("annotations").is_none());
        // It still reads as a Pod.
        let (store, diags) = crate::store::Store::build(&[raw]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(store.of_kind("Pod").count(), 1);
    }

    #[test]
    fn status_only_changes_reload_nothing_except_on_services() {
        let raw = |kind: &str, rv: &str, status: &str| {
            let spec = KINDS.iter().find(|k| k.kind == kind).unwrap();
            let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "x", "namespace": "d", "resourceVersion": rv},
                "spec": {},
                "status": {"note": status}
            }))
            .unwrap();
            raw_object(spec, obj).unwrap()
        };
        assert!(same_for_compile(
            &raw("Ingress", "1", "a"),
            &raw("Ingress", "2", "b")
        ));
        assert!(same_for_compile(
            &raw("Service", "1", "a"),
            &raw("Service", "2", "a")
        ));
        assert!(!same_for_compile(
            &raw("Service", "1", "a"),
            &raw("Service", "2", "b")
        ));
    }

    #[test]
    fn metrics_say_up_and_count_events() {
        let s = KubeStatus::default();
        let mut out = String::new();
        s.write_metrics(&mut out);
        assert!(out.contains("lb_source_kubernetes_up 0"), "{out}");
        s.contact_ok();
        s.events.fetch_add(3, Ordering::Relaxed);
        let mut out = String::new();
        s.write_metrics(&mut out);
        assert!(out.contains("lb_source_kubernetes_up 1"), "{out}");
        assert!(out.contains("lb_source_kubernetes_events_total 3"), "{out}");
    }
}
