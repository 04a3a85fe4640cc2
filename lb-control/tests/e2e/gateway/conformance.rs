//! Scenarios of the Gateway API conformance suite (HTTP profile), each test
//! named after the suite's test it follows. Manifests are ours; the
//! requests and expected answers are the suite's.

use super::{
    APP, INFRA, Infra, WEB, expect_backend, expect_route, get, get_with, seen_header, seen_path,
    send,
};
use crate::support::client::Response;

/// An HTTPRoute manifest: `parent` is `namespace/gateway` (optionally
/// `namespace/gateway/section`), `rules` the YAML of `spec.rules` indented
/// by two spaces.
pub fn http_route(ns: &str, name: &str, parent: &str, hostnames: &[&str], rules: &str) -> String {
    let mut p = parent.split('/');
    let (pns, pname, section) = (p.next().unwrap(), p.next().unwrap(), p.next());
    let section = section
        .map(|s| format!(", sectionName: {s}"))
        .unwrap_or_default();
    let hosts = if hostnames.is_empty() {
        String::new()
    } else {
        format!("  hostnames: [{}]\n", hostnames.join(", "))
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {ns}\n  creationTimestamp: \"2024-02-01T00:00:00Z\"\nspec:\n  parentRefs: [{{name: {pname}, namespace: {pns}{section}}}]\n{hosts}  rules:\n{rules}---\n"
    )
}

/// A rule forwarding everything matching `matches` (YAML flow list) to one
/// Service on port 8080.
pub fn rule(matches: &str, service: &str) -> String {
    format!("  - matches: {matches}\n    backendRefs: [{{name: {service}, port: 8080}}]\n")
}

#[test]
fn http_route_simple_same_namespace() {
    let infra = Infra::start();
    let route = http_route(
        INFRA,
        "gateway-conformance-infra-test",
        &format!("{INFRA}/same-namespace"),
        &[],
        "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let lb = infra.lb("gw-simple", &route);
    let gw = infra.gw("same-namespace");
    expect_backend(&get(gw, "example.com", "/"), "infra-backend-v1", "/");
    expect_backend(&get(gw, "any.host", "/x/y"), "infra-backend-v1", "/x/y");
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "gateway-conformance-infra-test",
        "same-namespace",
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
}

#[test]
fn http_route_cross_namespace() {
    let infra = Infra::start();
    let route = http_route(
        WEB,
        "cross-namespace",
        &format!("{INFRA}/backend-namespaces"),
        &[],
        "  - backendRefs: [{name: web-backend, port: 8080}]\n",
    );
    let lb = infra.lb("gw-crossns", &route);
    expect_backend(
        &get(infra.gw("backend-namespaces"), "example.com", "/"),
        "web-backend",
        "route from a selected namespace",
    );
    expect_route(
        &lb,
        "HTTPRoute",
        WEB,
        "cross-namespace",
        "backend-namespaces",
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
}

#[test]
fn http_route_exact_path_matching() {
    let infra = Infra::start();
    let rules = [
        rule("[{path: {type: Exact, value: /one}}]", "infra-backend-v1"),
        rule("[{path: {type: Exact, value: /two}}]", "infra-backend-v2"),
    ]
    .concat();
    let route = http_route(
        INFRA,
        "exact-matching",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let _lb = infra.lb("gw-exact", &route);
    let gw = infra.gw("same-namespace");
    expect_backend(&get(gw, "example.com", "/one"), "infra-backend-v1", "/one");
    expect_backend(&get(gw, "example.com", "/two"), "infra-backend-v2", "/two");
    for path in ["/", "/one/example", "/two/", "/Two"] {
        assert_eq!(get(gw, "example.com", path).status, 404, "{path}");
    }
}

#[test]
fn http_route_matching_and_matching_across_routes() {
    // HTTPRouteMatching: one route, prefix and header matches.
    let infra = Infra::start();
    let one = http_route(
        INFRA,
        "matching",
        &format!("{INFRA}/same-namespace"),
        &[],
        &[
            rule("[{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]", "infra-backend-v1"),
            rule("[{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]", "infra-backend-v2"),
        ]
        .concat(),
    );
    let lb = infra.lb("gw-matching", &one);
    let gw = infra.gw("same-namespace");
    expect_backend(&get(gw, "example.com", "/"), "infra-backend-v1", "/");
    expect_backend(
        &get(gw, "example.com", "/example"),
        "infra-backend-v1",
        "/example",
    );
    expect_backend(
        &get(gw, "example.net", "/"),
        "infra-backend-v1",
        "example.net /",
    );
    expect_backend(
        &get_with(gw, "example.com", "/", &[("Version", "one")]),
        "infra-backend-v1",
        "version one",
    );
    expect_backend(
        &get_with(gw, "example.com", "/", &[("Version", "two")]),
        "infra-backend-v2",
        "version two",
    );
    expect_backend(&get(gw, "example.com", "/v2"), "infra-backend-v2", "/v2");
    expect_backend(
        &get(gw, "example.com", "/v2/example"),
        "infra-backend-v2",
        "/v2/example",
    );
    expect_backend(
        &get(gw, "example.com", "/v2example"),
        "infra-backend-v1",
        "/v2example is not under /v2",
    );
    expect_backend(&get(gw, "example.com", "/v2/"), "infra-backend-v2", "/v2/");
    expect_backend(
        &get(gw, "example.com", "/foo/v2/example"),
        "infra-backend-v1",
        "a prefix is anchored at the start of the path",
    );
    drop(lb);

    // HTTPRouteMatchingAcrossRoutes: the same matches split over two routes,
    // the /v2 one limited to example.com.
    let part1 = http_route(
        INFRA,
        "matching-part1",
        &format!("{INFRA}/same-namespace"),
        &["example.com", "example.net"],
        &rule(
            "[{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]",
            "infra-backend-v1",
        ),
    );
    let part2 = http_route(
        INFRA,
        "matching-part2",
        &format!("{INFRA}/same-namespace"),
        &["example.com"],
        &rule(
            "[{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]",
            "infra-backend-v2",
        ),
    );
    let _lb = infra.lb("gw-across", &(part1 + &part2));
    expect_backend(&get(gw, "example.com", "/"), "infra-backend-v1", "/");
    expect_backend(
        &get(gw, "example.com", "/example"),
        "infra-backend-v1",
        "/example",
    );
    expect_backend(
        &get(gw, "example.net", "/example"),
        "infra-backend-v1",
        "example.net /example",
    );
    expect_backend(
        &get_with(gw, "example.com", "/example", &[("Version", "one")]),
        "infra-backend-v1",
        "version one",
    );
    expect_backend(&get(gw, "example.com", "/v2"), "infra-backend-v2", "/v2");
    expect_backend(
        &get(gw, "example.net", "/v2"),
        "infra-backend-v1",
        "v2 is limited to example.com",
    );
    expect_backend(
        &get(gw, "example.com", "/v2/example"),
        "infra-backend-v2",
        "/v2/example",
    );
    expect_backend(
        &get_with(gw, "example.com", "/", &[("Version", "two")]),
        "infra-backend-v2",
        "version two",
    );
    assert_eq!(
        get(gw, "example.org", "/").status,
        404,
        "host on neither route"
    );
}

#[test]
fn http_route_header_matching() {
    let infra = Infra::start();
    let rules = [
        rule(
            "[{headers: [{name: version, value: one}]}]",
            "infra-backend-v1",
        ),
        rule(
            "[{headers: [{name: version, value: two}]}]",
            "infra-backend-v2",
        ),
        rule(
            "[{headers: [{name: version, value: two}, {name: color, value: orange}]}]",
            "infra-backend-v1",
        ),
        rule(
            "[{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]",
            "infra-backend-v1",
        ),
        rule(
            "[{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]",
            "infra-backend-v2",
        ),
    ]
    .concat();
    let route = http_route(
        INFRA,
        "header-matching",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let _lb = infra.lb("gw-headers", &route);
    let gw = infra.gw("same-namespace");
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case<'_>] = &[
        (&[("Version", "one")], Some("infra-backend-v1")),
        (&[("Version", "two")], Some("infra-backend-v2")),
        (
            &[("Version", "two"), ("Color", "orange")],
            Some("infra-backend-v1"),
        ),
        (&[("Color", "blue")], Some("infra-backend-v1")),
        (&[("Color", "green")], Some("infra-backend-v1")),
        (&[("Color", "red")], Some("infra-backend-v2")),
        (&[("Color", "yellow")], Some("infra-backend-v2")),
        (
            &[("Version", "one"), ("Color", "orange")],
            Some("infra-backend-v1"),
        ),
        // Two rules of equal specificity match: the first in rule order wins.
        (
            &[("Version", "two"), ("Color", "blue")],
            Some("infra-backend-v2"),
        ),
        (&[("version", "ONE")], None),
        (&[("Color", "purple")], None),
        (&[("Color", "orange")], None),
        (&[("Some-Other-Header", "one")], None),
        (&[], None),
    ];
    for (headers, want) in cases {
        let r = get_with(gw, "example.com", "/", headers);
        match want {
            Some(b) => expect_backend(&r, b, &format!("{headers:?}")),
            None => assert_eq!(r.status, 404, "{headers:?}: {}", r.text()),
        }
    }
}

#[test]
fn http_route_query_param_and_method_matching() {
    let infra = Infra::start();
    let rules = [
        rule(
            "[{queryParams: [{name: animal, value: whale}]}]",
            "infra-backend-v1",
        ),
        rule(
            "[{queryParams: [{name: animal, value: dolphin}]}]",
            "infra-backend-v2",
        ),
        rule(
            "[{queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]}]",
            "infra-backend-v3",
        ),
        rule(
            "[{queryParams: [{name: ANIMAL, value: Whale}]}]",
            "infra-backend-v3",
        ),
        rule(
            "[{method: POST, path: {type: PathPrefix, value: /m}}]",
            "infra-backend-v1",
        ),
        rule(
            "[{method: GET, path: {type: PathPrefix, value: /m}}]",
            "infra-backend-v2",
        ),
    ]
    .concat();
    let route = http_route(
        INFRA,
        "query-method",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let _lb = infra.lb("gw-query", &route);
    let gw = infra.gw("same-namespace");
    for (path, want) in [
        ("/?animal=whale", Some("infra-backend-v1")),
        ("/?animal=dolphin", Some("infra-backend-v2")),
        ("/?animal=dolphin&color=blue", Some("infra-backend-v3")),
        ("/?ANIMAL=Whale", Some("infra-backend-v3")),
        (
            "/?animal=whale&otherparam=irrelevant",
            Some("infra-backend-v1"),
        ),
        ("/?animal=dolphin&color=yellow", Some("infra-backend-v2")),
        ("/?color=blue", None),
        ("/?animal=phant", None),
        ("/?animal=Whale", None),
    ] {
        let r = get(gw, "example.com", path);
        match want {
            Some(b) => expect_backend(&r, b, path),
            None => assert_eq!(r.status, 404, "{path}: {}", r.text()),
        }
    }
    expect_backend(
        &send(gw, "POST", "example.com", "/m", &[("Content-Length", "0")]),
        "infra-backend-v1",
        "POST",
    );
    expect_backend(&get(gw, "example.com", "/m"), "infra-backend-v2", "GET");
    assert_eq!(
        send(gw, "HEAD", "example.com", "/m", &[]).status,
        404,
        "HEAD matches no method"
    );
}

#[test]
fn http_route_hostname_intersection() {
    let infra = Infra::start();
    let ip = infra.ip;
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: hostname-intersection, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: listener-1, port: 9000, protocol: HTTP, hostname: very.specific.com}}\n  - {{name: listener-2, port: 9000, protocol: HTTP, hostname: \"*.wildcard.io\"}}\n  - {{name: listener-3, port: 9000, protocol: HTTP, hostname: \"*.anotherwildcard.io\"}}\n---\n"
    );
    let parent = format!("{INFRA}/hostname-intersection");
    let all = rule(
        "[{path: {type: PathPrefix, value: /s1}}]",
        "infra-backend-v1",
    );
    let routes = [
        http_route(
            INFRA,
            "specific-specific",
            &parent,
            &[
                "non.matching.com",
                "\"*.nonmatchingwildcard.io\"",
                "very.specific.com",
            ],
            &all,
        ),
        http_route(
            INFRA,
            "specific-wildcard",
            &parent,
            &[
                "non.matching.com",
                "wildcard.io",
                "foo.wildcard.io",
                "bar.wildcard.io",
                "foo.bar.wildcard.io",
            ],
            &rule(
                "[{path: {type: PathPrefix, value: /s2}}]",
                "infra-backend-v2",
            ),
        ),
        http_route(
            INFRA,
            "wildcard-specific",
            &parent,
            &["non.matching.com", "\"*.specific.com\""],
            &rule(
                "[{path: {type: PathPrefix, value: /s3}}]",
                "infra-backend-v3",
            ),
        ),
        http_route(
            INFRA,
            "wildcard-wildcard",
            &parent,
            &["\"*.anotherwildcard.io\""],
            &rule(
                "[{path: {type: PathPrefix, value: /s4}}]",
                "infra-backend-v1",
            ),
        ),
        http_route(
            INFRA,
            "no-intersecting-hosts",
            &parent,
            &["specific.but.wrong.com", "wildcard.io"],
            &rule(
                "[{path: {type: PathPrefix, value: /s5}}]",
                "infra-backend-v1",
            ),
        ),
    ]
    .concat();
    let lb = infra.lb("gw-intersect", &(gateway + &routes));
    let gw = std::net::SocketAddr::new(ip.into(), 9000);
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("very.specific.com", "/s1", Some("infra-backend-v1")),
        ("very.specific.com:1234", "/s1", Some("infra-backend-v1")),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s1", None),
        ("very.specific.com", "/non-matching-prefix", None),
        ("foo.wildcard.io", "/non-matching-prefix", None),
        ("very.specific.com", "/s4", None),
        ("foo.anotherwildcard.io", "/non-matching-prefix", None),
        ("foo.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("foo.bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("non.matching.com", "/s2", None),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s2", None),
        ("very.specific.com", "/s3", Some("infra-backend-v3")),
        ("non.matching.com", "/s3", None),
        ("foo.specific.com", "/s3", None),
        ("foo.wildcard.io", "/s3", None),
        ("foo.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
        ("bar.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
        (
            "foo.bar.anotherwildcard.io",
            "/s4",
            Some("infra-backend-v1"),
        ),
        ("anotherwildcard.io", "/s4", None),
        ("foo.wildcard.io", "/s4", None),
        ("specific.but.wrong.com", "/s5", None),
        ("wildcard.io", "/s5", None),
    ];
    for (host, path, want) in cases {
        let r = get(gw, host, path);
        match want {
            Some(b) => expect_backend(&r, b, &format!("{host}{path}")),
            None => assert_eq!(r.status, 404, "{host}{path}: {}", r.text()),
        }
    }
    let status = super::object_status(&lb, "HTTPRoute", INFRA, "no-intersecting-hosts");
    let conds = super::route_parent_conditions(&status, "hostname-intersection");
    assert_eq!(
        super::condition(&conds, "Accepted"),
        ("False".to_owned(), "NoMatchingListenerHostname".to_owned())
    );
    let gw_status = super::object_status(&lb, "Gateway", INFRA, "hostname-intersection");
    let attached: Vec<(String, u64)> = gw_status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["attachedRoutes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attached,
        vec![
            ("listener-1".to_owned(), 2),
            ("listener-2".to_owned(), 1),
            ("listener-3".to_owned(), 1)
        ],
        "{gw_status:#}"
    );
}

#[test]
fn http_route_listener_hostname_matching() {
    let infra = Infra::start();
    let ip = infra.ip;
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: httproute-listener-hostname-matching, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: listener-1, port: 9001, protocol: HTTP, hostname: bar.com}}\n  - {{name: listener-2, port: 9001, protocol: HTTP, hostname: foo.bar.com}}\n  - {{name: listener-3, port: 9001, protocol: HTTP, hostname: \"*.bar.com\"}}\n  - {{name: listener-4, port: 9001, protocol: HTTP, hostname: \"*.foo.com\"}}\n---\n"
    );
    let gwname = format!("{INFRA}/httproute-listener-hostname-matching");
    let all = "  - backendRefs: [{name: SVC, port: 8080}]\n";
    let routes = [
        http_route(
            INFRA,
            "backend-v1",
            &format!("{gwname}/listener-1"),
            &[],
            &all.replace("SVC", "infra-backend-v1"),
        ),
        http_route(
            INFRA,
            "backend-v2",
            &format!("{gwname}/listener-2"),
            &[],
            &all.replace("SVC", "infra-backend-v2"),
        ),
        http_route(
            INFRA,
            "backend-v3-3",
            &format!("{gwname}/listener-3"),
            &[],
            &all.replace("SVC", "infra-backend-v3"),
        ),
        http_route(
            INFRA,
            "backend-v3-4",
            &format!("{gwname}/listener-4"),
            &[],
            &all.replace("SVC", "infra-backend-v3"),
        ),
    ]
    .concat();
    let _lb = infra.lb("gw-listener-host", &(gateway + &routes));
    let gw = std::net::SocketAddr::new(ip.into(), 9001);
    for (host, want) in [
        ("bar.com", Some("infra-backend-v1")),
        ("foo.bar.com", Some("infra-backend-v2")),
        ("baz.bar.com", Some("infra-backend-v3")),
        ("boo.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.foo.com", Some("infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        let r = get(gw, host, "/");
        match want {
            Some(b) => expect_backend(&r, b, host),
            None => assert_eq!(r.status, 404, "{host}: {}", r.text()),
        }
    }
}

#[test]
fn http_route_request_and_response_header_modifiers() {
    let infra = Infra::start();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: X-Header-Add, value: add-appends-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /response}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-add}]
        remove: [x-backend-remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";
    let route = http_route(
        INFRA,
        "header-modifier",
        &format!("{INFRA}/same-namespace"),
        &[],
        rules,
    );
    let _lb = infra.lb("gw-hdrmod", &route);
    let gw = infra.gw("same-namespace");
    let r = get_with(
        gw,
        "example.com",
        "/set",
        &[("Some-Other-Header", "val"), ("X-Header-Set", "original")],
    );
    expect_backend(&r, "infra-backend-v1", "/set");
    assert_eq!(seen_header(&r, "x-header-set"), ["set-overwrites-values"]);
    assert_eq!(seen_header(&r, "some-other-header"), ["val"]);
    let r = get_with(gw, "example.com", "/add", &[("X-Header-Add", "original")]);
    assert_eq!(
        seen_header(&r, "x-header-add"),
        ["original", "add-appends-values"]
    );
    let r = get(gw, "example.com", "/add");
    assert_eq!(seen_header(&r, "x-header-add"), ["add-appends-values"]);
    let r = get_with(
        gw,
        "example.com",
        "/remove",
        &[("X-Header-Remove", "val"), ("Keep", "me")],
    );
    assert!(
        seen_header(&r, "x-header-remove").is_empty(),
        "{}",
        r.text()
    );
    assert_eq!(seen_header(&r, "keep"), ["me"]);
    let r = get(gw, "example.com", "/response");
    expect_backend(&r, "infra-backend-v1", "/response");
    assert_eq!(r.header("x-header-set"), Some("set-overwrites-values"));
    assert_eq!(r.header("x-header-add"), Some("header-add"));
}

#[test]
fn http_route_redirects() {
    let infra = Infra::start();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /host-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-port}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443}}]
  - matches: [{path: {type: PathPrefix, value: /http-port}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, port: 80}}]
  - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}}]
  - matches: [{path: {type: PathPrefix, value: /path-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
  - matches: [{path: {type: PathPrefix, value: /see-other}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 303}}]
  - matches: [{path: {type: PathPrefix, value: /temporary}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 307}}]
  - matches: [{path: {type: PathPrefix, value: /permanent}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 308}}]
";
    let route = http_route(
        INFRA,
        "redirect",
        &format!("{INFRA}/same-namespace"),
        &[],
        rules,
    );
    let _lb = infra.lb("gw-redirect", &route);
    let gw = infra.gw("same-namespace");
    for (path, status, location) in [
        (
            "/hostname-redirect",
            302,
            "http://example.org:8080/hostname-redirect",
        ),
        (
            "/host-and-status",
            301,
            "http://example.org:8080/host-and-status",
        ),
        (
            "/scheme-and-host",
            302,
            "https://example.org/scheme-and-host",
        ),
        ("/port", 302, "http://example.com:8083/port"),
        ("/scheme-port", 302, "https://example.com/scheme-port"),
        ("/http-port", 302, "http://example.com/http-port"),
        (
            "/original-prefix/lemon",
            302,
            "http://example.com:8080/replacement-prefix/lemon",
        ),
        (
            "/original-prefix",
            302,
            "http://example.com:8080/replacement-prefix",
        ),
        (
            "/full/one/two",
            302,
            "http://example.com:8080/full-path-replacement",
        ),
        (
            "/path-and-host/x?q=1",
            302,
            "http://example.org:8080/replacement-prefix/x?q=1",
        ),
        ("/strip/one", 302, "http://example.com:8080/one"),
        ("/strip", 302, "http://example.com:8080/"),
        // HTTPRoute303/307/308Redirect (and their -scheme variants).
        ("/see-other", 303, "http://example.org:8080/see-other"),
        ("/temporary", 307, "https://example.com/temporary"),
        ("/permanent", 308, "http://example.org:8080/permanent"),
    ] {
        let r = get(gw, "example.com", path);
        assert_eq!(
            (r.status, r.header("location")),
            (status, Some(location)),
            "{path}: {:?}",
            r.headers
        );
    }
}

#[test]
fn http_route_rewrites() {
    let infra = Infra::start();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/rewrite-path-and-modify-headers}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /test}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: one.example.org}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";
    let route = http_route(
        INFRA,
        "rewrite",
        &format!("{INFRA}/same-namespace"),
        &[],
        rules,
    );
    let _lb = infra.lb("gw-rewrite", &route);
    let gw = infra.gw("same-namespace");
    for (path, upstream) in [
        ("/prefix/one/two", "/one/two"),
        ("/prefix/one", "/one"),
        ("/prefix/one/", "/one/"),
        ("/full/one/two", "/one"),
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/prefix/one/two?a=b", "/one/two?a=b"),
    ] {
        let r = get(gw, "example.com", path);
        expect_backend(&r, "infra-backend-v1", path);
        assert_eq!(seen_path(&r), upstream, "{path}");
    }
    let r = get(
        gw,
        "example.com",
        "/full/rewrite-path-and-modify-headers/test",
    );
    assert_eq!(seen_header(&r, "x-header-set"), ["set-overwrites-values"]);
    let r = get(gw, "example.com", "/host/x");
    expect_backend(&r, "infra-backend-v2", "/host");
    assert_eq!(
        r.json()["host"].as_str(),
        Some("one.example.org"),
        "{}",
        r.text()
    );
    assert_eq!(seen_path(&r), "/host/x");
}

#[test]
fn http_route_request_mirror() {
    let infra = Infra::start();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v3, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";
    let route = http_route(
        INFRA,
        "mirror",
        &format!("{INFRA}/same-namespace"),
        &[],
        rules,
    );
    let _lb = infra.lb("gw-mirror", &route);
    let gw = infra.gw("same-namespace");
    for i in 0..5 {
        expect_backend(
            &get(gw, "example.com", &format!("/mirror/{i}")),
            "infra-backend-v1",
            "mirror",
        );
    }
    let mirrored = super::eventually(std::time::Duration::from_secs(5), || {
        infra.backend(INFRA, "infra-backend-v2").requests() >= 5
            && infra.backend(INFRA, "infra-backend-v3").requests() >= 5
    });
    assert!(mirrored, "both mirrors received every request");
}

#[test]
fn http_route_invalid_backend_refs() {
    // HTTPRouteInvalidNonExistentBackendRef, HTTPRouteInvalidBackendRefUnknownKind,
    // HTTPRouteInvalidCrossNamespaceBackendRef, HTTPRouteReferenceGrant and
    // HTTPRoutePartiallyInvalidViaInvalidReferenceGrant.
    let infra = Infra::start();
    let parent = format!("{INFRA}/same-namespace");
    let routes = [
        http_route(INFRA, "missing", &parent, &["missing.example.com"], "  - backendRefs: [{name: does-not-exist, port: 8080}]\n"),
        http_route(INFRA, "unknown-kind", &parent, &["kind.example.com"], "  - backendRefs: [{group: unknown.example.com, kind: Unknown, name: infra-backend-v1, port: 8080}]\n"),
        http_route(INFRA, "cross-ns-denied", &parent, &["denied.example.com"], &format!("  - backendRefs: [{{name: app-backend-v1, namespace: {APP}, port: 8080}}]\n")),
        http_route(INFRA, "cross-ns-granted", &parent, &["granted.example.com"], &format!("  - backendRefs: [{{name: web-backend, namespace: {WEB}, port: 8080}}]\n")),
        http_route(INFRA, "partially-invalid", &parent, &["partial.example.com"], &format!("  - matches: [{{path: {{type: PathPrefix, value: /invalid}}}}]\n    backendRefs: [{{name: app-backend-v2, namespace: {APP}, port: 8080}}]\n  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n")),
    ]
    .concat();
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: web-grant, namespace: {WEB}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service, name: web-backend}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: wrong-grant, namespace: {APP}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {WEB}}}]\n  to: [{{group: \"\", kind: Service}}]\n---\n"
    );
    let lb = infra.lb("gw-badrefs", &(routes + &grant));
    let gw = infra.gw("same-namespace");
    for host in [
        "missing.example.com",
        "kind.example.com",
        "denied.example.com",
    ] {
        assert_eq!(get(gw, host, "/").status, 500, "{host}");
    }
    expect_backend(
        &get(gw, "granted.example.com", "/"),
        "web-backend",
        "granted",
    );
    assert_eq!(get(gw, "partial.example.com", "/invalid").status, 500);
    expect_backend(
        &get(gw, "partial.example.com", "/valid"),
        "infra-backend-v1",
        "valid rule",
    );
    let accepted = ("True", "Accepted");
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "missing",
        "same-namespace",
        accepted,
        ("False", "BackendNotFound"),
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "unknown-kind",
        "same-namespace",
        accepted,
        ("False", "InvalidKind"),
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "cross-ns-denied",
        "same-namespace",
        accepted,
        ("False", "RefNotPermitted"),
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "cross-ns-granted",
        "same-namespace",
        accepted,
        ("True", "ResolvedRefs"),
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "partially-invalid",
        "same-namespace",
        accepted,
        ("False", "RefNotPermitted"),
    );
}

#[test]
fn http_route_invalid_parent_refs() {
    // HTTPRouteInvalidCrossNamespaceParentRef, ...NotMatchingSectionName,
    // ...NotMatchingListenerPort, HTTPRouteDisallowedKind.
    let infra = Infra::start();
    let ip = infra.ip;
    let tls_only = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: tlsroutes-only, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - name: http\n    port: 9002\n    protocol: HTTP\n    allowedRoutes:\n      kinds: [{{kind: TLSRoute}}]\n      namespaces: {{from: All}}\n---\n"
    );
    let backend = "  - backendRefs: [{name: web-backend, port: 8080}]\n";
    let port_ref = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: wrong-port, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: same-namespace, port: 81}}]\n  rules:\n  - backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n---\n"
    );
    let routes = [
        http_route(
            WEB,
            "invalid-cross-namespace-parent-ref",
            &format!("{INFRA}/same-namespace"),
            &[],
            backend,
        ),
        http_route(
            INFRA,
            "wrong-section",
            &format!("{INFRA}/same-namespace/not-a-listener"),
            &[],
            "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        ),
        http_route(
            WEB,
            "disallowed-kind",
            &format!("{INFRA}/tlsroutes-only"),
            &[],
            backend,
        ),
        port_ref,
    ]
    .concat();
    let lb = infra.lb("gw-badparents", &(tls_only + &routes));
    let resolved = ("True", "ResolvedRefs");
    expect_route(
        &lb,
        "HTTPRoute",
        WEB,
        "invalid-cross-namespace-parent-ref",
        "same-namespace",
        ("False", "NotAllowedByListeners"),
        resolved,
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "wrong-section",
        "same-namespace",
        ("False", "NoMatchingParent"),
        resolved,
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "wrong-port",
        "same-namespace",
        ("False", "NoMatchingParent"),
        ("True", "ResolvedRefs"),
    );
    expect_route(
        &lb,
        "HTTPRoute",
        WEB,
        "disallowed-kind",
        "tlsroutes-only",
        ("False", "NotAllowedByListeners"),
        resolved,
    );
    // None of them is accepted by any parent, and no listener counts them.
    for (ns, name) in [
        (WEB, "invalid-cross-namespace-parent-ref"),
        (INFRA, "wrong-section"),
        (INFRA, "wrong-port"),
        (WEB, "disallowed-kind"),
    ] {
        let status = super::object_status(&lb, "HTTPRoute", ns, name);
        let accepted: Vec<_> = status["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| super::condition(&p["conditions"], "Accepted").0 == "True")
            .collect();
        assert!(accepted.is_empty(), "{ns}/{name}: {status:#}");
    }
    for gateway in ["same-namespace", "tlsroutes-only"] {
        let st = super::object_status(&lb, "Gateway", INFRA, gateway);
        assert_eq!(super::attached_routes(&st, "http"), 0, "{gateway}: {st:#}");
    }
    // None of them serves traffic.
    assert_eq!(
        get(infra.gw("same-namespace"), "example.com", "/").status,
        404
    );
    // A listener that allows no valid route kind (TLSRoute on HTTP) is
    // not programmed, so nothing listens there.
    assert!(std::net::TcpStream::connect(std::net::SocketAddr::new(ip.into(), 9002)).is_err());
}

#[test]
fn http_route_weight() {
    let infra = Infra::start();
    let rules = "  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}
";
    let route = http_route(
        INFRA,
        "weighted-backends",
        &format!("{INFRA}/same-namespace"),
        &[],
        rules,
    );
    let _lb = infra.lb("gw-weight", &route);
    let gw = infra.gw("same-namespace");
    let mut client = crate::support::client::Client::connect(gw);
    let n = 1000;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = client.get("example.com", "/");
        *counts.entry(r.backend()).or_insert(0u32) += 1;
    }
    let v1 = f64::from(counts.get("infra-backend-v1").copied().unwrap_or(0));
    let v2 = f64::from(counts.get("infra-backend-v2").copied().unwrap_or(0));
    assert_eq!(
        counts.get("infra-backend-v3"),
        None,
        "weight 0 gets nothing: {counts:?}"
    );
    assert_eq!(v1 + v2, f64::from(n), "{counts:?}");
    // Binomial(1000, 0.7): sd ~14.5; allow 5 sd.
    assert!((v1 - 700.0).abs() <= 75.0, "70/30 split: {counts:?}");
}

#[test]
fn http_route_timeouts() {
    let infra = Infra::start();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /sleep}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    timeouts: {request: 5s, backendRequest: 300ms}
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /sleep}}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
";
    let route = http_route(
        INFRA,
        "timeouts",
        &format!("{INFRA}/same-namespace"),
        &[],
        rules,
    );
    let _lb = infra.lb("gw-timeouts", &route);
    let gw = infra.gw("same-namespace");
    // The echo backend answers /sleep/<ms> after that long.
    let started = std::time::Instant::now();
    let r = get(gw, "example.com", "/sleep/2000");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < std::time::Duration::from_millis(1800));
    expect_backend(
        &get(gw, "example.com", "/sleep/10"),
        "infra-backend-v1",
        "fast enough",
    );
    let started = std::time::Instant::now();
    let r = get(gw, "example.com", "/backend/2000");
    assert_eq!(r.status, 504, "backendRequest timeout: {}", r.text());
    assert!(started.elapsed() < std::time::Duration::from_millis(1800));
    expect_backend(
        &get(gw, "example.com", "/backend/10"),
        "infra-backend-v2",
        "fast enough",
    );
}

#[test]
fn http_route_unsupported_filters_answer_500() {
    let infra = Infra::start();
    let parent = format!("{INFRA}/same-namespace");
    let ext = "[{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: x}}]";
    let routes = [
        http_route(
            INFRA,
            "partly-unsupported",
            &parent,
            &["partly.example.com"],
            &format!(
                "  - matches: [{{path: {{type: PathPrefix, value: /ext}}}}]\n    filters: {ext}\n    backendRefs: [{{name: infra-backend-v2, port: 8080}}]\n  - backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
            ),
        ),
        http_route(
            INFRA,
            "all-unsupported",
            &parent,
            &["all.example.com"],
            &format!("  - filters: {ext}\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"),
        ),
    ]
    .concat();
    let lb = infra.lb("gw-unsupported", &routes);
    let gw = infra.gw("same-namespace");
    assert_eq!(get(gw, "partly.example.com", "/ext/x").status, 500);
    expect_backend(
        &get(gw, "partly.example.com", "/other"),
        "infra-backend-v1",
        "supported rule",
    );
    assert_eq!(get(gw, "all.example.com", "/").status, 500);
    let status = super::object_status(&lb, "HTTPRoute", INFRA, "partly-unsupported");
    let conds = super::route_parent_conditions(&status, "same-namespace");
    assert_eq!(super::condition(&conds, "Accepted").0, "True", "{status:#}");
    assert_eq!(
        super::condition(&conds, "PartiallyInvalid"),
        ("True".to_owned(), "UnsupportedValue".to_owned())
    );
    let status = super::object_status(&lb, "HTTPRoute", INFRA, "all-unsupported");
    let conds = super::route_parent_conditions(&status, "same-namespace");
    assert_eq!(
        super::condition(&conds, "Accepted"),
        ("False".to_owned(), "UnsupportedValue".to_owned()),
        "{status:#}"
    );
}

/// The request-header filter the suite combines with rewrites and mirrors.
const MODIFY_HEADERS: &str = "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}], remove: [X-Header-Remove]}}";

/// The request headers sent to routes with [`MODIFY_HEADERS`].
const ORIGINAL_HEADERS: &[(&str, &str)] = &[
    ("X-Header-Remove", "remove-val"),
    ("X-Header-Add-Append", "append-val-1"),
    ("X-Header-Set", "set-val"),
];

/// The values of header `name` the echo backend saw, joined with commas as
/// the suite compares them (one line with a list or several lines alike).
fn seen(r: &Response, name: &str) -> String {
    seen_header(r, name).join(",")
}

/// Asserts the backend saw [`ORIGINAL_HEADERS`] modified by [`MODIFY_HEADERS`].
#[track_caller]
fn expect_modified_headers(r: &Response, what: &str) {
    let text = r.text();
    assert_eq!(seen(r, "x-header-add"), "header-val-1", "{what}: {text}");
    assert_eq!(
        seen(r, "x-header-add-append"),
        "append-val-1,header-val-2",
        "{what}: {text}"
    );
    assert_eq!(
        seen(r, "x-header-set"),
        "set-overwrites-values",
        "{what}: {text}"
    );
    assert_eq!(seen(r, "x-header-remove"), "", "{what}: {text}");
}

/// A 404 from lb itself, not from a backend.
#[track_caller]
fn expect_no_route(r: &Response, what: &str) {
    assert_eq!(
        (r.status, r.header("x-backend")),
        (404, None),
        "{what}: {}",
        r.text()
    );
}

#[test]
fn http_route_partially_invalid_via_invalid_reference_grant() {
    // The grant names app-backend-v1 only, so the rule to app-backend-v2 in
    // the same namespace is not permitted.
    let infra = Infra::start();
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: invalid-reference-grant, namespace: {APP}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service, name: app-backend-v1}}]\n---\n"
    );
    let rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]\n    backendRefs: [{{name: app-backend-v2, namespace: {APP}, port: 8080}}]\n  - backendRefs: [{{name: app-backend-v1, namespace: {APP}, port: 8080}}]\n"
    );
    let route = http_route(
        INFRA,
        "invalid-reference-grant",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let lb = infra.lb("gw-grant-name", &(grant + &route));
    let gw = infra.gw("same-namespace");
    let r = get(gw, "example.com", "/v2");
    assert_eq!(r.status, 500, "{}", r.text());
    expect_backend(&get(gw, "example.com", "/"), "app-backend-v1", "granted");
    expect_backend(
        &get(gw, "example.com", "/v2x"),
        "app-backend-v1",
        "not under /v2",
    );
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "invalid-reference-grant",
        "same-namespace",
        ("True", "Accepted"),
        ("False", "RefNotPermitted"),
    );
}

/// The filters of HTTPRouteRequestHeaderModifier: (path, modifier).
const HEADER_MODIFIERS: &[(&str, &str)] = &[
    (
        "/set",
        "{set: [{name: X-Header-Set, value: set-overwrites-values}]}",
    ),
    (
        "/add",
        "{add: [{name: X-Header-Add, value: add-appends-values}]}",
    ),
    ("/remove", "{remove: [X-Header-Remove]}"),
    (
        "/multiple",
        "{set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}], add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}, {name: X-Header-Add-3, value: header-add-3}], remove: [X-Header-Remove-1, X-Header-Remove-2]}",
    ),
    (
        "/case-insensitivity",
        "{set: [{name: X-Header-Set, value: header-set}], add: [{name: X-Header-Add, value: header-add}], remove: [X-Header-Remove]}",
    ),
];

/// One rule per [`HEADER_MODIFIERS`] entry of filter type `kind`
/// (`RequestHeaderModifier` or `ResponseHeaderModifier`), on the rule or on
/// its backendRef.
fn header_modifier_rules(kind: &str, on_backend: bool) -> String {
    let field = if kind == "RequestHeaderModifier" {
        "requestHeaderModifier"
    } else {
        "responseHeaderModifier"
    };
    HEADER_MODIFIERS
        .iter()
        .map(|(path, m)| {
            let filter = format!("[{{type: {kind}, {field}: {m}}}]");
            let matches = format!("  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n");
            if on_backend {
                format!("{matches}    backendRefs: [{{name: infra-backend-v1, port: 8080, filters: {filter}}}]\n")
            } else {
                format!("{matches}    filters: {filter}\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n")
            }
        })
        .collect()
}

/// The requests and expectations of HTTPRouteRequestHeaderModifier.
fn check_request_header_modifiers(gw: std::net::SocketAddr) {
    let r = get_with(gw, "example.com", "/set", &[("Some-Other-Header", "val")]);
    expect_backend(&r, "infra-backend-v1", "/set");
    assert_eq!(seen(&r, "x-header-set"), "set-overwrites-values");
    assert_eq!(seen(&r, "some-other-header"), "val");
    let r = get_with(
        gw,
        "example.com",
        "/set",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "some-other-value"),
        ],
    );
    assert_eq!(seen(&r, "x-header-set"), "set-overwrites-values");
    let r = get_with(gw, "example.com", "/add", &[("Some-Other-Header", "val")]);
    assert_eq!(seen(&r, "x-header-add"), "add-appends-values");
    let r = get_with(
        gw,
        "example.com",
        "/add",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value"),
        ],
    );
    assert_eq!(
        seen(&r, "x-header-add"),
        "some-other-value,add-appends-values"
    );
    let r = get_with(
        gw,
        "example.com",
        "/remove",
        &[("X-Header-Remove", "val"), ("Some-Other-Header", "val")],
    );
    assert_eq!(seen(&r, "x-header-remove"), "", "{}", r.text());
    assert_eq!(seen(&r, "some-other-header"), "val");
    let r = get_with(
        gw,
        "example.com",
        "/multiple",
        &[
            ("X-Header-Set-2", "set-val-2"),
            ("X-Header-Add-2", "add-val-2"),
            ("X-Header-Remove-2", "remove-val-2"),
            ("Another-Header", "another-header-val"),
        ],
    );
    expect_backend(&r, "infra-backend-v1", "/multiple");
    for (name, want) in [
        ("x-header-set-1", "header-set-1"),
        ("x-header-set-2", "header-set-2"),
        ("x-header-add-1", "header-add-1"),
        ("x-header-add-2", "add-val-2,header-add-2"),
        ("x-header-add-3", "header-add-3"),
        ("another-header", "another-header-val"),
        ("x-header-remove-1", ""),
        ("x-header-remove-2", ""),
    ] {
        assert_eq!(seen(&r, name), want, "/multiple {name}: {}", r.text());
    }
    let r = get_with(
        gw,
        "example.com",
        "/case-insensitivity",
        &[
            ("x-header-set", "original-val-set"),
            ("x-header-add", "original-val-add"),
            ("x-header-remove", "original-val-remove"),
            ("Another-Header", "another-header-val"),
        ],
    );
    for (name, want) in [
        ("X-Header-Set", "header-set"),
        ("X-Header-Add", "original-val-add,header-add"),
        ("X-Header-Remove", ""),
        ("Another-Header", "another-header-val"),
    ] {
        assert_eq!(
            seen(&r, name),
            want,
            "/case-insensitivity {name}: {}",
            r.text()
        );
    }
}

#[test]
fn http_route_request_header_modifier() {
    // HTTPRouteRequestHeaderModifier, with /multiple and /case-insensitivity.
    let infra = Infra::start();
    let route = http_route(
        INFRA,
        "request-header-modifier",
        &format!("{INFRA}/same-namespace"),
        &[],
        &header_modifier_rules("RequestHeaderModifier", false),
    );
    let _lb = infra.lb("gw-reqhdr", &route);
    check_request_header_modifiers(infra.gw("same-namespace"));
}

#[test]
fn http_route_backend_request_header_modifier() {
    // HTTPRouteBackendRequestHeaderModifier: the same filters on backendRefs.
    let infra = Infra::start();
    let route = http_route(
        INFRA,
        "backend-request-header-modifier",
        &format!("{INFRA}/same-namespace"),
        &[],
        &header_modifier_rules("RequestHeaderModifier", true),
    );
    let lb = infra.lb("gw-backendhdr", &route);
    check_request_header_modifiers(infra.gw("same-namespace"));
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "backend-request-header-modifier",
        "same-namespace",
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
}

#[test]
fn http_route_request_header_modifier_backend_weights() {
    // HTTPRouteRequestHeaderModifierBackendWeights: each weighted backendRef
    // names itself in a header only the request it receives carries.
    let infra = Infra::start();
    let refs: String = [("infra-backend-v1", 50), ("infra-backend-v2", 30), ("infra-backend-v3", 20)]
        .iter()
        .map(|(svc, w)| format!("    - {{name: {svc}, port: 8080, weight: {w}, filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: Backend, value: {svc}}}]}}}}]}}\n"))
        .collect();
    let route = http_route(
        INFRA,
        "backend-weights-header",
        &format!("{INFRA}/same-namespace"),
        &[],
        &format!("  - backendRefs:\n{refs}"),
    );
    let _lb = infra.lb("gw-weighthdr", &route);
    let gw = infra.gw("same-namespace");
    let mut client = crate::support::client::Client::connect(gw);
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..100 {
        let r = client.get("example.com", "/");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(
            seen(&r, "backend"),
            r.backend(),
            "request {i}: {}",
            r.text()
        );
        *counts.entry(r.backend()).or_insert(0u32) += 1;
    }
    assert_eq!(counts.len(), 3, "every backend answered: {counts:?}");
}

#[test]
fn http_route_hostname_intersection_hostnameless_listener() {
    // HTTPRouteHostnameIntersection, the listener without a hostname: the
    // route's own hostnames decide.
    let infra = Infra::start();
    let ip = infra.ip;
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: httproute-hostname-intersection-all, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: listener-1, port: 9003, protocol: HTTP}}\n---\n"
    );
    let route = http_route(
        INFRA,
        "hostless-listener",
        &format!("{INFRA}/httproute-hostname-intersection-all"),
        &["first.com", "sub.first.com", "second.com", "sub.second.com"],
        "  - backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    );
    let lb = infra.lb("gw-hostless", &(gateway + &route));
    let gw = std::net::SocketAddr::new(ip.into(), 9003);
    for host in ["first.com", "sub.first.com", "second.com", "sub.second.com"] {
        expect_backend(&get(gw, host, "/"), "infra-backend-v2", host);
    }
    for host in ["third.com", "sub.third.com"] {
        expect_no_route(&get(gw, host, "/"), host);
    }
    let st = super::object_status(&lb, "Gateway", INFRA, "httproute-hostname-intersection-all");
    assert_eq!(super::attached_routes(&st, "listener-1"), 1, "{st:#}");
    let listener = &st["listeners"][0];
    assert_eq!(
        super::condition(&listener["conditions"], "Accepted").0,
        "True"
    );
    assert_eq!(
        super::condition(&listener["conditions"], "ResolvedRefs").0,
        "True"
    );
    // The suite looks for HTTPRoute among the kinds; lb also lists GRPCRoute.
    let http_route_kind =
        serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"});
    assert!(
        listener["supportedKinds"]
            .as_array()
            .is_some_and(|ks| ks.contains(&http_route_kind)),
        "{listener:#}"
    );
}

#[test]
fn http_route_all_backends_weight_zero() {
    // HTTPRouteAllBackendsWeightZero.
    let infra = Infra::start();
    let route = http_route(
        INFRA,
        "all-backends-weight-zero",
        &format!("{INFRA}/same-namespace"),
        &[],
        "  - backendRefs:\n    - {name: infra-backend-v1, port: 8080, weight: 0}\n    - {name: infra-backend-v2, port: 8080, weight: 0}\n",
    );
    let lb = infra.lb("gw-weight0", &route);
    let gw = infra.gw("same-namespace");
    for _ in 0..3 {
        let r = get(gw, "example.com", "/");
        assert_eq!(r.status, 500, "{}", r.text());
    }
    assert_eq!(infra.backend(INFRA, "infra-backend-v1").requests(), 0);
    assert_eq!(infra.backend(INFRA, "infra-backend-v2").requests(), 0);
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "all-backends-weight-zero",
        "same-namespace",
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
}

/// (method, path with query, headers, expected backend or None for 404).
type MatchCase = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

fn check_match_cases(gw: std::net::SocketAddr, host: &str, cases: &[MatchCase]) {
    let mut wrong = Vec::new();
    for (method, path, headers, want) in cases {
        let mut hs = headers.to_vec();
        if !matches!(*method, "GET" | "HEAD") {
            hs.push(("Content-Length", "0"));
        }
        let r = send(gw, method, host, path, &hs);
        let got = (r.status, r.header("x-backend").map(str::to_owned));
        let ok = match want {
            Some(b) => got == (200, Some((*b).to_owned())),
            None => got == (404, None),
        };
        if !ok {
            wrong.push(format!(
                "{method} {path} {headers:?}: want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn http_route_query_param_and_method_combinations() {
    // HTTPRouteQueryParamMatching and HTTPRouteMethodMatching, with the
    // combinations of path, header, query and method matches.
    let infra = Infra::start();
    let parent = format!("{INFRA}/same-namespace");
    let query_rules = [
        rule("[{queryParams: [{name: animal, value: whale}]}]", "infra-backend-v1"),
        rule("[{queryParams: [{name: animal, value: dolphin}]}]", "infra-backend-v2"),
        rule("[{queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]}]", "infra-backend-v3"),
        rule("[{queryParams: [{name: ANIMAL, value: Whale}]}]", "infra-backend-v3"),
        rule("[{path: {type: PathPrefix, value: /path1}, queryParams: [{name: animal, value: whale}]}]", "infra-backend-v1"),
        rule("[{headers: [{name: version, value: one}], queryParams: [{name: animal, value: whale}]}]", "infra-backend-v2"),
        rule("[{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], queryParams: [{name: animal, value: whale}]}]", "infra-backend-v3"),
        rule("[{path: {type: PathPrefix, value: /path3}, queryParams: [{name: animal, value: shark}]}, {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], queryParams: [{name: animal, value: kraken}]}]", "infra-backend-v1"),
        rule("[{path: {type: PathPrefix, value: /path5}, queryParams: [{name: animal, value: hydra}]}]", "infra-backend-v1"),
        rule("[{headers: [{name: version, value: four}], queryParams: [{name: animal, value: hydra}]}]", "infra-backend-v3"),
    ]
    .concat();
    let method_rules = [
        rule("[{method: POST}]", "infra-backend-v1"),
        rule("[{method: GET}]", "infra-backend-v2"),
        rule("[{path: {type: PathPrefix, value: /path1}, method: GET}]", "infra-backend-v1"),
        rule("[{headers: [{name: version, value: one}], method: PUT}]", "infra-backend-v2"),
        rule("[{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], method: POST}]", "infra-backend-v3"),
        rule("[{path: {type: PathPrefix, value: /path3}, method: PATCH}, {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], method: DELETE}]", "infra-backend-v1"),
        rule("[{path: {type: PathPrefix, value: /path5}, method: PATCH}]", "infra-backend-v1"),
        rule("[{headers: [{name: version, value: four}], method: PATCH}]", "infra-backend-v2"),
    ]
    .concat();
    let routes = http_route(
        INFRA,
        "query-param-matching",
        &parent,
        &["query.example.com"],
        &query_rules,
    ) + &http_route(
        INFRA,
        "method-matching",
        &parent,
        &["method.example.com"],
        &method_rules,
    );
    let _lb = infra.lb("gw-combos", &routes);
    let gw = infra.gw("same-namespace");
    let (v1, v2, v3) = (
        Some("infra-backend-v1"),
        Some("infra-backend-v2"),
        Some("infra-backend-v3"),
    );
    check_match_cases(
        gw,
        "query.example.com",
        &[
            ("GET", "/?animal=whale", &[], v1),
            ("GET", "/?animal=dolphin&color=blue", &[], v3),
            ("GET", "/path1?animal=whale", &[], v1),
            ("GET", "/?animal=whale", &[("version", "one")], v2),
            ("GET", "/path2?animal=whale", &[("version", "two")], v3),
            ("GET", "/path3?animal=shark", &[], v1),
            ("GET", "/path4?animal=kraken", &[("version", "three")], v1),
            ("GET", "/?animal=shark", &[], None),
            ("GET", "/path4?animal=kraken", &[], None),
            ("GET", "/path5?animal=hydra", &[], v1),
            ("GET", "/?animal=hydra", &[("version", "four")], v3),
            ("GET", "/?animal=dog", &[], None),
            ("GET", "/?animal=whaledolphin", &[], None),
            ("GET", "/", &[], None),
        ],
    );
    check_match_cases(
        gw,
        "method.example.com",
        &[
            ("POST", "/", &[], v1),
            ("GET", "/", &[], v2),
            ("HEAD", "/", &[], None),
            ("GET", "/path1", &[], v1),
            ("PUT", "/", &[("version", "one")], v2),
            ("POST", "/path2", &[("version", "two")], v3),
            ("PATCH", "/path3", &[], v1),
            ("DELETE", "/path4", &[("version", "three")], v1),
            ("PUT", "/", &[], None),
            ("DELETE", "/path4", &[], None),
            ("PATCH", "/path5", &[], v1),
            ("PATCH", "/", &[("version", "four")], v2),
        ],
    );
}

/// One redirect rule: `PathPrefix path` with `requestRedirect: redirect`.
fn redirect_rule(path: &str, redirect: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]\n"
    )
}

#[test]
fn http_route_redirect_matrix() {
    // HTTPRouteRedirectPort, ...Scheme, ...Path and ...PortAndScheme on an
    // HTTP listener (port 8080, so an unset port keeps :8080).
    let infra = Infra::start();
    let rules = [
        redirect_rule("/port-and-host", "{hostname: example.org, port: 8083}"),
        redirect_rule("/port-and-status", "{port: 8083, statusCode: 301}"),
        redirect_rule("/port-and-host-and-status", "{port: 8083, hostname: example.org, statusCode: 302}"),
        redirect_rule("/scheme", "{scheme: https}"),
        redirect_rule("/scheme-and-status", "{scheme: https, statusCode: 301}"),
        redirect_rule("/scheme-and-host-and-status", "{scheme: https, hostname: example.org, statusCode: 302}"),
        redirect_rule("/path-and-status", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}, statusCode: 301}"),
        redirect_rule("/full-path-and-host", "{hostname: example.org, path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}}"),
        redirect_rule("/full-path-and-status", "{path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}, statusCode: 301}"),
        redirect_rule("/port-80", "{port: 80}"),
        redirect_rule("/scheme-http-port-8080", "{scheme: http, port: 8080}"),
        redirect_rule("/scheme-https-port-8443", "{scheme: https, port: 8443}"),
    ]
    .concat();
    let route = http_route(
        INFRA,
        "redirect-matrix",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let _lb = infra.lb("gw-redirect-matrix", &route);
    let gw = infra.gw("same-namespace");
    let mut wrong = Vec::new();
    for (path, status, location) in [
        (
            "/port-and-host",
            302,
            "http://example.org:8083/port-and-host",
        ),
        (
            "/port-and-status",
            301,
            "http://example.com:8083/port-and-status",
        ),
        (
            "/port-and-host-and-status",
            302,
            "http://example.org:8083/port-and-host-and-status",
        ),
        ("/scheme", 302, "https://example.com/scheme"),
        (
            "/scheme-and-status",
            301,
            "https://example.com/scheme-and-status",
        ),
        (
            "/scheme-and-host-and-status",
            302,
            "https://example.org/scheme-and-host-and-status",
        ),
        (
            "/path-and-status",
            301,
            "http://example.com:8080/replacement-prefix",
        ),
        (
            "/path-and-status/x",
            301,
            "http://example.com:8080/replacement-prefix/x",
        ),
        (
            "/full-path-and-host",
            302,
            "http://example.org:8080/replacement-full",
        ),
        (
            "/full-path-and-status",
            301,
            "http://example.com:8080/replacement-full",
        ),
        ("/port-80", 302, "http://example.com/port-80"),
        (
            "/scheme-http-port-8080",
            302,
            "http://example.com:8080/scheme-http-port-8080",
        ),
        (
            "/scheme-https-port-8443",
            302,
            "https://example.com:8443/scheme-https-port-8443",
        ),
    ] {
        let r = get(gw, "example.com", path);
        if (r.status, r.header("location")) != (status, Some(location)) {
            wrong.push(format!(
                "{path}: want {status} {location}, got {} {:?}",
                r.status,
                r.header("location")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn http_route_redirect_matrix_on_https_listener() {
    // HTTPRouteRedirectPortAndScheme on an HTTPS listener: the listener's
    // scheme and port apply where the redirect leaves them unset.
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = crate::support::scratch_dir("gw-redirect-https");
    let cert = crate::support::certs::self_signed(&dir, "example.org", &["example.org"]);
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: redirect-https, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - name: https\n    port: 9460\n    protocol: HTTPS\n    tls:\n      certificateRefs: [{{name: redirect-cert}}]\n---\n"
    );
    let rules = [
        redirect_rule("/unset", "{hostname: example.org}"),
        redirect_rule("/port-443", "{port: 443}"),
        redirect_rule("/port-8443", "{port: 8443}"),
        redirect_rule("/scheme-http", "{scheme: http}"),
        redirect_rule("/scheme-http-port-80", "{scheme: http, port: 80}"),
        redirect_rule("/scheme-http-port-8080", "{scheme: http, port: 8080}"),
    ]
    .concat();
    let route = http_route(
        INFRA,
        "redirect-https",
        &format!("{INFRA}/redirect-https"),
        &[],
        &rules,
    );
    let manifests = super::tls_secret_in(INFRA, "redirect-cert", &cert) + &gateway + &route;
    let _lb = infra.lb("gw-redirect-https", &manifests);
    let at = std::net::SocketAddr::new(ip.into(), 9460);
    let mut wrong = Vec::new();
    for (path, location) in [
        ("/unset", "https://example.org:9460/unset"),
        ("/port-443", "https://example.org/port-443"),
        ("/port-8443", "https://example.org:8443/port-8443"),
        ("/scheme-http", "http://example.org/scheme-http"),
        (
            "/scheme-http-port-80",
            "http://example.org/scheme-http-port-80",
        ),
        (
            "/scheme-http-port-8080",
            "http://example.org:8080/scheme-http-port-8080",
        ),
    ] {
        let r = super::curl_tls(at, "example.org", "example.org", path);
        if (r.status, r.header("location")) != (302, Some(location)) {
            wrong.push(format!(
                "{path}: want 302 {location}, got {} {:?} {}",
                r.status,
                r.header("location"),
                r.text()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn http_route_rewrite_with_header_filters() {
    // HTTPRouteRewritePath and HTTPRouteRewriteHost combined with a
    // RequestHeaderModifier.
    let infra = Infra::start();
    let path_rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /prefix/rewrite-path-and-modify-headers}}}}]
    filters:
    - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /prefix}}}}}}
    - {MODIFY_HEADERS}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /full/rewrite-path-and-modify-headers}}}}]
    filters:
    - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /test}}}}}}
    - {MODIFY_HEADERS}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"
    );
    let host_rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /one}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{hostname: one.example.org}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /two}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{hostname: example.org}}}}]
    backendRefs: [{{name: infra-backend-v2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /rewrite-host-and-modify-headers}}}}]
    filters:
    - {{type: URLRewrite, urlRewrite: {{hostname: test.example.org}}}}
    - {MODIFY_HEADERS}
    backendRefs: [{{name: infra-backend-v2, port: 8080}}]
"
    );
    let parent = format!("{INFRA}/same-namespace");
    let routes = http_route(INFRA, "rewrite-path", &parent, &[], &path_rules)
        + &http_route(
            INFRA,
            "rewrite-host",
            &parent,
            &["rewrite.example"],
            &host_rules,
        );
    let _lb = infra.lb("gw-rewrite-hdr", &routes);
    let gw = infra.gw("same-namespace");
    for (path, upstream) in [
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
    ] {
        let r = get_with(gw, "example.com", path, ORIGINAL_HEADERS);
        expect_backend(&r, "infra-backend-v1", path);
        assert_eq!(seen_path(&r), upstream, "{path}");
        expect_modified_headers(&r, path);
    }
    for (path, backend, host) in [
        ("/one", "infra-backend-v1", "one.example.org"),
        ("/two", "infra-backend-v2", "example.org"),
        (
            "/rewrite-host-and-modify-headers",
            "infra-backend-v2",
            "test.example.org",
        ),
    ] {
        let r = get_with(gw, "rewrite.example", path, ORIGINAL_HEADERS);
        expect_backend(&r, backend, path);
        assert_eq!(
            r.json()["host"].as_str(),
            Some(host),
            "{path}: {}",
            r.text()
        );
        assert_eq!(seen_path(&r), path);
        if path == "/rewrite-host-and-modify-headers" {
            expect_modified_headers(&r, path);
        }
    }
}

#[test]
fn http_route_request_mirror_paths_and_filters() {
    // HTTPRouteRequestMirror and HTTPRouteRequestMultipleMirrors: the mirror
    // receives the request path; header filters apply before mirroring.
    let infra = Infra::start();
    let mirror = |svc: &str| {
        format!(
            "{{type: RequestMirror, requestMirror: {{backendRef: {{name: {svc}, port: 8080}}}}}}"
        )
    };
    let rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /mirror}}}}]
    filters: [{m2}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /mirror-and-modify-headers}}}}]
    filters: [{MODIFY_HEADERS}, {m2}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /multi-mirror-and-modify-request-headers}}}}]
    filters: [{MODIFY_HEADERS}, {m2}, {m3}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
",
        m2 = mirror("infra-backend-v2"),
        m3 = mirror("infra-backend-v3"),
    );
    let route = http_route(
        INFRA,
        "request-mirror",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let _lb = infra.lb("gw-mirror-paths", &route);
    let gw = infra.gw("same-namespace");
    let (v2, v3) = (
        infra.backend(INFRA, "infra-backend-v2"),
        infra.backend(INFRA, "infra-backend-v3"),
    );
    let limit = std::time::Duration::from_secs(5);

    let r = get(gw, "example.com", "/mirror");
    expect_backend(&r, "infra-backend-v1", "/mirror");
    assert_eq!(seen_path(&r), "/mirror");
    assert!(
        super::eventually(limit, || v2.seen_paths().iter().any(|p| p == "/mirror")),
        "the mirror saw /mirror: {:?}",
        v2.seen_paths()
    );

    let path = "/mirror-and-modify-headers/x?y=z";
    let r = get_with(gw, "example.com", path, ORIGINAL_HEADERS);
    expect_backend(&r, "infra-backend-v1", path);
    expect_modified_headers(&r, path);
    assert!(
        super::eventually(limit, || v2.seen_paths().iter().any(|p| p == path)),
        "the mirror saw {path}: {:?}",
        v2.seen_paths()
    );

    let path = "/multi-mirror-and-modify-request-headers";
    let r = get_with(gw, "example.com", path, ORIGINAL_HEADERS);
    expect_backend(&r, "infra-backend-v1", path);
    expect_modified_headers(&r, path);
    for (name, b) in [("infra-backend-v2", v2), ("infra-backend-v3", v3)] {
        assert!(
            super::eventually(limit, || b.seen_paths().iter().any(|p| p == path)),
            "{name} saw {path}: {:?}",
            b.seen_paths()
        );
    }
    // Only the multi-mirror rule mirrors to v3.
    assert_eq!(v3.seen_paths(), [path]);
}

#[test]
fn http_route_response_header_modifier() {
    // HTTPRouteResponseHeaderModifier, against headers the backend sends
    // (the echo adds each `x-echo-response-header` to its answer).
    let infra = Infra::start();
    let route = http_route(
        INFRA,
        "response-header-modifier",
        &format!("{INFRA}/same-namespace"),
        &[],
        &header_modifier_rules("ResponseHeaderModifier", false),
    );
    let _lb = infra.lb("gw-resphdr", &route);
    let gw = infra.gw("same-namespace");
    let echo = bench::echo::RESPONSE_HEADER;
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case<'_>] = &[
        ("/set", &[], &[("X-Header-Set", "set-overwrites-values")]),
        (
            "/set",
            &["X-Header-Set: some-other-value"],
            &[("X-Header-Set", "set-overwrites-values")],
        ),
        ("/add", &[], &[("X-Header-Add", "add-appends-values")]),
        (
            "/add",
            &["X-Header-Add: some-other-value"],
            &[("X-Header-Add", "some-other-value,add-appends-values")],
        ),
        (
            "/remove",
            &["X-Header-Remove: val", "Some-Other-Header: val"],
            &[("X-Header-Remove", ""), ("Some-Other-Header", "val")],
        ),
        (
            "/multiple",
            &[
                "X-Header-Set-2: set-val-2",
                "X-Header-Add-2: add-val-2",
                "X-Header-Remove-2: remove-val-2",
                "Another-Header: another-header-val",
            ],
            &[
                ("X-Header-Set-1", "header-set-1"),
                ("X-Header-Set-2", "header-set-2"),
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "add-val-2,header-add-2"),
                ("X-Header-Add-3", "header-add-3"),
                ("X-Header-Remove-1", ""),
                ("X-Header-Remove-2", ""),
                ("Another-Header", "another-header-val"),
            ],
        ),
        (
            "/case-insensitivity",
            &[
                "x-header-set: original-val-set",
                "x-header-add: original-val-add",
                "x-header-remove: original-val-remove",
                "Another-Header: another-header-val",
            ],
            &[
                ("X-Header-Set", "header-set"),
                ("X-Header-Add", "original-val-add,header-add"),
                ("X-Header-Remove", ""),
                ("Another-Header", "another-header-val"),
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (path, backend_sends, want) in cases {
        let hs: Vec<(&str, &str)> = backend_sends.iter().map(|h| (echo, *h)).collect();
        let r = get_with(gw, "example.com", path, &hs);
        expect_backend(&r, "infra-backend-v1", path);
        for (name, value) in *want {
            let got = super::response_header_values(&r, name).join(",");
            if got != *value {
                wrong.push(format!(
                    "{path} {backend_sends:?}: {name} want {value:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn http_route_timeouts_zero_disables() {
    // HTTPRouteTimeoutRequest and HTTPRouteTimeoutBackendRequest: "0s"
    // disables the timeout.
    let infra = Infra::start();
    let to_sleep = |prefix: &str, timeouts: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    timeouts: {timeouts}\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /sleep}}}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
        )
    };
    let rules = [
        to_sleep("/request-timeout", "{request: 500ms}"),
        to_sleep("/disable-request-timeout", "{request: \"0s\"}"),
        to_sleep("/backend-timeout", "{backendRequest: 500ms}"),
        to_sleep("/disabled-backend-timeout", "{backendRequest: \"0s\"}"),
        to_sleep(
            "/disabled-both",
            "{request: \"0s\", backendRequest: \"0s\"}",
        ),
    ]
    .concat();
    let route = http_route(
        INFRA,
        "timeouts-zero",
        &format!("{INFRA}/same-namespace"),
        &[],
        &rules,
    );
    let lb = infra.lb("gw-timeouts-zero", &route);
    let gw = infra.gw("same-namespace");
    for (path, status) in [
        ("/request-timeout/10", 200),
        ("/request-timeout/1000", 504),
        ("/disable-request-timeout/1000", 200),
        ("/backend-timeout/10", 200),
        ("/backend-timeout/1000", 504),
        ("/disabled-backend-timeout/1000", 200),
        ("/disabled-both/1000", 200),
    ] {
        let r = get(gw, "example.com", path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    expect_route(
        &lb,
        "HTTPRoute",
        INFRA,
        "timeouts-zero",
        "same-namespace",
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
}

#[test]
fn http_route_request_percentage_mirror() {
    // HTTPRouteRequestPercentageMirror: percent and fraction sample the
    // requests a mirror gets; 0 % gets none.
    let infra = Infra::start();
    let rules = "  - matches: [{path: {type: PathPrefix, value: /half}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}, percent: 50}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v3, port: 8080}, fraction: {numerator: 1, denominator: 4}}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: app-backend-v1, namespace: gateway-conformance-app-backend, port: 8080}, percent: 0}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: mirror, namespace: {APP}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service}}]\n---\n"
    );
    let route = http_route(
        INFRA,
        "percent-mirror",
        &format!("{INFRA}/same-namespace"),
        &[],
        rules,
    );
    let _lb = infra.lb("gw-percent-mirror", &(route + &grant));
    let gw = infra.gw("same-namespace");
    let mut client = crate::support::client::Client::connect(gw);
    let n = 800u32;
    for i in 0..n {
        expect_backend(
            &client.get("example.com", &format!("/half/{i}")),
            "infra-backend-v1",
            "main",
        );
        expect_backend(
            &client.get("example.com", &format!("/none/{i}")),
            "infra-backend-v1",
            "main",
        );
    }
    let count = |ns: &str, name: &str| {
        let server = infra.backend(ns, name);
        // Mirrors are fire and forget: let the last copies land.
        let mut last = u64::MAX;
        super::eventually(std::time::Duration::from_secs(3), || {
            let now = server.requests();
            let settled = now == last;
            last = now;
            std::thread::sleep(std::time::Duration::from_millis(100));
            settled
        });
        server.requests() as f64
    };
    // Binomial bounds, 5 standard deviations.
    let (half, quarter) = (
        count(INFRA, "infra-backend-v2"),
        count(INFRA, "infra-backend-v3"),
    );
    let sd = |p: f64| (f64::from(n) * p * (1.0 - p)).sqrt();
    assert!(
        (half - 400.0).abs() <= 5.0 * sd(0.5),
        "50% mirror got {half} of {n}"
    );
    assert!(
        (quarter - 200.0).abs() <= 5.0 * sd(0.25),
        "1/4 mirror got {quarter} of {n}"
    );
    assert_eq!(count(APP, "app-backend-v1"), 0.0, "0% mirror gets nothing");
}

#[test]
fn http_route_backend_protocol_websocket() {
    // HTTPRouteBackendProtocolWebSocket: the Upgrade passes through a
    // Gateway route (with a request header filter) to a WebSocket server.
    use crate::websocket::{ask, connect, ws_server};
    let server = ws_server("ws-gw");
    let infra = Infra::start();
    let rules = "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-via, value: gateway}]}}]
    backendRefs: [{name: chat, port: 8080}]
";
    let manifests = crate::support::service_yaml(INFRA, "chat", 8080, None, &[server])
        + "---\n"
        + &http_route(
            INFRA,
            "ws",
            &format!("{INFRA}/same-namespace"),
            &["ws.test"],
            rules,
        );
    let _lb = infra.lb("gw-websocket", &manifests);
    let gw = infra.gw("same-namespace");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ws = connect(gw).await;
        assert_eq!(ask(&mut ws, "hello").await, "ws-gw:hello");
        let big = "y".repeat(100_000);
        assert_eq!(ask(&mut ws, &big).await, format!("ws-gw:{big}"));
        ws.close(None).await.unwrap();
    });
}
