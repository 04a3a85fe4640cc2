//! Self-tests of the stand-in Kubernetes API server (`support::kube_api`):
//! plain HTTP/1.1 with a tiny blocking client, and one `kube::Client`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::kube_api::KubeApi;
use crate::support::scratch_dir;

/// One request on a fresh connection; returns (status, JSON body or Null).
fn call(addr: SocketAddr, method: &str, target: &str, ctype: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer t\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    let code = head[9..12].parse().expect("status code");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn get(addr: SocketAddr, target: &str) -> (u16, Value) {
    call(addr, "GET", target, "application/json", "")
}

/// An open watch stream.
struct Watch {
    r: BufReader<TcpStream>,
}

impl Watch {
    fn open(addr: SocketAddr, target: &str) -> Watch {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: k\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Watch { r }
    }

    /// The next event; `None` when the stream ended cleanly.
    fn next(&mut self) -> Option<Value> {
        let mut size = String::new();
        self.r.read_line(&mut size).expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex size");
        let mut data = vec![0; n + 2];
        self.r.read_exact(&mut data).expect("chunk");
        if n == 0 {
            return None;
        }
        assert!(data.ends_with(b"\n\r\n"));
        Some(serde_json::from_slice(&data[..n]).expect("event JSON"))
    }

    /// The next event that is not a BOOKMARK.
    fn next_change(&mut self) -> Option<Value> {
        loop {
            let e = self.next()?;
            if e["type"] != "BOOKMARK" {
                return Some(e);
            }
        }
    }
}

fn svc(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {name}\nspec:\n  ports:\n  - port: {port}\n"
    )
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .unwrap()
}

#[test]
fn list_watch_and_resume() {
    let api = KubeApi::start();
    let a = api.addr();
    api.apply_yaml(&format!("{}---\n{}", svc("web", 80), svc("db", 5432)));
    let (code, list) = get(a, "/api/v1/services");
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["items"][0]["kind"], "Service");
    let rv = rv_of(&list);
    assert_eq!(rv, 2);
    let (code, one) = get(a, "/api/v1/namespaces/default/services/web");
    assert_eq!(
        (code, one["spec"]["ports"][0]["port"].as_u64()),
        (200, Some(80))
    );
    let (code, st) = get(a, "/api/v1/namespaces/default/services/nope");
    assert_eq!(
        (code, st["kind"].as_str(), st["reason"].as_str()),
        (404, Some("Status"), Some("NotFound"))
    );
    assert_eq!(
        get(a, "/api/v1/namespaces/other/services").1["items"],
        json!([])
    );

    let mut w = Watch::open(a, &format!("/api/v1/services?watch=1&resourceVersion={rv}"));
    api.apply_yaml(&svc("web", 8080));
    let e = w.next_change().unwrap();
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(e["object"]["spec"]["ports"][0]["port"], 8080);
    api.delete("Service", Some("default"), "db");
    let e = w.next_change().unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("db"))
    );
    let last = rv_of(&e["object"]);

    // Dropped: the stream ends; changes meanwhile are replayed on resume.
    api.drop_watches();
    assert!(w.next_change().is_none(), "stream should end");
    api.apply_yaml(&svc("cache", 6379));
    let mut w = Watch::open(
        a,
        &format!("/api/v1/namespaces/default/services?watch=true&resourceVersion={last}"),
    );
    let e = w.next_change().unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("cache"))
    );

    // No resourceVersion: synthetic ADDED for the current state.
    let mut w = Watch::open(a, "/api/v1/services?watch=1&timeoutSeconds=1");
    let names: Vec<String> = std::iter::from_fn(|| w.next_change())
        .map(|e| {
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["cache", "web"],
        "then the stream ends after timeoutSeconds"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/services?watch=1&resourceVersion="))
    );
}

#[test]
fn bookmarks_and_initial_events() {
    let api = KubeApi::start();
    api.apply_yaml(&svc("web", 80));
    let mut w = Watch::open(
        api.addr(),
        "/api/v1/services?watch=1&resourceVersion=1&allowWatchBookmarks=true",
    );
    let start = Instant::now();
    let e = w.next().unwrap();
    assert_eq!(e["type"], "BOOKMARK");
    assert_eq!(e["object"]["kind"], "Service");
    assert_eq!(e["object"]["metadata"]["resourceVersion"], "1");
    assert!(start.elapsed() < Duration::from_secs(3));

    let mut w = Watch::open(
        api.addr(),
        "/api/v1/services?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=",
    );
    assert_eq!(w.next().unwrap()["type"], "ADDED");
    let b = w.next().unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(
        b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn gone_after_compact() {
    let api = KubeApi::start();
    for i in 0..3 {
        api.apply_yaml(&svc(&format!("s{i}"), 80));
    }
    api.compact();
    let mut w = Watch::open(api.addr(), "/api/v1/services?watch=1&resourceVersion=1");
    let e = w.next().unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(
        (e["object"]["kind"].as_str(), e["object"]["code"].as_u64()),
        (Some("Status"), Some(410))
    );
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(w.next().is_none());
    // Relist, then watch from the list's version.
    let (code, list) = get(api.addr(), "/api/v1/services");
    assert_eq!((code, list["items"].as_array().unwrap().len()), (200, 3));
    let mut w = Watch::open(
        api.addr(),
        &format!("/api/v1/services?watch=1&resourceVersion={}", rv_of(&list)),
    );
    api.apply_yaml(&svc("s3", 80));
    assert_eq!(w.next_change().unwrap()["type"], "ADDED");
}

#[test]
fn writes_and_status_subresource() {
    let api = KubeApi::start();
    let a = api.addr();
    let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb1"},
        "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "9.9.9.9"}]}}});
    let (code, created) = call(
        a,
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        &body.to_string(),
    );
    assert_eq!(code, 201);
    assert!(
        created.get("status").is_none(),
        "status is ignored on create"
    );
    let (code, st) = call(
        a,
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        &body.to_string(),
    );
    assert_eq!((code, st["reason"].as_str()), (409, Some("AlreadyExists")));
    let rv = rv_of(&created);

    let mut w = Watch::open(a, &format!("/api/v1/services?watch=1&resourceVersion={rv}"));
    let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}, "spec": {"type": "ClusterIP"}});
    let (code, got) = call(
        a,
        "PATCH",
        "/api/v1/namespaces/default/services/lb1/status",
        "application/merge-patch+json",
        &patch.to_string(),
    );
    assert_eq!(code, 200);
    assert_eq!(
        got["status"]["loadBalancer"]["ingress"][0]["ip"],
        "10.0.0.1"
    );
    assert_eq!(
        got["spec"]["type"], "LoadBalancer",
        "a status write changes only .status"
    );
    assert!(rv_of(&got) > rv);
    let e = w.next_change().unwrap();
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(api.status_writes(), ["Service default/lb1"]);

    // Server-side apply to status, field manager recorded; a no-op keeps the version.
    let apply = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb1", "namespace": "default"},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
    let t = "/api/v1/namespaces/default/services/lb1/status?fieldManager=lb&force=true";
    let (code, got2) = call(
        a,
        "PATCH",
        t,
        "application/apply-patch+yaml",
        &apply.to_string(),
    );
    assert_eq!(code, 200);
    assert_eq!(rv_of(&got2), rv_of(&got) + 1, "managedFields changed");
    assert_eq!(got2["metadata"]["managedFields"][0]["manager"], "lb");
    let (_, got3) = call(
        a,
        "PATCH",
        t,
        "application/apply-patch+yaml",
        &apply.to_string(),
    );
    assert_eq!(rv_of(&got3), rv_of(&got2), "no-op write keeps the version");
    assert_eq!(api.status_writes().len(), 3);
    let (code, _) = call(
        a,
        "PATCH",
        "/api/v1/namespaces/default/services/lb1/status",
        "application/apply-patch+yaml",
        &apply.to_string(),
    );
    assert_eq!(code, 400, "apply needs a fieldManager");

    // Main resource: writes leave .status; stale resourceVersion conflicts.
    let mut put = got3.clone();
    put["spec"]["type"] = json!("NodePort");
    put["status"] = json!({});
    let (code, after) = call(
        a,
        "PUT",
        "/api/v1/namespaces/default/services/lb1",
        "application/json",
        &put.to_string(),
    );
    assert_eq!(code, 200);
    assert_eq!(after["spec"]["type"], "NodePort");
    assert_eq!(
        after["status"]["loadBalancer"]["ingress"][0]["ip"],
        "10.0.0.1"
    );
    assert_eq!(after["metadata"]["generation"], 2);
    let (code, st) = call(
        a,
        "PUT",
        "/api/v1/namespaces/default/services/lb1",
        "application/json",
        &put.to_string(),
    );
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")));

    // Leases: apply creates if absent; a field selector on the name.
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lb-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    let (code, _) = call(
        a,
        "PATCH",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/lb-leader?fieldManager=a",
        "application/apply-patch+yaml",
        &lease.to_string(),
    );
    assert_eq!(code, 201);
    let (_, l) = get(
        a,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases?fieldSelector=metadata.name%3Dlb-leader",
    );
    assert_eq!(l["items"][0]["spec"]["holderIdentity"], "a");
    let (_, l) = get(
        a,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases?fieldSelector=metadata.name%3Dother",
    );
    assert_eq!(l["items"], json!([]));
    let (code, _) = call(
        a,
        "DELETE",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/lb-leader",
        "application/json",
        "",
    );
    assert_eq!(code, 200);
    assert!(api.get("Lease", Some("default"), "lb-leader").is_none());
}

#[test]
fn selectors_and_pages() {
    let api = KubeApi::start();
    let a = api.addr();
    api.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: tls, namespace: default}\ntype: kubernetes.io/tls\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: default}\ntype: Opaque\n",
    );
    let (_, l) = get(
        a,
        "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls",
    );
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert_eq!(l["items"][0]["metadata"]["name"], "tls");
    for i in 0..5 {
        api.apply_yaml(&svc(&format!("s{i}"), 80));
    }
    let (_, l) = get(a, "/api/v1/services?labelSelector=app%3Ds3");
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let (_, l) = get(a, "/api/v1/services?labelSelector=app+in+(s1,s2),app!%3Ds2");
    assert_eq!(l["items"][0]["metadata"]["name"], "s1");
    let mut names = Vec::new();
    let mut target = "/api/v1/services?limit=2".to_string();
    for _ in 0..5 {
        let (_, l) = get(a, &target);
        names.extend(
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].clone()),
        );
        match l["metadata"]["continue"].as_str() {
            Some(c) => target = format!("/api/v1/services?limit=2&continue={c}"),
            None => break,
        }
    }
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
    let (code, v) = get(a, "/version");
    assert_eq!((code, v["major"].as_str()), (200, Some("1")));
    let (code, l) = get(a, "/apis/gateway.networking.k8s.io/v1/httproutes");
    assert_eq!((code, l["kind"].as_str()), (200, Some("HTTPRouteList")));
}

#[test]
fn down_and_up() {
    let api = KubeApi::start();
    api.apply_yaml(&svc("web", 80));
    let mut w = Watch::open(api.addr(), "/api/v1/services?watch=1&resourceVersion=1");
    api.set_down(true);
    // The open watch ends without the terminating chunk: the connection closes.
    let mut rest = Vec::new();
    let _ = w.r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let mut s = TcpStream::connect(api.addr()).expect("accepted while down");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(s, "GET /version HTTP/1.1\r\nHost: k\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "closed without an answer");
    api.set_down(false);
    assert_eq!(get(api.addr(), "/api/v1/services").0, 200);
}

/// kube-rs's own client lists through the stand-in. kube builds its HTTPS
/// connector even for `http://`, so the process needs a rustls
/// `CryptoProvider`, as `lb serve` installs one.
#[test]
fn kube_client_lists_services() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let api = KubeApi::start();
    api.apply_yaml(&svc("web", 80));
    let dir = scratch_dir("kube-api");
    let path = api.kubeconfig(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let names = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
        let opts = kube::config::KubeConfigOptions {
            context: Some("test".into()),
            ..Default::default()
        };
        let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .expect("config");
        let client = kube::Client::try_from(cfg).expect("client");
        let svcs: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::all(client);
        let list = svcs.list(&Default::default()).await.expect("list services");
        list.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap_or_default())
            .collect::<Vec<_>>()
    });
    assert_eq!(names, ["web"]);
    let _ = std::fs::remove_dir_all(&dir);
}
