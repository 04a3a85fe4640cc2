//! `gateway`: what Gateway API routing costs. One lb process serves the same
//! backend twice: through its Ingress listener (a default backend) and
//! through a Gateway listener whose HTTPRoute table holds 100 routes (host,
//! path, method and header matches, and a RequestHeaderModifier on the route
//! taken). wrk runs against both, HAProxy, nginx and the direct path in
//! interleaved rounds; the ratios of interest are lb-gateway / lb-ingress
//! and lb-gateway / HAProxy and nginx.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::Options;
use super::http1::{WrkTarget, wrk_rounds};
use crate::harness::{Proc, ports_free, scratch, wait_listening};
use crate::proxies::{
    lb_config, other_cores, ports, sibling, start_haproxy, start_nginx, web_manifests,
};
use crate::report::{figures_table, ratio, ratios};

/// The Gateway listener's port (on 127.0.0.1).
const GATEWAY_PORT: u16 = 19505;
/// Routes in the Gateway's table besides the one the load takes.
const OTHER_ROUTES: usize = 99;
/// The Host the load sends.
const HOST: &str = "bench.test";

/// The Gateway objects: our class, a Gateway on 127.0.0.1:[`GATEWAY_PORT`],
/// 99 routes for other hosts and paths, and the route the load takes.
fn gateway_manifests() -> String {
    let mut out = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: lb}}\nspec: {{controllerName: lb.example.com/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: bench, namespace: default}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: 127.0.0.1}}]\n  listeners: [{{name: http, port: {GATEWAY_PORT}, protocol: HTTP}}]\n"
    );
    for i in 0..OTHER_ROUTES {
        let _ = write!(
            out,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: other-{i}, namespace: default}}\nspec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [h{i}.bench.test, \"*.w{i}.bench.test\"]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /api/v{i}}}, method: GET}}, {{headers: [{{name: x-tenant, value: t{i}}}]}}]\n    backendRefs: [{{name: web, port: 80}}]\n  - matches: [{{path: {{type: Exact, value: /fixed}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
        );
    }
    let _ = write!(
        out,
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: taken, namespace: default}}\nspec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{HOST}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /admin}}, headers: [{{name: x-admin, value: \"1\"}}]}}]\n    backendRefs: [{{name: web, port: 80}}]\n  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{add: [{{name: x-route, value: gateway}}]}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
    );
    out
}

/// Runs the scenario and returns its report section.
pub fn run(o: &Options) -> Result<String, String> {
    let mut needed = ports::ALL.to_vec();
    needed.push(GATEWAY_PORT);
    ports_free(&needed)?;
    let dir = scratch("gateway");
    let cores = other_cores();
    let _backend = o.backend.start(&dir)?;
    let manifests = format!(
        "{}---\n{}",
        web_manifests(ports::BACKEND),
        gateway_manifests()
    );
    let cfg = lb_config(&dir, &manifests)?;
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    let lb = Proc::start("lb", "0", &sibling("lb")?, &args).map_err(|e| e.to_string())?;
    let (haproxy, nginx) = (start_haproxy(&dir)?, start_nginx(&dir)?);
    let listening = [
        ports::BACKEND,
        ports::LB,
        GATEWAY_PORT,
        ports::HAPROXY,
        ports::NGINX,
    ];
    for port in listening {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !wait_listening(addr, Duration::from_secs(20)) {
            return Err(format!("nothing listening on {addr}"));
        }
    }
    let target = |pid: Option<u32>, port: u16| WrkTarget {
        pid,
        base: format!("http://127.0.0.1:{port}"),
    };
    let names = ["direct", "lb", "lb-gateway", "haproxy", "nginx"];
    let targets = [
        target(None, ports::BACKEND),
        target(Some(lb.pid()), ports::LB),
        target(Some(lb.pid()), GATEWAY_PORT),
        target(Some(haproxy.pid()), ports::HAPROXY),
        target(Some(nginx.pid()), ports::NGINX),
    ];
    let host = format!("Host: {HOST}");
    let figs = wrk_rounds(o, &cores, &targets, "/fixed", &[host.as_str()])?;
    let mut out = format!(
        "backend: {}\nlb-gateway: the same lb process through a Gateway listener whose table holds {} HTTPRoutes\n",
        o.backend.name(),
        OTHER_ROUTES + 1
    );
    let _ = writeln!(
        out,
        "\n### `/fixed` with `{host}` ({} rounds x {} s, {} connections, median)\n",
        o.rounds, o.seconds, o.connections
    );
    out.push_str(&figures_table(&names, &figs));
    let (ingress, gw, ha, ng) = (&figs[1], &figs[2], &figs[3], &figs[4]);
    let _ = writeln!(
        out,
        "\nratios: req/s lb-gateway/lb {:.2}, lb-gateway/haproxy {:.2}, lb-gateway/nginx {:.2}; CPU/req lb-gateway/lb {:.2}, lb-gateway/haproxy {:.2}, lb-gateway/nginx {:.2}",
        ratio(&gw.rps, &ingress.rps),
        ratio(&gw.rps, &ha.rps),
        ratio(&gw.rps, &ng.rps),
        ratio(&gw.cpu_us_per_req, &ingress.cpu_us_per_req),
        ratio(&gw.cpu_us_per_req, &ha.cpu_us_per_req),
        ratio(&gw.cpu_us_per_req, &ng.cpu_us_per_req),
    );
    if ratios(&names, &figs).is_none() {
        return Err("figures missing for lb, haproxy or nginx".into());
    }
    drop((lb, haproxy, nginx));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_hold_the_gateway_and_every_route() {
        let m = gateway_manifests();
        assert_eq!(m.matches("kind: HTTPRoute").count(), OTHER_ROUTES + 1);
        assert!(m.contains(&format!("port: {GATEWAY_PORT}")));
        assert!(m.contains(&format!("hostnames: [{HOST}]")));
    }
}
