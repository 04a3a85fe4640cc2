//! Maglev micro-benchmarks: table build at the default size for 10, 100 and 1000
//! endpoints, and the per-connection lookup (flow hash + table index), plus a
//! connection-tracking hit for comparison.
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lb_core::conntrack::{ConnTrack, ConnTrackConfig};
use lb_core::flowhash::{FiveTuple, Protocol, flow_hash};
use lb_core::maglev::{DEFAULT_TABLE_SIZE, MaglevEndpoint, MaglevTable};

fn endpoints(n: usize) -> Vec<MaglevEndpoint<SocketAddr>> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080));
            MaglevEndpoint::from_addr(addr, 1)
        })
        .collect()
}

/// Client addresses for the lookup benchmarks.
fn clients(n: u32) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            SocketAddr::from((
                [198, 18, (i >> 8) as u8, i as u8],
                20_000 + (i % 40_000) as u16,
            ))
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    group.sample_size(20);
    for n in [10usize, 100, 1000] {
        let eps = endpoints(n);
        group.bench_with_input(BenchmarkId::new("M=65537", n), &eps, |b, eps| {
            b.iter(|| MaglevTable::new(black_box(eps.clone()), DEFAULT_TABLE_SIZE))
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_lookup");
    let dst: SocketAddr = "203.0.113.10:443".parse().expect("addr");
    let srcs = clients(1024);
    group.throughput(Throughput::Elements(srcs.len() as u64));
    for n in [10usize, 1000] {
        let table = MaglevTable::new(endpoints(n), DEFAULT_TABLE_SIZE).expect("table");
        group.bench_with_input(BenchmarkId::new("flow_hash+index", n), &table, |b, t| {
            b.iter(|| {
                let mut acc = 0usize;
                for &src in &srcs {
                    let h = flow_hash(black_box(src), dst, Protocol::Tcp);
                    acc = acc.wrapping_add(t.index(h).unwrap_or(0));
                }
                acc
            })
        });
    }
    let v6dst: SocketAddr = "[2001:db8::10]:443".parse().expect("addr");
    let v6srcs: Vec<SocketAddr> = (0..1024u16)
        .map(|i| {
            SocketAddr::new(
                format!("2001:db8:1::{i:x}").parse().expect("ip"),
                40_000 + i,
            )
        })
        .collect();
    let table = MaglevTable::new(endpoints(100), DEFAULT_TABLE_SIZE).expect("table");
    group.bench_function("flow_hash+index/ipv6", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for &src in &v6srcs {
                let h = flow_hash(black_box(src), v6dst, Protocol::Tcp);
                acc = acc.wrapping_add(table.index(h).unwrap_or(0));
            }
            acc
        })
    });
    group.finish();
}

fn conntrack(c: &mut Criterion) {
    let mut group = c.benchmark_group("conntrack");
    let dst: SocketAddr = "203.0.113.10:443".parse().expect("addr");
    let keys: Vec<FiveTuple> = clients(1024)
        .into_iter()
        .map(|src| FiveTuple::new(src, dst, Protocol::Tcp))
        .collect();
    group.throughput(Throughput::Elements(keys.len() as u64));
    let table = MaglevTable::new(endpoints(100), DEFAULT_TABLE_SIZE).expect("table");
    let now = Instant::now();
    let mut ct: ConnTrack<FiveTuple, SocketAddr> = ConnTrack::new(ConnTrackConfig::flows(
        1 << 16,
        Duration::from_secs(300),
        Duration::from_secs(30),
    ));
    group.bench_function("lookup_or_insert_hit", |b| {
        b.iter(|| {
            for key in &keys {
                let got =
                    ct.lookup_or_insert(*key, now, || table.get(key.hash64()).map(|e| *e.value()));
                black_box(got);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, build, lookup, conntrack);
criterion_main!(benches);
