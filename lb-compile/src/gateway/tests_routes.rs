//! Gateway compiler tests: route attachment and status, backend refs,
//! filters, timeouts, GRPCRoute matches, and the entries and actions the
//! Listener tables get.

use std::time::Duration;

use lb_http::gateway::{HostnameMatch, PathMatch, PathModifier, RouteEntry, RuleAction};
use lb_http::snapshot::UpstreamProtocol;
use serde_json::Value;

use super::test_support::{cond, gateway, is, listener, port, run, service, status};
use crate::compile::Compiled;

/// Services `web` (default) and `api` (team-a) and Gateway `g` with an
/// HTTP listener `http` (from All) on 80 and `same` (from Same) on 81.
fn base() -> String {
    format!(
        "{}{}{}",
        service("default", "web", 80, "10.0.0.1"),
        service("team-a", "api", 8080, "10.0.1.1"),
        gateway(
            "default",
            "g",
            "addresses: [{value: 127.0.60.1}], listeners: [
            {name: http, port: 80, protocol: HTTP, hostname: '*.example.com', allowedRoutes: {namespaces: {from: All}}},
            {name: same, port: 81, protocol: HTTP}]"
        )
    )
}

fn http_route(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

fn parent<'a>(c: &'a Compiled, kind: &str, name: &str, i: usize) -> &'a Value {
    &status(c, kind, name)["status"]["parents"][i]
}

fn entries<'a>(c: &'a Compiled, addr: &str) -> &'a [RouteEntry] {
    port(c, addr).listeners[0].routes.entries()
}

fn action<'a>(c: &'a Compiled, e: &RouteEntry) -> &'a RuleAction {
    c.snapshot.gateway.action(e.target).unwrap()
}

#[test]
fn attached_route_gives_entries_per_match_and_counts_once() {
    let c = run(&format!(
        "{}{}",
        base(),
        http_route(
            "default",
            "r",
            "  parentRefs: [{name: g}]\n  hostnames: [a.example.com, other.org]\n  rules:\n  - matches: [{path: {type: Exact, value: /x}}, {path: {value: /y}, method: GET, headers: [{name: X-A, value: b}], queryParams: [{name: q, type: RegularExpression, value: 'a.*'}]}]\n    backendRefs: [{name: web, port: 80}]\n  - backendRefs: [{name: web, port: 80, weight: 0}, {name: web, port: 80, weight: 2}]\n"
        )
    ));
    let p = parent(&c, "HTTPRoute", "r", 0);
    assert_eq!(cond(&p["conditions"], "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(&p["conditions"], "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );
    assert_eq!(p["parentRef"], serde_json::json!({"name": "g"}));
    assert_eq!(listener(&c, "g", "http")["attachedRoutes"], 1);
    assert_eq!(listener(&c, "g", "same")["attachedRoutes"], 1);
    let e = entries(&c, "127.0.60.1:80");
    assert_eq!(e.len(), 3);
    assert_eq!(
        e[0].hostnames,
        [HostnameMatch::Exact("a.example.com".into())]
    );
    assert_eq!(*e[0].rule_match.path(), PathMatch::Exact("/x".into()));
    assert_eq!(e[1].rule_match.method().map(|m| m.as_str()), Some("GET"));
    assert_eq!(e[1].rule_match.headers()[0].name, "x-a");
    assert_eq!((e[1].route.rule_index, e[1].route.match_index), (0, 1));
    assert_eq!(*e[2].rule_match.path(), PathMatch::PathPrefix("/".into()));
    assert_eq!(e[0].target, e[1].target);
    let a0 = action(&c, &e[0]);
    assert_eq!(a0.name, "HTTPRoute default/r rule 0");
    let web = a0.backends[0].backend.unwrap();
    assert_eq!(c.snapshot.backends[web.0 as usize].name, "default/web:80");
    let a1 = action(&c, &e[2]);
    assert_eq!(
        a1.backends
            .iter()
            .map(|b| (b.backend, b.weight))
            .collect::<Vec<_>>(),
        [(Some(web), 0), (Some(web), 2)]
    );
    // The listener without hostname keeps the route's own hostnames; the
    // same action is shared.
    let e81 = entries(&c, "127.0.60.1:81");
    assert_eq!(e81[0].hostnames.len(), 2);
    assert_eq!(e81[0].target, e[0].target);
    assert_eq!(c.snapshot.gateway.actions.len(), 2);
}

#[test]
fn allowed_routes_namespaces_same_all_and_selector() {
    let selector = gateway("default", "sel", "addresses: [{value: 127.0.60.2}], listeners: [
        {name: labels, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}},
        {name: exprs, port: 81, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: env, operator: NotIn, values: [prod]}, {key: kubernetes.io/metadata.name, operator: In, values: [team-a, team-b]}]}}}}]");
    let ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-b, labels: {team: b, env: prod}}\n";
    let routes = [
        http_route(
            "team-a",
            "to-same",
            "  parentRefs: [{name: g, namespace: default, sectionName: same}]\n",
        ),
        http_route(
            "team-a",
            "to-all",
            "  parentRefs: [{name: g, namespace: default}]\n  hostnames: [api.example.com]\n",
        ),
        http_route(
            "team-a",
            "to-sel",
            "  parentRefs: [{name: sel, namespace: default}]\n",
        ),
        http_route(
            "team-b",
            "b-sel",
            "  parentRefs: [{name: sel, namespace: default}]\n",
        ),
        http_route(
            "team-c",
            "c-sel",
            "  parentRefs: [{name: sel, namespace: default}]\n",
        ),
    ]
    .concat();
    let c = run(&format!("{}{selector}{ns}{routes}", base()));
    let accepted = |name: &str| cond(&parent(&c, "HTTPRoute", name, 0)["conditions"], "Accepted");
    assert_eq!(accepted("to-same"), is("False", "NotAllowedByListeners"));
    assert_eq!(accepted("to-all"), is("True", "Accepted"));
    assert_eq!(accepted("to-sel"), is("True", "Accepted"));
    assert_eq!(accepted("b-sel"), is("False", "NotAllowedByListeners"));
    assert_eq!(accepted("c-sel"), is("False", "NotAllowedByListeners"));
    assert_eq!(listener(&c, "sel", "labels")["attachedRoutes"], 1);
    assert_eq!(listener(&c, "sel", "exprs")["attachedRoutes"], 1);
    assert!(c.diagnostics.iter().any(
        |d| d.name.as_deref() == Some("to-same") && d.message.contains("NotAllowedByListeners")
    ));
}

#[test]
fn parent_mismatches_and_foreign_parents() {
    let theirs = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: theirs}\nspec: {gatewayClassName: other, listeners: [{name: h, port: 80, protocol: HTTP}]}\n";
    let routes = [
        http_route(
            "default",
            "host",
            "  parentRefs: [{name: g, sectionName: http}]\n  hostnames: [a.example.org]\n",
        ),
        http_route(
            "default",
            "section",
            "  parentRefs: [{name: g, sectionName: nope}]\n",
        ),
        http_route(
            "default",
            "portno",
            "  parentRefs: [{name: g, port: 8080}]\n",
        ),
        http_route("default", "missing", "  parentRefs: [{name: ghost}]\n"),
        http_route(
            "default",
            "foreign",
            "  parentRefs: [{name: theirs}, {name: web, kind: Service, group: ''}]\n",
        ),
        http_route(
            "default",
            "both",
            "  parentRefs: [{name: theirs}, {name: g, port: 81}]\n",
        ),
    ]
    .concat();
    let c = run(&format!("{}{theirs}{routes}", base()));
    let accepted = |name: &str| cond(&parent(&c, "HTTPRoute", name, 0)["conditions"], "Accepted");
    assert_eq!(accepted("host"), is("False", "NoMatchingListenerHostname"));
    assert_eq!(accepted("section"), is("False", "NoMatchingParent"));
    assert_eq!(accepted("portno"), is("False", "NoMatchingParent"));
    assert_eq!(accepted("missing"), is("False", "NoMatchingParent"));
    assert_eq!(accepted("both"), is("True", "Accepted"));
    assert_eq!(
        status(&c, "HTTPRoute", "both")["status"]["parents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(!c.status.iter().any(|s| s["metadata"]["name"] == "foreign"));
    assert_eq!(listener(&c, "g", "http")["attachedRoutes"], 0);
    assert_eq!(listener(&c, "g", "same")["attachedRoutes"], 1);
}

#[test]
fn backend_refs_resolve_or_give_the_reason() {
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: team-a}\nspec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}], to: [{group: '', kind: Service, name: api}]}\n";
    let case = |refs: &str, with_grant: bool| {
        let route = http_route(
            "default",
            "r",
            &format!(
                "  parentRefs: [{{name: g, sectionName: same}}]\n  rules: [{{backendRefs: [{refs}]}}]\n"
            ),
        );
        let c = run(&format!(
            "{}{route}{}",
            base(),
            if with_grant { grant } else { "" }
        ));
        let p = parent(&c, "HTTPRoute", "r", 0).clone();
        let e = entries(&c, "127.0.60.1:81")[0].clone();
        let backend = action(&c, &e).backends[0].backend;
        (
            cond(&p["conditions"], "ResolvedRefs"),
            cond(&p["conditions"], "Accepted"),
            backend.is_some(),
        )
    };
    let ok = is("True", "Accepted");
    assert_eq!(
        case("{name: nope, port: 80}", false),
        (is("False", "BackendNotFound"), ok.clone(), false)
    );
    assert_eq!(
        case("{name: web, port: 81}", false),
        (is("False", "BackendNotFound"), ok.clone(), false)
    );
    assert_eq!(
        case("{name: api, namespace: team-a, port: 8080}", false),
        (is("False", "RefNotPermitted"), ok.clone(), false)
    );
    assert_eq!(
        case("{name: api, namespace: team-a, port: 8080}", true),
        (is("True", "ResolvedRefs"), ok.clone(), true)
    );
    assert_eq!(
        case(
            "{name: web, kind: Bucket, group: example.com, port: 80}",
            false
        ),
        (is("False", "InvalidKind"), ok.clone(), false)
    );
    // The first failing ref decides.
    assert_eq!(
        case(
            "{name: web, port: 80}, {name: nope, port: 80}, {name: web, kind: X, port: 80}",
            false
        )
        .0,
        is("False", "BackendNotFound")
    );
}

#[test]
fn filters_compile_into_the_action() {
    let route = http_route("default", "r", "  parentRefs: [{name: g, sectionName: same}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Set, value: a}], add: [{name: X-Add, value: b}], remove: [X-Gone]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: X-Resp, value: c}]}}
    - {type: URLRewrite, urlRewrite: {hostname: new.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}}}
    backendRefs:
    - name: web
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: d}]}}]
    timeouts: {request: 1m30s, backendRequest: 500ms}
  - matches: [{path: {value: /redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /r}}}]
  - matches: [{path: {value: /nothing}}]
    timeouts: {request: 0s}
");
    let c = run(&format!("{}{route}", base()));
    let e = entries(&c, "127.0.60.1:81");
    let find = |p: &str| {
        action(
            &c,
            e.iter()
                .find(|x| *x.rule_match.path() == PathMatch::PathPrefix(p.into()))
                .unwrap(),
        )
    };
    let a = find("/old");
    assert_eq!(
        a.request_headers.set,
        [("x-set".to_owned(), "a".to_owned())]
    );
    assert_eq!(
        a.request_headers.add,
        [("x-add".to_owned(), "b".to_owned())]
    );
    assert_eq!(a.request_headers.remove, ["x-gone"]);
    assert_eq!(
        a.response_headers.add,
        [("x-resp".to_owned(), "c".to_owned())]
    );
    let rw = a.rewrite.as_ref().unwrap();
    assert_eq!(rw.hostname.as_deref(), Some("new.example.com"));
    assert_eq!(
        rw.path,
        Some(PathModifier::ReplacePrefixMatch("/new".into()))
    );
    assert_eq!(
        a.mirrors,
        [lb_http::gateway::Mirror::all(
            a.backends[0].backend.unwrap()
        )]
    );
    assert_eq!(
        a.backends[0].request_headers.set,
        [("x-backend".to_owned(), "d".to_owned())]
    );
    assert_eq!(a.request_timeout, Some(Duration::from_secs(90)));
    assert_eq!(a.backend_timeout, Some(Duration::from_millis(500)));
    assert_eq!(a.fixed_status, None);
    let r = find("/redirect").redirect.clone().unwrap();
    assert_eq!(
        (r.scheme.as_deref(), r.port, r.status),
        (Some("https"), Some(8443), 302)
    );
    assert_eq!(r.path, Some(PathModifier::ReplaceFullPath("/r".into())));
    assert_eq!(find("/redirect").fixed_status, None);
    let nothing = find("/nothing");
    assert_eq!(
        (nothing.fixed_status, nothing.request_timeout),
        (Some(500), None)
    );
}

#[test]
fn unsupported_filters_answer_500() {
    let rules = |first: &str| {
        http_route(
            "default",
            "r",
            &format!(
                "  parentRefs: [{{name: g, sectionName: same}}]
  rules:
  - matches: [{{path: {{value: /a}}}}]
    filters: [{first}]
    backendRefs: [{{name: web, port: 80}}]
  - matches: [{{path: {{value: /b}}}}]
    backendRefs: [{{name: web, port: 80}}]
"
            ),
        )
    };
    let c = run(&format!(
        "{}{}",
        base(),
        rules("{type: CORS, cors: {allowOrigins: ['*']}}")
    ));
    let p = parent(&c, "HTTPRoute", "r", 0);
    assert_eq!(cond(&p["conditions"], "Accepted"), is("True", "Accepted"));
    assert_eq!(
        cond(&p["conditions"], "PartiallyInvalid"),
        is("True", "UnsupportedValue")
    );
    assert!(
        p["conditions"][2]["message"]
            .as_str()
            .unwrap()
            .starts_with("Dropped Rule")
    );
    let e = entries(&c, "127.0.60.1:81");
    let status_of = |path: &str| {
        action(
            &c,
            e.iter()
                .find(|x| *x.rule_match.path() == PathMatch::PathPrefix(path.into()))
                .unwrap(),
        )
        .fixed_status
    };
    assert_eq!((status_of("/a"), status_of("/b")), (Some(500), None));
    // ExtensionRef: an unresolvable reference.
    let c = run(&format!(
        "{}{}",
        base(),
        rules("{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: x}}")
    ));
    let p = parent(&c, "HTTPRoute", "r", 0);
    assert_eq!(
        cond(&p["conditions"], "ResolvedRefs"),
        is("False", "InvalidKind")
    );
    // Every rule unsupported: not accepted, still answered with 500.
    let only = http_route(
        "default",
        "r",
        "  parentRefs: [{name: g, sectionName: same}]\n  rules: [{filters: [{type: Magic}], backendRefs: [{name: web, port: 80}]}]\n",
    );
    let c = run(&format!("{}{only}", base()));
    let p = parent(&c, "HTTPRoute", "r", 0);
    assert_eq!(
        cond(&p["conditions"], "Accepted"),
        is("False", "UnsupportedValue")
    );
    assert_eq!(listener(&c, "g", "same")["attachedRoutes"], 0);
}

#[test]
fn invalid_values_reject_the_route() {
    for (what, rule) in [
        (
            "regex",
            "{matches: [{path: {type: RegularExpression, value: '(unclosed'}}]}",
        ),
        (
            "header regex",
            "{matches: [{headers: [{name: a, type: RegularExpression, value: '['}]}]}",
        ),
        (
            "prefix rewrite on exact",
            "{matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}",
        ),
        (
            "redirect code",
            "{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 200}}]}",
        ),
        ("duration", "{timeouts: {request: 10 seconds}}"),
    ] {
        let route = http_route(
            "default",
            "r",
            &format!("  parentRefs: [{{name: g, sectionName: same}}]\n  rules: [{rule}]\n"),
        );
        let c = run(&format!("{}{route}", base()));
        let p = parent(&c, "HTTPRoute", "r", 0);
        assert_eq!(
            cond(&p["conditions"], "Accepted"),
            is("False", "UnsupportedValue"),
            "{what}"
        );
        assert!(entries(&c, "127.0.60.1:81").is_empty(), "{what}");
        assert_eq!(c.snapshot.gateway.actions.len(), 0, "{what}");
    }
    let both = http_route(
        "default",
        "r",
        "  parentRefs: [{name: g, sectionName: same}]\n  rules: [{filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}, {type: URLRewrite, urlRewrite: {hostname: x}}]}]\n",
    );
    let c = run(&format!("{}{both}", base()));
    assert_eq!(
        cond(&parent(&c, "HTTPRoute", "r", 0)["conditions"], "Accepted"),
        is("False", "IncompatibleFilters")
    );
}

#[test]
fn grpc_routes_match_service_and_method() {
    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g1}
spec:
  parentRefs: [{name: g, sectionName: same}]
  rules:
  - matches:
    - method: {service: pkg.Echo, method: Say}
    - method: {service: pkg.Echo}
    - method: {method: Say}
    - method: {type: RegularExpression, service: 'pkg\\..*', method: 'S.*'}
    - headers: [{name: X-Env, value: canary}]
    backendRefs: [{name: web, port: 80}]
";
    let c = run(&format!("{}{route}", base()));
    let e = entries(&c, "127.0.60.1:81");
    let paths: Vec<String> = e
        .iter()
        .map(|x| format!("{:?}", x.rule_match.path()))
        .collect();
    assert_eq!(
        *e[0].rule_match.path(),
        PathMatch::Exact("/pkg.Echo/Say".into()),
        "{paths:?}"
    );
    assert_eq!(
        *e[1].rule_match.path(),
        PathMatch::PathPrefix("/pkg.Echo".into())
    );
    assert!(
        e[2].rule_match.path().matches("/any.Svc/Say")
            && !e[2].rule_match.path().matches("/a/Sayx")
    );
    assert!(
        e[3].rule_match.path().matches("/pkg.Echo/Stream")
            && !e[3].rule_match.path().matches("/other.Echo/Say")
    );
    assert_eq!(*e[4].rule_match.path(), PathMatch::PathPrefix("/".into()));
    assert_eq!(e[4].rule_match.headers()[0].name, "x-env");
    let b = action(&c, &e[0]).backends[0].backend.unwrap();
    assert_eq!(
        c.snapshot.backends[b.0 as usize].protocol,
        UpstreamProtocol::H2c
    );
    assert_eq!(
        cond(&parent(&c, "GRPCRoute", "g1", 0)["conditions"], "Accepted"),
        is("True", "Accepted")
    );
}

#[test]
fn gateway_backends_reuse_ingress_backends() {
    let ingress = "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  ingressClassName: lb\n  rules:\n  - http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";
    let route = http_route(
        "default",
        "r",
        "  parentRefs: [{name: g, sectionName: same}]\n  rules: [{backendRefs: [{name: web, port: 80}, {name: api, namespace: team-a, port: 8080}]}]\n",
    );
    let c = run(&format!("{}{ingress}{route}", base()));
    let names: Vec<&str> = c
        .snapshot
        .backends
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["default/web:80"],
        "the cross-namespace ref is not permitted, so not added"
    );
    let e = &entries(&c, "127.0.60.1:81")[0];
    assert_eq!(action(&c, e).backends[0].backend.map(|b| b.0), Some(0));
}
