//! Status as `/status` reports it, in Kubernetes' schema: GatewayClass
//! acceptance, Gateway addresses and conditions, route parents with
//! `controllerName` and `observedGeneration`, and what lb leaves alone.

use super::conformance::http_route;
use super::{CONTROLLER, INFRA, Infra, WEB, condition, object_status, route_parent_conditions};
use crate::support::{Lb, admin_get};

#[test]
fn classes_gateways_and_routes_report_status_in_kubernetes_schema() {
    let infra = Infra::start();
    let foreign = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: not-ours}}\nspec: {{controllerName: example.net/other}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: foreign, namespace: {INFRA}}}\nspec:\n  gatewayClassName: not-ours\n  addresses: [{{value: \"{}\"}}]\n  listeners: [{{name: http, port: 9040, protocol: HTTP}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: unaddressed, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  listeners: [{{name: http, port: 9041, protocol: HTTP}}]\n---\n",
        infra.ip
    );
    let route = http_route(
        INFRA,
        "observed",
        &format!("{INFRA}/same-namespace"),
        &[],
        "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    )
    .replace(
        "  namespace: gateway-conformance-infra\n",
        "  namespace: gateway-conformance-infra\n  generation: 7\n",
    );
    let lb = infra.lb("gw-status", &(foreign + &route));
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());

    let class = object_status(&lb, "GatewayClass", "", "lb");
    assert_eq!(
        condition(&class["conditions"], "Accepted"),
        pair("True", "Accepted")
    );

    let gw = object_status(&lb, "Gateway", INFRA, "same-namespace");
    assert_eq!(
        condition(&gw["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        condition(&gw["conditions"], "Programmed"),
        pair("True", "Programmed")
    );
    assert_eq!(
        gw["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": infra.ip.to_string()}])
    );
    let listener = &gw["listeners"][0];
    assert_eq!(listener["name"], "http");
    assert_eq!(listener["attachedRoutes"], 1, "{gw:#}");
    let kinds: Vec<&str> = listener["supportedKinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"HTTPRoute"), "{listener:#}");
    for c in gw["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(listener["conditions"].as_array().unwrap())
    {
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            assert!(c.get(field).is_some(), "condition lacks {field}: {c:#}");
        }
    }

    let unaddressed = object_status(&lb, "Gateway", INFRA, "unaddressed");
    assert_eq!(
        condition(&unaddressed["conditions"], "Programmed"),
        pair("False", "AddressNotAssigned"),
        "{unaddressed:#}"
    );

    let route = object_status(&lb, "HTTPRoute", INFRA, "observed");
    let parent = route["parents"]
        .as_array()
        .and_then(|ps| ps.first())
        .cloned()
        .expect("one parent");
    assert_eq!(parent["controllerName"], CONTROLLER);
    assert_eq!(parent["parentRef"]["name"], "same-namespace");
    let conds = route_parent_conditions(&route, "same-namespace");
    assert_eq!(condition(&conds, "Accepted"), pair("True", "Accepted"));
    for c in conds.as_array().unwrap() {
        assert_eq!(c["observedGeneration"], 7, "{c:#}");
    }

    // Objects of another controller get no status from lb.
    let all = admin_get(lb.admin, "/status").unwrap().json();
    let names: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        !names.contains(&"GatewayClass/not-ours".to_owned()),
        "{names:?}"
    );
    assert!(!names.contains(&"Gateway/foreign".to_owned()), "{names:?}");
    // ...and their Gateways are not served.
    assert!(
        std::net::TcpStream::connect(std::net::SocketAddr::new(infra.ip.into(), 9040)).is_err()
    );
}

#[test]
fn a_bad_route_is_reported_and_the_rest_keeps_serving() {
    let infra = Infra::start();
    let good = http_route(
        INFRA,
        "good",
        &format!("{INFRA}/same-namespace"),
        &["good.example.com"],
        "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let lb = infra.lb("gw-bad-route", &good);
    let gw = infra.gw("same-namespace");
    super::expect_backend(
        &super::get(gw, "good.example.com", "/"),
        "infra-backend-v1",
        "before",
    );
    let generation = lb.generation();
    let bad = http_route(
        INFRA,
        "bad-regex",
        &format!("{INFRA}/same-namespace"),
        &["bad.example.com"],
        "  - matches: [{path: {type: RegularExpression, value: \"/(unclosed\"}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    );
    std::fs::write(lb.manifest_path("test.yaml"), good.clone() + &bad).unwrap();
    lb.wait_generation_above(generation, std::time::Duration::from_secs(10));
    super::expect_backend(
        &super::get(gw, "good.example.com", "/"),
        "infra-backend-v1",
        "after",
    );
    assert_eq!(super::get(gw, "bad.example.com", "/").status, 404);
    let route = object_status(&lb, "HTTPRoute", INFRA, "bad-regex");
    let conds = route_parent_conditions(&route, "same-namespace");
    assert_eq!(condition(&conds, "Accepted").0, "False", "{route:#}");
    let _: &Lb = &lb;
}

/// A Gateway of class `lb` in the infra namespace on `ip`; `listeners` is
/// the YAML block list under `spec.listeners` (lines starting `  - `).
fn gateway(name: &str, ip: std::net::Ipv4Addr, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n{listeners}---\n"
    )
}

/// An HTTPS listener `name` on `port` with one certificateRef (flow YAML).
fn https_listener(name: &str, port: u16, cert_ref: &str) -> String {
    format!(
        "  - name: {name}\n    port: {port}\n    protocol: HTTPS\n    tls:\n      certificateRefs: [{cert_ref}]\n    allowedRoutes: {{namespaces: {{from: All}}}}\n"
    )
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// GatewayInvalidTLSConfiguration: a certificateRef to a missing Secret, of
/// an unsupported group, of an unsupported kind, or to a malformed Secret
/// leaves the listener unresolved and its port without a certificate.
#[test]
fn gateway_invalid_tls_configuration() {
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = crate::support::scratch_dir("gw-invalid-tls");
    let good = crate::support::certs::self_signed(&dir, "good.example.org", &["good.example.org"]);
    let malformed = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: malformed, namespace: {INFRA}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    -----BEGIN CERTIFICATE-----\n    bm90IGEgY2VydGlmaWNhdGU=\n    -----END CERTIFICATE-----\n  tls.key: |\n    -----BEGIN PRIVATE KEY-----\n    bm90IGEga2V5\n    -----END PRIVATE KEY-----\n---\n"
    );
    let cases = [
        ("nonexistent-secret", 9101, "{name: no-such-secret}"),
        (
            "unsupported-group",
            9102,
            "{group: wrong.group.company.io, kind: Secret, name: good}",
        ),
        (
            "unsupported-kind",
            9103,
            "{group: \"\", kind: WrongKind, name: good}",
        ),
        ("malformed-secret", 9104, "{name: malformed}"),
    ];
    let mut manifests = super::tls_secret_in(INFRA, "good", &good) + &malformed;
    for (name, port, r) in cases {
        manifests += &gateway(name, ip, &https_listener("https", port, r));
    }
    let lb = infra.lb("gw-invalid-tls", &manifests);
    for (name, port, _) in cases {
        let st = object_status(&lb, "Gateway", INFRA, name);
        let l = super::listener_of(&st, "https");
        assert_eq!(
            condition(&l["conditions"], "ResolvedRefs"),
            pair("False", "InvalidCertificateRef"),
            "{name}: {st:#}"
        );
        assert_eq!(
            condition(&l["conditions"], "Programmed").0,
            "False",
            "{name}"
        );
        assert_eq!(l["attachedRoutes"], 0, "{name}");
        assert!(
            l["supportedKinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"] == "HTTPRoute"),
            "{name}: {l:#}"
        );
        let at = std::net::SocketAddr::new(ip.into(), port);
        assert_eq!(
            super::curl_tls(at, "good.example.org", "good.example.org", "/").status,
            0,
            "{name}: no certificate is served"
        );
    }
}

/// GatewaySecretMissingReferenceGrant, then
/// GatewaySecretReferenceGrantAllInNamespace: without any ReferenceGrant a
/// cross-namespace certificateRef is RefNotPermitted, even to a Secret that
/// does not exist; a grant for every Secret of the namespace resolves it.
#[test]
fn gateway_secret_reference_grants() {
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = crate::support::scratch_dir("gw-secret-grants");
    let cert = crate::support::certs::self_signed(&dir, "web.example.org", &["web.example.org"]);
    let listeners = https_listener(
        "https",
        9111,
        &format!("{{name: certificate, namespace: {WEB}}}"),
    ) + &https_listener(
        "https-nonexistent-secret",
        9112,
        &format!("{{name: nonexistent-certificate, namespace: {WEB}}}"),
    );
    let base = super::tls_secret_in(WEB, "certificate", &cert)
        + &gateway("gateway-secret-missing-reference-grant", ip, &listeners);
    let lb = infra.lb("gw-secret-grants", &base);
    let gw = "gateway-secret-missing-reference-grant";
    let st = object_status(&lb, "Gateway", INFRA, gw);
    for l in ["https", "https-nonexistent-secret"] {
        let ls = super::listener_of(&st, l);
        assert_eq!(
            condition(&ls["conditions"], "ResolvedRefs"),
            pair("False", "RefNotPermitted"),
            "{l}: {st:#}"
        );
        assert_eq!(condition(&ls["conditions"], "Programmed").0, "False");
        assert_eq!(ls["attachedRoutes"], 0);
    }
    let at = std::net::SocketAddr::new(ip.into(), 9111);
    assert_eq!(
        super::curl_tls(at, "web.example.org", "web.example.org", "/").status,
        0
    );

    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: reference-grant, namespace: {WEB}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Secret}}]\n---\n"
    );
    super::rewrite_test_yaml(&lb, &(base + &grant));
    let st = object_status(&lb, "Gateway", INFRA, gw);
    let https = super::listener_of(&st, "https");
    assert_eq!(
        condition(&https["conditions"], "ResolvedRefs"),
        pair("True", "ResolvedRefs"),
        "{st:#}"
    );
    assert_eq!(
        condition(&https["conditions"], "Programmed"),
        pair("True", "Programmed")
    );
    assert_eq!(https["attachedRoutes"], 0);
    // The grant lets the ref through; the Secret itself is still missing.
    assert_eq!(
        condition(
            &super::listener_of(&st, "https-nonexistent-secret")["conditions"],
            "ResolvedRefs"
        ),
        pair("False", "InvalidCertificateRef")
    );
    // No route: the handshake completes and lb answers 404.
    assert_eq!(
        super::curl_tls(at, "web.example.org", "web.example.org", "/").status,
        404
    );
}

/// GatewayWithAttachedRoutes: `attachedRoutes` counts the routes on a
/// listener that selects namespaces by `kubernetes.io/metadata.name`, and
/// a route still counts on a listener whose certificate does not resolve.
#[test]
fn gateway_with_attached_routes() {
    let infra = Infra::start();
    let ip = infra.ip;
    let selected = |port: u16| {
        format!(
            "  - name: http\n    port: {port}\n    protocol: HTTP\n    allowedRoutes:\n      kinds: [{{kind: HTTPRoute}}]\n      namespaces:\n        from: Selector\n        selector:\n          matchLabels: {{kubernetes.io/metadata.name: {INFRA}}}\n"
        )
    };
    let backend = "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n";
    let manifests = [
        gateway("gateway-with-one-attached-route", ip, &selected(9121)),
        gateway("gateway-with-two-attached-routes", ip, &selected(9122)),
        gateway(
            "unresolved-gateway-with-one-attached-unresolved-route",
            ip,
            &https_listener("tls", 9123, "{name: no-such-certificate}"),
        ),
        http_route(
            INFRA,
            "http-route-1",
            &format!("{INFRA}/gateway-with-one-attached-route"),
            &[],
            backend,
        ),
        http_route(
            INFRA,
            "http-route-2",
            &format!("{INFRA}/gateway-with-two-attached-routes"),
            &["two.example.com"],
            backend,
        ),
        http_route(
            INFRA,
            "http-route-3",
            &format!("{INFRA}/gateway-with-two-attached-routes"),
            &["three.example.com"],
            "  - backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
        ),
        http_route(
            INFRA,
            "http-route-4",
            &format!("{INFRA}/unresolved-gateway-with-one-attached-unresolved-route"),
            &[],
            "  - backendRefs: [{name: does-not-exist, port: 8080}]\n",
        ),
    ]
    .concat();
    let lb = infra.lb("gw-attached", &manifests);
    let attached =
        |gw: &str, l: &str| super::attached_routes(&object_status(&lb, "Gateway", INFRA, gw), l);
    assert_eq!(attached("gateway-with-one-attached-route", "http"), 1);
    assert_eq!(attached("gateway-with-two-attached-routes", "http"), 2);
    let gw = "unresolved-gateway-with-one-attached-unresolved-route";
    assert_eq!(attached(gw, "tls"), 1);
    let st = object_status(&lb, "Gateway", INFRA, gw);
    let tls = super::listener_of(&st, "tls");
    assert_eq!(condition(&tls["conditions"], "Programmed").0, "False");
    assert_eq!(
        condition(&tls["conditions"], "ResolvedRefs"),
        pair("False", "InvalidCertificateRef")
    );
    super::expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "http-route-4",
        gw,
        ("True", "Accepted"),
        ("False", "BackendNotFound"),
    );
    let at = |port: u16| std::net::SocketAddr::new(ip.into(), port);
    super::expect_backend(
        &super::get(at(9121), "any.example.com", "/"),
        "infra-backend-v1",
        "one",
    );
    super::expect_backend(
        &super::get(at(9122), "two.example.com", "/"),
        "infra-backend-v1",
        "two",
    );
    super::expect_backend(
        &super::get(at(9122), "three.example.com", "/"),
        "infra-backend-v2",
        "three",
    );
}

/// GatewayListenerUnsupportedProtocol: a Gateway whose only listener is
/// invalid is not Accepted (ListenersNotValid); with one valid listener
/// beside it, it is Accepted with reason ListenersNotValid and serves.
#[test]
fn gateway_accepted_reports_invalid_listeners() {
    let infra = Infra::start();
    let ip = infra.ip;
    let invalid = "  - {name: invalid, port: 9131, protocol: INVALID}\n";
    let manifests = gateway("only-invalid", ip, invalid)
        + &gateway(
            "valid-and-invalid",
            ip,
            &format!("  - {{name: http, port: 9132, protocol: HTTP}}\n{invalid}"),
        )
        + &http_route(
            INFRA,
            "control",
            &format!("{INFRA}/valid-and-invalid/http"),
            &["unsupported-protocol.example.com"],
            "  - backendRefs: [{name: infra-backend-v3, port: 8080}]\n",
        );
    let lb = infra.lb("gw-unsupported-protocol", &manifests);
    let st = object_status(&lb, "Gateway", INFRA, "only-invalid");
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        pair("False", "ListenersNotValid"),
        "{st:#}"
    );
    let l = super::listener_of(&st, "invalid");
    assert_eq!(
        condition(&l["conditions"], "Accepted"),
        pair("False", "UnsupportedProtocol")
    );
    assert_eq!(l["supportedKinds"], serde_json::json!([]));

    let st = object_status(&lb, "Gateway", INFRA, "valid-and-invalid");
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        pair("True", "ListenersNotValid"),
        "{st:#}"
    );
    assert_eq!(
        condition(&super::listener_of(&st, "http")["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        condition(
            &super::listener_of(&st, "invalid")["conditions"],
            "Accepted"
        ),
        pair("False", "UnsupportedProtocol")
    );
    super::expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "control",
        "valid-and-invalid",
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
    super::expect_backend(
        &super::get(
            std::net::SocketAddr::new(ip.into(), 9132),
            "unsupported-protocol.example.com",
            "/",
        ),
        "infra-backend-v3",
        "valid listener",
    );
    assert!(super::refused(std::net::SocketAddr::new(ip.into(), 9131)));
}

/// GatewayOverlappingTLSConfigHostnames: HTTPS listeners on one port whose
/// hostnames overlap get OverlappingTLSConfig=True (OverlappingHostnames);
/// the others get no such condition. All stay Accepted and serve.
#[test]
fn gateway_overlapping_tls_config_hostnames() {
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = crate::support::scratch_dir("gw-overlap");
    let cert = crate::support::certs::self_signed(
        &dir,
        "example.com",
        &["example.com", "*.example.com", "*.bar.example.com"],
    );
    let l = |name: &str, port: u16, host: &str| {
        format!(
            "  - name: {name}\n    port: {port}\n    protocol: HTTPS\n    hostname: \"{host}\"\n    tls: {{certificateRefs: [{{name: cert}}]}}\n"
        )
    };
    let listeners = [
        l("foo-https", 9141, "foo.example.com"),
        l("bar-https", 9141, "bar.bar.example.com"),
        l("wildcard-https", 9141, "*.example.com"),
        l("not-overlapping-https", 9141, "example.com"),
        l("not-overlapping-other-port", 9142, "foo.example.com"),
    ]
    .concat();
    let manifests = super::tls_secret_in(INFRA, "cert", &cert)
        + &gateway("gateway-overlapping-hostnames", ip, &listeners);
    let lb = infra.lb("gw-overlap", &manifests);
    let st = object_status(&lb, "Gateway", INFRA, "gateway-overlapping-hostnames");
    let has = |name: &str| {
        super::listener_of(&st, name)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "OverlappingTLSConfig")
    };
    for name in ["foo-https", "bar-https", "wildcard-https"] {
        let conds = super::listener_of(&st, name)["conditions"].clone();
        assert_eq!(
            condition(&conds, "OverlappingTLSConfig"),
            pair("True", "OverlappingHostnames"),
            "{name}"
        );
        assert_eq!(condition(&conds, "Accepted"), pair("True", "Accepted"));
    }
    for name in ["not-overlapping-https", "not-overlapping-other-port"] {
        assert!(!has(name), "{name}: {st:#}");
        let conds = super::listener_of(&st, name)["conditions"].clone();
        assert_eq!(condition(&conds, "Accepted"), pair("True", "Accepted"));
    }
    let at = std::net::SocketAddr::new(ip.into(), 9141);
    assert_eq!(
        super::curl_tls(at, "foo.example.com", "foo.example.com", "/").status,
        404,
        "served, no route"
    );
}

/// GatewayInvalidParametersRef and GatewayNameMaximumLength: an
/// infrastructure.parametersRef lb cannot use makes the Gateway not
/// Accepted (InvalidParameters); a 253-character name is reconciled.
#[test]
fn gateway_invalid_parameters_and_maximum_name_length() {
    let infra = Infra::start();
    let ip = infra.ip;
    let long = format!("gateway-{}", "a".repeat(253 - "gateway-".len()));
    assert_eq!(long.len(), 253);
    let params = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gateway-invalid-parameters-ref, namespace: {INFRA}, generation: 2}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  infrastructure:\n    parametersRef: {{group: example.com, kind: ConfigMap, name: does-not-exist}}\n  listeners:\n  - {{name: http, port: 9151, protocol: HTTP}}\n---\n"
    );
    let named = gateway(&long, ip, "  - {name: http, port: 9152, protocol: HTTP}\n").replacen(
        &format!("namespace: {INFRA}}}"),
        &format!("namespace: {INFRA}, generation: 4}}"),
        1,
    );
    let route = http_route(
        INFRA,
        "long",
        &format!("{INFRA}/{long}"),
        &[],
        "  - backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    );
    let lb = infra.lb("gw-params-name", &(params + &named + &route));
    let st = object_status(&lb, "Gateway", INFRA, "gateway-invalid-parameters-ref");
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        pair("False", "InvalidParameters"),
        "{st:#}"
    );
    for c in st["conditions"].as_array().unwrap() {
        assert_eq!(c["observedGeneration"], 2, "{c:#}");
    }
    assert!(super::refused(std::net::SocketAddr::new(ip.into(), 9151)));

    let st = object_status(&lb, "Gateway", INFRA, &long);
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        condition(&st["conditions"], "Programmed"),
        pair("True", "Programmed")
    );
    for c in st["conditions"].as_array().unwrap().iter().chain(
        super::listener_of(&st, "http")["conditions"]
            .as_array()
            .unwrap(),
    ) {
        assert_eq!(c["observedGeneration"], 4, "{c:#}");
    }
    super::expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "long",
        &long,
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
    super::expect_backend(
        &super::get(std::net::SocketAddr::new(ip.into(), 9152), "x", "/"),
        "infra-backend-v2",
        "long name",
    );
}
