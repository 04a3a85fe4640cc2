//! The load path shared by `lb serve`, `lb check` and `lb explain`: read
//! the sources, build the store, compile, and merge every diagnostic, so
//! check and serve agree by construction.

use std::collections::HashSet;

use lb_compile::compile::{Compiled, compile_with};
use lb_compile::diag::Diagnostic;
use lb_compile::store::Store;
use lb_compile::vip_alloc::Vips;

use crate::config::Config;
use crate::source::files::FileSource;
use lb_compile::raw::RawObject;

use crate::source::Loaded;

/// Loads every source, builds the store and compiles it. The result's
/// diagnostics hold everything: load, model and compile findings, in that order.
/// An object that became invalid keeps the version of the previous load.
pub fn load_and_compile(cfg: &Config, source: &mut FileSource) -> Compiled {
    load_and_compile_with(cfg, source, Vec::new(), &Vips::default())
}

/// [`load_and_compile`] with the objects of the Kubernetes API server
/// source added. An object (kind, namespace, name) that both the files and
/// the API server hold is a warning; the API server's object wins. `prior`
/// is the previous compile's VIP allocation (see [`lb_compile::vip_alloc`]).
pub fn load_and_compile_with(
    cfg: &Config,
    source: &mut FileSource,
    api_objects: Vec<RawObject>,
    prior: &Vips,
) -> Compiled {
    let mut loaded = source.load();
    combine(&mut loaded, api_objects);
    let (store, store_diags) =
        Store::rebuild_with(&loaded.objects, &mut loaded.typed, source.take_last_store());
    let mut compiled = compile_with(&store, &cfg.settings(), prior);
    source.remember(store);
    let mut all = loaded.diagnostics;
    all.extend(store_diags);
    all.append(&mut compiled.diagnostics);
    compiled.diagnostics = all;
    compiled
}

/// Kinds without a namespace: for them a missing namespace is no namespace,
/// for every other kind it is `default`.
const CLUSTER_SCOPED: &[&str] = &["Namespace", "IngressClass", "GatewayClass"];

/// Adds the API server's objects to the files' ones; a file object that the
/// API server also holds is dropped with a warning.
fn combine(loaded: &mut Loaded, api_objects: Vec<RawObject>) {
    if api_objects.is_empty() {
        return;
    }
    let key = |o: &RawObject| {
        let ns = if CLUSTER_SCOPED.contains(&o.kind.as_str()) {
            None
        } else {
            Some(o.namespace.clone().unwrap_or_else(|| "default".into()))
        };
        (o.kind.clone(), ns, o.name.clone())
    };
    let from_api: HashSet<_> = api_objects.iter().map(key).collect();
    let diagnostics = &mut loaded.diagnostics;
    loaded.objects.retain(|o| {
        if !from_api.contains(&key(o)) {
            return true;
        }
        diagnostics.push(o.diagnostic(Diagnostic::warning(
            "the Kubernetes API server also has this object; using the API server's and ignoring this one",
        )));
        false
    });
    loaded.objects.extend(api_objects);
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use lb_compile::compile::compile_yaml;
    use lb_compile::diag::Severity;

    use super::*;
    use crate::check::check;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-check-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        dir
    }

    fn write_config(dir: &Path) -> PathBuf {
        let path = dir.join("lb.toml");
        let cfg = format!(
            "[ingress]\nclass = \"lb\"\nhttp = [\"127.0.0.1:8080\"]\n[sources]\nfiles = [\"{}\"]\n",
            dir.join("manifests").display()
        );
        std::fs::write(&path, cfg).unwrap();
        path
    }

    const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: good}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}\n";
    const BAD: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: ok, namespace: team}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: b.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: broken, namespace: team}\nspec:\n  ingressClassName: lb\n  rules:\n  - http:\n      paths:\n      - {path: /x, pathType: Foo, backend: {service: {name: s, port: {number: 80}}}}\n";

    #[test]
    fn compile_yaml_agrees_with_the_file_path() {
        let dir = scratch("yaml");
        std::fs::write(dir.join("manifests/good.yaml"), GOOD).unwrap();
        std::fs::write(dir.join("manifests/bad.yaml"), BAD).unwrap();
        let cfg = Config::load(&write_config(&dir)).unwrap();
        let mut source = FileSource::new(cfg.sources.files.clone());
        let from_files = load_and_compile(&cfg, &mut source);
        let from_text = compile_yaml(&cfg.settings(), &[BAD, GOOD]);
        assert_eq!(from_text.summary, from_files.summary);
        assert_eq!(
            from_text.diagnostics.len(),
            from_files.diagnostics.len(),
            "{:?}",
            from_text.diagnostics
        );
        assert!(from_text.summary.invalid > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn clean_config_exits_zero() {
        let dir = scratch("clean");
        std::fs::write(dir.join("manifests/good.yaml"), GOOD).unwrap();
        let report = check(&write_config(&dir));
        assert_eq!(report.exit_code(), 0, "{report}");
        let text = report.to_string();
        assert!(text.contains("lb check: ok"), "{text}");
        assert!(text.contains("Ingress"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_ingress_is_located_and_others_still_compile() {
        let dir = scratch("invalid");
        std::fs::write(dir.join("manifests/good.yaml"), GOOD).unwrap();
        std::fs::write(dir.join("manifests/bad.yaml"), BAD).unwrap();
        let cfg = Config::load(&write_config(&dir)).unwrap();
        let mut source = FileSource::new(cfg.sources.files.clone());
        let compiled = load_and_compile(&cfg, &mut source);
        let errors: Vec<_> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect();
        assert_eq!(errors.len(), 1, "{:?}", compiled.diagnostics);
        let d = errors[0];
        assert_eq!(
            d.file.as_deref(),
            Some(dir.join("manifests/bad.yaml").as_path())
        );
        assert_eq!(d.document, Some(1));
        assert_eq!(d.kind.as_deref(), Some("Ingress"));
        assert_eq!(d.namespace.as_deref(), Some("team"));
        assert_eq!(d.name.as_deref(), Some("broken"));
        assert_eq!(
            d.field.as_deref(),
            Some("spec.rules[0].http.paths[0].pathType")
        );
        // The valid Ingresses in both files compile.
        let routes = &compiled.snapshot.routes;
        assert!(routes.lookup("a.example.com", "/").is_some());
        assert!(routes.lookup("b.example.com", "/").is_some());
        assert_eq!(compiled.summary.invalid, 1);
        assert_eq!(check(&dir.join("lb.toml")).exit_code(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_yaml_file_keeps_serving_its_previous_routes() {
        let dir = scratch("keep");
        let file = dir.join("manifests/good.yaml");
        std::fs::write(&file, GOOD).unwrap();
        let cfg = Config::load(&write_config(&dir)).unwrap();
        let mut source = FileSource::new(cfg.sources.files.clone());
        assert!(load_and_compile(&cfg, &mut source).diagnostics.is_empty());
        std::fs::write(&file, "{{{ this is not yaml").unwrap();
        let compiled = load_and_compile(&cfg, &mut source);
        assert!(
            compiled
                .snapshot
                .routes
                .lookup("a.example.com", "/")
                .is_some()
        );
        assert_eq!(compiled.diagnostics.len(), 1);
        assert_eq!(compiled.diagnostics[0].severity, Severity::Error);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unusable_config_exits_two() {
        let dir = scratch("badcfg");
        let path = dir.join("lb.toml");
        std::fs::write(&path, "[ingress]\nklass = \"lb\"\n").unwrap();
        let report = check(&path);
        assert_eq!(report.exit_code(), 2);
        assert!(report.to_string().contains("klass"), "{report}");
        assert_eq!(check(&dir.join("missing.toml")).exit_code(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn api_object_wins_over_the_same_file_object() {
        let dir = scratch("combine");
        std::fs::write(dir.join("manifests/good.yaml"), GOOD).unwrap();
        let cfg = Config::load(&write_config(&dir)).unwrap();
        let mut source = FileSource::new(cfg.sources.files.clone());
        let mut api = lb_compile::manifests::objects_from_str(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\nspec: {ports: [{port: 80}]}\n",
            Path::new("api.yaml"),
        )
        .0
        .remove(0);
        api.origin = lb_compile::raw::Origin::kubernetes();
        let compiled = load_and_compile_with(&cfg, &mut source, vec![api], &Vips::default());
        let warnings: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("warning: "), "{warnings:?}");
        assert!(
            warnings[0].contains("good.yaml doc 0: Service s: "),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("API server's"), "{warnings:?}");
        // The Ingress from the file still routes to the API server's Service.
        assert!(
            compiled
                .snapshot
                .routes
                .lookup("a.example.com", "/")
                .is_some()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_kind_is_only_a_warning() {
        let dir = scratch("unknown");
        std::fs::write(
            dir.join("manifests/w.yaml"),
            "apiVersion: x.io/v1\nkind: Widget\nmetadata: {name: w}\n",
        )
        .unwrap();
        let report = check(&write_config(&dir));
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.diagnostics.len(), 1);
        assert_eq!(report.diagnostics[0].severity, Severity::Warning);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
