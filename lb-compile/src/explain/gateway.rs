//! `lb explain --gateway ADDR`: how a request arriving on a Gateway port
//! would be routed. The answer comes from the compiled snapshot the data
//! plane serves: the port's merged Listeners (most specific hostname
//! first), the Listener's HTTPRoute/GRPCRoute table lookup (the data
//! plane's own `GatewayRouteTable::lookup`), the candidates in precedence
//! order with whether each one's conditions hold, and the matched rule's
//! action: redirect Location, fixed status, filters, weighted backends and
//! their endpoints.

use std::fmt;
use std::net::SocketAddr;

use lb_http::ApplianceSnapshot;
use lb_http::gateway::{
    GatewayPort, PathModifier, PortProtocol, RedirectFrom, RouteEntry, RuleAction,
    precedence::candidates, redirect_location, split_target,
};
use lb_http::route::normalize_host;
use serde::Serialize;

use crate::explain::Request;

/// The explanation of one request on a Gateway port.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayExplained {
    /// The request as given.
    pub request: Request,
    /// The port asked about.
    pub port: SocketAddr,
    /// `HTTP`, `HTTPS` or `TLS`; `None` when no Gateway port is bound there.
    pub protocol: Option<PortProtocol>,
    /// Every Listener on the port, `namespace/gateway/listener (hostname)`,
    /// most specific first.
    pub listeners: Vec<String>,
    /// The Listener that takes the request's host.
    pub listener: Option<String>,
    /// The host as the data plane normalises it.
    pub host: String,
    /// The path routing sees.
    pub path: String,
    /// The query string (query matches read it).
    pub query: String,
    /// Route matches whose hostnames cover the host, in precedence order.
    pub candidates: Vec<Candidate>,
    /// The match that routes the request.
    pub matched: Option<String>,
    /// What the matched rule does.
    pub action: Option<ActionReport>,
    /// What the data plane answers.
    pub result: String,
}

/// One route match considered, in precedence order.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// `HTTPRoute ns/name rule R match M`.
    pub route: String,
    /// The match conditions as compiled.
    pub conditions: serde_json::Value,
    /// Whether all conditions hold for the request.
    pub holds: bool,
}

/// The matched rule's action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    /// The rule's name.
    pub rule: String,
    /// The compiled action (filters, backends, timeouts).
    pub compiled: serde_json::Value,
    /// The backends with their names and endpoint counts, and their weights.
    pub backends: Vec<String>,
    /// The redirect Location, when the rule redirects.
    pub location: Option<String>,
}

fn route_label(e: &RouteEntry) -> String {
    format!(
        "{}/{} rule {} match {}",
        e.route.namespace, e.route.name, e.route.rule_index, e.route.match_index
    )
}

fn listener_label(name: &str, hostname: Option<String>) -> String {
    match hostname {
        Some(h) => format!("{name} ({h})"),
        None => format!("{name} (any host)"),
    }
}

/// Explains `req` arriving on the Gateway port bound at `addr`.
pub fn explain_gateway(
    snap: &ApplianceSnapshot,
    addr: SocketAddr,
    req: &Request,
) -> GatewayExplained {
    let mut host = String::new();
    normalize_host(&req.host, &mut host);
    // Routing sees the normalised path (query kept as sent); a path the
    // data plane cannot normalise gets 400 before any Listener is chosen.
    let normalized = lb_http::path::normalize_target(&req.path);
    let target = normalized.as_deref().unwrap_or(&req.path);
    let (path, query) = split_target(target);
    let mut out = GatewayExplained {
        request: req.clone(),
        port: addr,
        protocol: None,
        listeners: Vec::new(),
        listener: None,
        host: host.clone(),
        path: path.to_owned(),
        query: query.to_owned(),
        candidates: Vec::new(),
        matched: None,
        action: None,
        result: format!("no Gateway listener is bound at {addr}; the connection is refused"),
    };
    let Some((key, port)) = snap.gateway.port(addr) else {
        return out;
    };
    out.protocol = Some(port.protocol);
    out.listeners = port
        .listeners
        .iter()
        .map(|l| listener_label(&l.name, l.hostname.as_ref().map(|h| h.to_string())))
        .collect();
    if port.protocol == PortProtocol::TlsPassthrough {
        out.result = passthrough_result(port, &host);
        return out;
    }
    if let Err(e) = normalized {
        out.result = format!("400: {}", e.as_str());
        return out;
    }
    let Some(listener) = port.listener(&host) else {
        out.result = "404: no Listener on this port takes this host".into();
        return out;
    };
    out.listener = Some(listener_label(
        &listener.name,
        listener.hostname.as_ref().map(|h| h.to_string()),
    ));
    let headers: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let method = req.method.as_bytes();
    for e in candidates(listener.routes.entries(), &host) {
        out.candidates.push(Candidate {
            route: route_label(e),
            conditions: serde_json::to_value(&e.rule_match).unwrap_or_default(),
            holds: e.rule_match.matches(path, method, &headers[..], query),
        });
    }
    let Some(entry) = listener
        .routes
        .lookup(&host, path, method, &headers[..], query)
    else {
        out.result = "404: no route match holds".into();
        return out;
    };
    out.matched = Some(route_label(entry));
    let Some(action) = snap.gateway.action(entry.target) else {
        out.result = "500: the rule has no action (compiler bug)".into();
        return out;
    };
    let from = RedirectFrom {
        tls: port.protocol == PortProtocol::Https,
        host: &host,
        listener_port: key.port(),
        path,
        query,
    };
    let location = action
        .redirect
        .as_ref()
        .map(|r| redirect_location(r, entry.rule_match.path(), &from));
    out.result = result(snap, action, location.as_deref());
    out.action = Some(ActionReport {
        rule: action.name.clone(),
        compiled: serde_json::to_value(action).unwrap_or_default(),
        backends: backend_lines(snap, action),
        location,
    });
    out
}

fn passthrough_result(port: &GatewayPort, sni: &str) -> String {
    let Some(listener) = port.listener(sni) else {
        return "closed: no Listener takes this server name".into();
    };
    match listener
        .sni_routes
        .iter()
        .find(|r| r.hostnames.is_empty() || r.hostnames.iter().any(|h| h.matches(sni)))
    {
        Some(r) => format!(
            "TLS passed through unopened to TLSRoute {}/{} rule {}",
            r.route.namespace, r.route.name, r.route.rule_index
        ),
        None => "closed: no TLSRoute takes this server name".into(),
    }
}

fn backend_lines(snap: &ApplianceSnapshot, action: &RuleAction) -> Vec<String> {
    let total = action.total_weight().max(1);
    action
        .backends
        .iter()
        .map(|b| {
            let share = u64::from(b.weight) * 100 / total;
            match b.backend.and_then(|id| snap.backend(id)) {
                Some(be) => format!(
                    "{} weight {} ({share}%), {} endpoints",
                    be.name,
                    b.weight,
                    be.endpoints.len()
                ),
                None => format!(
                    "invalid backendRef weight {} ({share}%): answers 500",
                    b.weight
                ),
            }
        })
        .collect()
}

fn result(snap: &ApplianceSnapshot, action: &RuleAction, location: Option<&str>) -> String {
    if let Some(status) = action.fixed_status {
        return format!("{status}: the rule has an unsupported filter");
    }
    if let (Some(r), Some(loc)) = (&action.redirect, location) {
        return format!("{} redirect to {loc}", r.status);
    }
    if action.total_weight() == 0 {
        return "500: no backendRef has weight".into();
    }
    let usable = action
        .backends
        .iter()
        .filter(|b| b.weight > 0)
        .filter(|b| {
            b.backend
                .and_then(|id| snap.backend(id))
                .is_some_and(|be| !be.endpoints.is_empty())
        })
        .count();
    let rewrite = match action.rewrite.as_ref().and_then(|r| r.path.as_ref()) {
        Some(PathModifier::ReplaceFullPath(p)) => format!(", path rewritten to {p}"),
        Some(PathModifier::ReplacePrefixMatch(p)) => format!(", matched prefix replaced by {p}"),
        None => String::new(),
    };
    format!(
        "proxied to one of {} weighted backends ({usable} with endpoints){rewrite}",
        action.backends.len()
    )
}

impl fmt::Display for GatewayExplained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.request;
        writeln!(f, "request    {} {} {}", r.method, r.host, r.path)?;
        for (k, v) in &r.headers {
            writeln!(f, "           {k}: {v}")?;
        }
        match self.protocol {
            Some(p) => {
                let p = match p {
                    PortProtocol::Http => "HTTP",
                    PortProtocol::Https => "HTTPS",
                    PortProtocol::TlsPassthrough => "TLS (passthrough)",
                };
                writeln!(f, "gateway    {} {p}", self.port)?
            }
            None => writeln!(f, "gateway    {} (not bound)", self.port)?,
        }
        for l in &self.listeners {
            let chosen = self.listener.as_deref() == Some(l.as_str());
            writeln!(
                f,
                "  listener {l}{}",
                if chosen { "   <- takes the host" } else { "" }
            )?;
        }
        writeln!(f, "host       {}", self.host)?;
        writeln!(f, "path       {}", self.path)?;
        if !self.query.is_empty() {
            writeln!(f, "query      {}", self.query)?;
        }
        if !self.candidates.is_empty() {
            writeln!(f, "candidates (precedence order)")?;
            for (i, c) in self.candidates.iter().enumerate() {
                let chosen = self.matched.as_deref() == Some(c.route.as_str());
                let state = match (chosen, c.holds) {
                    (true, _) => "matched",
                    (false, true) => "holds, lower precedence",
                    (false, false) => "does not hold",
                };
                writeln!(f, "  {}. {:<44} {state}", i + 1, c.route)?;
                writeln!(f, "     {}", c.conditions)?;
            }
        }
        if let Some(m) = &self.matched {
            writeln!(f, "matched    {m}")?;
        }
        if let Some(a) = &self.action {
            for b in &a.backends {
                writeln!(f, "backend    {b}")?;
            }
            if let Some(loc) = &a.location {
                writeln!(f, "location   {loc}")?;
            }
        }
        writeln!(f, "result     {}", self.result)?;
        let verdict = if self.matched.is_some() {
            "routed"
        } else {
            "no route"
        };
        writeln!(f, "lb explain: {verdict}")
    }
}
