//! Gateway compiler tests: classes, Gateway addresses and conditions,
//! Listener validation, conflicts, certificates, merging and ordering, TLS
//! passthrough and TCP Listeners.

use std::net::SocketAddr;

use lb_http::gateway::{HostnameMatch, PortProtocol};

use super::test_support::{
    cfg, cond, gateway, is, listener, port, run, run_with, secret, service, status,
};

const HTTP80: &str =
    "addresses: [{value: 127.0.60.1}], listeners: [{name: http, port: 80, protocol: HTTP}]";

#[test]
fn class_is_accepted_and_other_controllers_are_ignored() {
    let c = run(&format!(
        "{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: theirs}}\nspec: {{gatewayClassName: other, listeners: [{{name: h, port: 80, protocol: HTTP}}]}}\n",
        gateway("default", "g", HTTP80)
    ));
    let gc = status(&c, "GatewayClass", "lb");
    assert_eq!(
        cond(&gc["status"]["conditions"], "Accepted"),
        is("True", "Accepted")
    );
    assert!(gc["metadata"].get("namespace").is_none());
    assert!(
        !c.status
            .iter()
            .any(|s| s["metadata"]["name"] == "other" || s["metadata"]["name"] == "theirs")
    );
    let g = &status(&c, "Gateway", "g")["status"];
    assert_eq!(cond(&g["conditions"], "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(&g["conditions"], "Programmed"),
        is("True", "Programmed")
    );
    assert_eq!(
        g["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": "127.0.60.1"}])
    );
    let c0 = &g["conditions"][0];
    assert_eq!(c0["observedGeneration"], 1);
    assert_eq!(c0["lastTransitionTime"], "1970-01-01T00:00:00Z");
    let l = listener(&c, "g", "http");
    assert_eq!(
        l["supportedKinds"],
        serde_json::json!([
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
    );
    for (ty, want) in [
        ("Accepted", is("True", "Accepted")),
        ("Programmed", is("True", "Programmed")),
        ("ResolvedRefs", is("True", "ResolvedRefs")),
        ("Conflicted", is("False", "NoConflicts")),
    ] {
        assert_eq!(cond(&l["conditions"], ty), want, "{ty}");
    }
    let p = port(&c, "127.0.60.1:80");
    assert_eq!(p.protocol, PortProtocol::Http);
    assert_eq!(p.listeners[0].name, "default/g/http");
}

#[test]
fn addresses_are_requested_allocated_or_missing() {
    let listeners = "listeners: [{name: http, port: 80, protocol: HTTP}]";
    let yaml = format!(
        "{}{}{}",
        gateway(
            "default",
            "fixed",
            &format!("addresses: [{{type: IPAddress, value: 127.0.60.2}}], {listeners}")
        ),
        gateway("default", "pooled", listeners),
        gateway(
            "default",
            "named",
            &format!("addresses: [{{type: Hostname, value: lb.example.com}}], {listeners}")
        ),
    );
    let c = run(&yaml);
    let pooled = status(&c, "Gateway", "pooled")["status"]["addresses"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let ip: std::net::IpAddr = pooled.parse().unwrap();
    assert!(
        "127.0.60.0/29"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&ip)
    );
    assert_ne!(
        pooled, "127.0.60.2",
        "a requested address is never allocated"
    );
    assert_eq!(c.snapshot.gateway.ports.len(), 2);
    let named = &status(&c, "Gateway", "named")["status"];
    assert_eq!(
        cond(&named["conditions"], "Accepted"),
        is("False", "UnsupportedAddress")
    );
    assert_eq!(
        cond(&named["conditions"], "Programmed"),
        is("False", "Invalid")
    );
    // No pool: accepted, not programmed.
    let c = run_with(&gateway("default", "pooled", listeners), &cfg(""));
    let g = &status(&c, "Gateway", "pooled")["status"];
    assert_eq!(cond(&g["conditions"], "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(&g["conditions"], "Programmed"),
        is("False", "AddressNotAssigned")
    );
    assert_eq!(
        cond(&g["listeners"][0]["conditions"], "Programmed"),
        is("False", "Pending")
    );
    assert!(c.snapshot.gateway.ports.is_empty());
}

#[test]
fn unsupported_protocol_and_port_unavailable() {
    let lb_svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, creationTimestamp: \"2020-01-01T00:00:00Z\"}\nspec: {type: LoadBalancer, loadBalancerIP: 127.0.60.1, ports: [{port: 5432}]}\n";
    let c = run(&format!(
        "{lb_svc}{}",
        gateway(
            "default",
            "g",
            "addresses: [{value: 127.0.60.1}], listeners: [{name: dns, port: 53, protocol: UDP}, {name: pg, port: 5432, protocol: TCP}, {name: http, port: 80, protocol: HTTP}]"
        )
    ));
    let dns = listener(&c, "g", "dns");
    assert_eq!(
        cond(&dns["conditions"], "Accepted"),
        is("False", "UnsupportedProtocol")
    );
    assert_eq!(
        cond(&dns["conditions"], "Programmed"),
        is("False", "Invalid")
    );
    assert_eq!(dns["supportedKinds"], serde_json::json!([]));
    let pg = listener(&c, "g", "pg");
    assert_eq!(
        cond(&pg["conditions"], "Accepted"),
        is("False", "PortUnavailable")
    );
    assert_eq!(
        c.snapshot.l4.services[&"127.0.60.1:5432".parse().unwrap()].via,
        "loadBalancer"
    );
    let g = &status(&c, "Gateway", "g")["status"];
    assert_eq!(
        cond(&g["conditions"], "Accepted"),
        is("True", "ListenersNotValid")
    );
    assert_eq!(
        cond(&g["conditions"], "Programmed"),
        is("True", "Programmed")
    );
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.message.contains("UnsupportedProtocol"))
    );
    // An Ingress listener address is unavailable too.
    let c = run(&gateway(
        "default",
        "g",
        "addresses: [{value: 127.0.0.1}], listeners: [{name: http, port: 8080, protocol: HTTP}]",
    ));
    let l = listener(&c, "g", "http");
    assert_eq!(
        cond(&l["conditions"], "Accepted"),
        is("False", "PortUnavailable")
    );
    let g = &status(&c, "Gateway", "g")["status"];
    assert_eq!(
        cond(&g["conditions"], "Accepted"),
        is("False", "ListenersNotValid")
    );
}

#[test]
fn conflicts_within_a_gateway_mark_every_indistinct_listener() {
    let c = run(&format!(
        "{}{}",
        secret("default", "cert"),
        gateway(
            "default",
            "g",
            "addresses: [{value: 127.0.60.1}], listeners: [
            {name: a, port: 80, protocol: HTTP, hostname: a.example.com},
            {name: a2, port: 80, protocol: HTTP, hostname: a.example.com},
            {name: b, port: 80, protocol: HTTP, hostname: b.example.com},
            {name: plain, port: 81, protocol: HTTP},
            {name: secure, port: 81, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}},
            {name: t1, port: 9000, protocol: TCP},
            {name: t2, port: 9000, protocol: TCP}]"
        )
    ));
    for (name, want) in [
        ("a", is("True", "HostnameConflict")),
        ("a2", is("True", "HostnameConflict")),
        ("b", is("False", "NoConflicts")),
        ("plain", is("True", "ProtocolConflict")),
        ("secure", is("True", "ProtocolConflict")),
        ("t1", is("True", "HostnameConflict")),
        ("t2", is("True", "HostnameConflict")),
    ] {
        let l = listener(&c, "g", name);
        assert_eq!(cond(&l["conditions"], "Conflicted"), want, "{name}");
        let programmed = if want.0 == "True" { "False" } else { "True" };
        assert_eq!(cond(&l["conditions"], "Programmed").0, programmed, "{name}");
    }
    let p = port(&c, "127.0.60.1:80");
    assert_eq!(
        p.listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["default/g/b"]
    );
    assert!(
        !c.snapshot
            .gateway
            .ports
            .contains_key(&"127.0.60.1:81".parse().unwrap())
    );
    assert!(
        !c.snapshot
            .l4
            .services
            .contains_key(&"127.0.60.1:9000".parse().unwrap())
    );
}

#[test]
fn gateways_sharing_an_address_merge_and_the_older_keeps_a_clash() {
    let gw = |name: &str, ts: &str, listeners: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, creationTimestamp: \"{ts}\"}}\nspec: {{gatewayClassName: lb, addresses: [{{value: 127.0.60.1}}], listeners: [{listeners}]}}\n"
        )
    };
    let c = run(&format!(
        "{}{}{}",
        gw(
            "young",
            "2024-02-01T00:00:00Z",
            "{name: same, port: 80, protocol: HTTP, hostname: a.example.com}, {name: other, port: 80, protocol: HTTP, hostname: c.example.com}, {name: tcp, port: 443, protocol: TCP}"
        ),
        gw(
            "old",
            "2024-01-01T00:00:00Z",
            "{name: a, port: 80, protocol: HTTP, hostname: a.example.com}, {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}"
        ),
        gw(
            "new-port",
            "2024-03-01T00:00:00Z",
            "{name: alt, port: 8081, protocol: HTTP}"
        ),
    ));
    assert_eq!(
        cond(&listener(&c, "old", "a")["conditions"], "Conflicted"),
        is("False", "NoConflicts")
    );
    assert_eq!(
        cond(&listener(&c, "young", "same")["conditions"], "Conflicted"),
        is("True", "HostnameConflict")
    );
    assert_eq!(
        cond(&listener(&c, "young", "other")["conditions"], "Conflicted"),
        is("False", "NoConflicts")
    );
    assert_eq!(
        cond(&listener(&c, "young", "tcp")["conditions"], "Conflicted"),
        is("True", "ProtocolConflict")
    );
    let names: Vec<&str> = port(&c, "127.0.60.1:80")
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["default/old/a", "default/young/other"]);
    assert_eq!(
        port(&c, "127.0.60.1:443").protocol,
        PortProtocol::TlsPassthrough
    );
    port(&c, "127.0.60.1:8081");
    let lt = &status(&c, "Gateway", "old")["status"]["conditions"][0]["lastTransitionTime"];
    assert_eq!(lt, "2024-01-01T00:00:00Z");
}

#[test]
fn listeners_merge_most_specific_hostname_first() {
    let c = run(&gateway(
        "default",
        "g",
        "addresses: [{value: 127.0.60.1}], listeners: [
        {name: any, port: 80, protocol: HTTP},
        {name: wide, port: 80, protocol: HTTP, hostname: '*.example.com'},
        {name: narrow, port: 80, protocol: HTTP, hostname: '*.a.example.com'},
        {name: exact, port: 80, protocol: HTTP, hostname: x.a.example.com}]",
    ));
    let p = port(&c, "127.0.60.1:80");
    let names: Vec<&str> = p
        .listeners
        .iter()
        .map(|l| l.name.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["exact", "narrow", "wide", "any"]);
    assert_eq!(
        p.listener("y.a.example.com").unwrap().name,
        "default/g/narrow"
    );
    assert_eq!(
        p.listeners[0].hostname,
        Some(HostnameMatch::Exact("x.a.example.com".into()))
    );
}

#[test]
fn https_certificates_resolve_or_explain_why_not() {
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: certs, namespace: certs}\nspec: {from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}], to: [{group: '', kind: Secret}]}\n";
    let listeners = "addresses: [{value: 127.0.60.1}], listeners: [
        {name: wild, port: 443, protocol: HTTPS, hostname: '*.example.com', tls: {certificateRefs: [{name: cert}]}},
        {name: fallback, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert, namespace: certs}]}},
        {name: missing, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: nope}]}},
        {name: none, port: 8444, protocol: HTTPS},
        {name: kind, port: 8445, protocol: HTTPS, tls: {certificateRefs: [{name: cert, kind: ConfigMap}]}}]";
    let base = format!(
        "{}{}{}",
        secret("default", "cert"),
        secret("certs", "cert"),
        gateway("default", "g", listeners)
    );
    let c = run(&base);
    let fallback = listener(&c, "g", "fallback");
    assert_eq!(
        cond(&fallback["conditions"], "ResolvedRefs"),
        is("False", "RefNotPermitted")
    );
    assert_eq!(
        cond(&fallback["conditions"], "Programmed"),
        is("False", "Invalid")
    );
    for name in ["missing", "none", "kind"] {
        let l = listener(&c, "g", name);
        assert_eq!(
            cond(&l["conditions"], "ResolvedRefs"),
            is("False", "InvalidCertificateRef"),
            "{name}"
        );
    }
    let p = port(&c, "127.0.60.1:443");
    assert_eq!(p.protocol, PortProtocol::Https);
    assert!(p.tls.names.contains_key("*.example.com") && p.tls.default.is_none());
    // With a ReferenceGrant the cross-namespace Secret becomes the default.
    let c = run(&format!("{base}{grant}"));
    assert_eq!(
        cond(&listener(&c, "g", "fallback")["conditions"], "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    let p = port(&c, "127.0.60.1:443");
    assert!(p.tls.default.is_some());
    assert_eq!(p.listeners.len(), 2);
}

#[test]
fn route_kinds_and_tls_modes_are_checked() {
    let c = run(&gateway("default", "g", "addresses: [{value: 127.0.60.1}], listeners: [
        {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TLSRoute}, {group: example.com, kind: HTTPRoute}]}},
        {name: bad, port: 81, protocol: HTTP, allowedRoutes: {kinds: [{kind: TCPRoute}]}},
        {name: term, port: 443, protocol: TLS, tls: {mode: Terminate}}]"));
    let http = listener(&c, "g", "http");
    assert_eq!(
        cond(&http["conditions"], "ResolvedRefs"),
        is("False", "InvalidRouteKinds")
    );
    assert_eq!(
        http["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    assert_eq!(
        cond(&http["conditions"], "Programmed"),
        is("True", "Programmed")
    );
    let bad = listener(&c, "g", "bad");
    assert_eq!(bad["supportedKinds"], serde_json::json!([]));
    assert_eq!(
        cond(&bad["conditions"], "Programmed"),
        is("False", "Invalid")
    );
    let term = listener(&c, "g", "term");
    assert_eq!(
        cond(&term["conditions"], "Accepted"),
        is("False", "UnsupportedValue")
    );
}

#[test]
fn tls_passthrough_and_tcp_listeners_carry_their_routes() {
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: sni}
spec:
  parentRefs: [{name: g, sectionName: tls}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: a, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: catchall}
spec:
  parentRefs: [{name: g, sectionName: tls}]
  rules: [{backendRefs: [{name: b, port: 443, weight: 3}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: pg}
spec:
  parentRefs: [{name: g, sectionName: tcp}]
  rules: [{backendRefs: [{name: a, port: 443}, {name: b, port: 443}, {name: c, port: 443, weight: 0}]}]
";
    let c = run(&format!(
        "{}{}{}{}{routes}",
        service("default", "a", 443, "10.0.0.1"),
        service("default", "b", 443, "10.0.0.2"),
        service("default", "c", 443, "10.0.0.3"),
        gateway(
            "default",
            "g",
            "addresses: [{value: 127.0.60.1}], listeners: [{name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}, {name: tcp, port: 5432, protocol: TCP}]"
        ),
    ));
    let p = port(&c, "127.0.60.1:443");
    let sni = &p.listeners[0].sni_routes;
    assert_eq!(
        sni.iter()
            .map(|s| s.route.name.as_str())
            .collect::<Vec<_>>(),
        ["sni", "catchall"]
    );
    assert_eq!(
        sni[0].hostnames,
        [HostnameMatch::Exact("db.example.com".into())]
    );
    let action = c.snapshot.gateway.action(sni[1].target).unwrap();
    assert_eq!(action.backends[0].weight, 3);
    let b = action.backends[0].backend.unwrap();
    assert_eq!(c.snapshot.backends[b.0 as usize].name, "default/b:443");
    let tcp = &c.snapshot.l4.services[&"127.0.60.1:5432".parse().unwrap()];
    assert_eq!(tcp.via, "gateway");
    assert_eq!(tcp.name, "default/g/tcp");
    let want: Vec<SocketAddr> = vec![
        "10.0.0.1:8000".parse().unwrap(),
        "10.0.0.2:8000".parse().unwrap(),
    ];
    assert_eq!(tcp.endpoints, want);
    assert_eq!(listener(&c, "g", "tls")["attachedRoutes"], 2);
    assert_eq!(listener(&c, "g", "tcp")["attachedRoutes"], 1);
    let pg = &status(&c, "TCPRoute", "pg")["status"]["parents"][0];
    assert_eq!(cond(&pg["conditions"], "Accepted"), is("True", "Accepted"));
    assert_eq!(pg["controllerName"], "lb.example.com/gateway-controller");
}

#[test]
fn an_allocated_address_in_status_is_kept() {
    let listeners = "listeners: [{name: http, port: 80, protocol: HTTP}]";
    let fresh = run(&gateway("default", "pooled", listeners));
    let first = status(&fresh, "Gateway", "pooled")["status"]["addresses"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = (1..=6)
        .map(|n| format!("127.0.60.{n}"))
        .find(|a| *a != first)
        .unwrap();
    // Status from an earlier lb names another pool address: it stays.
    let with_status = |addr: &str| {
        format!(
            "{}status: {{addresses: [{{type: IPAddress, value: \"{addr}\"}}]}}\n",
            gateway("default", "pooled", listeners)
        )
    };
    let c = run(&with_status(&other));
    let kept = &status(&c, "Gateway", "pooled")["status"]["addresses"][0]["value"];
    assert_eq!(kept, other.as_str());
    assert!(
        c.snapshot
            .gateway
            .ports
            .contains_key(&format!("{other}:80").parse().unwrap())
    );
    // Outside the pools now: allocated afresh.
    let c = run(&with_status("127.0.99.9"));
    let moved = &status(&c, "Gateway", "pooled")["status"]["addresses"][0]["value"];
    assert_eq!(moved, first.as_str());
}

#[test]
fn a_tls_secret_is_parsed_once_for_every_compile_and_every_reference() {
    use crate::compile::compile;
    use crate::manifests::objects_from_str;
    use crate::store::Store;

    let yaml = format!(
        "{}{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i, namespace: default}}\nspec:\n  ingressClassName: lb\n  tls: [{{hosts: [gw.example.com], secretName: cert}}]\n  rules: [{{host: gw.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}}}]\n",
        secret("default", "cert"),
        service("default", "s", 80, "10.0.0.1"),
    );
    let (raws, diags) = objects_from_str(&yaml, std::path::Path::new("t.yaml"));
    assert!(diags.is_empty(), "{diags:?}");
    let (store, diags) = Store::build(&raws);
    assert!(diags.is_empty(), "{diags:?}");
    let mut settings = cfg("\"127.0.60.0/29\"");
    settings.ingress.default_certificate = Some("default/cert".into());
    let first = compile(&store, &settings);
    let second = compile(&store, &settings);
    let served = |c: &crate::compile::Compiled| {
        c.snapshot
            .tls
            .lookup(Some("gw.example.com"))
            .expect("a certificate for the host")
            .clone()
    };
    let (a, b) = (served(&first), served(&second));
    assert_eq!(a.source, "default/cert");
    // The same parse in both compiles, and for the default certificate too.
    assert!(a.same_parse(&b));
    let default = first.snapshot.tls.default.as_ref().expect("the default");
    assert!(a.same_parse(default));
    // A store built again from the same text parses it again.
    let (again, _) = Store::build(&raws);
    assert!(!a.same_parse(&served(&compile(&again, &settings))));
}
