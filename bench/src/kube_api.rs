//! A stand-in Kubernetes API server: there is no cluster on the test
//! machines, so lb's API server source is tested (lb-control's e2e tests)
//! and benchmarked (`bench scale`) against this.
//!
//! It speaks the API server's HTTP/1.1 wire protocol (no TLS, any bearer token)
//! for the kinds lb reads and writes, after the Kubernetes API conventions:
//!
//! - one global resourceVersion counter (like etcd's revision); every write
//!   bumps it and records an ADDED / MODIFIED / DELETED event in the history;
//! - list (all namespaces or one) with `metadata.resourceVersion`, `limit` and
//!   `continue` (key-based, like etcd; a token older than the history is 410),
//!   `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and
//!   `fieldSelector` (`=`, `==`, `!=` on any dotted path, e.g. `metadata.name`,
//!   `type`);
//! - watch (`watch=1|true`) as a chunked stream of one JSON event per line:
//!   events after `resourceVersion` are replayed first (absent or `0`: a
//!   synthetic ADDED per object), BOOKMARKs every second with
//!   `allowWatchBookmarks`, `sendInitialEvents` with the `initial-events-end`
//!   bookmark, an ERROR event with a 410 `Expired` Status when the version is
//!   older than the retained history, the stream ends after `timeoutSeconds`;
//! - get, create (POST, 409 if it exists), replace (PUT, 409 on a stale
//!   `metadata.resourceVersion`), delete, PATCH with merge-patch,
//!   strategic-merge-patch (treated as a merge), JSON patch and server-side
//!   apply (a merge that creates if absent; `fieldManager` is required and
//!   recorded in `metadata.managedFields`); writes that change nothing keep
//!   the resourceVersion and emit no event, like the real server;
//! - the `/status` subresource (GET/PUT/PATCH) on kinds that have one: those
//!   writes change only `.status`, and writes to the main resource leave
//!   `.status` alone; every status write is logged ([`KubeApi::status_writes`]);
//! - `/version`, `/healthz`, `/readyz`, `/api`, `/apis` and per-group-version
//!   resource lists; 404 with a Status body for anything unknown.
//!
//! The test drives it directly: [`KubeApi::apply_yaml`] (create or replace,
//! keeping the stored `.status` when the new object has none),
//! [`KubeApi::delete`], [`KubeApi::drop_watches`], [`KubeApi::compact`],
//! [`KubeApi::set_down`], and inspects [`KubeApi::requests`].

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

/// Largest request head accepted, in bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most requests served on one connection.
const MAX_REQUESTS: usize = 1_000_000;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(120);
/// A write that makes no progress for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Events kept before the oldest are forgotten (as if compacted).
const MAX_HISTORY: usize = 200_000;
/// Interval between BOOKMARK events on watches that ask for them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// Longest watch; `timeoutSeconds` is capped to this, and is the default.
const MAX_WATCH: Duration = Duration::from_secs(1800);

/// One served resource type.
struct Res {
    plural: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Whether it has a `/status` subresource.
    status: bool,
}

impl Res {
    fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
}

const fn res(
    plural: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> Res {
    Res {
        plural,
        group,
        version,
        kind,
        namespaced,
        status,
    }
}

const GW: &str = "gateway.networking.k8s.io";
const NET: &str = "networking.k8s.io";

/// Every resource type served. Any version in a request path is accepted for
/// a known group and echoed back in `apiVersion`.
static RESOURCES: &[Res] = &[
    res("services", "", "v1", "Service", true, true),
    res("secrets", "", "v1", "Secret", true, false),
    res("namespaces", "", "v1", "Namespace", false, true),
    res("pods", "", "v1", "Pod", true, true),
    res("configmaps", "", "v1", "ConfigMap", true, false),
    res(
        "endpointslices",
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        true,
        false,
    ),
    res("ingresses", NET, "v1", "Ingress", true, true),
    res("ingressclasses", NET, "v1", "IngressClass", false, false),
    res("networkpolicies", NET, "v1", "NetworkPolicy", true, false),
    res("gatewayclasses", GW, "v1", "GatewayClass", false, true),
    res("gateways", GW, "v1", "Gateway", true, true),
    res("httproutes", GW, "v1", "HTTPRoute", true, true),
    res("grpcroutes", GW, "v1", "GRPCRoute", true, true),
    res(
        "referencegrants",
        GW,
        "v1beta1",
        "ReferenceGrant",
        true,
        false,
    ),
    res("tlsroutes", GW, "v1alpha2", "TLSRoute", true, true),
    res("tcproutes", GW, "v1alpha2", "TCPRoute", true, true),
    res("udproutes", GW, "v1alpha2", "UDPRoute", true, true),
    res("leases", "coordination.k8s.io", "v1", "Lease", true, false),
];

fn res_by_kind(kind: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("kube_api: unknown kind {kind}"))
}

/// Object key: resource index, namespace ("" when cluster-scoped), name.
type Key = (usize, String, String);

/// One recorded change.
struct Event {
    rv: u64,
    res: usize,
    ty: &'static str,
    obj: Value,
}

/// Everything behind the lock.
#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    /// A watch or continue token from a version below this gets 410 Gone.
    oldest: u64,
    /// Bumped to end every open watch.
    epoch: u64,
    down: bool,
    stopping: bool,
    uid_seq: u64,
    requests: Vec<String>,
    status_writes: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change a watch or the accept loop may care about.
    tick: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.tick.send_modify(|t| *t = t.wrapping_add(1));
    }
}

/// The stand-in API server; runs on its own thread and tokio runtime, stops on drop.
pub struct KubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl KubeApi {
    /// Starts listening on 127.0.0.1 on a free port.
    pub fn start() -> KubeApi {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts listening on `addr` (port 0: a free port). The listening
    /// socket is made on the calling thread, so in its network namespace.
    pub fn start_on(addr: SocketAddr) -> KubeApi {
        let listener = std::net::TcpListener::bind(addr).expect("kube_api: bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            tick: watch::Sender::new(0),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kube-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("kube_api: runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("kube_api: listener");
                    accept_loop(listener, sh).await;
                });
            })
            .expect("kube_api: thread");
        KubeApi {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes `kubeconfig` in `dir` (server = [`KubeApi::url`], no TLS, a
    /// token user, context `test`, namespace `default`) and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\nusers:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\n",
            self.url()
        );
        std::fs::write(&path, text).expect("kube_api: write kubeconfig");
        path
    }

    /// Creates or replaces every object of a multi-document YAML text (a
    /// `kind: *List` document is applied item by item).
    pub fn apply_yaml(&self, yaml: &str) {
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("kube_api: YAML document");
            if v.is_null() {
                continue;
            }
            let is_list = v["kind"].as_str().is_some_and(|k| k.ends_with("List"));
            match v.get("items").and_then(Value::as_array) {
                Some(items) if is_list => items.iter().for_each(|i| self.apply(i.clone())),
                _ => self.apply(v),
            }
        }
    }

    /// Creates or replaces one object: new resourceVersion, ADDED or MODIFIED
    /// event. A namespaced object without a namespace goes to `default`; the
    /// stored `.status` is kept when `obj` has none.
    pub fn apply(&self, obj: Value) {
        let kind = obj["kind"].as_str().expect("kube_api: object without kind");
        let res = res_by_kind(kind);
        let mut st = self.shared.lock();
        let mut obj = obj;
        let (ns, name) = names(&mut obj, res, None).expect("kube_api: object without name");
        let key = (res, ns, name);
        let old = st.objects.get(&key).cloned();
        if let Some(old) = &old
            && obj.get("status").is_none()
            && let Some(s) = old.get("status")
        {
            obj["status"] = s.clone();
        }
        let obj = st.prepare(res, obj, old.as_ref());
        st.commit(key, obj, old.is_none());
        drop(st);
        self.shared.notify();
    }

    /// Deletes one object (DELETED event); no-op if absent. `namespace` is
    /// ignored for cluster-scoped kinds and defaults to `default`.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) {
        let res = res_by_kind(kind);
        let mut st = self.shared.lock();
        st.remove(&key_of(res, namespace, name));
        drop(st);
        self.shared.notify();
    }

    /// The stored object, if any.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = res_by_kind(kind);
        self.shared
            .lock()
            .objects
            .get(&key_of(res, namespace, name))
            .cloned()
    }

    /// Every stored object of `kind`, in key order.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let res = res_by_kind(kind);
        let st = self.shared.lock();
        st.objects
            .iter()
            .filter(|(k, _)| k.0 == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Ends every open watch stream (cleanly: the chunked body ends, the
    /// connection stays open); clients must resume from their last version.
    pub fn drop_watches(&self) {
        self.shared.lock().epoch += 1;
        self.shared.notify();
    }

    /// Forgets the event history: a watch (or continue token) from an older
    /// version gets 410 Gone; a list still works.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.history.clear();
        st.oldest = st.rv;
    }

    /// While down, new connections are accepted then closed at once, requests
    /// on open connections are answered by closing them, and open watches end.
    pub fn set_down(&self, down: bool) {
        let mut st = self.shared.lock();
        st.down = down;
        st.epoch += 1;
        drop(st);
        self.shared.notify();
    }

    /// Every request served so far, as `METHOD TARGET`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// One `Kind namespace/name` (or `Kind name`) per write to a `/status` subresource.
    pub fn status_writes(&self) -> Vec<String> {
        self.shared.lock().status_writes.clone()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key_of(res: usize, namespace: Option<&str>, name: &str) -> Key {
    let ns = if RESOURCES[res].namespaced {
        namespace.unwrap_or("default").to_string()
    } else {
        String::new()
    };
    (res, ns, name.to_string())
}

/// The object's (namespace, name), filling in the namespace from `path_ns`
/// (or `default`). Errors on a missing name or a namespace mismatch.
fn names(obj: &mut Value, res: usize, path_ns: Option<&str>) -> Result<(String, String), String> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let md = &mut obj["metadata"];
    let name = md["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err("metadata.name: Required value".into());
    }
    if !RESOURCES[res].namespaced {
        if let Some(m) = md.as_object_mut() {
            m.remove("namespace");
        }
        return Ok((String::new(), name));
    }
    let ns = match (md["namespace"].as_str(), path_ns) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "the namespace of the provided object ({a}) does not match the namespace sent on the request ({b})"
            ));
        }
        (Some(a), _) if !a.is_empty() => a.to_string(),
        (_, Some(b)) => b.to_string(),
        _ => "default".to_string(),
    };
    md["namespace"] = json!(ns);
    Ok((ns, name))
}

impl State {
    /// Fills in kind, apiVersion and server-set metadata; keeps identity from `old`.
    fn prepare(&mut self, res: usize, mut obj: Value, old: Option<&Value>) -> Value {
        let r = &RESOURCES[res];
        obj["kind"] = json!(r.kind);
        obj["apiVersion"] = json!(r.api_version(r.version));
        let md = &mut obj["metadata"];
        match old {
            Some(old) => {
                for f in ["uid", "creationTimestamp"] {
                    md[f] = old["metadata"][f].clone();
                }
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = strip(&obj, true) != strip(old, true);
                obj["metadata"]["generation"] =
                    json!(if changed { generation + 1 } else { generation });
            }
            None => {
                self.uid_seq += 1;
                md["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid_seq));
                md["creationTimestamp"] = json!(now_rfc3339());
                md["generation"] = json!(1);
            }
        }
        obj
    }

    /// Stores `obj` with a new resourceVersion and records the event.
    fn commit(&mut self, key: Key, mut obj: Value, created: bool) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let ty = if created { "ADDED" } else { "MODIFIED" };
        self.record(key.0, ty, obj.clone());
        self.objects.insert(key, obj.clone());
        obj
    }

    /// Removes an object with a DELETED event; returns it.
    fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(key.0, "DELETED", obj.clone());
        Some(obj)
    }

    fn record(&mut self, res: usize, ty: &'static str, obj: Value) {
        self.history.push_back(Event {
            rv: self.rv,
            res,
            ty,
            obj,
        });
        while self.history.len() > MAX_HISTORY {
            if let Some(e) = self.history.pop_front() {
                self.oldest = e.rv;
            }
        }
    }
}

/// The object without resourceVersion and managedFields times (and, with `spec_only`,
/// without metadata and status): for no-op and generation checks.
fn strip(obj: &Value, spec_only: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        if spec_only {
            m.remove("metadata");
            m.remove("status");
        } else if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            md.remove("resourceVersion");
            for f in md
                .get_mut("managedFields")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(f) = f.as_object_mut() {
                    f.remove("time");
                }
            }
        }
    }
    o
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// ---------------------------------------------------------------- HTTP

async fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    let mut tick = sh.tick.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((sock, _)) = r else { continue };
                if sh.lock().down {
                    drop(sock);
                    continue;
                }
                let _ = sock.set_nodelay(true);
                tokio::spawn(connection(sock, sh.clone()));
            }
            _ = tick.changed() => {
                if sh.lock().stopping {
                    return;
                }
            }
        }
    }
}

/// One parsed request.
struct Request {
    method: String,
    target: String,
    path: String,
    query: Vec<(String, String)>,
    content_type: String,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers.
enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
    Watch(Box<WatchSpec>),
}

async fn connection(mut sock: TcpStream, sh: Arc<Shared>) {
    let mut buf = Vec::with_capacity(8192);
    for _ in 0..MAX_REQUESTS {
        let req = match timeout(IDLE, read_request(&mut sock, &mut buf)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                let _ = write_reply(
                    &mut sock,
                    status(400, "BadRequest", &e.to_string(), None),
                    400,
                    false,
                )
                .await;
                return;
            }
            _ => return,
        };
        let reply = {
            let mut st = sh.lock();
            if st.down || st.stopping {
                return;
            }
            st.requests.push(format!("{} {}", req.method, req.target));
            handle(&mut st, &req)
        };
        sh.notify();
        let keep = req.keep_alive;
        let ok = match reply {
            Reply::Json(code, v) => write_reply(&mut sock, v, code, keep).await.is_ok(),
            Reply::Text(code, t) => write_text(&mut sock, code, t, keep).await.is_ok(),
            Reply::Watch(w) => stream_watch(&mut sock, &sh, w).await.unwrap_or(false),
        };
        if !ok || !keep {
            return;
        }
    }
}

/// Reads one request (head and body) from `sock`; `None` at a clean EOF.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf).map_err(|e| bad(&e.to_string()))? {
            httparse::Status::Complete(head_len) => {
                let method = req.method.unwrap_or("GET").to_string();
                let target = req.path.unwrap_or("/").to_string();
                let mut content_type = String::new();
                let mut length = 0usize;
                let mut chunked = false;
                let mut keep_alive = req.version == Some(1);
                for h in req.headers.iter() {
                    let v = String::from_utf8_lossy(h.value).trim().to_ascii_lowercase();
                    match h.name.to_ascii_lowercase().as_str() {
                        "content-type" => content_type = v,
                        "content-length" => {
                            length = v.parse().map_err(|_| bad("content-length"))?
                        }
                        "transfer-encoding" => chunked = v.contains("chunked"),
                        "connection" if v.contains("close") => keep_alive = false,
                        "connection" if v.contains("keep-alive") => keep_alive = true,
                        _ => {}
                    }
                }
                buf.drain(..head_len);
                let body = if chunked {
                    read_chunked(sock, buf).await?
                } else {
                    if length > MAX_BODY {
                        return Err(bad("body too large"));
                    }
                    fill(sock, buf, length).await?;
                    buf.drain(..length).collect()
                };
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_string(), parse_query(q)),
                    None => (target.clone(), Vec::new()),
                };
                return Ok(Some(Request {
                    method,
                    target,
                    path,
                    query,
                    content_type,
                    body,
                    keep_alive,
                }));
            }
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD {
                    return Err(bad("request head too large"));
                }
                if read_more(sock, buf).await? == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    };
                }
            }
        }
    }
}

async fn read_more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut tmp = [0u8; 16 * 1024];
    let n = sock.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

/// Reads until `buf` holds at least `n` bytes.
async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    while buf.len() < n {
        if read_more(sock, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Reads one CRLF-terminated line (without the CRLF) from the front of `buf`.
async fn read_line(sock: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD || read_more(sock, buf).await? == 0 {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}

async fn read_chunked(sock: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(sock, buf).await?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
        if size == 0 {
            // Trailers up to the empty line.
            while !read_line(sock, buf).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        fill(sock, buf, size + 2).await?;
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    }
}

async fn write_all(sock: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    timeout(WRITE_TIMEOUT, sock.write_all(data))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

async fn write_reply(sock: &mut TcpStream, v: Value, code: u16, keep: bool) -> io::Result<()> {
    let body = serde_json::to_vec(&v).unwrap_or_default();
    write_body(sock, code, "application/json", &body, keep).await
}

async fn write_text(sock: &mut TcpStream, code: u16, text: &str, keep: bool) -> io::Result<()> {
    write_body(sock, code, "text/plain", text.as_bytes(), keep).await
}

async fn write_body(
    sock: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
    keep: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    write_all(sock, &out).await
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `Status` object (`kind: Status`).
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

fn fail(code: u16, reason: &str, message: impl Into<String>) -> Reply {
    Reply::Json(code, status(code, reason, &message.into(), None))
}

fn not_found(r: &Res, name: &str) -> Reply {
    let group = if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    Reply::Json(
        404,
        status(
            404,
            "NotFound",
            &format!("{group} \"{name}\" not found"),
            Some(json!({"name": name, "group": r.group, "kind": r.plural})),
        ),
    )
}

// ---------------------------------------------------------------- routing

/// A parsed resource path.
struct Route {
    res: usize,
    version: String,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
}

enum Path2 {
    Route(Route),
    Reply(Reply),
    NotFound,
}

fn route(path: &str) -> Path2 {
    let path = path.trim_end_matches('/');
    let (group, version, rest) = if let Some(rest) = path.strip_prefix("/api/") {
        let (v, rest) = rest.split_once('/').unwrap_or((rest, ""));
        ("", v, rest)
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        let mut it = rest.splitn(3, '/');
        let g = it.next().unwrap_or("");
        let v = it.next().unwrap_or("");
        (g, v, it.next().unwrap_or(""))
    } else {
        return match path {
            "/version" => Path2::Reply(Reply::Json(
                200,
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-lb-test",
                       "gitCommit": "0000000000000000000000000000000000000000",
                       "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                       "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"}),
            )),
            "/healthz" | "/readyz" | "/livez" => Path2::Reply(Reply::Text(200, "ok")),
            "/api" => Path2::Reply(Reply::Json(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            )),
            "/apis" => Path2::Reply(Reply::Json(200, group_list())),
            _ => Path2::NotFound,
        };
    };
    if version.is_empty() || !RESOURCES.iter().any(|r| r.group == group) {
        return Path2::NotFound;
    }
    let segs: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let known = |p: &str| {
        RESOURCES
            .iter()
            .position(|r| r.group == group && r.plural == p)
    };
    if segs.is_empty() {
        return Path2::Reply(Reply::Json(200, resource_list(group, version)));
    }
    let (ns, segs) = if segs[0] == "namespaces" && segs.len() >= 3 && known(segs[2]).is_some() {
        (Some(segs[1].to_string()), &segs[2..])
    } else {
        (None, &segs[..])
    };
    let Some(res) = known(segs[0]) else {
        return Path2::NotFound;
    };
    let r = &RESOURCES[res];
    let status = match segs.get(2) {
        None => false,
        Some(&"status") if r.status && segs.len() == 3 => true,
        _ => return Path2::NotFound,
    };
    let name = segs.get(1).map(|s| s.to_string());
    if (ns.is_some() && !r.namespaced) || (name.is_some() && r.namespaced && ns.is_none()) {
        return Path2::NotFound;
    }
    Path2::Route(Route {
        res,
        version: version.to_string(),
        ns,
        name,
        status,
    })
}

fn group_list() -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        let vs = groups.entry(r.group).or_default();
        if !vs.contains(&r.version) {
            vs.push(r.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(
            json!({"name": r.plural, "singularName": r.kind.to_ascii_lowercase(),
            "namespaced": r.namespaced, "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
        );
        if r.status {
            resources.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1",
           "groupVersion": group_version, "resources": resources})
}

/// The object as served for `version`: `apiVersion` follows the request path.
fn render(obj: &Value, r: &Res, version: &str) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(r.api_version(version));
    o
}

fn handle(st: &mut State, req: &Request) -> Reply {
    let rt = match route(&req.path) {
        Path2::Route(rt) => rt,
        Path2::Reply(r) => return r,
        Path2::NotFound => {
            return fail(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let r = &RESOURCES[rt.res];
    match (req.method.as_str(), &rt.name) {
        ("GET", None) => {
            let w = matches!(req.param("watch"), Some("1" | "true"));
            if w {
                match WatchSpec::new(&rt, req) {
                    Ok(w) => Reply::Watch(Box::new(w)),
                    Err(e) => fail(400, "BadRequest", e),
                }
            } else {
                list(st, &rt, req)
            }
        }
        ("POST", None) => create(st, &rt, req),
        ("GET", Some(name)) => match st.objects.get(&key_of(rt.res, rt.ns.as_deref(), name)) {
            Some(o) => Reply::Json(200, render(o, r, &rt.version)),
            None => not_found(r, name),
        },
        ("PUT", Some(name)) => replace(st, &rt, name, req),
        ("PATCH", Some(name)) => patch(st, &rt, name, req),
        ("DELETE", Some(name)) if !rt.status => {
            match st.remove(&key_of(rt.res, rt.ns.as_deref(), name)) {
                Some(o) => Reply::Json(200, render(&o, r, &rt.version)),
                None => not_found(r, name),
            }
        }
        _ => fail(
            405,
            "MethodNotAllowed",
            format!("{} is not supported here", req.method),
        ),
    }
}

// ---------------------------------------------------------------- selectors

/// Label and field selectors of a list or watch.
#[derive(Default)]
struct Selectors {
    labels: Vec<(String, LabelOp)>,
    fields: Vec<(String, bool, String)>,
}

enum LabelOp {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

impl Selectors {
    fn parse(req: &Request) -> Result<Selectors, String> {
        let mut s = Selectors::default();
        for term in split_top(req.param("labelSelector").unwrap_or("")) {
            let set = |v: &str| -> Vec<String> {
                v.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .collect()
            };
            let op = if let Some(k) = term.strip_prefix('!') {
                (k.trim().to_string(), LabelOp::NotExists)
            } else if let Some((k, v)) = term.split_once(" notin ") {
                (k.trim().to_string(), LabelOp::NotIn(set(v)))
            } else if let Some((k, v)) = term.split_once(" in ") {
                (k.trim().to_string(), LabelOp::In(set(v)))
            } else if let Some((k, v)) = term.split_once("!=") {
                (k.trim().to_string(), LabelOp::Ne(v.trim().to_string()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.trim().to_string(), LabelOp::Eq(v.trim().to_string()))
            } else if term.contains(['(', ')', ' ']) {
                return Err(format!("unable to parse label selector {term:?}"));
            } else {
                (term.to_string(), LabelOp::Exists)
            };
            s.labels.push(op);
        }
        for term in split_top(req.param("fieldSelector").unwrap_or("")) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector {term:?}"));
            };
            s.fields
                .push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(s)
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label_ok = self.labels.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                LabelOp::Eq(want) => v == Some(want.as_str()),
                LabelOp::Ne(want) => v != Some(want.as_str()),
                LabelOp::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                LabelOp::NotIn(set) => !v.is_some_and(|v| set.iter().any(|s| s == v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
            }
        });
        label_ok
            && self.fields.iter().all(|(path, eq, want)| {
                let mut cur = obj;
                for p in path.split('.') {
                    cur = &cur[p];
                }
                let got = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (got == *want) == *eq
            })
    }
}

/// Splits a selector on commas outside parentheses; drops empty terms.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn in_scope(rt_ns: Option<&str>, key: &Key) -> bool {
    rt_ns.is_none_or(|ns| key.1 == ns)
}

// ---------------------------------------------------------------- verbs

fn list(st: &mut State, rt: &Route, req: &Request) -> Reply {
    let r = &RESOURCES[rt.res];
    let sel = match Selectors::parse(req) {
        Ok(s) => s,
        Err(e) => return fail(400, "BadRequest", e),
    };
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    // Continue token: hex of "rv\0namespace\0name" of the last item served.
    let (list_rv, after) = match req.param("continue").filter(|c| !c.is_empty()) {
        None => (st.rv, None),
        Some(tok) => {
            let Some((rv, ns, name)) = decode_continue(tok) else {
                return fail(400, "BadRequest", "invalid continue token");
            };
            if rv < st.oldest {
                return fail(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
            }
            (rv, Some((ns, name)))
        }
    };
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining = 0u64;
    for (key, obj) in st.objects.range((rt.res, String::new(), String::new())..) {
        if key.0 != rt.res {
            break;
        }
        if !in_scope(rt.ns.as_deref(), key)
            || after
                .as_ref()
                .is_some_and(|(ns, n)| (&key.1, &key.2) <= (ns, n))
            || !sel.matches(obj)
        {
            continue;
        }
        if items.len() == limit {
            remaining += 1;
            continue;
        }
        items.push(render(obj, r, &rt.version));
        if items.len() == limit {
            next = Some(encode_continue(list_rv, &key.1, &key.2));
        }
    }
    let mut md = json!({"resourceVersion": list_rv.to_string()});
    if remaining > 0
        && let Some(tok) = next
    {
        md["continue"] = json!(tok);
        md["remainingItemCount"] = json!(remaining);
    }
    Reply::Json(
        200,
        json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(&rt.version),
               "metadata": md, "items": items}),
    )
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    format!("{rv}\0{ns}\0{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(tok: &str) -> Option<(u64, String, String)> {
    if !tok.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..tok.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(tok.get(i..i + 2)?, 16).ok())
        .collect();
    let s = String::from_utf8(bytes?).ok()?;
    let mut it = s.split('\0');
    let rv = it.next()?.parse().ok()?;
    Some((rv, it.next()?.to_string(), it.next()?.to_string()))
}

fn parse_body(req: &Request) -> Result<Value, Reply> {
    let parsed = serde_json::from_slice::<Value>(&req.body).or_else(|e| {
        if req.content_type.contains("yaml") {
            serde_yaml_ng::from_slice::<Value>(&req.body).map_err(|e| e.to_string())
        } else {
            Err(e.to_string())
        }
    });
    match parsed {
        Ok(v) if v.is_object() || v.is_array() => Ok(v),
        Ok(_) => Err(fail(400, "BadRequest", "body is not an object")),
        Err(e) => Err(fail(400, "BadRequest", format!("invalid body: {e}"))),
    }
}

fn check_kind(body: &Value, r: &Res) -> Result<(), Reply> {
    match body["kind"].as_str() {
        Some(k) if k != r.kind => Err(fail(
            400,
            "BadRequest",
            format!("kind {k} does not match {}", r.kind),
        )),
        _ => Ok(()),
    }
}

fn create(st: &mut State, rt: &Route, req: &Request) -> Reply {
    let r = &RESOURCES[rt.res];
    if rt.status {
        return fail(405, "MethodNotAllowed", "create on status");
    }
    let mut body = match parse_body(req).and_then(|b| check_kind(&b, r).map(|()| b)) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if body["metadata"]["name"].as_str().unwrap_or("").is_empty()
        && let Some(g) = body["metadata"]["generateName"].as_str()
    {
        let name = format!("{g}{:05x}", st.uid_seq + 1);
        body["metadata"]["name"] = json!(name);
    }
    let (ns, name) = match names(&mut body, rt.res, rt.ns.as_deref()) {
        Ok(n) => n,
        Err(e) => return fail(422, "Invalid", e),
    };
    let key = (rt.res, ns, name.clone());
    if st.objects.contains_key(&key) {
        let g = if r.group.is_empty() {
            r.plural.to_string()
        } else {
            format!("{}.{}", r.plural, r.group)
        };
        return Reply::Json(
            409,
            status(
                409,
                "AlreadyExists",
                &format!("{g} \"{name}\" already exists"),
                Some(json!({"name": name, "group": r.group, "kind": r.plural})),
            ),
        );
    }
    if r.status
        && let Some(m) = body.as_object_mut()
    {
        m.remove("status");
    }
    if let Some(md) = body["metadata"].as_object_mut() {
        md.remove("resourceVersion");
    }
    let obj = st.prepare(rt.res, body, None);
    let obj = st.commit(key, obj, true);
    Reply::Json(201, render(&obj, r, &rt.version))
}

/// Checks an optimistic-concurrency `metadata.resourceVersion` in `body`.
fn check_rv(body: &Value, cur: &Value, r: &Res, name: &str) -> Result<(), Reply> {
    match body["metadata"]["resourceVersion"].as_str() {
        Some(want)
            if !want.is_empty() && Some(want) != cur["metadata"]["resourceVersion"].as_str() =>
        {
            let g = if r.group.is_empty() {
                r.plural.to_string()
            } else {
                format!("{}.{}", r.plural, r.group)
            };
            Err(Reply::Json(
                409,
                status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {g} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                    Some(json!({"name": name, "group": r.group, "kind": r.plural})),
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Stores `new` in place of `old` (a write to the main resource or, with
/// `status`, to the status subresource) and answers with the result.
fn update(st: &mut State, rt: &Route, key: Key, old: &Value, mut new: Value) -> Reply {
    let r = &RESOURCES[rt.res];
    if rt.status {
        let s = new.get("status").cloned();
        let fields = new["metadata"].get("managedFields").cloned();
        new = old.clone();
        if let Some(f) = fields {
            new["metadata"]["managedFields"] = f;
        }
        match s {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        let ns = if key.1.is_empty() {
            String::new()
        } else {
            format!("{}/", key.1)
        };
        st.status_writes.push(format!("{} {ns}{}", r.kind, key.2));
    } else if r.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // Identity is the server's.
    if let Some(md) = new["metadata"].as_object_mut() {
        md.insert("name".into(), json!(key.2));
        if r.namespaced {
            md.insert("namespace".into(), json!(key.1));
        }
    }
    let new = st.prepare(rt.res, new, Some(old));
    if strip(&new, false) == strip(old, false) {
        return Reply::Json(200, render(old, r, &rt.version));
    }
    let obj = st.commit(key, new, false);
    Reply::Json(200, render(&obj, r, &rt.version))
}

fn replace(st: &mut State, rt: &Route, name: &str, req: &Request) -> Reply {
    let r = &RESOURCES[rt.res];
    let key = key_of(rt.res, rt.ns.as_deref(), name);
    let Some(old) = st.objects.get(&key).cloned() else {
        return not_found(r, name);
    };
    let mut body = match parse_body(req).and_then(|b| check_kind(&b, r).map(|()| b)) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if let Err(e) = check_rv(&body, &old, r, name) {
        return e;
    }
    if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return fail(
            400,
            "BadRequest",
            "the name of the object does not match the URL",
        );
    }
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    update(st, rt, key, &old, body)
}

fn patch(st: &mut State, rt: &Route, name: &str, req: &Request) -> Reply {
    let r = &RESOURCES[rt.res];
    let key = key_of(rt.res, rt.ns.as_deref(), name);
    let old = st.objects.get(&key).cloned();
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let ct = req.content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let Some(old) = old else {
                return not_found(r, name);
            };
            if let Err(e) = check_rv(&body, &old, r, name) {
                return e;
            }
            let mut new = old.clone();
            merge(&mut new, &body);
            update(st, rt, key, &old, new)
        }
        "application/json-patch+json" => {
            let Some(old) = old else {
                return not_found(r, name);
            };
            let mut new = old.clone();
            if let Err(e) = json_patch(&mut new, &body) {
                return fail(422, "Invalid", e);
            }
            update(st, rt, key, &old, new)
        }
        "application/apply-patch+yaml" => {
            let Some(manager) = req.param("fieldManager").filter(|m| !m.is_empty()) else {
                return fail(
                    400,
                    "BadRequest",
                    "PATCH requests with apply-patch+yaml require a fieldManager",
                );
            };
            if let Err(e) = check_kind(&body, r) {
                return e;
            }
            if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                return fail(
                    400,
                    "BadRequest",
                    "the name of the object does not match the URL",
                );
            }
            let entry = json!({"manager": manager, "operation": "Apply",
                "apiVersion": r.api_version(&rt.version), "time": now_rfc3339(),
                "fieldsType": "FieldsV1", "fieldsV1": {}});
            let entry = if rt.status {
                let mut e = entry;
                e["subresource"] = json!("status");
                e
            } else {
                entry
            };
            match old {
                None if rt.status => not_found(r, name),
                None => {
                    let mut body = body;
                    body["metadata"]["name"] = json!(name);
                    if let Some(md) = body["metadata"].as_object_mut() {
                        md.remove("resourceVersion");
                    }
                    let (ns, _) = match names(&mut body, rt.res, rt.ns.as_deref()) {
                        Ok(n) => n,
                        Err(e) => return fail(422, "Invalid", e),
                    };
                    if r.status
                        && let Some(m) = body.as_object_mut()
                    {
                        m.remove("status");
                    }
                    body["metadata"]["managedFields"] = json!([entry]);
                    let obj = st.prepare(rt.res, body, None);
                    let obj = st.commit((rt.res, ns, name.to_string()), obj, true);
                    Reply::Json(201, render(&obj, r, &rt.version))
                }
                Some(old) => {
                    let mut new = old.clone();
                    let mut body = body;
                    if let Some(md) = body["metadata"].as_object_mut() {
                        md.remove("resourceVersion");
                        md.remove("managedFields");
                    }
                    merge(&mut new, &body);
                    let mut fields: Vec<Value> = old["metadata"]["managedFields"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    fields.retain(|f| {
                        f["manager"].as_str() != Some(manager)
                            || f["subresource"] != entry["subresource"]
                    });
                    fields.push(entry);
                    new["metadata"]["managedFields"] = json!(fields);
                    update(st, rt, key, &old, new)
                }
            }
        }
        other => fail(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {other}"),
        ),
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6902 JSON patch: add, remove, replace, test (enough for clients that use it).
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("JSON patch is not an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("op without path")?;
        let parts: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = parts.split_last().ok_or("empty path")?;
        let mut cur = &mut *doc;
        for p in parents {
            cur = match cur {
                Value::Object(m) => m.get_mut(p).ok_or(format!("no {path}"))?,
                Value::Array(a) => {
                    let i: usize = p.parse().map_err(|_| format!("bad index in {path}"))?;
                    a.get_mut(i).ok_or(format!("no {path}"))?
                }
                _ => return Err(format!("no {path}")),
            };
        }
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match (op["op"].as_str().unwrap_or(""), cur) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), value);
            }
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            ("add", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| "bad index")?;
                if i > a.len() {
                    return Err(format!("index out of range in {path}"));
                }
                a.insert(i, value);
            }
            ("replace", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| "bad index")?;
                *a.get_mut(i).ok_or("index out of range")? = value;
            }
            ("remove", Value::Object(m)) => {
                m.remove(last).ok_or(format!("no {path}"))?;
            }
            ("remove", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| "bad index")?;
                if i >= a.len() {
                    return Err(format!("index out of range in {path}"));
                }
                a.remove(i);
            }
            ("test", Value::Object(m)) => {
                if m.get(last) != Some(&value) {
                    return Err(format!("test failed at {path}"));
                }
            }
            ("test", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| "bad index")?;
                if a.get(i) != Some(&value) {
                    return Err(format!("test failed at {path}"));
                }
            }
            (o, _) => return Err(format!("unsupported op {o:?} at {path}")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- watch

/// A watch request.
struct WatchSpec {
    res: usize,
    version: String,
    ns: Option<String>,
    sel: Selectors,
    /// `None`: start with a synthetic ADDED per current object.
    from: Option<u64>,
    bookmarks: bool,
    initial_events: bool,
    timeout: Duration,
}

impl WatchSpec {
    fn new(rt: &Route, req: &Request) -> Result<WatchSpec, String> {
        let from = match req.param("resourceVersion").unwrap_or("") {
            "" | "0" => None,
            v => Some(
                v.parse::<u64>()
                    .map_err(|_| format!("invalid resourceVersion {v:?}"))?,
            ),
        };
        let timeout = req
            .param("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(MAX_WATCH)
            .min(MAX_WATCH);
        Ok(WatchSpec {
            res: rt.res,
            version: rt.version.clone(),
            ns: rt.ns.clone(),
            sel: Selectors::parse(req)?,
            from,
            bookmarks: matches!(req.param("allowWatchBookmarks"), Some("true" | "1")),
            initial_events: matches!(req.param("sendInitialEvents"), Some("true" | "1")),
            timeout,
        })
    }

    fn event(&self, ty: &str, obj: &Value) -> Vec<u8> {
        let r = &RESOURCES[self.res];
        let mut line =
            serde_json::to_vec(&json!({"type": ty, "object": render(obj, r, &self.version)}))
                .unwrap_or_default();
        line.push(b'\n');
        let mut out = format!("{:x}\r\n", line.len()).into_bytes();
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Vec<u8> {
        let r = &RESOURCES[self.res];
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.event(
            "BOOKMARK",
            &json!({"kind": r.kind, "apiVersion": r.api_version(&self.version), "metadata": md}),
        )
    }

    fn gone(&self, rv: u64) -> Vec<u8> {
        let mut s = status(
            410,
            "Expired",
            &format!("too old resource version: {rv}"),
            None,
        );
        s["apiVersion"] = json!("v1");
        let mut line =
            serde_json::to_vec(&json!({"type": "ERROR", "object": s})).unwrap_or_default();
        line.push(b'\n');
        let mut out = format!("{:x}\r\n", line.len()).into_bytes();
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn wants(&self, res: usize, obj: &Value) -> bool {
        res == self.res
            && self
                .ns
                .as_deref()
                .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && self.sel.matches(obj)
    }
}

/// Streams one watch; returns whether the connection may be reused.
async fn stream_watch(sock: &mut TcpStream, sh: &Shared, w: Box<WatchSpec>) -> io::Result<bool> {
    let mut tick = sh.tick.subscribe();
    tick.borrow_and_update();
    write_all(
        sock,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n",
    )
    .await?;
    let deadline = Instant::now() + w.timeout;
    let (epoch, mut last, first) = {
        let st = sh.lock();
        let mut out = Vec::new();
        let last = match w.from {
            Some(rv) if !w.initial_events && rv < st.oldest => {
                out.extend(w.gone(rv));
                None
            }
            Some(rv) if !w.initial_events => Some(rv),
            _ => {
                for (key, obj) in st.objects.range((w.res, String::new(), String::new())..) {
                    if key.0 != w.res {
                        break;
                    }
                    if w.wants(key.0, obj) {
                        out.extend(w.event("ADDED", obj));
                    }
                }
                if w.initial_events && w.bookmarks {
                    out.extend(w.bookmark(st.rv, true));
                }
                Some(st.rv)
            }
        };
        (st.epoch, last, out)
    };
    write_all(sock, &first).await?;
    let mut next_bookmark = Instant::now() + BOOKMARK_EVERY;
    while let Some(from) = last {
        let out = {
            let st = sh.lock();
            if st.down || st.stopping {
                return Ok(false);
            }
            if st.epoch != epoch {
                break;
            }
            if from < st.oldest {
                last = None;
                w.gone(from)
            } else {
                let start = st.history.partition_point(|e| e.rv <= from);
                let mut out = Vec::new();
                for e in st.history.range(start..) {
                    if w.wants(e.res, &e.obj) {
                        out.extend(w.event(e.ty, &e.obj));
                    }
                }
                last = Some(from.max(st.rv));
                out
            }
        };
        if !out.is_empty() {
            write_all(sock, &out).await?;
        }
        let Some(from) = last else { break };
        tokio::select! {
            r = tick.changed() => {
                if r.is_err() {
                    return Ok(false);
                }
            }
            _ = tokio::time::sleep_until(next_bookmark), if w.bookmarks => {
                write_all(sock, &w.bookmark(from, false)).await?;
                next_bookmark = Instant::now() + BOOKMARK_EVERY;
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    write_all(sock, b"0\r\n\r\n").await?;
    Ok(true)
}
