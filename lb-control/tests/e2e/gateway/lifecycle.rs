//! Gateway and route lifecycle: changes to Gateways, Listeners and routes
//! while lb runs, and the status they produce. Each test rewrites lb's
//! manifest files and waits for the generation the change publishes, as a
//! controller would see an object updated in the API server.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::conformance::http_route;
use super::{
    CONTROLLER, INFRA, Infra, attached_routes, condition, curl_tls, eventually, expect_backend,
    expect_route, get, listener_of, object_status, refused, rewrite_test_yaml,
    route_parent_conditions, tls_secret_in,
};
use crate::support::client::Client;
use crate::support::{Lb, certs::self_signed, scratch_dir};

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// A Gateway of class `lb` in the infra namespace at `generation`;
/// `addresses` is a YAML flow list, `listeners` the block list under
/// `spec.listeners` (lines starting `  - `).
fn gateway(name: &str, generation: u32, addresses: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {INFRA}, generation: {generation}}}\nspec:\n  gatewayClassName: lb\n  addresses: {addresses}\n  listeners:\n{listeners}---\n"
    )
}

fn at(ip: Ipv4Addr) -> String {
    format!("[{{value: \"{ip}\"}}]")
}

/// `http_route` with `metadata.generation`.
fn route_at(generation: u32, name: &str, parent: &str, hosts: &[&str], rules: &str) -> String {
    http_route(INFRA, name, parent, hosts, rules).replacen(
        &format!("  namespace: {INFRA}\n"),
        &format!("  namespace: {INFRA}\n  generation: {generation}\n"),
        1,
    )
}

/// Every condition of `conditions` carries `generation`.
#[track_caller]
fn all_observed(conditions: &serde_json::Value, generation: u32, what: &str) {
    let cs = conditions.as_array().expect("conditions");
    assert!(!cs.is_empty(), "{what}: no conditions");
    for c in cs {
        assert_eq!(c["observedGeneration"], generation, "{what}: {c:#}");
    }
}

/// HTTPRouteObservedGenerationBump, GatewayObservedGenerationBump and
/// GatewayClassObservedGenerationBump: after a spec change with a new
/// generation, every condition of the route, the Gateway, its listeners
/// and the class carries that generation, and the change is served.
#[test]
fn observed_generation_follows_spec_changes() {
    let infra = Infra::start();
    let gw = "gateway-observed-generation-bump";
    let listener =
        "  - {name: http, port: 9201, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";
    let alternate = "  - {name: alternate, port: 9201, protocol: HTTP, hostname: foo.com, allowedRoutes: {namespaces: {from: All}}}\n";
    let route = |generation: u32, backend: &str| {
        route_at(
            generation,
            "observed-generation-bump",
            &format!("{INFRA}/{gw}"),
            &[],
            &format!("  - backendRefs: [{{name: {backend}, port: 8080}}]\n"),
        )
    };
    let first = gateway(gw, 1, &at(infra.ip), listener) + &route(1, "infra-backend-v1");
    let lb = infra.lb("gw-generation", &first);
    let addr = SocketAddr::new(infra.ip.into(), 9201);
    expect_backend(&get(addr, "example.com", "/"), "infra-backend-v1", "gen 1");
    let st = object_status(&lb, "HTTPRoute", INFRA, "observed-generation-bump");
    all_observed(&route_parent_conditions(&st, gw), 1, "route gen 1");

    // The route's backendRef and the Gateway's listeners change.
    rewrite_test_yaml(
        &lb,
        &(gateway(gw, 2, &at(infra.ip), &format!("{listener}{alternate}"))
            + &route(2, "infra-backend-v2")),
    );
    let st = object_status(&lb, "HTTPRoute", INFRA, "observed-generation-bump");
    let conds = route_parent_conditions(&st, gw);
    all_observed(&conds, 2, "route gen 2");
    assert_eq!(condition(&conds, "Accepted"), pair("True", "Accepted"));
    expect_backend(&get(addr, "example.com", "/"), "infra-backend-v2", "gen 2");
    let st = object_status(&lb, "Gateway", INFRA, gw);
    all_observed(&st["conditions"], 2, "Gateway");
    assert_eq!(st["listeners"].as_array().unwrap().len(), 2, "{st:#}");
    for l in ["http", "alternate"] {
        let ls = listener_of(&st, l);
        all_observed(&ls["conditions"], 2, l);
        assert_eq!(
            condition(&ls["conditions"], "Accepted"),
            pair("True", "Accepted")
        );
        assert_eq!(ls["attachedRoutes"], 1, "{l}");
    }

    // The class gets a description (base.yaml holds it).
    let class = object_status(&lb, "GatewayClass", "", "lb");
    all_observed(&class["conditions"], 1, "class gen 1");
    let base = infra.base().replacen(
        &format!("metadata: {{name: lb}}\nspec: {{controllerName: {CONTROLLER}}}"),
        &format!(
            "metadata: {{name: lb, generation: 2}}\nspec: {{controllerName: {CONTROLLER}, description: new}}"
        ),
        1,
    );
    assert_ne!(base, infra.base(), "the class is in base.yaml");
    let generation = lb.generation();
    let path = lb.manifest_path("base.yaml");
    std::fs::write(path.with_extension("rewrite"), &base).unwrap();
    std::fs::rename(path.with_extension("rewrite"), &path).unwrap();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    let class = object_status(&lb, "GatewayClass", "", "lb");
    all_observed(&class["conditions"], 2, "class gen 2");
    assert_eq!(
        condition(&class["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
}

/// GatewayModifyListeners: a listener added while lb runs is served with
/// its routes attached; a removed one leaves the status and its port
/// closes, while the remaining listener keeps serving (even on a
/// connection opened before the change).
#[test]
fn gateway_modify_listeners() {
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = scratch_dir("gw-modify-listeners");
    let cert = self_signed(&dir, "data.test.com", &["data.test.com"]);
    let gw = "gateway-add-listener";
    let https = "  - name: https\n    port: 9211\n    protocol: HTTPS\n    allowedRoutes: {namespaces: {from: All}}\n    tls: {certificateRefs: [{name: certificate}]}\n";
    let http = "  - {name: http, port: 9212, protocol: HTTP, hostname: data.test.com, allowedRoutes: {namespaces: {from: All}}}\n";
    let fixed = tls_secret_in(INFRA, "certificate", &cert)
        + &http_route(
            INFRA,
            "http-route",
            &format!("{INFRA}/{gw}"),
            &[],
            "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        );
    let lb = infra.lb(
        "gw-modify-listeners",
        &(gateway(gw, 1, &at(ip), https) + &fixed),
    );
    let (tls_addr, http_addr) = (
        SocketAddr::new(ip.into(), 9211),
        SocketAddr::new(ip.into(), 9212),
    );
    expect_backend(
        &curl_tls(tls_addr, "data.test.com", "data.test.com", "/"),
        "infra-backend-v1",
        "https before",
    );
    assert!(refused(http_addr), "no http listener yet");

    // Add `http`.
    rewrite_test_yaml(
        &lb,
        &(gateway(gw, 2, &at(ip), &format!("{https}{http}")) + &fixed),
    );
    let st = object_status(&lb, "Gateway", INFRA, gw);
    assert_eq!(st["listeners"].as_array().unwrap().len(), 2, "{st:#}");
    for l in ["https", "http"] {
        let ls = listener_of(&st, l);
        for t in ["Accepted", "ResolvedRefs", "Programmed"] {
            assert_eq!(condition(&ls["conditions"], t).0, "True", "{l} {t}: {st:#}");
        }
        assert_eq!(attached_routes(&st, l), 1, "{l}");
    }
    assert!(
        eventually(Duration::from_secs(5), || !refused(http_addr)),
        "the added listener's port opens"
    );
    expect_backend(
        &get(http_addr, "data.test.com", "/"),
        "infra-backend-v1",
        "added http",
    );
    expect_backend(
        &curl_tls(tls_addr, "data.test.com", "data.test.com", "/"),
        "infra-backend-v1",
        "https still",
    );
    let mut kept = Client::connect(http_addr);
    let r = kept
        .request("GET", "data.test.com", "/", &[], None)
        .unwrap();
    expect_backend(&r, "infra-backend-v1", "keep-alive before removal");

    // Remove `https`.
    rewrite_test_yaml(&lb, &(gateway(gw, 3, &at(ip), http) + &fixed));
    let st = object_status(&lb, "Gateway", INFRA, gw);
    let names: Vec<&str> = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["http"], "{st:#}");
    assert_eq!(attached_routes(&st, "http"), 1);
    assert!(
        eventually(Duration::from_secs(5), || refused(tls_addr)),
        "the removed listener's port closes"
    );
    expect_backend(
        &get(http_addr, "data.test.com", "/"),
        "infra-backend-v1",
        "http after",
    );
    let r = kept
        .request("GET", "data.test.com", "/", &[], None)
        .unwrap();
    expect_backend(&r, "infra-backend-v1", "keep-alive after removal");
}

/// GatewayUpdateListenerHostname: a route whose hostname no listener
/// shares is not Accepted; once the listener's hostname changes to match,
/// it is Accepted, counted and served.
#[test]
fn gateway_update_listener_hostname() {
    let infra = Infra::start();
    let gw = "gateway-update-listener-hostname";
    let listener = |host: &str| {
        format!(
            "  - {{name: http, port: 9221, protocol: HTTP, hostname: {host}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n"
        )
    };
    let route = http_route(
        INFRA,
        "accepted-route",
        &format!("{INFRA}/{gw}"),
        &["accepted.example.com"],
        "  - backendRefs: [{name: infra-backend-v3, port: 8080}]\n",
    );
    let lb = infra.lb(
        "gw-update-hostname",
        &(gateway(gw, 1, &at(infra.ip), &listener("other.example.com")) + &route),
    );
    let addr = SocketAddr::new(infra.ip.into(), 9221);
    let st = object_status(&lb, "HTTPRoute", INFRA, "accepted-route");
    assert_eq!(
        condition(&route_parent_conditions(&st, gw), "Accepted"),
        pair("False", "NoMatchingListenerHostname")
    );
    assert_eq!(
        attached_routes(&object_status(&lb, "Gateway", INFRA, gw), "http"),
        0
    );
    assert_eq!(get(addr, "accepted.example.com", "/").status, 404);

    rewrite_test_yaml(
        &lb,
        &(gateway(gw, 2, &at(infra.ip), &listener("accepted.example.com")) + &route),
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "accepted-route",
        gw,
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
    assert_eq!(
        attached_routes(&object_status(&lb, "Gateway", INFRA, gw), "http"),
        1
    );
    expect_backend(
        &get(addr, "accepted.example.com", "/"),
        "infra-backend-v3",
        "after the hostname change",
    );
}

/// GatewayStaticAddresses: an address of an unsupported type makes the
/// Gateway not Accepted; an IP lb cannot bind (not loopback, not in
/// `[node].addresses` or the pools) makes it Accepted but not Programmed
/// (AddressNotUsable) and nothing is bound; with only a usable address left
/// it is Programmed on that address.
#[test]
fn gateway_static_addresses() {
    let infra = Infra::start();
    let usable = super::unique_ip();
    let unusable = "203.0.113.77";
    let gw = "gateway-static-addresses";
    let listener = "  - {name: http, port: 9231, protocol: HTTP}\n";
    let invalid = "{type: test/fake-invalid-type, value: \"fake address teehee!\"}";
    let unusable_ref = format!("{{type: IPAddress, value: \"{unusable}\"}}");
    let usable_ref = format!("{{type: IPAddress, value: \"{usable}\"}}");
    let addr = SocketAddr::new(usable.into(), 9231);
    let lb: Lb = infra.lb(
        "gw-static-addresses",
        &gateway(
            gw,
            1,
            &format!("[{invalid}, {unusable_ref}, {usable_ref}]"),
            listener,
        ),
    );
    let st = object_status(&lb, "Gateway", INFRA, gw);
    all_observed(&st["conditions"], 1, "gen 1");
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        pair("False", "UnsupportedAddress"),
        "{st:#}"
    );
    assert!(refused(addr));

    rewrite_test_yaml(
        &lb,
        &gateway(gw, 2, &format!("[{unusable_ref}, {usable_ref}]"), listener),
    );
    let st = object_status(&lb, "Gateway", INFRA, gw);
    all_observed(&st["conditions"], 2, "gen 2");
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        pair("True", "Accepted"),
        "{st:#}"
    );
    assert_eq!(
        condition(&st["conditions"], "Programmed"),
        pair("False", "AddressNotUsable")
    );
    assert!(refused(addr));

    rewrite_test_yaml(&lb, &gateway(gw, 3, &format!("[{usable_ref}]"), listener));
    let st = object_status(&lb, "Gateway", INFRA, gw);
    all_observed(&st["conditions"], 3, "gen 3");
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        condition(&st["conditions"], "Programmed"),
        pair("True", "Programmed")
    );
    assert_eq!(
        st["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": usable.to_string()}])
    );
    let http = listener_of(&st, "http");
    for t in ["Accepted", "ResolvedRefs"] {
        assert_eq!(condition(&http["conditions"], t).0, "True", "{t}");
    }
    assert_eq!(http["attachedRoutes"], 0);
    assert!(
        eventually(Duration::from_secs(5), || !refused(addr)),
        "the usable address is bound"
    );
    assert_eq!(get(addr, "example.com", "/").status, 404);
}
