//! lb-pod-runner against a real control plane: a Deployment's pods are scheduled, run
//! and reported ready, the EndpointSlice controller lists them, and a deleted pod keeps
//! serving (draining) through its grace period as a terminating endpoint.
//!
//! Needs a cluster: `bench/cluster.sh up DIR`, then `LB_TEST_CLUSTER=DIR cargo test -p
//! bench --test pod_runner`. Without LB_TEST_CLUSTER the test fails (it never passes
//! without having run).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const PORT: u16 = 8080;

/// The cluster directory, or a failure that says how to get one.
fn cluster_dir() -> PathBuf {
    match std::env::var_os("LB_TEST_CLUSTER") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "this test needs a running cluster: run `bench/cluster.sh up DIR` and set \
             LB_TEST_CLUSTER=DIR (then `bench/cluster.sh down DIR` afterwards)"
        ),
    }
}

/// Deletes the test namespace when dropped, whether the test passed or not.
struct NamespaceGuard {
    dir: PathBuf,
    name: String,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let status = std::process::Command::new(self.dir.join("bin/kubectl"))
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.kubeconfig"))
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .args(["--ignore-not-found"])
            .stdout(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not delete namespace {}: {status:?}", self.name);
        }
    }
}

/// An HTTP response: status, lowercased header names with values, body.
struct Reply {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// One HTTP/1.1 GET on a fresh connection.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let code: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Reply {
        code,
        headers,
        body,
    })
}

fn pod_addr(pod: &Pod) -> SocketAddr {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .expect("pod IP");
    SocketAddr::new(ip.parse().expect("pod IP"), PORT)
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Polls `f` every 100 ms until it returns `Some`, failing after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly `n` ready (not terminating) pods of the Deployment, sorted by name.
async fn ready_pods(pods: &Api<Pod>, n: usize) -> Vec<Pod> {
    eventually(
        &format!("{n} ready pods"),
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=echo"))
                .await
                .ok()?;
            let mut ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
            ready.sort_by_key(name);
            (ready.len() == n).then_some(ready)
        },
    )
    .await
}

/// The endpoints of the Service's slices: pod name to (ready, serving, terminating).
async fn endpoints(slices: &Api<EndpointSlice>) -> Vec<(String, bool, bool, bool)> {
    let Ok(list) = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=echo"))
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for slice in list.items {
        for ep in slice.endpoints {
            let pod = ep
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            let c = ep.conditions.unwrap_or_default();
            out.push((
                pod,
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            ));
        }
    }
    out.sort();
    out
}

fn object<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> T {
    serde_json::from_value(json).expect("valid object")
}

#[test]
fn deployment_runs_serves_and_drains() {
    let dir = cluster_dir();
    let kubeconfig = dir.join("admin.kubeconfig");
    assert!(
        kubeconfig.exists(),
        "{} missing: is LB_TEST_CLUSTER a directory made by `bench/cluster.sh up DIR`?",
        kubeconfig.display()
    );
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&dir, &kubeconfig));
}

async fn run(dir: &Path, kubeconfig: &Path) {
    let client = bench::pod_runner::client(kubeconfig)
        .await
        .expect("kube client");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ns = format!(
        "pod-runner-test-{}-{}",
        std::process::id(),
        stamp % 1_000_000
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &object(serde_json::json!({"metadata": {"name": ns}})),
        )
        .await
        .expect("create namespace");
    let _guard = NamespaceGuard {
        dir: dir.to_owned(),
        name: ns.clone(),
    };

    // Pods can be created once kube-controller-manager made the default ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the default ServiceAccount",
        Duration::from_secs(30),
        || async { accounts.get_opt("default").await.ok().flatten() },
    )
    .await;

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "metadata": {"name": "echo"},
                "spec": {"selector": {"app": "echo"},
                         "ports": [{"name": "http", "port": 80, "targetPort": PORT}]}
            })),
        )
        .await
        .expect("create service");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "metadata": {"name": "echo"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "echo"}},
                    "template": {
                        "metadata": {"labels": {"app": "echo"}},
                        "spec": {"containers": [{
                            "name": "echo",
                            "image": "lb-test.invalid/echo:1",
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"},
                                               "periodSeconds": 1}
                        }]}
                    }
                }
            })),
        )
        .await
        .expect("create deployment");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let first = ready_pods(&pods, 2).await;

    // Each pod answers on its own IP, naming itself.
    for pod in &first {
        let addr = pod_addr(pod);
        let reply = http_get(addr, "/hello").expect("pod answers");
        assert_eq!(reply.code, 200);
        assert_eq!(
            reply.json()["backend"],
            name(pod),
            "pod {} at {addr}",
            name(pod)
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("lb-node")
        );
    }
    assert_ne!(pod_addr(&first[0]).ip(), pod_addr(&first[1]).ip());

    // The EndpointSlice controller lists both as ready.
    let names: Vec<String> = first.iter().map(name).collect();
    eventually("both endpoints ready", Duration::from_secs(30), || async {
        let eps = endpoints(&slices).await;
        let ready = names
            .iter()
            .all(|n| eps.iter().any(|e| &e.0 == n && e.1 && e.2 && !e.3));
        ready.then_some(())
    })
    .await;

    // Delete one with a 3 s grace period.
    let victim = first[0].clone();
    let victim_name = name(&victim);
    let victim_addr = pod_addr(&victim);
    let deleted_at = Instant::now();
    pods.delete(
        &victim_name,
        &DeleteParams {
            grace_period_seconds: Some(3),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("delete pod");

    // During the grace period: serving, not ready, terminating; still answering, with
    // Connection: close.
    eventually(
        "the deleted pod's endpoint to be serving, not ready, terminating",
        Duration::from_secs(2),
        || async {
            let eps = endpoints(&slices).await;
            eps.iter()
                .any(|e| e.0 == victim_name && !e.1 && e.2 && e.3)
                .then_some(())
        },
    )
    .await;
    // The EndpointSlice controller and the pod runner both watch the deletion; the
    // endpoint may turn terminating a moment before the runner's SIGTERM reaches the
    // process, so wait for the drain to show (within the grace period).
    let reply = eventually(
        "the terminating pod to answer with Connection: close",
        Duration::from_millis(1500),
        || async {
            let reply = http_get(victim_addr, "/draining").expect("terminating pod answers");
            assert_eq!(reply.code, 200);
            (reply.header("connection") == Some("close")).then_some(reply)
        },
    )
    .await;
    assert_eq!(reply.json()["backend"], victim_name.as_str());
    assert!(
        deleted_at.elapsed() < Duration::from_millis(2500),
        "the checks during the grace period took too long ({:?})",
        deleted_at.elapsed()
    );
    let still = pods.get_opt(&victim_name).await.unwrap();
    assert!(
        still.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the pod went away before its grace period ended"
    );

    // After the grace period: gone, its process killed.
    eventually(
        "the deleted pod to be gone",
        Duration::from_secs(15),
        || async { matches!(pods.get_opt(&victim_name).await, Ok(None)).then_some(()) },
    )
    .await;
    let gone_after = deleted_at.elapsed();
    assert!(
        gone_after >= Duration::from_millis(2500),
        "the pod was gone after {gone_after:?}, before its 3 s grace period"
    );
    assert!(
        http_get(victim_addr, "/").is_err(),
        "the deleted pod's process still answers"
    );

    // A replacement is ready and the slice lists the two live pods only.
    let second = ready_pods(&pods, 2).await;
    let names: Vec<String> = second.iter().map(name).collect();
    assert!(!names.contains(&victim_name));
    assert!(names.contains(&first[1].metadata.name.clone().unwrap()));
    for pod in &second {
        let reply = http_get(pod_addr(pod), "/").expect("pod answers");
        assert_eq!(reply.code, 200);
        assert_eq!(reply.json()["backend"], name(pod));
    }
    eventually(
        "the slice to list exactly the two live pods, ready",
        Duration::from_secs(30),
        || async {
            let eps = endpoints(&slices).await;
            let ok = eps.len() == 2
                && names
                    .iter()
                    .all(|n| eps.iter().any(|e| &e.0 == n && e.1 && e.2 && !e.3));
            ok.then_some(())
        },
    )
    .await;

    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
}
