//! One watcher: a kind at one version, in one namespace or all of them
//! (kube-rs `watcher`: list, then watch from the list's resourceVersion;
//! resume after a dropped watch; relist on 410 Gone; bookmarks on).

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::backoff::CappedBackoff;
use super::kinds::{KindInfo, raw_object, resource};
use super::{KindObjects, KubeSource, WatchKey};

/// Where a watch reports its changes (into the coalescing reload loop).
pub type Changes = std::sync::mpsc::Sender<(Instant, ())>;

/// Watches `key` at `version` until the task is aborted (the kind stopped
/// being served) or the change receiver is gone.
pub async fn run(
    source: KubeSource,
    client: kube::Client,
    key: WatchKey,
    spec: KindInfo,
    version: &'static str,
    changes: Changes,
) {
    let resource = resource(&spec, version);
    let api: Api<DynamicObject> = match &key.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
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
    let mut listed_once = false;
    let mut refused_logged = false;
    let where_ = key.namespace.as_deref().unwrap_or("every namespace");
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
                match api_code(&e) {
                    // The CRD went away; discovery notices and stops this task.
                    Some(404) => tracing::debug!(kind = spec.kind, "not served: {e}"),
                    Some(401 | 403) => {
                        source.status.contact_ok();
                        // A missing permission must not hold lb unready
                        // forever: the kind counts as listed (empty), and
                        // the watch keeps asking (with backoff).
                        if !listed_once {
                            listed_once = true;
                            source.listed(&key);
                        }
                        if !refused_logged {
                            refused_logged = true;
                            tracing::warn!(
                                kind = spec.kind,
                                namespace = where_,
                                "the API server refuses lb's list/watch of {} in {where_} ({e}): grant it (config/kubernetes/) or narrow [sources] kubernetes.namespaces / secret_namespaces",
                                spec.plural
                            );
                        }
                    }
                    _ => source.status.contact_failed(spec.kind, &e),
                }
                continue;
            }
        };
        source.status.contact_ok();
        // The list that completes the initial sync is part of the first
        // snapshot, not a change after it.
        let synced_before = source.status.is_synced();
        let changed = match event {
            Event::Init => {
                relist = Some(KindObjects::new());
                false
            }
            Event::InitApply(obj) => {
                if let Some(raw) = raw_object(&spec, version, obj) {
                    relist
                        .get_or_insert_default()
                        .insert((raw.namespace.clone(), raw.name.clone()), raw);
                }
                false
            }
            Event::InitDone => {
                let listed = relist.take().unwrap_or_default();
                let changed = source.replace(&key, listed);
                if !listed_once {
                    listed_once = true;
                    tracing::debug!(
                        kind = spec.kind,
                        namespace = where_,
                        version,
                        "initial list done"
                    );
                    source.listed(&key);
                }
                changed
            }
            Event::Apply(obj) => {
                raw_object(&spec, version, obj).is_some_and(|raw| source.upsert(&key, raw))
            }
            Event::Delete(obj) => {
                raw_object(&spec, version, obj).is_some_and(|raw| source.remove(&key, &raw))
            }
        };
        if changed && synced_before {
            source.status.events.fetch_add(1, Ordering::Relaxed);
            if changes.send((Instant::now(), ())).is_err() {
                return;
            }
        }
    }
}

/// The HTTP status of an API error, if the server answered one.
fn api_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}
