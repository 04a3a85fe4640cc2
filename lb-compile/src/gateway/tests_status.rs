//! Gateway compiler tests for status the conformance suite checks on
//! Gateways: static addresses (`UnsupportedAddress`, `AddressNotUsable`),
//! `InvalidParameters`, `OverlappingTLSConfig`, certificate references that
//! cannot be used, and weighted TCPRoute backends.

use std::path::Path;

use super::test_support::{
    CLASSES, cfg, cond, gateway, is, listener, port, run, run_with, secret, service, status,
};
use crate::compile::{Compiled, compile};
use crate::manifests::objects_from_str;
use crate::store::Store;

/// Compiles `yaml` (after [`CLASSES`]) even when some objects fail to load.
fn run_unchecked(yaml: &str) -> Compiled {
    let (raws, _) = objects_from_str(&format!("{CLASSES}{yaml}"), Path::new("t.yaml"));
    let (store, _) = Store::build(&raws);
    compile(&store, &cfg("\"127.0.60.0/29\""))
}

const HTTP: &str = "listeners: [{name: http, port: 80, protocol: HTTP}]";

#[test]
fn static_addresses_must_be_supported_and_usable() {
    let gw = |name: &str, addresses: &str| {
        gateway(
            "default",
            name,
            &format!("addresses: [{addresses}], {HTTP}"),
        )
    };
    let yaml = [
        gw(
            "invalid",
            "{type: IPAddress, value: 127.0.61.1}, {type: test/fake-invalid-type, value: \"fake address\"}",
        ),
        gw("unusable", "{value: 203.0.113.9}, {value: 127.0.61.2}"),
        gw("loopback", "{value: 127.0.61.3}"),
        gw("pooled", "{value: 10.9.0.5}"),
        gw("node", "{value: 192.0.2.7}"),
    ]
    .concat();
    let mut config = cfg("\"10.9.0.0/24\"");
    config.node.addresses.push("192.0.2.7".parse().unwrap());
    let c = run_with(&yaml, &config);
    let conds = |name: &str| status(&c, "Gateway", name)["status"].clone();

    let st = conds("invalid");
    assert_eq!(
        cond(&st["conditions"], "Accepted"),
        is("False", "UnsupportedAddress")
    );
    assert!(
        c.snapshot
            .gateway
            .ports
            .keys()
            .all(|a| a.ip().to_string() != "127.0.61.1")
    );

    let st = conds("unusable");
    assert_eq!(cond(&st["conditions"], "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(&st["conditions"], "Programmed"),
        is("False", "AddressNotUsable")
    );
    assert!(st.get("addresses").is_none(), "{st:#}");
    assert_eq!(
        cond(
            &listener(&c, "unusable", "http")["conditions"],
            "Programmed"
        ),
        is("False", "AddressNotUsable")
    );
    assert!(
        c.snapshot
            .gateway
            .ports
            .keys()
            .all(|a| a.ip().to_string() != "127.0.61.2")
    );

    for (name, ip) in [
        ("loopback", "127.0.61.3"),
        ("pooled", "10.9.0.5"),
        ("node", "192.0.2.7"),
    ] {
        let st = conds(name);
        assert_eq!(
            cond(&st["conditions"], "Programmed"),
            is("True", "Programmed"),
            "{name}"
        );
        assert_eq!(
            st["addresses"],
            serde_json::json!([{"type": "IPAddress", "value": ip}])
        );
        port(&c, &format!("{ip}:80"));
    }
}

#[test]
fn infrastructure_parameters_are_not_supported() {
    let c = run(&gateway(
        "default",
        "params",
        &format!(
            "infrastructure: {{parametersRef: {{group: \"\", kind: ConfigMap, name: missing}}}}, addresses: [{{value: 127.0.61.4}}], {HTTP}"
        ),
    ));
    let st = &status(&c, "Gateway", "params")["status"];
    assert_eq!(
        cond(&st["conditions"], "Accepted"),
        is("False", "InvalidParameters")
    );
    assert!(c.snapshot.gateway.ports.is_empty());
    // Infrastructure labels alone are fine.
    let c = run(&gateway(
        "default",
        "labels",
        &format!(
            "infrastructure: {{labels: {{team: a}}}}, addresses: [{{value: 127.0.61.5}}], {HTTP}"
        ),
    ));
    let st = &status(&c, "Gateway", "labels")["status"];
    assert_eq!(cond(&st["conditions"], "Accepted"), is("True", "Accepted"));
}

#[test]
fn overlapping_https_hostnames_on_one_port_are_flagged() {
    let tls = "tls: {certificateRefs: [{name: cert}]}";
    let l = |name: &str, port: u16, host: &str| {
        format!("{{name: {name}, port: {port}, protocol: HTTPS, hostname: \"{host}\", {tls}}}")
    };
    let listeners = [
        l("foo-https", 443, "foo.example.com"),
        l("bar-https", 443, "bar.bar.example.com"),
        l("wildcard-https", 443, "*.example.com"),
        l("not-overlapping-https", 443, "example.com"),
        l("not-overlapping-other-port", 8443, "foo.example.com"),
        format!("{{name: default, port: 443, protocol: HTTPS, {tls}}}"),
    ]
    .join(", ");
    let c = run(&format!(
        "{}{}",
        secret("default", "cert"),
        gateway(
            "default",
            "overlap",
            &format!("addresses: [{{value: 127.0.61.6}}], listeners: [{listeners}]")
        )
    ));
    let has = |name: &str| {
        listener(&c, "overlap", name)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "OverlappingTLSConfig")
    };
    for name in ["foo-https", "bar-https", "wildcard-https"] {
        let conds = &listener(&c, "overlap", name)["conditions"];
        assert_eq!(
            cond(conds, "OverlappingTLSConfig"),
            is("True", "OverlappingHostnames"),
            "{name}"
        );
        assert_eq!(cond(conds, "Accepted"), is("True", "Accepted"), "{name}");
        assert_eq!(
            cond(conds, "Programmed"),
            is("True", "Programmed"),
            "{name}"
        );
    }
    for name in [
        "not-overlapping-https",
        "not-overlapping-other-port",
        "default",
    ] {
        assert!(!has(name), "{name}");
    }
}

#[test]
fn unusable_certificate_refs_are_invalid() {
    let https = |name: &str, r: &str| {
        format!(
            "{{name: {name}, port: 443, protocol: HTTPS, hostname: {name}.example.com, tls: {{certificateRefs: [{r}]}}}}"
        )
    };
    let listeners = [
        https("missing", "{name: nope}"),
        https(
            "group",
            "{group: wrong.group.company.io, kind: Secret, name: cert}",
        ),
        https("kind", "{group: \"\", kind: WrongKind, name: cert}"),
        https("malformed", "{name: malformed}"),
        https("good", "{name: cert}"),
    ]
    .join(", ");
    // PEM blocks around bytes that are neither a certificate nor a key.
    let malformed = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: malformed, namespace: default}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    -----BEGIN CERTIFICATE-----\n    bm90IGEgY2VydGlmaWNhdGU=\n    -----END CERTIFICATE-----\n  tls.key: |\n    -----BEGIN PRIVATE KEY-----\n    bm90IGEga2V5\n    -----END PRIVATE KEY-----\n";
    // The loader reports the malformed Secret and keeps it out of the store.
    let c = run_unchecked(&format!(
        "{}{malformed}{}",
        secret("default", "cert"),
        gateway(
            "default",
            "certs",
            &format!("addresses: [{{value: 127.0.61.7}}], listeners: [{listeners}]")
        )
    ));
    for name in ["missing", "group", "kind", "malformed"] {
        let l = listener(&c, "certs", name);
        assert_eq!(
            cond(&l["conditions"], "ResolvedRefs"),
            is("False", "InvalidCertificateRef"),
            "{name}"
        );
        assert_eq!(
            cond(&l["conditions"], "Programmed"),
            is("False", "Invalid"),
            "{name}"
        );
        assert_eq!(l["attachedRoutes"], 0);
        assert_eq!(l["supportedKinds"][0]["kind"], "HTTPRoute");
    }
    let good = listener(&c, "certs", "good");
    assert_eq!(
        cond(&good["conditions"], "Programmed"),
        is("True", "Programmed")
    );
    let p = port(&c, "127.0.61.7:443");
    assert_eq!(p.tls.names.keys().collect::<Vec<_>>(), ["good.example.com"]);
}

#[test]
fn tcp_route_weights_share_the_maglev_table() {
    // `a` has one endpoint, `b` three: weights 70/30 still give `a` 70 %.
    let three = "---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: default}\nspec: {ports: [{port: 443, targetPort: 8000}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b-1, namespace: default, labels: {kubernetes.io/service-name: b}}\naddressType: IPv4\nports: [{port: 8000}]\nendpoints: [{addresses: [\"10.0.0.2\"]}, {addresses: [\"10.0.0.3\"]}, {addresses: [\"10.0.0.4\"]}]\n";
    let c = run(&format!(
        "{}{three}{}---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: w, namespace: default}}\nspec:\n  parentRefs: [{{name: g}}]\n  rules: [{{backendRefs: [{{name: a, port: 443, weight: 70}}, {{name: b, port: 443, weight: 30}}]}}]\n",
        service("default", "a", 443, "10.0.0.1"),
        gateway(
            "default",
            "g",
            "addresses: [{value: 127.0.61.8}], listeners: [{name: tcp, port: 5432, protocol: TCP}]"
        ),
    ));
    let tcp = &c.snapshot.l4.services[&"127.0.61.8:5432".parse().unwrap()];
    assert_eq!(tcp.endpoints.len(), 4);
    let shares = tcp.table.shares();
    let total: u32 = shares.iter().sum();
    let a = tcp
        .table
        .position("10.0.0.1:8000")
        .map(|i| shares[i])
        .unwrap();
    let frac = f64::from(a) / f64::from(total);
    assert!((frac - 0.7).abs() < 0.01, "a's share {frac}");
}

/// A route whose filter values fail validation (a CR/LF header value) is
/// `Accepted=False`, reason `UnsupportedValue`, naming the field, with no
/// entries; when a previous valid version exists, that one keeps its entries
/// and the status says so.
#[test]
fn routes_with_invalid_values_are_not_accepted() {
    let base = format!(
        "{}{}",
        service("default", "web", 80, "10.0.0.1"),
        gateway(
            "default",
            "g",
            "addresses: [{value: 127.0.60.1}], listeners: [{name: http, port: 80, protocol: HTTP}]"
        )
    );
    let route = |name: &str, host: &str, value: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: g}}]\n  hostnames: [{host}]\n  rules:\n  - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-A, value: \"{value}\"}}]}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
        )
    };
    let good = route("good", "good.test", "ok");
    let load = |yaml: &str, previous: &Store| {
        let (raws, _) = objects_from_str(&format!("{CLASSES}{yaml}"), Path::new("t.yaml"));
        let (store, _) = Store::build_keeping(&raws, previous);
        (compile(&store, &cfg("\"127.0.60.0/29\"")), store)
    };
    let hosts = |c: &Compiled| -> Vec<String> {
        port(c, "127.0.60.1:80").listeners[0]
            .routes
            .entries()
            .iter()
            .flat_map(|e| e.hostnames.iter().map(|h| format!("{h:?}")))
            .collect()
    };
    let accepted = |c: &Compiled, name: &str| {
        let p = &status(c, "HTTPRoute", name)["status"]["parents"][0];
        (
            cond(&p["conditions"], "Accepted"),
            p["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Accepted")
                .unwrap()["message"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    // A new route with a bad value: not accepted, no entries; the good one serves.
    let (c, _) = load(
        &format!(
            "{base}{good}{}",
            route("bad", "bad.test", "v\\r\\nX-Injected: yes")
        ),
        &Store::default(),
    );
    let (cond_bad, msg) = accepted(&c, "bad");
    assert_eq!(cond_bad, is("False", "UnsupportedValue"));
    assert!(
        msg.contains("spec.rules[0].filters[0].requestHeaderModifier.set[0].value"),
        "{msg}"
    );
    assert!(!msg.contains("previous valid version"), "{msg}");
    assert_eq!(accepted(&c, "good").0, is("True", "Accepted"));
    assert_eq!(hosts(&c).len(), 1, "{:?}", hosts(&c));
    assert!(hosts(&c)[0].contains("good.test"));

    // A serving route updated with a bad value: the old version keeps its
    // entries, the status reports the rejected update.
    let (_, store) = load(&format!("{base}{good}"), &Store::default());
    let (c, _) = load(
        &format!("{base}{}", route("good", "good.test", "bad\\u0000")),
        &store,
    );
    let (cond_good, msg) = accepted(&c, "good");
    assert_eq!(cond_good, is("False", "UnsupportedValue"));
    assert!(
        msg.contains("previous valid version keeps serving"),
        "{msg}"
    );
    assert_eq!(hosts(&c).len(), 1);
    assert_eq!(
        c.status.iter().filter(|s| s["kind"] == "HTTPRoute").count(),
        1,
        "one status per route"
    );
}
