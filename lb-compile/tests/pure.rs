//! lb-compile stays pure: its manifest names no async runtime, socket,
//! file-watching or Kubernetes client crate and not lb-control, and its
//! library sources (test code aside) read no file, environment variable or
//! clock and open no socket or process. `#![forbid(unsafe_code)]` in
//! lib.rs keeps unsafe code out.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` without comment lines and from the first `#[cfg(test)]` on.
fn code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_manifest_names_no_runtime_or_io_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|d| d.split("\n[").next())
        .expect("a [dependencies] table");
    for forbidden in [
        "tokio",
        "kube",
        "notify",
        "nix",
        "libc",
        "socket2",
        "mio",
        "lb-control",
        "hyper",
    ] {
        let named = deps
            .lines()
            .any(|l| l.trim_start().split(['=', '.', ' ']).next() == Some(forbidden));
        assert!(!named, "lb-compile depends on {forbidden}:\n{deps}");
    }
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}

#[test]
fn the_library_does_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 20, "{files:?}");
    let io = [
        "std::fs",
        "std::net::Tcp",
        "std::net::Udp",
        "std::os::",
        "std::process",
        "std::env::var",
        "SystemTime::now",
        "Instant::now",
        "File::",
    ];
    let mut found = Vec::new();
    for file in &files {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if name.starts_with("tests") || name.ends_with("_tests") || name == "test_support" {
            continue;
        }
        let text = code(&std::fs::read_to_string(file).expect("readable source"));
        for needle in io {
            if text.contains(needle) {
                found.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "I/O in lb-compile: {found:#?}");
}
