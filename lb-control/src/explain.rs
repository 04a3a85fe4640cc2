//! `lb explain`: loads and compiles the configuration and objects as `lb
//! check` and `lb serve` do, then asks the compiler's
//! [`lb_compile::explain`] which listener, rule, backend and endpoints the
//! request would get.

use std::path::Path;

use lb_compile::explain::{Report, Request, explain_compiled, gateway};

use crate::config::Config;
use crate::pipeline::load_and_compile;
use crate::source::files::FileSource;

/// Runs `lb explain` for `req` against the configuration at `config_path`.
pub fn explain(config_path: &Path, req: &Request) -> Report {
    let cfg = match Config::load(config_path) {
        Ok(cfg) => cfg,
        Err(e) => {
            return Report {
                exit_code: 2,
                config_error: Some(e.to_string()),
                explained: None,
                gateway: None,
            };
        }
    };
    let mut source = FileSource::new(cfg.sources.files.clone());
    let compiled = load_and_compile(&cfg, &mut source);
    if let Some(addr) = req.gateway {
        let g = gateway::explain_gateway(&compiled.snapshot, addr, req);
        return Report {
            exit_code: if g.matched.is_some() { 0 } else { 1 },
            config_error: None,
            explained: None,
            gateway: Some(g),
        };
    }
    let explained = explain_compiled(
        &cfg.settings(),
        source.last_store(),
        &compiled.snapshot,
        &compiled.diagnostics,
        req,
    );
    Report {
        exit_code: if explained.matched.is_some() && explained.result.status != Some(400) {
            0
        } else {
            1
        },
        config_error: None,
        explained: Some(explained),
        gateway: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use lb_compile::explain::Listener;
    use lb_http::PathKind;

    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-explain-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        dir
    }

    const OBJECTS: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80, name: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.0.0.3]
  conditions: {ready: false}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: default}
spec:
  ingressClassName: lb
  rules:
  - host: www.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /app, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /gone, pathType: Exact, backend: {service: {name: missing, port: {number: 80}}}}
";

    fn setup(tag: &str) -> PathBuf {
        let dir = scratch(tag);
        std::fs::write(dir.join("manifests/objects.yaml"), OBJECTS).unwrap();
        let path = dir.join("lb.toml");
        let cfg = format!(
            "[ingress]\nhttp = [\"127.0.0.1:8080\"]\n[sources]\nfiles = [\"{}\"]\n",
            dir.join("manifests").display()
        );
        std::fs::write(&path, cfg).unwrap();
        path
    }

    fn request(host: &str, path: &str, listener: Listener) -> Request {
        Request {
            method: "GET".into(),
            host: host.into(),
            path: path.into(),
            headers: vec![("X-A".into(), "1".into())],
            listener,
            gateway: None,
        }
    }

    #[test]
    fn explains_match_backend_endpoints_and_misses() {
        let config = setup("match");
        let report = explain(
            &config,
            &request("WWW.example.com:80", "/app/x?q", Listener::Http),
        );
        assert_eq!(report.exit_code, 0);
        let x = report.explained.as_ref().unwrap();
        assert_eq!(x.host, "www.example.com");
        assert_eq!(x.path, "/app/x");
        assert_eq!(x.query.as_deref(), Some("q"));
        let m = x.matched.as_ref().unwrap();
        assert_eq!(m.path_type.as_deref(), Some("ImplementationSpecific"));
        assert_eq!(m.compiled_as, Some(PathKind::Prefix));
        let o = m.origin.as_ref().unwrap();
        assert_eq!(
            (&*o.name, o.field.as_str()),
            ("site", "spec.rules[0].http.paths[1]")
        );
        let b = x.backend.as_ref().unwrap();
        assert_eq!(b.name, "default/web:80");
        assert_eq!(b.selected, 1);
        let states: Vec<(&str, bool)> = b
            .endpoints
            .iter()
            .map(|e| (e.state.as_str(), e.selected))
            .collect();
        assert_eq!(
            states,
            [
                ("ready", true),
                ("serving, terminating", false),
                ("not ready", false)
            ]
        );
        assert_eq!(x.result.status, None);
        let text = report.to_string();
        assert!(
            text.contains("10.0.0.1:8080          ready (selected)"),
            "{text}"
        );
        assert!(text.contains("compared as Prefix"), "{text}");
        assert!(text.contains("X-A: 1"), "{text}");

        // The Service does not exist: 503, and the warning is shown.
        let report = explain(
            &config,
            &request("www.example.com", "/gone", Listener::Http),
        );
        assert_eq!(report.exit_code, 0);
        let x = report.explained.as_ref().unwrap();
        assert_eq!(x.result.status, Some(503));
        assert!(
            x.diagnostics.iter().any(|d| d.contains("missing")),
            "{:?}",
            x.diagnostics
        );

        // No host matches and there is no default backend: 404.
        let report = explain(&config, &request("other.test", "/", Listener::Http));
        assert_eq!(report.exit_code, 1);
        let x = report.explained.as_ref().unwrap();
        assert_eq!(x.result.status, Some(404));
        assert_eq!(x.decision, "none");
        assert_eq!(x.other_host_rules, 3);

        // No HTTPS listener configured.
        let report = explain(&config, &request("www.example.com", "/", Listener::Https));
        let x = report.explained.as_ref().unwrap();
        assert!(
            x.listener_notes
                .iter()
                .any(|n| n.contains("no [ingress] https listener"))
        );
        let _ = std::fs::remove_dir_all(config.parent().unwrap());
    }

    #[test]
    fn unusable_config_exits_two() {
        let dir = scratch("bad");
        let path = dir.join("lb.toml");
        std::fs::write(&path, "[ingress]\nklass = \"lb\"\n").unwrap();
        let report = explain(&path, &request("a", "/", Listener::Http));
        assert_eq!(report.exit_code, 2);
        assert!(report.to_string().contains("klass"), "{report}");
        assert!(report.to_json().contains("\"config_error\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
