//! Gateway API HTTPRoute table micro-benchmarks: one Listener with 1,000
//! HTTPRoutes x 10 rules (every tenth route on a `*.` wildcard hostname, plus
//! a catch-all route without hostnames). Rules mix Exact and PathPrefix
//! paths, a RegularExpression path, and method, header and query conditions.
//! Measures lookups (exact path, deep prefix, header-qualified, query,
//! regex, wildcard host, miss to the catch-all) and the build of the table.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Method;
use lb_http::gateway::{
    GatewayRouteTable, HeaderMatch, HostnameMatch, PathMatch, QueryMatch, RouteEntry, RouteMatch,
    RouteRef, TargetId, ValueMatch,
};

const ROUTES: usize = 1_000;
const RULES: usize = 10;

fn hostname(i: usize) -> HostnameMatch {
    if i % 10 == 9 {
        HostnameMatch::Wildcard(format!("w{i}.example.com"))
    } else {
        HostnameMatch::Exact(format!("h{i}.example.com"))
    }
}

/// Rule `j` of a route.
fn rule(j: usize) -> RouteMatch {
    let exact = |p: String| PathMatch::Exact(p);
    let prefix = |p: &str| PathMatch::PathPrefix(p.to_owned());
    let hdr = |n: &str, v: &str| HeaderMatch::new(n, ValueMatch::Exact(v.to_owned()));
    match j {
        0..=2 => RouteMatch::new(exact(format!("/api/v1/r{j}")), None, vec![], vec![]),
        3 => RouteMatch::new(prefix("/p/s1/s2/s3"), None, vec![], vec![]),
        4 => RouteMatch::new(prefix("/p/s1"), Some(Method::POST), vec![], vec![]),
        5 => RouteMatch::new(
            prefix("/api"),
            None,
            vec![hdr("x-version", "v2"), hdr("x-env", "canary")],
            vec![],
        ),
        6 => RouteMatch::new(prefix("/api"), None, vec![hdr("x-version", "v2")], vec![]),
        7 => {
            let q = QueryMatch {
                name: "debug".into(),
                value: ValueMatch::Exact("1".into()),
            };
            RouteMatch::new(prefix("/api"), None, vec![], vec![q])
        }
        8 => RouteMatch::new(
            PathMatch::regex("/users/[0-9]+/profile").unwrap(),
            None,
            vec![],
            vec![],
        ),
        _ => RouteMatch::default(),
    }
}

fn entries() -> Vec<RouteEntry> {
    let mut out = Vec::with_capacity(ROUTES * RULES + 1);
    for i in 0..=ROUTES {
        for j in 0..RULES {
            let (hostnames, m) = if i == ROUTES {
                (vec![], RouteMatch::default())
            } else {
                (vec![hostname(i)], rule(j))
            };
            out.push(RouteEntry {
                hostnames,
                rule_match: m,
                route: RouteRef {
                    namespace: format!("ns-{}", i % 20),
                    name: format!("route-{i}"),
                    rule_index: j as u32,
                    match_index: 0,
                    created: (i % 7) as i64,
                },
                target: TargetId((i * RULES + j) as u32),
            });
        }
    }
    out
}

/// Name, host, request-target, headers, method.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a [u8])],
    &'a str,
);

fn lookups(c: &mut Criterion) {
    let table = GatewayRouteTable::build(entries());
    let plain: &[(&str, &[u8])] = &[("user-agent", b"bench"), ("accept", b"*/*")];
    let v2: &[(&str, &[u8])] = &[("user-agent", b"bench"), ("X-Version", b"v2")];
    let cases: &[Case<'_>] = &[
        ("exact", "h500.example.com", "/api/v1/r2", plain, "GET"),
        (
            "deep_prefix",
            "h500.example.com:8080",
            "/p/s1/s2/s3/s4/s5",
            plain,
            "GET",
        ),
        ("header", "h500.example.com", "/api/items", v2, "GET"),
        (
            "query",
            "h500.example.com",
            "/api/items?x=1&debug=1",
            plain,
            "GET",
        ),
        (
            "regex",
            "h500.example.com",
            "/users/42/profile",
            plain,
            "GET",
        ),
        (
            "wildcard_host",
            "a.b.w509.example.com",
            "/api/v1/r1",
            plain,
            "GET",
        ),
        (
            "miss_to_catchall",
            "unknown.example.org",
            "/nothing/here",
            plain,
            "GET",
        ),
    ];
    let mut g = c.benchmark_group("gateway_lookup");
    for (name, host, target, headers, method) in cases {
        assert!(
            table
                .lookup_target(host, target, method.as_bytes(), *headers)
                .is_some()
        );
        g.bench_function(*name, |b| {
            b.iter(|| {
                black_box(table.lookup_target(
                    black_box(host),
                    black_box(target),
                    method.as_bytes(),
                    *headers,
                ))
            })
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("gateway_build");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("1k_routes_x10", |b| {
        b.iter_batched(
            entries,
            |e| black_box(GatewayRouteTable::build(e)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, lookups, build);
criterion_main!(benches);
