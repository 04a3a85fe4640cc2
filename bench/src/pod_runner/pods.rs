//! The node's pods: one watch (`spec.nodeName=<node>`) feeding one [`worker`] task per
//! pod. Pods already bound when the runner starts are adopted the same way.
//!
//! [`worker`]: super::worker

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::Ctx;

/// A pod's worker: where its updates go and its task.
struct Entry {
    updates: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
}

/// Whether a pod is finished for good (the runner never starts those).
fn finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// Watches the node's pods and runs a worker per pod until `shutdown`; then waits for
/// every worker to have killed its processes. `synced` fires once the first list is done.
pub async fn run(ctx: Arc<Ctx>, synced: oneshot::Sender<()>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.opts.node));
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut synced = Some(synced);
    let mut workers: HashMap<String, Entry> = HashMap::new();
    // UIDs listed since the last Init, to find pods deleted while the watch was down.
    let mut listed: Option<HashSet<String>> = None;
    // Workers of pods gone from the API, still killing their processes.
    let mut retiring: Vec<JoinHandle<()>> = Vec::new();
    loop {
        retiring.retain(|task| !task.is_finished());
        let event = tokio::select! {
            event = stream.next() => event,
            () = super::stopping(&mut shutdown) => break,
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(listed), Some(uid)) = (&mut listed, &pod.metadata.uid) {
                    listed.insert(uid.clone());
                }
                apply(&ctx, &mut workers, pod, &shutdown);
            }
            Ok(Event::Apply(pod)) => apply(&ctx, &mut workers, pod, &shutdown),
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid
                    && let Some(entry) = workers.remove(uid)
                {
                    let _ = entry.updates.send(None);
                    retiring.push(entry.task);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let gone: Vec<String> = workers
                        .keys()
                        .filter(|uid| !listed.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        if let Some(entry) = workers.remove(&uid) {
                            let _ = entry.updates.send(None);
                            retiring.push(entry.task);
                        }
                    }
                }
                if let Some(tx) = synced.take() {
                    let _ = tx.send(());
                }
            }
            Err(e) => say!("watching the node's pods: {e}"),
        }
    }
    // Every worker sees `shutdown` too and kills its processes; wait until they have.
    // (Their update senders stay alive meanwhile: a closed channel means "pod gone".)
    for entry in workers.values_mut() {
        let _ = (&mut entry.task).await;
    }
    for task in retiring {
        let _ = task.await;
    }
}

/// Hands an added or changed pod to its worker, starting one for a new pod.
fn apply(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, Entry>,
    pod: Pod,
    shutdown: &watch::Receiver<bool>,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let pod = Arc::new(pod);
    if let Some(entry) = workers.get(&uid) {
        // A finished worker (pod deleted by it, Delete event not seen yet) ignores it.
        let _ = entry.updates.send(Some(pod));
        return;
    }
    if finished(&pod) {
        return;
    }
    let (updates, rx) = watch::channel(Some(pod));
    let task = tokio::spawn(super::worker::run(ctx.clone(), rx, shutdown.clone()));
    workers.insert(uid, Entry { updates, task });
}
