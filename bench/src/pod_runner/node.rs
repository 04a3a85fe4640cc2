//! The Node: registration, status and the kubelet-style heartbeats that keep
//! kube-controller-manager's node lifecycle controller from marking it NotReady.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use super::args::Options;
use super::{Ctx, is_status, now};

/// Namespace of the node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often the lease is renewed.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The lease's duration.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the node status (its Ready heartbeat) is rewritten.
pub const STATUS_EVERY: Duration = Duration::from_secs(30);
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "lb-pod-runner";

/// The registered node: its UID (for the lease's owner reference) and when its
/// conditions last changed.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The Node's UID.
    pub uid: String,
    /// The conditions' `lastTransitionTime`.
    pub since: Time,
}

/// The node's labels.
pub fn labels(opts: &Options) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), opts.node.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "kubernetes.io/arch".to_owned(),
            arch(std::env::consts::ARCH).to_owned(),
        ),
        ("topology.kubernetes.io/zone".to_owned(), opts.zone.clone()),
    ])
}

/// The Go name of a Rust target architecture.
fn arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The node's status: Ready (and no pressure), loopback addresses, a roomy capacity.
/// `since` is the conditions' transition time, `now` their heartbeat.
pub fn node_status(node: &str, since: &Time, now: &Time) -> NodeStatus {
    let condition = |ty: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: ty.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since.clone()),
    };
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity("8".to_owned())),
        ("memory".to_owned(), Quantity("16Gi".to_owned())),
        ("pods".to_owned(), Quantity("1000".to_owned())),
        ("ephemeral-storage".to_owned(), Quantity("100Gi".to_owned())),
    ]);
    let machine_id = read_trimmed("/etc/machine-id").unwrap_or_else(|| node.to_owned());
    NodeStatus {
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "lb-pod-runner is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: super::status::HOST_IP.to_owned(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: node.to_owned(),
            },
        ]),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        node_info: Some(NodeSystemInfo {
            architecture: arch(std::env::consts::ARCH).to_owned(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            container_runtime_version: "lbpod://0.1.0".to_owned(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.37.0-lb-pod-runner".to_owned(),
            machine_id: machine_id.clone(),
            operating_system: "linux".to_owned(),
            os_image: "lb-pod-runner (pods as local processes)".to_owned(),
            system_uuid: machine_id,
            swap: None,
        }),
        ..NodeStatus::default()
    }
}

/// Creates the node, or adopts an existing one (its labels updated), and writes its
/// status.
pub async fn register(ctx: &Ctx) -> Result<Registered, kube::Error> {
    let opts = &ctx.opts;
    let api: Api<Node> = Api::all(ctx.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(opts.node.clone()),
            labels: Some(labels(opts)),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let created = match api.create(&pp, &node).await {
        Ok(node) => {
            say!("registered node {}", opts.node);
            node
        }
        Err(e) if is_status(&e, 409) => {
            let patch = json!({"metadata": {"labels": labels(opts)}});
            let node = api
                .patch(&opts.node, &patch_params(), &Patch::Merge(&patch))
                .await?;
            say!("adopted existing node {}", opts.node);
            node
        }
        Err(e) => return Err(e),
    };
    // An adopted node that is Ready already keeps its transition time.
    let since = created
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    let registered = Registered {
        uid: created.metadata.uid.unwrap_or_default(),
        since,
    };
    write_status(&api, opts, &registered).await?;
    Ok(registered)
}

/// [`register`], retried every second until it succeeds (the API server may still be
/// starting).
pub async fn register_until_ok(ctx: &Ctx) -> Registered {
    let mut logged = false;
    loop {
        match register(ctx).await {
            Ok(r) => return r,
            Err(e) => {
                if !logged {
                    say!("registering node {}: {e} (retrying)", ctx.opts.node);
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

async fn write_status(
    api: &Api<Node>,
    opts: &Options,
    registered: &Registered,
) -> Result<(), kube::Error> {
    let status = node_status(&opts.node, &registered.since, &now());
    let patch = json!({ "status": status });
    api.patch_status(&opts.node, &patch_params(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

/// The node's lease, renewed now.
fn lease(opts: &Options, node_uid: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(opts.node.clone()),
            namespace: Some(LEASE_NAMESPACE.to_owned()),
            owner_references: (!node_uid.is_empty()).then(|| {
                vec![OwnerReference {
                    api_version: "v1".to_owned(),
                    kind: "Node".to_owned(),
                    name: opts.node.clone(),
                    uid: node_uid.to_owned(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(opts.node.clone()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    }
}

async fn renew_lease(ctx: &Ctx, node_uid: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), LEASE_NAMESPACE);
    let lease = lease(&ctx.opts, node_uid);
    let patch = json!({ "spec": lease.spec });
    match api
        .patch(&ctx.opts.node, &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => {
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            api.create(&pp, &lease).await?;
            say!("created lease {LEASE_NAMESPACE}/{}", ctx.opts.node);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Renews the lease every [`LEASE_RENEW`] and rewrites the node status every
/// [`STATUS_EVERY`] until `shutdown`; registers the node again if it was deleted.
pub async fn keep_alive(
    ctx: Arc<Ctx>,
    mut registered: Registered,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut last_status = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        let mut result = renew_lease(&ctx, &registered.uid).await;
        if result.is_ok() && last_status.elapsed() >= STATUS_EVERY {
            result = write_status(&api, &ctx.opts, &registered).await;
            if result.is_ok() {
                last_status = tokio::time::Instant::now();
            }
        }
        match result {
            Ok(()) => {
                if failing {
                    say!("node heartbeat works again");
                }
                failing = false;
            }
            Err(e)
                if is_status(&e, 404) && matches!(api.get_opt(&ctx.opts.node).await, Ok(None)) =>
            {
                say!("node {} was deleted: registering it again", ctx.opts.node);
                if let Ok(r) = register(&ctx).await {
                    registered = r;
                    last_status = tokio::time::Instant::now();
                }
            }
            Err(e) => {
                if !failing {
                    say!("node heartbeat failed: {e}");
                }
                failing = true;
            }
        }
        let wait = if failing {
            Duration::from_secs(2)
        } else {
            LEASE_RENEW
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = super::stopping(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_with_heartbeat() {
        let since = Time("2025-01-01T00:00:00Z".parse().unwrap());
        let now = Time("2025-01-01T00:01:00Z".parse().unwrap());
        let status = node_status("n1", &since, &now);
        let conditions = status.conditions.as_ref().unwrap();
        let get = |ty: &str| conditions.iter().find(|c| c.type_ == ty).unwrap();
        assert_eq!(get("Ready").status, "True");
        for ty in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(get(ty).status, "False");
        }
        for c in conditions {
            assert_eq!(c.last_heartbeat_time.as_ref(), Some(&now));
            assert_eq!(c.last_transition_time.as_ref(), Some(&since));
        }
        let addresses = status.addresses.as_ref().unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "127.0.0.1");
        assert_eq!(addresses[1].type_, "Hostname");
        assert_eq!(addresses[1].address, "n1");
        for r in [status.capacity.as_ref(), status.allocatable.as_ref()] {
            let r = r.unwrap();
            assert_eq!(r["cpu"].0, "8");
            assert_eq!(r["memory"].0, "16Gi");
            assert_eq!(r["pods"].0, "1000");
        }
        let info = status.node_info.as_ref().unwrap();
        assert_eq!(info.operating_system, "linux");
        assert!(!info.kubelet_version.is_empty());
        assert!(!info.machine_id.is_empty());
    }

    #[test]
    fn labels_and_lease() {
        let opts = super::super::args::parse(
            [
                "--kubeconfig",
                "k",
                "--node",
                "n1",
                "--zone",
                "zone-q",
                "--pod-cidr",
                "127.77.0.0/16",
                "--echo",
                "e",
                "--log-dir",
                "l",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        let l = labels(&opts);
        assert_eq!(l["kubernetes.io/hostname"], "n1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["topology.kubernetes.io/zone"], "zone-q");
        let lease = lease(&opts, "uid-1");
        assert_eq!(lease.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        assert_eq!(
            lease.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert!(spec.renew_time.is_some());
    }
}
