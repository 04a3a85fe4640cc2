//! Status as `/status` reports it, in Kubernetes' schema: GatewayClass
//! acceptance, Gateway addresses and conditions, route parents with
//! `controllerName` and `observedGeneration`, and what lb leaves alone.

use super::conformance::http_route;
use super::{CONTROLLER, INFRA, Infra, condition, object_status, route_parent_conditions};
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
