//! Scenarios of the Gateway API conformance suite (HTTP profile), each test
//! named after the suite's test it follows. Manifests are ours; the
//! requests and expected answers are the suite's.

use super::{
    APP, INFRA, Infra, WEB, expect_backend, expect_route, get, get_with, seen_header, seen_path,
    send,
};

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
        (&[("version", "ONE")], None),
        (&[("Color", "purple")], None),
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
