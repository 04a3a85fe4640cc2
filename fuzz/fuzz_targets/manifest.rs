//! Manifest ingest: YAML text (up to three files, separated by a NUL byte)
//! through lb-compile's real parse, store and compile path. No input makes
//! it panic, and compiling is deterministic (the same text gives the same
//! summary, diagnostics and route rules).
#![no_main]

use lb_compile::compile::compile_yaml;
use lb_compile::settings::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files: Vec<&str> = text.splitn(3, '\0').collect();
    let cfg = Settings::default();
    let a = compile_yaml(&cfg, &files);
    let b = compile_yaml(&cfg, &files);
    assert_eq!(a.summary, b.summary);
    assert_eq!(a.diagnostics.len(), b.diagnostics.len());
    assert_eq!(a.status, b.status);
    assert_eq!(a.snapshot.routes.rules(), b.snapshot.routes.rules());
});
