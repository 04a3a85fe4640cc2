//! Tests: hostname matching and intersection tables, path matching, the
//! precedence table, and a randomized comparison with the reference lookup.

use http::Method;

use super::precedence::lookup_naive;
use super::*;

type Hdrs<'a> = Vec<(&'a str, &'a [u8])>;

fn host(s: &str) -> HostnameMatch {
    HostnameMatch::parse(s).unwrap()
}

fn hosts(l: &[&str]) -> Vec<HostnameMatch> {
    l.iter().map(|h| host(h)).collect()
}

fn hm(name: &str, value: &str) -> HeaderMatch {
    HeaderMatch::new(name, ValueMatch::Exact(value.into()))
}

fn hr(name: &str, re: &str) -> HeaderMatch {
    HeaderMatch::new(name, ValueMatch::regex(re).unwrap())
}

fn qm(name: &str, value: &str) -> QueryMatch {
    QueryMatch {
        name: name.into(),
        value: ValueMatch::Exact(value.into()),
    }
}

fn qr(name: &str, re: &str) -> QueryMatch {
    QueryMatch {
        name: name.into(),
        value: ValueMatch::regex(re).unwrap(),
    }
}

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.into())
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::PathPrefix(p.into())
}

fn regex(p: &str) -> PathMatch {
    PathMatch::regex(p).unwrap()
}

fn m(path: PathMatch) -> RouteMatch {
    RouteMatch::new(path, None, vec![], vec![])
}

fn mm(
    path: PathMatch,
    method: Option<Method>,
    h: Vec<HeaderMatch>,
    q: Vec<QueryMatch>,
) -> RouteMatch {
    RouteMatch::new(path, method, h, q)
}

/// Builds the entries of one route: `(rule, match, RouteMatch)` triples.
fn route(
    out: &mut Vec<RouteEntry>,
    ns_name: &str,
    created: i64,
    hostnames: &[&str],
    matches: Vec<(u32, u32, RouteMatch)>,
) {
    let (ns, name) = ns_name.split_once('/').unwrap();
    for (rule, mi, rm) in matches {
        out.push(RouteEntry {
            hostnames: hosts(hostnames),
            rule_match: rm,
            route: RouteRef {
                namespace: ns.into(),
                name: name.into(),
                rule_index: rule,
                match_index: mi,
                created,
            },
            target: TargetId(out.len() as u32),
        });
    }
}

fn precedence_entries() -> Vec<RouteEntry> {
    let get = Some(Method::GET);
    let post = Some(Method::POST);
    let mut v = Vec::new();
    route(
        &mut v,
        "default/exact-host",
        100,
        &["foo.example.com"],
        vec![
            (0, 0, m(exact("/login"))),
            (0, 1, m(prefix("/api"))),
            (1, 0, mm(prefix("/api/v2"), post, vec![], vec![])),
        ],
    );
    route(
        &mut v,
        "default/wild",
        100,
        &["*.example.com"],
        vec![
            (0, 0, m(prefix("/"))),
            (1, 0, m(prefix("/static/"))),
            (2, 0, m(exact("/health"))),
        ],
    );
    route(
        &mut v,
        "default/wild-deep",
        100,
        &["*.bar.example.com"],
        vec![(0, 0, m(prefix("/")))],
    );
    route(
        &mut v,
        "default/catchall",
        50,
        &[],
        vec![
            (0, 0, RouteMatch::default()),
            (1, 0, m(regex("/users/[0-9]+"))),
            (2, 0, m(exact("/health"))),
        ],
    );
    route(
        &mut v,
        "team/headers",
        200,
        &["foo.example.com"],
        vec![
            (
                0,
                0,
                mm(prefix("/api"), None, vec![hm("version", "v2")], vec![]),
            ),
            (
                0,
                1,
                mm(
                    prefix("/api"),
                    None,
                    vec![hm("Version", "v2"), hr("env", "canary|beta")],
                    vec![],
                ),
            ),
            (
                1,
                0,
                mm(prefix("/api"), None, vec![], vec![qm("debug", "1")]),
            ),
            (2, 0, mm(prefix("/api"), get.clone(), vec![], vec![])),
            (3, 0, m(exact("/tie"))),
            (4, 0, m(exact("/old"))),
        ],
    );
    route(
        &mut v,
        "team/aaa",
        200,
        &["foo.example.com"],
        vec![(0, 0, m(exact("/tie")))],
    );
    route(
        &mut v,
        "zzz/old",
        10,
        &["foo.example.com"],
        vec![(0, 0, m(exact("/old")))],
    );
    route(
        &mut v,
        "default/regex",
        100,
        &["foo.example.com"],
        vec![
            (0, 0, m(regex("/api/v[0-9]+/items"))),
            (0, 1, m(regex("/api/v[0-9]+/.*"))),
        ],
    );
    route(
        &mut v,
        "default/query",
        100,
        &["q.example.com"],
        vec![
            (
                0,
                0,
                mm(prefix("/"), None, vec![], vec![qm("a", "1"), qr("b", "x+")]),
            ),
            (0, 1, mm(prefix("/"), None, vec![], vec![qm("a", "1")])),
            (1, 0, mm(prefix("/"), None, vec![hm("x-a", "1")], vec![])),
            (2, 0, mm(prefix("/"), get, vec![], vec![])),
            (3, 0, m(prefix("/s"))),
            (4, 0, mm(prefix("/"), None, vec![], vec![qm("name", "a b")])),
        ],
    );
    route(
        &mut v,
        "default/dup",
        100,
        &["dup.example.com"],
        vec![
            (0, 0, m(exact("/x"))),
            (0, 1, m(exact("/x"))),
            (1, 0, m(exact("/x"))),
        ],
    );
    v
}

#[test]
fn precedence_table() {
    let entries = precedence_entries();
    let table = GatewayRouteTable::build(entries.clone());
    let v2: Hdrs<'_> = vec![("version", b"v2")];
    let v2_canary: Hdrs<'_> = vec![("VERSION", b"v2"), ("env", b"canary")];
    let v2_prod: Hdrs<'_> = vec![("version", b"v2"), ("env", b"prod")];
    let xa: Hdrs<'_> = vec![("x-a", b"1")];
    let xa_upper: Hdrs<'_> = vec![("X-A", b"1")];
    let xa_twice: Hdrs<'_> = vec![("x-a", b"1"), ("x-a", b"2")];
    let none: Hdrs<'_> = vec![];
    let (foo, q) = ("foo.example.com", "q.example.com");
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &Hdrs<'_>, &str, u32, u32)] = &[
        // Exact host, exact path.
        (foo, "GET", "/login", &none, "default/exact-host", 0, 0),
        // Nothing in the exact-host routes matches: falls through to the wildcard.
        (foo, "GET", "/login/", &none, "default/wild", 0, 0),
        // Same prefix: method beats headers beats query beats nothing.
        (foo, "GET", "/api", &none, "team/headers", 2, 0),
        (foo, "POST", "/api", &none, "default/exact-host", 0, 1),
        (foo, "POST", "/api", &v2, "team/headers", 0, 0),
        (foo, "POST", "/api", &v2_canary, "team/headers", 0, 1),
        (foo, "POST", "/api", &v2_prod, "team/headers", 0, 0),
        (foo, "POST", "/api?debug=1", &none, "team/headers", 1, 0),
        (foo, "POST", "/api?debug=1", &v2, "team/headers", 0, 0),
        (foo, "GET", "/api", &v2, "team/headers", 2, 0),
        // Longer prefix beats method; a failed method falls back to a shorter prefix.
        (foo, "POST", "/api/v2", &none, "default/exact-host", 1, 0),
        (foo, "GET", "/api/v2", &none, "team/headers", 2, 0),
        (foo, "POST", "/api/v2/", &none, "default/regex", 0, 1),
        // Regex beats prefix; longer regex beats shorter; full-match only.
        (foo, "PUT", "/api/v2/x", &none, "default/regex", 0, 1),
        (foo, "GET", "/api/v1/items", &none, "default/regex", 0, 0),
        (foo, "GET", "/api/v1/items?debug=1", &none, "default/regex", 0, 0),
        (foo, "GET", "/api/vx/items", &none, "team/headers", 2, 0),
        (foo, "POST", "/api/vx/items", &v2, "team/headers", 0, 0),
        // Element-wise prefixes.
        (foo, "GET", "/apix", &none, "default/wild", 0, 0),
        // Ties: same age, alphabetical namespace/name; older route beats alphabetical.
        (foo, "GET", "/tie", &none, "team/aaa", 0, 0),
        (foo, "GET", "/old", &none, "zzz/old", 0, 0),
        // Exact-host routes do not hide wildcard routes.
        (foo, "GET", "/health", &none, "default/wild", 2, 0),
        (foo, "GET", "/static/app.js", &none, "default/wild", 1, 0),
        (foo, "GET", "/static", &none, "default/wild", 1, 0),
        (foo, "GET", "/staticx", &none, "default/wild", 0, 0),
        // Host case, port and trailing dot are ignored.
        ("FOO.Example.COM:8080", "GET", "/login", &none, "default/exact-host", 0, 0),
        ("foo.example.com.", "GET", "/login", &none, "default/exact-host", 0, 0),
        // Longer wildcard beats shorter, even against an exact path in the shorter.
        ("x.bar.example.com", "GET", "/", &none, "default/wild-deep", 0, 0),
        ("x.bar.example.com", "GET", "/health", &none, "default/wild-deep", 0, 0),
        ("a.b.bar.example.com", "GET", "/x", &none, "default/wild-deep", 0, 0),
        ("bar.example.com", "GET", "/health", &none, "default/wild", 2, 0),
        // `*.example.com` does not match `example.com`: routes without hostnames.
        ("example.com", "GET", "/health", &none, "default/catchall", 2, 0),
        ("example.com", "GET", "/users/42", &none, "default/catchall", 1, 0),
        ("example.com", "GET", "/users/abc", &none, "default/catchall", 0, 0),
        ("example.com", "GET", "/users/42/x", &none, "default/catchall", 0, 0),
        ("other.com", "DELETE", "/anything", &none, "default/catchall", 0, 0),
        // Query parameters: count, order, first value, case, decoding.
        (q, "POST", "/?a=1&b=xx", &none, "default/query", 0, 0),
        (q, "POST", "/?a=1&b=yy", &none, "default/query", 0, 1),
        (q, "POST", "/?b=xx&a=1", &none, "default/query", 0, 0),
        (q, "POST", "/?a=2", &none, "default/wild", 0, 0),
        (q, "POST", "/?a=1&b=x", &xa, "default/query", 1, 0),
        (q, "GET", "/?a=1&b=x", &xa_upper, "default/query", 2, 0),
        (q, "GET", "/s/x", &none, "default/query", 3, 0),
        (q, "GET", "/sx", &none, "default/query", 2, 0),
        (q, "HEAD", "/s", &none, "default/query", 3, 0),
        (q, "HEAD", "/", &none, "default/wild", 0, 0),
        (q, "POST", "/?name=a%20b", &none, "default/query", 4, 0),
        (q, "POST", "/?name=a+b", &none, "default/wild", 0, 0),
        (q, "POST", "/?a=1&a=2&b=x", &none, "default/query", 0, 0),
        (q, "POST", "/?a=2&a=1&b=x", &none, "default/wild", 0, 0),
        (q, "POST", "/?A=1&b=x", &none, "default/wild", 0, 0),
        (q, "POST", "/?a=%31&b=x", &none, "default/query", 0, 0),
        (q, "POST", "/?a=1#b=x", &none, "default/query", 0, 1),
        // Headers: name case-insensitive, repeated values joined with `,`.
        (q, "POST", "/", &xa_upper, "default/query", 1, 0),
        (q, "POST", "/", &xa_twice, "default/wild", 0, 0),
        // Same route: rule order, then match order.
        ("dup.example.com", "GET", "/x", &none, "default/dup", 0, 0),
    ];
    assert!(cases.len() >= 40);
    for (i, (h, method, target, hdrs, want, rule, mi)) in cases.iter().enumerate() {
        let got = table
            .lookup_target(h, target, method.as_bytes(), hdrs.as_slice())
            .unwrap_or_else(|| panic!("case {i}: {h} {method} {target}: no match"));
        let name = format!("{}/{}", got.route.namespace, got.route.name);
        assert_eq!(
            (name.as_str(), got.route.rule_index, got.route.match_index),
            (*want, *rule, *mi),
            "case {i}: {h} {method} {target} {hdrs:?}"
        );
        let (path, query) = split_target(target);
        let naive = lookup_naive(&entries, h, path, method.as_bytes(), hdrs.as_slice(), query);
        assert_eq!(
            naive.map(|e| e.target),
            Some(got.target),
            "case {i}: reference disagrees"
        );
    }
}

#[test]
fn no_match_is_none() {
    let mut v = Vec::new();
    route(
        &mut v,
        "a/r",
        0,
        &["a.example.com"],
        vec![(0, 0, m(exact("/x")))],
    );
    let t = GatewayRouteTable::build(v);
    let none: Hdrs<'_> = vec![];
    assert!(
        t.lookup("a.example.com", "/y", b"GET", none.as_slice(), "")
            .is_none()
    );
    assert!(
        t.lookup("b.example.com", "/x", b"GET", none.as_slice(), "")
            .is_none()
    );
    assert!(
        t.lookup("a.example.com", "/x", b"GET", none.as_slice(), "")
            .is_some()
    );
    assert!(
        GatewayRouteTable::build(vec![])
            .lookup("a", "/", b"GET", none.as_slice(), "")
            .is_none()
    );
}

#[test]
fn hostname_matching() {
    let cases: &[(&str, &str, bool)] = &[
        ("*.example.com", "foo.example.com", true),
        ("*.example.com", "foo.bar.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "xexample.com", false),
        ("*.example.com", ".example.com", false),
        ("*.example.com", "foo.example.org", false),
        ("foo.example.com", "foo.example.com", true),
        ("foo.example.com", "bar.foo.example.com", false),
        ("*.com", "a.b.c.com", true),
    ];
    for (pat, h, want) in cases {
        assert_eq!(host(pat).matches(h), *want, "{pat} vs {h}");
    }
    assert_eq!(
        host("*.Example.COM."),
        HostnameMatch::Wildcard("example.com".into())
    );
    assert_eq!(host("*.example.com").to_string(), "*.example.com");
    assert_eq!(host("*.example.com").len(), 13);
    for bad in ["", "*", "*.", "foo.*.com", "**.com", "a..b", ".a.com"] {
        assert!(HostnameMatch::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn hostname_intersection() {
    let cases: &[(Option<&str>, &[&str], &[&str])] = &[
        (None, &[], &[]),
        (None, &["a.com", "*.b.com", "a.com"], &["a.com", "*.b.com"]),
        (Some("a.example.com"), &[], &["a.example.com"]),
        (Some("*.example.com"), &[], &["*.example.com"]),
        (
            Some("test.example.com"),
            &["test.example.com"],
            &["test.example.com"],
        ),
        (
            Some("test.example.com"),
            &["*.example.com"],
            &["test.example.com"],
        ),
        (Some("test.example.com"), &["*.com"], &["test.example.com"]),
        (Some("test.example.com"), &["other.example.com"], &[]),
        (Some("test.example.com"), &["example.com"], &[]),
        (Some("test.example.com"), &["*.test.example.com"], &[]),
        (
            Some("test.example.com"),
            &["*.example.com", "test.example.com"],
            &["test.example.com"],
        ),
        (
            Some("*.example.com"),
            &["*.example.com"],
            &["*.example.com"],
        ),
        (
            Some("*.example.com"),
            &["test.example.com", "test.example.net"],
            &["test.example.com"],
        ),
        (
            Some("*.example.com"),
            &["foo.test.example.com"],
            &["foo.test.example.com"],
        ),
        (Some("*.example.com"), &["example.com"], &[]),
        (
            Some("*.example.com"),
            &["*.test.example.com"],
            &["*.test.example.com"],
        ),
        (Some("*.example.com"), &["*.com"], &["*.example.com"]),
        (Some("*.example.com"), &["*.example.net"], &[]),
        (
            Some("*.example.com"),
            &["*.com", "b.example.com"],
            &["*.example.com", "b.example.com"],
        ),
        (
            Some("*.example.com"),
            &["a.example.com", "*.example.com", "a.example.com"],
            &["a.example.com", "*.example.com"],
        ),
    ];
    for (l, r, want) in cases {
        let l = l.map(host);
        let got = intersect(l.as_ref(), &hosts(r));
        assert_eq!(got, hosts(want), "listener {l:?} route {r:?}");
        let unrestricted = l.is_none() && r.is_empty();
        assert_eq!(
            attaches(l.as_ref(), &hosts(r)),
            unrestricted || !want.is_empty()
        );
    }
}

#[test]
fn path_matching() {
    let cases: &[(PathMatch, &str, bool)] = &[
        (prefix("/abc"), "/abc", true),
        (prefix("/abc"), "/abc/", true),
        (prefix("/abc"), "/abc/def", true),
        (prefix("/abc"), "/abcd", false),
        (prefix("/abc/"), "/abc", true),
        (prefix("/abc/"), "/abc/def", true),
        (prefix("/abc/"), "/abcd", false),
        (prefix("/"), "/anything", true),
        (prefix("/"), "/", true),
        (prefix("/a/b"), "/a", false),
        (prefix("/a/b"), "/a/bc", false),
        (prefix("/a/b"), "/a/b/c", true),
        (exact("/foo"), "/foo", true),
        (exact("/foo"), "/foo/", false),
        (exact("/foo"), "/FOO", false),
        (regex("/v[0-9]"), "/v1", true),
        (regex("/v[0-9]"), "/v1/x", false),
        (regex("/v[0-9]"), "/x/v1", false),
        (regex("/a|/b"), "/b", true),
    ];
    for (pm, path, want) in cases {
        assert_eq!(pm.matches(path), *want, "{pm:?} vs {path}");
    }
    assert!(PathMatch::regex("(").is_err());
}

#[test]
fn serializes_for_config_dumps() {
    let mut v = Vec::new();
    route(
        &mut v,
        "ns/r",
        5,
        &["*.a.com"],
        vec![(
            0,
            0,
            mm(
                regex("/x.*"),
                Some(Method::GET),
                vec![hm("X-H", "1")],
                vec![qr("q", "[0-9]+")],
            ),
        )],
    );
    let json = serde_json::to_value(GatewayRouteTable::build(v)).unwrap();
    let e = &json[0];
    assert_eq!(e["hostnames"][0], "*.a.com");
    assert_eq!(e["match"]["path"]["type"], "RegularExpression");
    assert_eq!(e["match"]["path"]["value"], "/x.*");
    assert_eq!(e["match"]["method"], "GET");
    assert_eq!(e["match"]["headers"][0]["name"], "x-h");
    assert_eq!(e["match"]["query"][0]["value"]["value"], "[0-9]+");
    assert_eq!(e["route"]["created"], 5);
    assert_eq!(e["target"], 0);
}

#[test]
fn duplicate_names_keep_the_first() {
    let rm = mm(
        prefix("/"),
        None,
        vec![hm("a", "1"), hm("A", "2")],
        vec![qm("q", "1"), qm("q", "2"), qm("Q", "3")],
    );
    assert_eq!(rm.headers().len(), 1);
    assert_eq!(rm.query().len(), 2);
    let h: Hdrs<'_> = vec![("a", b"1")];
    assert!(rm.matches("/", b"GET", h.as_slice(), "q=1&Q=3"));
    assert!(!rm.matches("/", b"GET", h.as_slice(), "q=2&Q=3"));
}

/// xorshift64*: a small deterministic generator for the randomized test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, l: &[T]) -> T {
        l[self.below(l.len())]
    }
}

fn random_entry(rng: &mut Rng, i: usize) -> RouteEntry {
    const HOSTNAMES: &[&str] = &[
        "a.example.com",
        "b.example.com",
        "*.example.com",
        "*.a.example.com",
        "x.a.example.com",
        "*.com",
    ];
    const PATHS: &[&str] = &["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b", ""];
    const REGEXES: &[&str] = &["/a/.*", "/[ab]+", "/a/b/c", "/.*", "/a/b?"];
    let hostnames = (0..rng.below(3))
        .map(|_| host(rng.pick(HOSTNAMES)))
        .collect();
    let path = match rng.below(3) {
        0 => exact(rng.pick(PATHS)),
        1 => prefix(rng.pick(PATHS)),
        _ => regex(rng.pick(REGEXES)),
    };
    let method = [None, Some(Method::GET), Some(Method::POST)][rng.below(3)].clone();
    let headers = (0..rng.below(3))
        .map(|_| match rng.below(4) {
            0 => hm("x", "1"),
            1 => hm("x", "2"),
            2 => hr("y", "[0-9]+"),
            _ => hm("Y", "1"),
        })
        .collect();
    let query = (0..rng.below(3))
        .map(|_| match rng.below(3) {
            0 => qm("q", "1"),
            1 => qr("q", "[a-z]"),
            _ => qm("r", "x y"),
        })
        .collect();
    RouteEntry {
        hostnames,
        rule_match: RouteMatch::new(path, method, headers, query),
        route: RouteRef {
            namespace: rng.pick(&["a", "b", "a-b"]).to_string(),
            name: rng.pick(&["r1", "r2", "r10"]).to_string(),
            rule_index: rng.below(3) as u32,
            match_index: rng.below(2) as u32,
            created: rng.below(3) as i64,
        },
        target: TargetId(i as u32),
    }
}

#[test]
fn indexed_lookup_agrees_with_reference() {
    const HOSTS: &[&str] = &[
        "a.example.com",
        "b.example.com",
        "x.a.example.com",
        "y.x.a.example.com",
        "example.com",
        "other.org",
        "A.EXAMPLE.com:80",
    ];
    const PATHS: &[&str] = &[
        "/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/a/b/c/d", "/b", "/abc", "/a//b", "",
    ];
    const QUERIES: &[&str] = &[
        "",
        "q=1",
        "q=z",
        "q=1&q=z",
        "r=x%20y",
        "q=%31&r=x+y",
        "r=x y&q=b",
    ];
    const METHODS: &[&[u8]] = &[b"GET", b"POST", b"PUT"];
    let header_sets: &[Hdrs<'_>] = &[
        vec![],
        vec![("x", b"1")],
        vec![("X", b"2"), ("y", b"42")],
        vec![("x", b"1"), ("x", b"2")],
        vec![("y", b"1"), ("x", b"1")],
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut matched = 0;
    for _ in 0..300 {
        let entries: Vec<RouteEntry> = (0..1 + rng.below(40))
            .map(|i| random_entry(&mut rng, i))
            .collect();
        let table = GatewayRouteTable::build(entries.clone());
        for _ in 0..200 {
            let (h, p, q) = (rng.pick(HOSTS), rng.pick(PATHS), rng.pick(QUERIES));
            let (method, hdrs) = (
                rng.pick(METHODS),
                header_sets[rng.below(header_sets.len())].as_slice(),
            );
            let want = lookup_naive(&entries, h, p, method, hdrs, q).map(|e| e.target);
            let got = table.lookup(h, p, method, hdrs, q).map(|e| e.target);
            assert_eq!(got, want, "{h} {p}?{q} {hdrs:?} in {entries:#?}");
            matched += usize::from(got.is_some());
        }
    }
    assert!(
        matched > 10_000,
        "too few matching requests ({matched}) to be meaningful"
    );
}
