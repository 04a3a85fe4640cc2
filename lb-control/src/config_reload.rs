//! What a SIGHUP does with a changed `lb.toml`: the keys a reload can apply
//! take their new values, every other changed key keeps its running value
//! and is named, so no change is ever silently ignored.

use serde_json::Value;

use crate::config::Config;

/// The configuration to run after a reload of `file` over `running`, and
/// the keys (dotted paths such as `http.idle_timeout`) whose change only a
/// restart applies: they keep their running values.
///
/// Applied on reload: `sources.files`, `ingress.class`, `ingress.controller`,
/// `ingress.default_certificate`, `node.zone`, `node.addresses` and every
/// `loadbalancer` key but `interface` (they are read by the compile, which
/// every reload runs). Everything else (listeners, `admin`, `runtime`,
/// `http`, `http2`, `upstream`, `access_log`, `gateway.controller_name`,
/// `node.name`, `sources.kubernetes`, `loadbalancer.interface`) is read once
/// at start.
pub fn on_reload(running: &Config, file: &Config) -> (Config, Vec<String>) {
    let mut next = running.clone();
    next.sources.files.clone_from(&file.sources.files);
    next.ingress.class.clone_from(&file.ingress.class);
    next.ingress.controller.clone_from(&file.ingress.controller);
    next.ingress
        .default_certificate
        .clone_from(&file.ingress.default_certificate);
    next.node.zone.clone_from(&file.node.zone);
    next.node.addresses.clone_from(&file.node.addresses);
    let interface = next.loadbalancer.interface.take();
    next.loadbalancer = file.loadbalancer.clone();
    next.loadbalancer.interface = interface;
    let pending = match (serde_json::to_value(&next), serde_json::to_value(file)) {
        (Ok(a), Ok(b)) => changed_keys(&a, &b),
        // Not expected (the config serialises); say so rather than nothing.
        _ => vec!["(cannot compare the configurations)".to_owned()],
    };
    (next, pending)
}

/// The dotted paths of the leaves where `a` and `b` differ (arrays and
/// scalars are leaves; a key present on one side only counts).
fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out
}

fn walk(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => walk(p, q, &path, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("lb.toml")).expect("valid config")
    }

    #[test]
    fn compile_keys_apply_and_the_rest_is_named() {
        let running = parse("");
        let file = parse(
            "[ingress]\nclass = \"other\"\nhttp = [\"127.0.0.1:9999\"]\n\
             [http]\nidle_timeout = \"5s\"\n\
             [loadbalancer]\npools = [\"10.0.0.0/24\"]\ninterface = \"eth9\"\n\
             [node]\nname = \"n2\"\nzone = \"z\"\n",
        );
        let (next, pending) = on_reload(&running, &file);
        assert_eq!(next.ingress.class, "other");
        assert_eq!(next.loadbalancer.pools, file.loadbalancer.pools);
        assert_eq!(next.node.zone.as_deref(), Some("z"));
        // Restart-only keys keep their running values...
        assert_eq!(next.ingress.http, running.ingress.http);
        assert_eq!(next.http.idle_timeout, running.http.idle_timeout);
        assert_eq!(next.loadbalancer.interface, None);
        assert_eq!(next.node.name, running.node.name);
        // ...and are named, each by its full key.
        assert_eq!(
            pending,
            [
                "http.idle_timeout",
                "ingress.http",
                "loadbalancer.interface",
                "node.name"
            ]
        );
    }

    #[test]
    fn an_unchanged_file_names_nothing() {
        let cfg = parse("[http]\nidle_timeout = \"5s\"\n");
        let (next, pending) = on_reload(&cfg, &cfg.clone());
        assert_eq!(next, cfg);
        assert!(pending.is_empty(), "{pending:?}");
    }
}
