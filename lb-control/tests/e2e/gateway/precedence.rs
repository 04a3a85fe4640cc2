//! HTTPRoute precedence across several routes on one Listener: a table of
//! requests and the rule each must reach. Every rule forwards to its own
//! echo backend, named after the rule.
//!
//! The order is the spec's (HTTPRouteRule and HTTPRouteSpec.hostnames):
//! most specific matching hostname, then Exact path, longest PathPrefix,
//! method, most header matches, most query matches, then the oldest route
//! and namespace/name. Where a RegularExpression path ranks is
//! implementation-specific: lb puts it after Exact and before PathPrefix.

use super::conformance::http_route;
use super::{INFRA, Infra, expect_backend, send};

/// Rule ids; each is also the name of its Service and echo backend.
const RULES: &[&str] = &[
    "p-a1", "p-a2", "p-a3", "p-a4", "p-a5", "p-a6", "p-a7", "p-a8", "p-a9", "p-a10", "p-a11",
    "p-b1", "p-b2", "p-b3", "p-b4", "p-b5", "p-g1", "p-g2", "p-d1", "p-d2", "p-e1",
];

fn rule(id: &str, m: &str) -> String {
    format!("  - matches: [{m}]\n    backendRefs: [{{name: {id}, port: 8080}}]\n")
}

fn routes() -> String {
    let parent = format!("{INFRA}/same-namespace");
    let aged = |ts: &str, route: String| route.replace("2024-02-01T00:00:00Z", ts);
    let alpha = [
        rule("p-a1", "{path: {type: PathPrefix, value: /}}"),
        rule("p-a2", "{path: {type: PathPrefix, value: /api}}"),
        rule("p-a3", "{path: {type: Exact, value: /api}}"),
        rule("p-a4", "{path: {type: PathPrefix, value: /api/v1}}"),
        rule("p-a5", "{path: {type: PathPrefix, value: /api/v1}, method: POST}"),
        rule("p-a6", "{path: {type: PathPrefix, value: /api/v1}, headers: [{name: x-a, value: \"1\"}]}"),
        rule("p-a7", "{path: {type: PathPrefix, value: /api/v1}, headers: [{name: x-a, value: \"1\"}, {name: x-b, value: \"2\"}]}"),
        rule("p-a8", "{path: {type: PathPrefix, value: /api/v1}, method: POST, headers: [{name: x-a, value: \"1\"}]}"),
        rule("p-a9", "{path: {type: PathPrefix, value: /api/v1}, queryParams: [{name: q, value: \"1\"}]}"),
        rule("p-a10", "{path: {type: PathPrefix, value: /api/v1}, headers: [{name: x-a, value: \"1\"}], queryParams: [{name: q, value: \"1\"}]}"),
        rule("p-a11", "{path: {type: RegularExpression, value: \"/api/v[0-9]+/items\"}}"),
    ]
    .concat();
    let beta = [
        rule("p-b1", "{path: {type: PathPrefix, value: /api}}"),
        rule("p-b2", "{path: {type: PathPrefix, value: /api/v2}}"),
        rule("p-b3", "{path: {type: Exact, value: /api/v1/exact}}"),
        rule("p-b4", "{path: {type: PathPrefix, value: /api/v1}, headers: [{name: x-a, value: \"1\"}, {name: x-b, value: \"2\"}, {name: x-c, value: \"3\"}]}"),
        rule("p-b5", "{path: {type: PathPrefix, value: /api/v1/deep}}"),
    ]
    .concat();
    let gamma = [
        rule("p-g1", "{path: {type: PathPrefix, value: /api/v2}}"),
        rule(
            "p-g2",
            "{path: {type: PathPrefix, value: /shop}, method: GET}",
        ),
    ]
    .concat();
    let delta = [
        rule("p-d1", "{path: {type: PathPrefix, value: /api}}"),
        rule("p-d2", "{path: {type: PathPrefix, value: /shop}}"),
    ]
    .concat();
    let epsilon = rule("p-e1", "{path: {type: PathPrefix, value: /api}}");
    [
        aged(
            "2024-01-01T00:00:00Z",
            http_route(INFRA, "alpha", &parent, &["prec.example.com"], &alpha),
        ),
        aged(
            "2024-03-01T00:00:00Z",
            http_route(INFRA, "beta", &parent, &["prec.example.com"], &beta),
        ),
        aged(
            "2024-03-01T00:00:00Z",
            http_route(INFRA, "gamma", &parent, &["prec.example.com"], &gamma),
        ),
        aged(
            "2023-01-01T00:00:00Z",
            http_route(INFRA, "delta", &parent, &["\"*.example.com\""], &delta),
        ),
        aged(
            "2024-01-01T00:00:00Z",
            http_route(INFRA, "epsilon", &parent, &[], &epsilon),
        ),
    ]
    .concat()
}

/// (method, host, path with query, headers, expected rule or None for 404).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

const P: &str = "prec.example.com";
const CASES: &[Case] = &[
    ("GET", P, "/", &[], Some("p-a1")),
    ("GET", P, "/other", &[], Some("p-a1")),
    ("GET", P, "/api", &[], Some("p-a3")),
    ("GET", P, "/api/", &[], Some("p-a2")),
    ("GET", P, "/apix", &[], Some("p-a1")),
    ("GET", P, "/api/x", &[], Some("p-a2")),
    ("GET", P, "/api/v1", &[], Some("p-a4")),
    ("POST", P, "/api/v1", &[], Some("p-a5")),
    ("GET", P, "/api/v1", &[("x-a", "1")], Some("p-a6")),
    (
        "GET",
        P,
        "/api/v1",
        &[("x-a", "1"), ("x-b", "2")],
        Some("p-a7"),
    ),
    (
        "GET",
        P,
        "/api/v1",
        &[("x-a", "1"), ("x-b", "2"), ("x-c", "3")],
        Some("p-b4"),
    ),
    ("POST", P, "/api/v1", &[("x-a", "1")], Some("p-a8")),
    (
        "POST",
        P,
        "/api/v1",
        &[("x-a", "1"), ("x-b", "2"), ("x-c", "3")],
        Some("p-a8"),
    ),
    ("GET", P, "/api/v1?q=1", &[], Some("p-a9")),
    ("GET", P, "/api/v1?q=1", &[("x-a", "1")], Some("p-a10")),
    ("GET", P, "/api/v1?q=2", &[("x-a", "1")], Some("p-a6")),
    (
        "GET",
        P,
        "/api/v1?q=1",
        &[("x-a", "1"), ("x-b", "2")],
        Some("p-a7"),
    ),
    ("GET", P, "/api/v1/exact", &[], Some("p-b3")),
    ("GET", P, "/api/v1/exact/", &[], Some("p-a4")),
    ("GET", P, "/api/v1/deep", &[], Some("p-b5")),
    ("GET", P, "/api/v1/deep/er", &[("x-a", "1")], Some("p-b5")),
    ("POST", P, "/api/v1/deep", &[], Some("p-b5")),
    ("GET", P, "/api/v1/items", &[], Some("p-a11")),
    ("GET", P, "/api/v12/items", &[], Some("p-a11")),
    ("GET", P, "/api/v2", &[], Some("p-b2")),
    ("GET", P, "/api/v2/x", &[], Some("p-b2")),
    ("GET", P, "/api/v3", &[], Some("p-a2")),
    ("GET", P, "/shop", &[], Some("p-g2")),
    ("POST", P, "/shop", &[], Some("p-a1")),
    ("HEAD", P, "/shop", &[], Some("p-a1")),
    ("GET", "other.example.com", "/api", &[], Some("p-d1")),
    ("GET", "other.example.com", "/shop", &[], Some("p-d2")),
    ("GET", "other.example.com", "/", &[], None),
    ("GET", "other.example.com", "/api/v1", &[], Some("p-d1")),
    ("GET", "a.b.example.com", "/api", &[], Some("p-d1")),
    ("GET", "example.com", "/api", &[], Some("p-e1")),
    ("GET", "x.org", "/api", &[], Some("p-e1")),
    ("GET", "x.org", "/", &[], None),
    ("GET", "PREC.EXAMPLE.COM", "/api", &[], Some("p-a3")),
    ("GET", "prec.example.com:8080", "/api", &[], Some("p-a3")),
    ("GET", P, "/API", &[], Some("p-a1")),
    ("GET", P, "/api/v1?Q=1", &[], Some("p-a4")),
    ("GET", P, "/api/v1", &[("X-A", "1")], Some("p-a6")),
    ("GET", P, "/api/v1", &[("x-a", "11")], Some("p-a4")),
    // The normalised path routes, in lb and lb explain alike; an escaped
    // separator gets 400 and no rule.
    ("GET", P, "/x/../api", &[], Some("p-a3")),
    ("GET", P, "/%61pi", &[], Some("p-a3")),
    ("GET", P, "/api%2Fv1", &[], None),
];

#[test]
fn http_route_precedence_table() {
    assert!(CASES.len() >= 40);
    let extra: Vec<(&str, &str)> = RULES.iter().map(|r| (INFRA, *r)).collect();
    let infra = Infra::with_extra(&extra);
    let lb = infra.lb("gw-precedence", &routes());
    let gw = infra.gw("same-namespace");
    let mut wrong = Vec::new();
    for (method, host, path, headers, want) in CASES {
        let mut hs: Vec<(&str, &str)> = headers.to_vec();
        if *method == "POST" {
            hs.push(("Content-Length", "0"));
        }
        let r = send(gw, method, host, path, &hs);
        let got = if matches!(r.status, 400 | 404) && r.header("x-backend").is_none() {
            None
        } else {
            Some(r.backend())
        };
        if got.as_deref() != *want {
            wrong.push(format!(
                "{method} {host}{path} {headers:?}: want {want:?}, got {got:?} ({})",
                r.status
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        CASES.len(),
        wrong.join("\n")
    );
    // `lb explain --gateway` names the same rule for every case.
    for (method, host, path, headers, want) in CASES {
        let mut cmd = std::process::Command::new(crate::support::lb_bin());
        cmd.args(["explain", "--json", "--config"])
            .arg(lb.config_path())
            .args(["--gateway", &gw.to_string(), "--host", host, "--path", path])
            .args(["--method", method]);
        for (k, v) in *headers {
            cmd.args(["--header", &format!("{k}: {v}")]);
        }
        let out = cmd.output().expect("lb explain runs");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "explain JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let backend = report["gateway"]["action"]["backends"][0]
            .as_str()
            .map(|b| {
                let svc = b.split_once('/').map_or(b, |(_, rest)| rest);
                svc.split(':').next().unwrap_or_default().to_owned()
            });
        assert_eq!(
            backend.as_deref(),
            *want,
            "explain {method} {host}{path} {headers:?}: {report:#}"
        );
        assert_eq!(out.status.code(), Some(if want.is_some() { 0 } else { 1 }));
    }
    // One positive case checked in full, as a sanity check of the helper.
    expect_backend(&send(gw, "GET", P, "/api", &[]), "p-a3", "exact /api");
}

#[test]
fn http_route_path_match_order() {
    // HTTPRoutePathMatchOrder: Exact beats any prefix, and the longest
    // prefix wins, with prefixes that end in `/`.
    let infra = Infra::start();
    let rules = [
        rule("infra-backend-v1", "{path: {type: Exact, value: /match}}"),
        rule(
            "infra-backend-v2",
            "{path: {type: Exact, value: /match/exact}}",
        ),
        rule(
            "infra-backend-v3",
            "{path: {type: Exact, value: /match/exact/one}}",
        ),
        rule(
            "infra-backend-v3",
            "{path: {type: PathPrefix, value: /match/}}",
        ),
        rule(
            "infra-backend-v1",
            "{path: {type: PathPrefix, value: /match/prefix/}}",
        ),
        rule(
            "infra-backend-v2",
            "{path: {type: PathPrefix, value: /match/prefix/one}}",
        ),
    ]
    .concat();
    let route = http_route(
        INFRA,
        "path-matching-order",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let _lb = infra.lb("gw-path-order", &route);
    let gw = infra.gw("same-namespace");
    for (path, want) in [
        ("/match/exact/one", Some("infra-backend-v3")),
        ("/match/exact", Some("infra-backend-v2")),
        ("/match", Some("infra-backend-v1")),
        ("/match/prefix/one/any", Some("infra-backend-v2")),
        ("/match/prefix/any", Some("infra-backend-v1")),
        ("/match/any", Some("infra-backend-v3")),
        // A prefix with a trailing `/` matches the path without it too.
        ("/match/prefix", Some("infra-backend-v1")),
        ("/match/prefix/", Some("infra-backend-v1")),
        ("/match/", Some("infra-backend-v3")),
        ("/match/exact/", Some("infra-backend-v3")),
        ("/matchx", None),
        ("/", None),
    ] {
        let r = send(gw, "GET", "example.com", path, &[]);
        match want {
            Some(b) => expect_backend(&r, b, path),
            None => assert_eq!(
                (r.status, r.header("x-backend")),
                (404, None),
                "{path}: {}",
                r.text()
            ),
        }
    }
}
