//! Manifest values that would reach a head are validated (issue 15 item 1):
//! a route with a CR/LF header value is not served and reports
//! `Accepted=False`, the routes next to it keep serving, and an invalid
//! update to a serving route keeps the old version serving.

use std::time::{Duration, Instant};

use super::conformance::http_route;
use super::{
    INFRA, Infra, condition, expect_backend, get, object_status, route_parent_conditions,
    seen_header,
};

/// A route for `host` to infra-backend-v1 that sets header `X-Set: value`
/// (`value` written as a YAML double-quoted string, escapes allowed).
fn route(name: &str, host: &str, value: &str) -> String {
    http_route(
        INFRA,
        name,
        &format!("{INFRA}/same-namespace"),
        &[host],
        &format!(
            "  - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-Set, value: \"{value}\"}}]}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
        ),
    )
}

/// `(status, reason)` and message of the route's Accepted condition.
fn accepted(lb: &crate::support::Lb, name: &str) -> ((String, String), String) {
    let st = object_status(lb, "HTTPRoute", INFRA, name);
    let conds = route_parent_conditions(&st, "same-namespace");
    let message = conds
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    (condition(&conds, "Accepted"), message)
}

#[test]
fn crlf_header_value_is_refused_and_the_rest_keeps_serving() {
    let infra = Infra::start();
    let routes = route("good", "good.example.com", "ok")
        + &route("bad", "bad.example.com", "v\\r\\nX-Injected: yes");
    let lb = infra.lb("gw-crlf-value", &routes);
    let gw = infra.gw("same-namespace");

    let r = get(gw, "good.example.com", "/");
    expect_backend(&r, "infra-backend-v1", "valid route");
    assert_eq!(seen_header(&r, "X-Set"), ["ok"]);

    // The invalid route is not served: no entry for its host, nothing injected.
    let r = get(gw, "bad.example.com", "/");
    assert_eq!(r.status, 404, "{}", r.text());
    let (cond, message) = accepted(&lb, "bad");
    assert_eq!(
        cond,
        ("False".to_owned(), "UnsupportedValue".to_owned()),
        "{message}"
    );
    assert!(
        message.contains("spec.rules[0].filters[0].requestHeaderModifier.set[0].value"),
        "{message}"
    );
    assert_eq!(accepted(&lb, "good").0.0, "True");

    // An invalid update to the serving route: the old version keeps serving.
    super::rewrite_test_yaml(
        &lb,
        &(route("good", "good.example.com", "v2\\r\\nX-Injected: yes")
            + &route("bad", "bad.example.com", "v\\r\\nX-Injected: yes")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted(&lb, "good").0.0 != "False" {
        assert!(Instant::now() < deadline, "the update was never reported");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (cond, message) = accepted(&lb, "good");
    assert_eq!(cond.1, "UnsupportedValue");
    assert!(
        message.contains("previous valid version keeps serving"),
        "{message}"
    );
    for _ in 0..5 {
        let r = get(gw, "good.example.com", "/");
        expect_backend(&r, "infra-backend-v1", "old version after a bad update");
        assert_eq!(seen_header(&r, "X-Set"), ["ok"]);
        assert!(seen_header(&r, "X-Injected").is_empty(), "{}", r.text());
    }
}

/// Gateway routing sees the normalised path too (issue 15 item 5): a dot
/// segment or an escaped one cannot leave the `/public` route while the
/// backend resolves it elsewhere; an escaped `/` gets 400.
#[test]
fn gateway_routes_on_the_normalised_path() {
    let infra = Infra::start();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /public}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /internal}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n";
    let routes = http_route(
        INFRA,
        "paths",
        &format!("{INFRA}/same-namespace"),
        &["paths.example.com"],
        rules,
    );
    let _lb = infra.lb("gw-paths", &routes);
    let gw = infra.gw("same-namespace");
    for (path, backend) in [
        ("/public/../internal/x", "infra-backend-v2"),
        ("/public/%2e%2e/internal/x", "infra-backend-v2"),
        ("/public//x", "infra-backend-v1"),
    ] {
        let r = get(gw, "paths.example.com", path);
        expect_backend(&r, backend, path);
        let want = if backend == "infra-backend-v2" {
            "/internal/x"
        } else {
            "/public/x"
        };
        assert_eq!(super::seen_path(&r), want, "{path}");
    }
    let r = get(gw, "paths.example.com", "/public%2F..%2Finternal/x");
    assert_eq!(r.status, 400, "{}", r.text());
}
