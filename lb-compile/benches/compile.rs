//! Control-plane micro-benchmarks on 10,000 objects (Services,
//! EndpointSlices and Ingresses in equal numbers, the `scale` scenario's
//! mix): [`compile`] of a built store, and for comparison the step before it,
//! [`Store::build`] (typing and validating the raw objects); and `compile`
//! on 100,000 objects. The objects are
//! generated in memory and parsed from YAML the way the file source does.

use std::path::PathBuf;
use std::time::Duration;

use bench::scenarios::scale::object_docs;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lb_compile::compile::compile;
use lb_compile::raw::{Document, Origin, RawObject};
use lb_compile::settings::Settings;
use lb_compile::store::Store;

const OBJECTS: usize = 10_000;

// The allocator lb runs with (lb-control's main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One YAML document as the file source reads it: YAML value, then JSON.
fn raw(doc: &str, document: usize) -> RawObject {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).expect("valid YAML");
    let value = serde_json::to_value(yaml).expect("JSON-compatible YAML");
    let field = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let meta = &value["metadata"];
    RawObject {
        kind: field(&value["kind"]).expect("kind"),
        api_version: field(&value["apiVersion"]).expect("apiVersion"),
        namespace: field(&meta["namespace"]),
        name: field(&meta["name"]).expect("name"),
        origin: Origin::file(PathBuf::from("bench.yaml"), document),
        doc: Document::from_value(value),
    }
}

/// The `scale` mix of `n` objects, read as the file source reads them.
fn raws(n: usize) -> Vec<RawObject> {
    object_docs(n)
        .iter()
        .enumerate()
        .map(|(i, d)| raw(d, i))
        .collect()
}

fn benches_10k(c: &mut Criterion) {
    let raws = raws(OBJECTS);
    let cfg = Settings::default();
    let (store, diags) = Store::build(&raws);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(store.len(), OBJECTS);
    let compiled = compile(&store, &cfg);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:?}",
        compiled.diagnostics
    );
    assert_eq!(compiled.summary.ingresses_served, OBJECTS / 3);

    let mut g = c.benchmark_group("control_10k_objects");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("compile", |b| {
        b.iter_with_large_drop(|| compile(&store, &cfg))
    });
    g.bench_function("store_build", |b| {
        b.iter_with_large_drop(|| Store::build(&raws))
    });
    g.finish();
}

/// `compile` alone at 100,000 objects (the target: at most 1 s).
fn compile_100k(c: &mut Criterion) {
    let cfg = Settings::default();
    let (store, diags) = Store::build(&raws(100_000));
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(store.len(), 100_000);
    let mut g = c.benchmark_group("control_100k_objects");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(12))
        .warm_up_time(Duration::from_secs(2));
    // One compile's output at a time (dropped outside the timing), as in lb.
    g.bench_function("compile", |b| {
        b.iter_batched(|| (), |()| compile(&store, &cfg), BatchSize::PerIteration)
    });
    g.finish();
}

criterion_group!(benches, benches_10k, compile_100k);
criterion_main!(benches);
