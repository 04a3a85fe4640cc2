//! The scheduler stand-in: binds every unscheduled pod of the default scheduler to the
//! node through the `pods/{name}/binding` subresource.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{oneshot, watch};

use super::{Ctx, is_status};

/// How often failed bindings are retried.
const RETRY: Duration = Duration::from_secs(1);

/// Whether the runner should bind `pod`: not bound, not being deleted, not finished, and
/// for the default scheduler.
pub fn wants_binding(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let unbound = spec.node_name.as_deref().unwrap_or("").is_empty();
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("") | Some("default-scheduler")
    );
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    unbound && ours && !finished && pod.metadata.deletion_timestamp.is_none()
}

/// The Binding that assigns `namespace/name` to `node`.
pub fn binding(namespace: &str, name: &str, uid: Option<String>, node: &str) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid,
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    }
}

/// Binds one pod. Ok(false) when it was bound or deleted meanwhile.
async fn bind(ctx: &Ctx, namespace: &str, name: &str, uid: &str) -> Result<bool, kube::Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let body = binding(namespace, name, Some(uid.to_owned()), &ctx.opts.node);
    let pp = PostParams {
        field_manager: Some(super::node::FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api
        .create_subresource::<_, serde_json::Value>("binding", name, &pp, &body)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Watches unscheduled pods and binds them until `shutdown`. `synced` fires once the
/// first list is done.
pub async fn run(ctx: Arc<Ctx>, synced: oneshot::Sender<()>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut synced = Some(synced);
    // Pods bound already (their watch event may still come) and pods to retry.
    let mut bound: HashSet<String> = HashSet::new();
    let mut retry: HashMap<String, (String, String)> = HashMap::new();
    let mut retry_tick = tokio::time::interval(RETRY);
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = retry_tick.tick() => {
                for (uid, (namespace, name)) in std::mem::take(&mut retry) {
                    attempt(&ctx, &namespace, &name, uid, &mut bound, &mut retry).await;
                }
                continue;
            }
            () = super::stopping(&mut shutdown) => return,
        };
        let Some(event) = event else { return };
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    bound.remove(uid);
                    retry.remove(uid);
                }
                continue;
            }
            Ok(Event::Init) => continue,
            Ok(Event::InitDone) => {
                if let Some(tx) = synced.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            Err(e) => {
                say!("watching unscheduled pods: {e}");
                continue;
            }
        };
        let (Some(namespace), Some(name), Some(uid)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            pod.metadata.uid.clone(),
        ) else {
            continue;
        };
        if !wants_binding(&pod) || bound.contains(&uid) {
            continue;
        }
        attempt(&ctx, &namespace, &name, uid, &mut bound, &mut retry).await;
    }
}

async fn attempt(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
    uid: String,
    bound: &mut HashSet<String>,
    retry: &mut HashMap<String, (String, String)>,
) {
    match bind(ctx, namespace, name, &uid).await {
        Ok(true) => {
            say!("bound {namespace}/{name} to {}", ctx.opts.node);
            bound.insert(uid);
        }
        Ok(false) => {
            bound.insert(uid);
        }
        Err(e) => {
            say!("binding {namespace}/{name}: {e} (retrying)");
            retry.insert(uid, (namespace.to_owned(), name.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn which_pods_are_bound() {
        let base = serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        assert!(wants_binding(&pod(base.clone())));
        let mut p = base.clone();
        p["spec"]["schedulerName"] = "default-scheduler".into();
        assert!(wants_binding(&pod(p.clone())));
        p["spec"]["schedulerName"] = "other".into();
        assert!(!wants_binding(&pod(p)));
        let mut p = base.clone();
        p["spec"]["nodeName"] = "n".into();
        assert!(!wants_binding(&pod(p)));
        let mut p = base.clone();
        p["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z".into();
        assert!(!wants_binding(&pod(p)));
        let mut p = base;
        p["status"] = serde_json::json!({"phase": "Failed"});
        assert!(!wants_binding(&pod(p)));
    }

    #[test]
    fn binding_targets_the_node() {
        let b = binding("ns", "p", Some("u".into()), "n1");
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["metadata"]["name"], "p");
        assert_eq!(json["metadata"]["namespace"], "ns");
        assert_eq!(json["target"]["kind"], "Node");
        assert_eq!(json["target"]["name"], "n1");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Binding");
    }
}
