//! Memory per object, by kind and by stage, for the `scale` scenario's
//! objects (Services, EndpointSlices, Ingresses): the raw objects as the
//! file source keeps them (YAML text per document), the typed store, and
//! the compile's output (snapshot, status entries, diagnostics). Counts the
//! bytes live in the heap after each stage (requested sizes, without the
//! allocator's own overhead), so the figures are what the stage keeps, not
//! what it touched on the way.
//!
//! `cargo bench -p lb-compile --bench memory [-- OBJECTS]` (default 30,000,
//! a third of each kind).

use std::path::Path;

use lb_compile::compile::compile;
use lb_compile::manifests::objects_from_str;
use lb_compile::settings::Settings;
use lb_compile::store::Store;

// dhat's allocator counts the bytes live (over the system allocator: the
// counts are of the sizes asked for, whichever allocator serves them).
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn live() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

/// Bytes per object, rounded.
fn per(bytes: isize, n: usize) -> String {
    format!("{:>7}", (bytes as f64 / n as f64).round() as i64)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30_000);
    let _profiler = dhat::Profiler::builder()
        .testing()
        .trim_backtraces(Some(4))
        .build();
    let files = bench::scenarios::scale::manifest_files(n);
    let settings = Settings::default();
    println!("bytes per object, {n} objects of the scale mix (live heap after each stage)");
    println!("{:<16}{:>8}{:>8}{:>8}", "kind", "yaml", "raw", "typed");
    let mut total_text = 0;
    for (name, text) in &files {
        let kind = match *name {
            "services.yaml" => "Service",
            "endpointslices.yaml" => "EndpointSlice",
            _ => "Ingress",
        };
        let docs = text.matches("---\n").count();
        total_text += text.len();
        let before = live();
        let (raws, diags) = objects_from_str(text, Path::new(name));
        assert!(diags.is_empty(), "{diags:?}");
        let raw = live() - before;
        let (store, diags) = Store::build(&raws);
        assert!(diags.is_empty(), "{diags:?}");
        let typed = live() - before - raw;
        println!(
            "{kind:<16}{}{}{}",
            per(text.len() as isize, docs),
            per(raw, docs),
            per(typed, docs)
        );
        drop(store);
        drop(raws);
    }
    // The whole mix, compiled.
    let mut raws = Vec::new();
    for (name, text) in &files {
        raws.extend(objects_from_str(text, Path::new(name)).0);
    }
    let (store, _) = Store::build(&raws);
    drop(raws);
    let before = live();
    let mut compiled = compile(&store, &settings);
    let all = live() - before;
    let status = std::mem::take(&mut compiled.status);
    let before_drop = live();
    drop(status);
    let status_bytes = before_drop - live();
    let diagnostics = std::mem::take(&mut compiled.diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    println!(
        "compiled (per object of the mix): {} total, {} status entries, {} snapshot and the rest",
        per(all, n),
        per(status_bytes, n),
        per(all - status_bytes, n)
    );
    println!(
        "manifest text: {} bytes per object",
        per(total_text as isize, n)
    );
}
