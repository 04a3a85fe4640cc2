//! Source ranges from manifests: a LoadBalancer Service's
//! `spec.loadBalancerSourceRanges` (or, when that is empty, its
//! [`SERVICE_ANNOTATION`]), and [`ANNOTATION`] on a Gateway or an Ingress. Each entry is
//! a CIDR; an invalid one is an error diagnostic and is left out, so a list
//! only ever gets narrower: a list whose every entry is invalid allows no
//! one (it never opens the listener to everyone). Pure: no I/O.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use lb_core::l4::SourceRanges;

use crate::diag::Diagnostic;
use crate::model::Object;

/// The Kubernetes annotation for a Service's source ranges, comma-separated
/// (used when `spec.loadBalancerSourceRanges` is empty).
pub const SERVICE_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// lb's annotation with source ranges for a Gateway (enforced at accept on
/// its listeners) or an Ingress (enforced per request routed to it: 403).
pub const ANNOTATION: &str = "lb.example.com/source-ranges";

/// Parses CIDR `entries` (blank ones skipped) found at `field` of `obj`.
fn parse<'a>(
    obj: &Object,
    field: &str,
    entries: impl Iterator<Item = &'a str>,
    diags: &mut Vec<Diagnostic>,
) -> SourceRanges {
    let mut nets: Vec<(IpAddr, u8)> = Vec::new();
    for entry in entries.map(str::trim).filter(|e| !e.is_empty()) {
        match entry.parse::<IpNet>() {
            Ok(net) => nets.push((net.addr(), net.prefix_len())),
            Err(_) => diags.push(obj.diagnostic(
                Diagnostic::error(format!(
                    "{entry:?} is not a CIDR (address/length); left out: the listener admits only the valid entries (none valid: no one)"
                ))
                .field(field.to_owned()),
            )),
        }
    }
    SourceRanges::new(nets)
}

/// A Service's source ranges: `spec.loadBalancerSourceRanges` when it
/// lists anything, else [`SERVICE_ANNOTATION`] when present and not blank;
/// `None` (everyone) otherwise.
pub fn for_service(
    obj: &Object,
    svc: &Service,
    diags: &mut Vec<Diagnostic>,
) -> Option<SourceRanges> {
    let spec = svc.spec.as_ref()?;
    if let Some(list) = spec
        .load_balancer_source_ranges
        .as_ref()
        .filter(|l| !l.is_empty())
    {
        return Some(parse(
            obj,
            "spec.loadBalancerSourceRanges",
            list.iter().map(String::as_str),
            diags,
        ));
    }
    annotated(obj, SERVICE_ANNOTATION, diags)
}

/// The source ranges in annotation `name` of `obj`, when present and not
/// blank.
pub fn annotated(obj: &Object, name: &str, diags: &mut Vec<Diagnostic>) -> Option<SourceRanges> {
    let value = obj.meta().annotations.as_ref()?.get(name)?;
    if value.trim().is_empty() {
        return None;
    }
    Some(parse(
        obj,
        &format!("metadata.annotations[{name}]"),
        value.split(','),
        diags,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::diag::Severity;
    use crate::manifests::objects_from_str;
    use crate::store::Store;

    fn service(meta: &str, spec: &str) -> (Option<SourceRanges>, Vec<Diagnostic>) {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: default\n{meta}spec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n{spec}"
        );
        let (raws, d) = objects_from_str(&yaml, Path::new("t.yaml"));
        assert!(d.is_empty(), "{d:?}");
        let (store, d) = Store::build(&raws);
        assert!(d.is_empty(), "{d:?}");
        let obj = store.of_kind("Service").next().unwrap();
        let Object::Service(svc) = obj else { panic!() };
        let mut diags = Vec::new();
        (for_service(obj, &svc.value, &mut diags), diags)
    }

    fn strings(r: &Option<SourceRanges>) -> Option<Vec<String>> {
        r.as_ref().map(SourceRanges::to_strings)
    }

    #[test]
    fn spec_field_wins_over_the_annotation() {
        let ann =
            format!("  annotations: {{{SERVICE_ANNOTATION}: \"10.0.0.0/8, 192.0.2.0/24\"}}\n");
        let (r, d) = service(&ann, "  loadBalancerSourceRanges: [\"127.0.0.2/32\"]\n");
        assert!(d.is_empty());
        assert_eq!(strings(&r), Some(vec!["127.0.0.2/32".into()]));
        // Without the field (or with an empty one) the annotation applies.
        for spec in ["", "  loadBalancerSourceRanges: []\n"] {
            let (r, _) = service(&ann, spec);
            assert_eq!(
                strings(&r),
                Some(vec!["10.0.0.0/8".into(), "192.0.2.0/24".into()])
            );
        }
        // Neither: no restriction.
        assert_eq!(service("", "").0, None);
        let blank = format!("  annotations: {{{SERVICE_ANNOTATION}: \" \"}}\n");
        assert_eq!(service(&blank, "").0, None);
    }

    #[test]
    fn invalid_entries_are_errors_and_never_open_the_listener() {
        let (r, d) = service(
            "",
            "  loadBalancerSourceRanges: [\"10.0.0.0/8\", \"office\"]\n",
        );
        assert_eq!(strings(&r), Some(vec!["10.0.0.0/8".into()]));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Error);
        assert_eq!(d[0].field.as_deref(), Some("spec.loadBalancerSourceRanges"));
        assert!(
            d[0].message.contains("\"office\" is not a CIDR"),
            "{}",
            d[0].message
        );
        // Every entry invalid: closed to everyone, not open.
        let (r, d) = service(
            "",
            "  loadBalancerSourceRanges: [\"10.0.0.300/8\", \"/0\"]\n",
        );
        assert_eq!(d.len(), 2);
        let r = r.expect("a restriction");
        assert!(!r.allows("10.0.0.1".parse().unwrap()));
        assert!(!r.allows("::1".parse().unwrap()));
    }
}
