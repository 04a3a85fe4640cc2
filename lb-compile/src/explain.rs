//! `lb explain`: which listener, rule, backend and endpoints a request would
//! get, and why every other rule did not match it.
//!
//! The appliance loads and compiles the configuration and objects exactly
//! as `lb check` and `lb serve` do; the answer comes from the compiled
//! snapshot itself: host normalisation is the data plane's
//! [`normalize_host`], and [`RouteTable::explain`](lb_http::RouteTable::explain)
//! is tested to agree with the data plane's `lookup`. Endpoint states come
//! from re-running [`crate::endpoints`] selection for the matched backend,
//! checked against the snapshot's endpoint list.

pub mod gateway;

use std::fmt;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::ServicePort;
use lb_http::route::{
    Considered, Decision, HostGroup, RouteOrigin, RouteRule, Step, StepKind, StepState,
    normalize_host,
};
use lb_http::{ApplianceSnapshot, ErrorKind, HostMatch, PathKind, Side};
use serde::Serialize;

use crate::diag::{self, Diagnostic};
use crate::endpoints::{
    Candidate, Findings, ServiceRules, SliceIndex, Topology, TrafficPath, TrafficPolicy, choose,
    gather,
};
use crate::model::Object;
use crate::settings::{Node, Settings};
use crate::store::Store;

/// Which kind of Ingress listener the request arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    /// `[ingress].http`.
    Http,
    /// `[ingress].https`.
    Https,
}

impl Listener {
    /// `http` or `https`.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }
}

/// The request to explain, as given on the command line.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// Method (accepted and shown; routing does not use it yet).
    pub method: String,
    /// `Host` header value, port and case allowed.
    pub host: String,
    /// Request target: origin-form (`/path?query`) or absolute-form (`http://host/path`).
    pub path: String,
    /// Extra headers (accepted and shown; routing does not use them yet).
    pub headers: Vec<(String, String)>,
    /// Listener kind.
    pub listener: Listener,
    /// A Gateway port to explain instead of the Ingress listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SocketAddr>,
}

/// Parses a `--header` value `Name: value`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:VALUE"))?;
    let k = k.trim();
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{k:?} is not a header name"));
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}

/// Checks a `--path` value the way the data plane reads a request target.
pub fn parse_target(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if s.starts_with('/')
        || s == "*"
        || lower.starts_with("http://")
        || lower.starts_with("https://")
    {
        Ok(s.to_owned())
    } else {
        Err("must start with / (or be * or http://host/path)".into())
    }
}

/// Why the routing result is what it is; the body of a [`Report`].
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// The request as given.
    pub request: Request,
    /// Always says that only host and path route today.
    pub note: &'static str,
    /// The listeners of the requested kind, from the configuration.
    pub listeners: Vec<SocketAddr>,
    /// TLS certificate, or why lb does not serve the request on this listener kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listener_notes: Vec<String>,
    /// The host as the data plane normalises it.
    pub host: String,
    /// The path the route table sees (query removed).
    pub path: String,
    /// The query string, ignored by routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The lookup order: exact host, wildcard, host-less rules, default backend.
    pub steps: Vec<Step>,
    /// `rule`, `default` or `none`.
    pub decision: &'static str,
    /// The rule or default backend that routes the request; `None` means 404.
    pub matched: Option<Matched>,
    /// The backend Service port and its endpoints.
    pub backend: Option<BackendReport>,
    /// What the data plane answers.
    pub result: Outcome,
    /// The other rules of the tried host groups and of similar hosts, with reasons.
    pub rules: Vec<RuleReport>,
    /// Rules for unrelated hosts, not listed.
    pub other_host_rules: usize,
    /// Diagnostics about the matched object or the backend Service.
    pub diagnostics: Vec<String>,
    /// Errors and warnings in the whole configuration (`lb check` lists them).
    pub config_errors: usize,
    /// See `config_errors`.
    pub config_warnings: usize,
}

/// The rule (or default backend) that routes the request.
#[derive(Debug, Clone, Serialize)]
pub struct Matched {
    /// Human-readable origin, e.g. `Ingress default/web rule 0 path 1`.
    pub source: String,
    /// The object and field, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<RouteOrigin>,
    /// True for an Ingress `spec.defaultBackend`.
    pub default_backend: bool,
    /// The rule's host (`*` for any); `None` for the default backend.
    pub host: Option<String>,
    /// `exact`, `wildcard` or `any`; `None` for the default backend.
    pub host_match: Option<&'static str>,
    /// The rule's path.
    pub path: Option<String>,
    /// The path type as written (`Exact`, `Prefix`, `ImplementationSpecific`).
    pub path_type: Option<String>,
    /// How the path is compared (`ImplementationSpecific` is Prefix).
    pub compiled_as: Option<PathKind>,
}

/// A backend Service port and its endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// `namespace/service:port`.
    pub name: String,
    /// Endpoints the snapshot routes to.
    pub selected: usize,
    /// Every endpoint the EndpointSlices list for the port, selected or not.
    pub endpoints: Vec<EndpointReport>,
    /// Why there are no endpoints, or how they were chosen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One endpoint of the backend.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// Address and port.
    pub address: SocketAddr,
    /// `ready`, `not ready`, `serving, terminating`, `terminating`.
    pub state: String,
    /// Whether requests go to it.
    pub selected: bool,
    /// `nodeName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Why it is not selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded_because: Option<String>,
}

/// What the data plane does with the request.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The status lb itself answers with (404, 503); `None` when proxied.
    pub status: Option<u16>,
    /// One line.
    pub text: String,
}

/// A rule that did not route the request, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The rule's host group for this request.
    pub group: HostGroup,
    /// Rule host (`*` for any).
    pub host: String,
    /// Rule path.
    pub path: String,
    /// Path type as written, else as compiled.
    pub path_type: String,
    /// Human-readable origin.
    pub source: String,
    /// The object and field, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<RouteOrigin>,
    /// The outcome.
    pub verdict: lb_http::route::Verdict,
    /// One line.
    pub reason: String,
}

/// The outcome of `lb explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// 0 routed, 1 no route (404), 2 configuration unusable.
    pub exit_code: u8,
    /// Set when the configuration file itself is unusable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// The explanation, when the configuration loaded.
    #[serde(flatten)]
    pub explained: Option<Explained>,
    /// The explanation of a request on a Gateway port (`--gateway`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<gateway::GatewayExplained>,
}

const NOTE: &str =
    "routing uses host and path only; method and headers are shown but do not change the result";

fn kind_name(kind: PathKind) -> &'static str {
    match kind {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
    }
}

fn host_match_name(host: &HostMatch) -> &'static str {
    match host {
        HostMatch::Any => "any",
        HostMatch::Exact(_) => "exact",
        HostMatch::Wildcard(_) => "wildcard",
    }
}

fn written_type(rule: &RouteRule) -> String {
    rule.origin
        .as_ref()
        .and_then(|o| o.path_type.clone())
        .unwrap_or_else(|| kind_name(rule.kind).to_owned())
}

/// Splits an absolute-form target into its authority and path, as the data plane does.
fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Whether two hosts share their last two labels (rules worth listing as "other host").
fn related(rule: &HostMatch, host: &str) -> bool {
    let tail = |h: &str| {
        let mut labels = h.rsplit('.');
        (
            labels.next().map(str::to_owned),
            labels.next().map(str::to_owned),
        )
    };
    let theirs = match rule {
        HostMatch::Any => return false,
        HostMatch::Exact(h) => tail(h),
        HostMatch::Wildcard(s) => tail(&format!("x.{s}")),
    };
    !host.is_empty() && theirs == tail(host)
}

fn rule_report(c: &Considered<'_>) -> RuleReport {
    RuleReport {
        group: c.group,
        host: c.rule.host.to_string(),
        path: c.rule.path.clone(),
        path_type: written_type(c.rule),
        source: c.rule.target.source.to_string(),
        origin: c.rule.origin.clone(),
        verdict: c.verdict,
        reason: c.reason.clone(),
    }
}

/// Explains `req` against an already compiled snapshot and the store it came from.
pub fn explain_compiled(
    cfg: &Settings,
    store: &Store,
    snap: &ApplianceSnapshot,
    diagnostics: &[Diagnostic],
    req: &Request,
) -> Explained {
    // The data plane: absolute-form authority wins over Host, `*` routes as `/`.
    let (raw_host, target) = match split_absolute(&req.path) {
        Some((authority, path)) => (authority, path),
        None => (req.host.as_str(), req.path.as_str()),
    };
    let target = if target.starts_with('/') { target } else { "/" };
    // Routing sees the normalised path; one the data plane cannot normalise
    // gets 400 (after the HTTPS redirect, as in the data plane).
    let (target, bad_path) = match lb_http::path::normalize_target(target) {
        Ok(t) => (t.into_owned(), None),
        Err(e) => (
            target.to_owned(),
            Some(Outcome {
                status: Some(400),
                text: format!("the request is refused: {}", e.as_str()),
            }),
        ),
    };
    let target = target.as_str();
    let mut host = String::new();
    normalize_host(raw_host, &mut host);
    let query = target.split_once('?').map(|(_, q)| q.to_owned());

    let mut listener_notes = Vec::new();
    let (listeners, early) = match req.listener {
        Listener::Http => {
            let redirect = snap.redirects_to_https(&host).then(|| {
                let port = snap.https_port.filter(|&p| p != 443);
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                Outcome {
                    status: Some(308),
                    text: format!(
                        "plain HTTP for this host is redirected to https://{host}{port}{target}; \
                         over HTTPS it routes as shown"
                    ),
                }
            });
            (cfg.ingress.http.clone(), redirect)
        }
        Listener::Https => {
            let cert = snap.tls.lookup(Some(&host));
            if let Some(c) = cert {
                listener_notes.push(format!("TLS certificate for {host}: {}", c.source));
            }
            let fail = cert.is_none().then(|| Outcome {
                status: None,
                text: format!(
                    "the TLS handshake fails: no certificate for server name {host} and no default"
                ),
            });
            (cfg.ingress.https.clone(), fail)
        }
    };
    if listeners.is_empty() {
        listener_notes.push(format!(
            "no [ingress] {} listener is configured: lb does not serve this request",
            req.listener.name()
        ));
    }

    let e = snap.routes.explain(&host, target);
    let rule = e.rule();
    let matched = e.target().map(|t| {
        let origin = match rule {
            Some(r) => r.origin.clone(),
            None => snap.routes.default_origin().cloned(),
        };
        Matched {
            source: t.source.to_string(),
            origin,
            default_backend: rule.is_none(),
            host: rule.map(|r| r.host.to_string()),
            host_match: rule.map(|r| host_match_name(&r.host)),
            path: rule.map(|r| r.path.clone()),
            path_type: rule.map(written_type),
            compiled_as: rule.map(|r| r.kind),
        }
    });
    let backend = e
        .target()
        .map(|t| backend_report(cfg, store, snap, t.backend));
    let routed = match (&matched, &backend) {
        (None, _) => Outcome {
            status: Some(lb_http::Error::new(ErrorKind::NoRoute, Side::Downstream, "").status()),
            text: "no rule matches and there is no default backend".into(),
        },
        (Some(_), Some(b)) if b.selected == 0 => Outcome {
            status: Some(lb_http::Error::new(ErrorKind::NoEndpoints, Side::Upstream, "").status()),
            text: "the backend has no selected endpoint".into(),
        },
        (Some(_), b) => {
            let n = b.as_ref().map_or(0, |b| b.selected);
            Outcome {
                status: None,
                text: if n == 1 {
                    "proxied to its only endpoint; the upstream answers".to_owned()
                } else {
                    format!("proxied to one of {n} endpoints (round robin); the upstream answers")
                },
            }
        }
    };

    let result = early.or(bad_path).unwrap_or(routed);

    let mut rules = Vec::new();
    let mut other_host_rules = 0;
    for c in &e.rules {
        if matches!(e.decision, Decision::Rule(i) if i == c.index) {
            continue;
        }
        if c.group == HostGroup::Other && !related(&c.rule.host, &host) {
            other_host_rules += 1;
            continue;
        }
        rules.push(rule_report(c));
    }

    let service = backend
        .as_ref()
        .and_then(|b| b.name.rsplit_once(':'))
        .and_then(|(svc, _)| svc.split_once('/'));
    let object = matched.as_ref().and_then(|m| m.origin.as_ref());
    let about = |d: &&Diagnostic| {
        let is = |kind: &str, ns: &str, name: &str| {
            d.kind.as_deref() == Some(kind)
                && d.namespace.as_deref() == Some(ns)
                && d.name.as_deref() == Some(name)
        };
        object.is_some_and(|o| is(&o.kind, &o.namespace, &o.name))
            || service.is_some_and(|(ns, name)| is("Service", ns, name))
    };
    let related_diagnostics: Vec<String> = diagnostics
        .iter()
        .filter(about)
        .map(ToString::to_string)
        .collect();
    let (config_errors, config_warnings) = diag::count(diagnostics);
    Explained {
        request: req.clone(),
        note: NOTE,
        listeners,
        listener_notes,
        host,
        path: e.path.clone(),
        query,
        steps: e.steps.clone(),
        decision: match e.decision {
            Decision::Rule(_) => "rule",
            Decision::Default => "default",
            Decision::NotFound => "none",
        },
        matched,
        backend,
        result,
        rules,
        other_host_rules,
        diagnostics: related_diagnostics,
        config_errors,
        config_warnings,
    }
}

/// The Service port a backend name `namespace/service:port` refers to, TCP first.
fn service_port<'a>(
    store: &'a Store,
    name: &str,
) -> Result<
    (
        &'a crate::model::Typed<k8s_openapi::api::core::v1::Service>,
        &'a ServicePort,
    ),
    String,
> {
    let (svc, port) = name.rsplit_once(':').unwrap_or((name, ""));
    let (ns, svc) = svc.split_once('/').unwrap_or(("default", svc));
    let Some(Object::Service(s)) = store.find("Service", Some(ns), svc) else {
        return Err(format!("Service {ns}/{svc} does not exist"));
    };
    let ports = s
        .value
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let number: Option<i32> = port.parse().ok();
    let same = |p: &&ServicePort| number == Some(p.port);
    let tcp = |p: &&ServicePort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    let found = ports
        .iter()
        .filter(same)
        .find(tcp)
        .or_else(|| ports.iter().find(same));
    match found {
        Some(p) if tcp(&p) => Ok((s, p)),
        Some(p) => Err(format!(
            "Service {ns}/{svc} port {port} is {}; HTTP needs TCP",
            p.protocol.as_deref().unwrap_or_default()
        )),
        None => Err(format!("Service {ns}/{svc} has no port {port}")),
    }
}

fn state_of(c: &Candidate) -> String {
    match (c.ready, c.serving, c.terminating) {
        (true, _, false) => "ready".into(),
        (true, _, true) => "ready, terminating".into(),
        (false, true, true) => "serving, terminating".into(),
        (false, false, true) => "terminating".into(),
        (false, _, false) => "not ready".into(),
    }
}

fn on_node(c: &Candidate, node: &Node) -> bool {
    c.node_name.as_deref() == Some(node.name.as_str())
}

fn exclusion(
    c: &Candidate,
    rules: &ServiceRules,
    sel: &crate::endpoints::Selection,
    node: &Node,
) -> String {
    let ready = rules.publish_not_ready || c.ready;
    if sel.policy == TrafficPolicy::Local && !on_node(c, node) {
        return format!(
            "internalTrafficPolicy Local: on node {:?}, this node is {:?}",
            c.node_name.as_deref().unwrap_or(""),
            node.name
        );
    }
    if !ready {
        let why = if c.serving && c.terminating {
            "serving and terminating: used only when no endpoint is ready"
        } else {
            "not ready"
        };
        return why.into();
    }
    match sel.topology {
        Topology::SameZone => format!(
            "topology: zone hints {:?} do not name this node's zone {:?}",
            c.for_zones,
            node.zone.as_deref().unwrap_or("")
        ),
        Topology::SameNode => format!("topology: not on this node {:?}", node.name),
        Topology::Off => "not chosen by endpoint selection".into(),
    }
}

fn backend_report(
    cfg: &Settings,
    store: &Store,
    snap: &ApplianceSnapshot,
    id: lb_http::BackendId,
) -> BackendReport {
    let Some(b) = snap.backend(id) else {
        return BackendReport {
            name: format!("(backend {})", id.0),
            selected: 0,
            endpoints: Vec::new(),
            notes: vec!["the backend is missing from the snapshot".into()],
        };
    };
    let plain = |notes: Vec<String>| BackendReport {
        name: b.name.clone(),
        selected: b.endpoints.len(),
        endpoints: b
            .endpoints
            .iter()
            .map(|&address| EndpointReport {
                address,
                state: "ready".into(),
                selected: true,
                node: None,
                zone: None,
                excluded_because: None,
            })
            .collect(),
        notes,
    };
    let (svc, port) = match service_port(store, &b.name) {
        Ok(found) => found,
        Err(why) => return plain(vec![why]),
    };
    let index = SliceIndex::new(store);
    let meta = &svc.value.metadata;
    let slices = index.slices(
        meta.namespace
            .as_deref()
            .unwrap_or(crate::model::DEFAULT_NAMESPACE),
        meta.name.as_deref().unwrap_or(""),
    );
    let candidates = gather(slices, port, &cfg.node, &mut Findings::default());
    let rules = ServiceRules::from_service(&svc.value);
    let sel = choose(&candidates, &rules, TrafficPath::Internal, &cfg.node);
    if sel.addrs() != b.endpoints {
        return plain(vec![
            "endpoint details unavailable (the snapshot differs from a fresh selection)".into(),
        ]);
    }
    let mut notes = Vec::new();
    if candidates.is_empty() {
        notes.push("no EndpointSlice lists an endpoint for this port".into());
    }
    if sel.policy == TrafficPolicy::Local {
        notes.push(format!(
            "internalTrafficPolicy Local: only endpoints on node {:?}",
            cfg.node.name
        ));
    }
    if sel.topology != Topology::Off {
        notes.push(format!(
            "topology-aware routing applied: {:?}",
            sel.topology
        ));
    }
    if sel.terminating_fallback {
        notes.push("no endpoint is ready: serving, terminating endpoints are used".into());
    }
    if rules.publish_not_ready {
        notes.push("publishNotReadyAddresses: every endpoint counts as ready".into());
    }
    let endpoints = candidates
        .iter()
        .map(|c| {
            let selected = b.endpoints.contains(&c.addr);
            EndpointReport {
                address: c.addr,
                state: state_of(c),
                selected,
                node: c.node_name.clone(),
                zone: c.zone.clone(),
                excluded_because: (!selected).then(|| exclusion(c, &rules, &sel, &cfg.node)),
            }
        })
        .collect();
    BackendReport {
        name: b.name.clone(),
        selected: b.endpoints.len(),
        endpoints,
        notes,
    }
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

fn step_label(s: &Step) -> String {
    match s.kind {
        StepKind::Exact => format!("exact host {}", s.key),
        StepKind::Wildcard if s.key.is_empty() => "wildcard (host has no dot)".into(),
        StepKind::Wildcard => format!("wildcard {}", s.key),
        StepKind::Any => "host-less rules".into(),
        StepKind::Default => "default backend".into(),
    }
}

fn state_label(s: &Step) -> &'static str {
    match (s.state, s.kind) {
        (StepState::Matched, _) => "matched",
        (StepState::NoMatch, _) => "no path matches",
        (StepState::Absent, StepKind::Default) => "not configured",
        (StepState::Absent, _) => "skipped",
        (StepState::NotReached, _) => "not reached",
    }
}

fn group_label(g: HostGroup) -> &'static str {
    match g {
        HostGroup::Exact => "exact host",
        HostGroup::Wildcard => "wildcard",
        HostGroup::Any => "host-less",
        HostGroup::Other => "other host",
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(err) = &self.config_error {
            return writeln!(f, "error: {err}\nlb explain: configuration unusable");
        }
        if let Some(g) = &self.gateway {
            return write!(f, "{g}");
        }
        let Some(x) = &self.explained else {
            return Ok(());
        };
        let r = &x.request;
        writeln!(f, "request    {} {} {}", r.method, r.host, r.path)?;
        for (k, v) in &r.headers {
            writeln!(f, "           {k}: {v}")?;
        }
        writeln!(f, "           note: {}", x.note)?;
        let kind = r.listener.name();
        let addrs: Vec<String> = x.listeners.iter().map(ToString::to_string).collect();
        let addrs = if addrs.is_empty() {
            "(none)".to_owned()
        } else {
            addrs.join(", ")
        };
        writeln!(f, "listener   {kind} {addrs}")?;
        for n in &x.listener_notes {
            writeln!(f, "           note: {n}")?;
        }
        writeln!(f, "host       {}", x.host)?;
        match &x.query {
            Some(q) => writeln!(f, "path       {} (query {q:?} ignored)", x.path)?,
            None => writeln!(f, "path       {}", x.path)?,
        }
        writeln!(f, "lookup order")?;
        for (i, s) in x.steps.iter().enumerate() {
            let n = if s.kind == StepKind::Default {
                String::new()
            } else {
                format!("{} rule{}", s.rules, if s.rules == 1 { "" } else { "s" })
            };
            writeln!(
                f,
                "  {}. {:<40} {:<9} {}",
                i + 1,
                step_label(s),
                n,
                state_label(s)
            )?;
        }
        match &x.matched {
            None => writeln!(f, "matched    nothing")?,
            Some(m) => {
                match &m.origin {
                    Some(o) => writeln!(
                        f,
                        "matched    {} {}/{} {}",
                        o.kind, o.namespace, o.name, o.field
                    )?,
                    None => writeln!(f, "matched    {}", m.source)?,
                }
                if m.default_backend {
                    writeln!(f, "           default backend: no rule matches")?;
                } else {
                    let ht = m.host_match.unwrap_or("");
                    writeln!(
                        f,
                        "           host {} ({ht})",
                        m.host.as_deref().unwrap_or("")
                    )?;
                    let pt = m.path_type.as_deref().unwrap_or("");
                    let compiled = match m.compiled_as {
                        Some(k) if kind_name(k) != pt => format!(", compared as {}", kind_name(k)),
                        _ => String::new(),
                    };
                    writeln!(
                        f,
                        "           path {} ({pt}{compiled})",
                        m.path.as_deref().unwrap_or("")
                    )?;
                }
            }
        }
        if let Some(b) = &x.backend {
            writeln!(f, "backend    {} ({} selected)", b.name, b.selected)?;
            for e in &b.endpoints {
                let mut line = format!("  {:<22} {}", e.address.to_string(), e.state);
                if e.selected {
                    line.push_str(" (selected)");
                } else if let Some(why) = &e.excluded_because {
                    line.push_str(&format!(" (excluded: {why})"));
                }
                if let Some(n) = &e.node {
                    line.push_str(&format!(" node={n}"));
                }
                if let Some(z) = &e.zone {
                    line.push_str(&format!(" zone={z}"));
                }
                writeln!(f, "{line}")?;
            }
            for n in &b.notes {
                writeln!(f, "           note: {n}")?;
            }
        }
        match x.result.status {
            Some(code) => writeln!(f, "result     {code}: {}", x.result.text)?,
            None => writeln!(f, "result     {}", x.result.text)?,
        }
        if !x.rules.is_empty() || x.other_host_rules > 0 {
            writeln!(f, "other rules")?;
        }
        for r in &x.rules {
            let host = match r.group {
                HostGroup::Any => String::new(),
                _ => format!(" {}", r.host),
            };
            writeln!(
                f,
                "  [{}{host}] {} {} ({}): {}",
                group_label(r.group),
                r.path_type,
                r.path,
                r.source,
                r.reason
            )?;
        }
        if x.other_host_rules > 0 {
            let n = x.other_host_rules;
            let s = if n == 1 { "" } else { "s" };
            writeln!(f, "  ({n} rule{s} for unrelated hosts not listed)")?;
        }
        for d in &x.diagnostics {
            writeln!(f, "diagnostic {d}")?;
        }
        if x.config_errors + x.config_warnings > 0 {
            writeln!(
                f,
                "config     {} errors, {} warnings in the configuration (lb check lists them)",
                x.config_errors, x.config_warnings
            )?;
        }
        let refused = self
            .explained
            .as_ref()
            .is_some_and(|x| x.result.status == Some(400));
        let verdict = match self.exit_code {
            0 => "routed",
            _ if refused => "refused (400)",
            _ => "no route (404)",
        };
        writeln!(f, "lb explain: {verdict}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        assert_eq!(parse_header("X-A: b:c"), Ok(("X-A".into(), "b:c".into())));
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_target("/a").is_ok());
        assert!(parse_target("http://h/a").is_ok());
        assert!(parse_target("a").is_err());
        assert_eq!(
            split_absolute("HTTP://Host:8/p?q"),
            Some(("Host:8", "/p?q"))
        );
        assert_eq!(split_absolute("/p"), None);
    }
}
