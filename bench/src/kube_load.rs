//! Writing many objects into a real API server fast: YAML documents created
//! (or applied by server-side apply, field manager `bench`), many requests
//! in flight, over one kube-rs client. `bench scale` loads its workloads
//! this way.

use std::collections::BTreeSet;
use std::path::Path;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};

/// Requests in flight while loading.
const CONCURRENCY: usize = 64;

/// The resource of the kinds bench writes.
fn resource(kind: &str) -> Result<(ApiResource, bool), String> {
    let (group, version, plural, namespaced) = match kind {
        "Namespace" => ("", "v1", "namespaces", false),
        "Service" => ("", "v1", "services", true),
        "EndpointSlice" => ("discovery.k8s.io", "v1", "endpointslices", true),
        "Ingress" => ("networking.k8s.io", "v1", "ingresses", true),
        "IngressClass" => ("networking.k8s.io", "v1", "ingressclasses", false),
        other => return Err(format!("kube_load: no resource for kind {other}")),
    };
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Ok((
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version,
            kind: kind.into(),
            plural: plural.into(),
        },
        namespaced,
    ))
}

/// A client from a kubeconfig file (its current context).
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

/// The documents of multi-document YAML `text` as JSON values.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Applies one object (server-side apply, forced).
pub async fn apply(client: &kube::Client, obj: &serde_json::Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().ok_or("object without kind")?;
    let name = obj["metadata"]["name"]
        .as_str()
        .ok_or("object without name")?;
    let (res, namespaced) = resource(kind)?;
    let api: Api<DynamicObject> = if namespaced {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &res)
    } else {
        Api::all_with(client.clone(), &res)
    };
    api.patch(
        name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(obj),
    )
    .await
    .map(drop)
    .map_err(|e| format!("{kind} {name}: {e}"))
}

/// Creates one object (applies it when it exists: the API server's create is
/// cheaper than a server-side apply, which computes field ownership).
pub async fn create(client: &kube::Client, obj: &serde_json::Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().ok_or("object without kind")?;
    let (res, namespaced) = resource(kind)?;
    let api: Api<DynamicObject> = if namespaced {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &res)
    } else {
        Api::all_with(client.clone(), &res)
    };
    let typed: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    match api.create(&kube::api::PostParams::default(), &typed).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => apply(client, obj).await,
        Err(e) => Err(format!("{kind}: {e}")),
    }
}

/// Creates every object of `docs`, [`CONCURRENCY`] at a time, after
/// creating the namespaces they name.
pub async fn create_all(client: &kube::Client, docs: &[serde_json::Value]) -> Result<(), String> {
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    for ns in namespaces {
        create(
            client,
            &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let results: Vec<Result<(), String>> = futures_util::stream::iter(docs)
        .map(|d| create(client, d))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Applies every object of `docs`, [`CONCURRENCY`] at a time, after
/// creating the namespaces they name.
pub async fn apply_all(client: &kube::Client, docs: &[serde_json::Value]) -> Result<(), String> {
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    for ns in namespaces {
        apply(
            client,
            &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let results: Vec<Result<(), String>> = futures_util::stream::iter(docs)
        .map(|d| apply(client, d))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}
