//! Route table micro-benchmarks: one table of 10,000 host matches (every
//! tenth a `*.` wildcard) x 100 paths each (50 Exact, 50 Prefix nested up to
//! 10 segments deep), i.e. one million rules. Measures lookups (exact path,
//! deep prefix, wildcard host, two kinds of miss) and the build of the table.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lb_http::{BackendId, HostMatch, PathKind, RouteTable, RouteTableBuilder, RouteTarget};

const HOSTS: usize = 10_000;
const PATHS: usize = 100;

/// One rule as handed to the builder.
type Rule = (HostMatch, String, PathKind, RouteTarget);

/// Host match `i`: `*.w{i}.example.com` for every tenth, `h{i}.example.com` otherwise.
fn host(i: usize) -> HostMatch {
    if i % 10 == 9 {
        HostMatch::Wildcard(format!("w{i}.example.com"))
    } else {
        HostMatch::Exact(format!("h{i}.example.com"))
    }
}

/// Path `j` of a host: even `j` are Exact `/api/v{j%3}/r{j}`; odd `j` are
/// Prefix chains `/p{j%10}/s1/.../s{j/10}` (1 to 10 segments).
fn path(j: usize) -> (String, PathKind) {
    if j.is_multiple_of(2) {
        (format!("/api/v{}/r{j}", j % 3), PathKind::Exact)
    } else {
        let mut p = format!("/p{}", j % 10);
        for d in 1..=j / 10 {
            p.push_str(&format!("/s{d}"));
        }
        (p, PathKind::Prefix)
    }
}

fn rules() -> Vec<Rule> {
    let mut out = Vec::with_capacity(HOSTS * PATHS);
    for i in 0..HOSTS {
        for j in 0..PATHS {
            let (p, kind) = path(j);
            let target = RouteTarget {
                backend: BackendId((i * PATHS + j) as u32),
                source: format!("Ingress ns-{}/app-{i} rule 0 path {j}", i % 20).into(),
                source_ranges: None,
            };
            out.push((host(i), p, kind, target));
        }
    }
    out
}

fn build(rules: Vec<Rule>) -> RouteTable {
    let mut b = RouteTableBuilder::new();
    for (host, path, kind, target) in rules {
        b.add(host, &path, kind, target)
            .expect("no duplicate rules");
    }
    b.build()
}

fn lookups(c: &mut Criterion) {
    let table = build(rules());
    let cases: [(&str, &str, &str, bool); 6] = [
        ("hit_exact", "h1234.example.com", "/api/v1/r40", true),
        (
            "hit_deep_prefix",
            "h1234.example.com",
            "/p9/s1/s2/s3/s4/s5/s6/s7/s8/s9/page/index.html",
            true,
        ),
        (
            "hit_with_query",
            "h1234.example.com",
            "/api/v1/r40?q=1",
            true,
        ),
        (
            "hit_wildcard_host",
            "x.w1239.example.com",
            "/api/v1/r40",
            true,
        ),
        ("miss_path", "h1234.example.com", "/nothing/here", false),
        ("miss_host", "nope.example.org", "/api/v1/r40", false),
    ];
    let mut g = c.benchmark_group("route_lookup_10k_hosts_x_100_paths");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, host, path, hit) in cases {
        assert_eq!(table.lookup(host, path).is_some(), hit, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| table.lookup(black_box(host), black_box(path)))
        });
    }
    g.finish();
}

fn build_time(c: &mut Criterion) {
    let input = rules();
    let mut g = c.benchmark_group("route_build_10k_hosts_x_100_paths");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("build_1m_rules", |b| {
        b.iter_batched(|| input.clone(), build, BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, lookups, build_time);
criterion_main!(benches);
