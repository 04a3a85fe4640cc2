//! API discovery: which of the kinds lb reads the API server serves, and at
//! which version. Built-in kinds are always served at `v1`; the Gateway API
//! kinds are CRDs that a cluster may lack, or serve at other versions
//! (TLSRoute at `v1` from Gateway API v1.5, at `v1alpha2` before).
//!
//! One aggregated discovery request (`GET /apis`, Kubernetes 1.30+) answers
//! for every group; an API server without it is asked group by group.

use std::collections::{BTreeMap, BTreeSet};

use lb_compile::model::GATEWAY_GROUP;

use super::kinds::watched;

/// Served versions by (group, plural), for the groups lb discovers.
pub type Discovered = BTreeMap<(String, String), BTreeSet<String>>;

/// The version lb reads each served kind at; kinds not served are absent.
pub type Served = BTreeMap<&'static str, &'static str>;

/// Asks the API server what it serves of the discovered groups.
pub async fn discover(client: &kube::Client) -> Result<Discovered, kube::Error> {
    match client.list_api_groups_aggregated().await {
        // Every API server serves some groups under /apis (apps, rbac, ...):
        // an empty answer is one without aggregated discovery.
        Ok(list) if !list.items.is_empty() => {
            let mut out = Discovered::new();
            for group in &list.items {
                let Some(name) = group.metadata.as_ref().and_then(|m| m.name.as_deref()) else {
                    continue;
                };
                if name != GATEWAY_GROUP {
                    continue;
                }
                for version in &group.versions {
                    let Some(v) = version.version.as_deref() else {
                        continue;
                    };
                    for r in &version.resources {
                        if let Some(plural) = r.resource.as_deref() {
                            out.entry((name.to_owned(), plural.to_owned()))
                                .or_default()
                                .insert(v.to_owned());
                        }
                    }
                }
            }
            Ok(out)
        }
        Ok(_) | Err(kube::Error::Api(_)) | Err(kube::Error::SerdeError(_)) => {
            discover_per_group(client).await
        }
        Err(e) => Err(e),
    }
}

/// Discovery without the aggregated endpoint: the group, then each version.
async fn discover_per_group(client: &kube::Client) -> Result<Discovered, kube::Error> {
    let mut out = Discovered::new();
    let groups = client.list_api_groups().await?;
    for group in groups.groups.iter().filter(|g| g.name == GATEWAY_GROUP) {
        for version in &group.versions {
            let resources = client
                .list_api_group_resources(&version.group_version)
                .await?;
            for r in resources.resources.iter().filter(|r| !r.name.contains('/')) {
                out.entry((group.name.clone(), r.name.clone()))
                    .or_default()
                    .insert(version.version.clone());
            }
        }
    }
    Ok(out)
}

/// The version of each kind lb reads: built-in kinds at their one version,
/// discovered kinds at the first of lb's versions that the server serves.
pub fn resolve(discovered: &Discovered) -> Served {
    let mut served = Served::new();
    for spec in watched() {
        if !spec.is_crd() {
            served.insert(spec.kind, spec.versions[0]);
            continue;
        }
        let key = (spec.group.to_owned(), spec.plural.to_owned());
        if let Some(versions) = discovered.get(&key)
            && let Some(v) = spec.versions.iter().find(|v| versions.contains(**v))
        {
            served.insert(spec.kind, v);
        }
    }
    served
}

/// The discovered kinds the server does not serve, for the log.
pub fn absent(served: &Served) -> Vec<&'static str> {
    watched()
        .filter(|k| k.is_crd() && !served.contains_key(k.kind))
        .map(|k| k.kind)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovered(entries: &[(&str, &[&str])]) -> Discovered {
        entries
            .iter()
            .map(|(plural, versions)| {
                (
                    (GATEWAY_GROUP.to_owned(), (*plural).to_owned()),
                    versions.iter().map(|v| (*v).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn without_gateway_crds_only_builtin_kinds_are_served() {
        let served = resolve(&Discovered::new());
        assert_eq!(served.get("Ingress"), Some(&"v1"));
        assert_eq!(served.get("Secret"), Some(&"v1"));
        assert!(!served.contains_key("HTTPRoute"));
        assert_eq!(
            absent(&served),
            [
                "GatewayClass",
                "Gateway",
                "HTTPRoute",
                "GRPCRoute",
                "TLSRoute",
                "TCPRoute",
                "ReferenceGrant"
            ]
        );
    }

    #[test]
    fn the_most_preferred_served_version_wins() {
        // Gateway API v1.6 experimental: TLSRoute at v1, v1alpha2 and v1alpha3.
        let served = resolve(&discovered(&[
            ("tlsroutes", &["v1", "v1alpha2", "v1alpha3"]),
            ("referencegrants", &["v1", "v1beta1"]),
            ("httproutes", &["v1beta1"]),
        ]));
        assert_eq!(served.get("TLSRoute"), Some(&"v1"));
        assert_eq!(served.get("ReferenceGrant"), Some(&"v1"));
        assert_eq!(served.get("HTTPRoute"), Some(&"v1beta1"));
        // Gateway API v1.4 experimental: TCPRoute at v1alpha2 only.
        let served = resolve(&discovered(&[("tcproutes", &["v1alpha2"])]));
        assert_eq!(served.get("TCPRoute"), Some(&"v1alpha2"));
        // A version lb does not read is not served as far as lb knows.
        let served = resolve(&discovered(&[("grpcroutes", &["v1alpha9"])]));
        assert!(!served.contains_key("GRPCRoute"));
    }
}
