//! GRPCRoute through the running binary with a tonic client: method and
//! header matching, Listener hostname matching by :authority, weights, and
//! the RequestHeaderModifier filter. The backends are the tonic servers of
//! the h2 tests (`x-backend` response metadata names the one that answered);
//! a call lb routes nowhere gets a trailers-only gRPC answer with
//! `grpc-status` 12 (UNIMPLEMENTED, what the gRPC mapping of HTTP 404
//! gives), judged both on the wire (`Caller::wire_code`) and as tonic sees
//! it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use super::{INFRA, Infra, expect_route};
use crate::h2::{GrpcServer, Msg, runtime};
use crate::support::service_yaml;

/// The gRPC backends of these tests, named like the suite's.
const V1: &str = "grpc-infra-backend-v1";
const V2: &str = "grpc-infra-backend-v2";
const V3: &str = "grpc-infra-backend-v3";

/// Per-RPC deadline; every call is bounded by it.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// What one RPC through lb came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// The named backend answered OK.
    Ok(String),
    /// lb answered itself with this status: no backend saw the call.
    Lb(Code),
    /// The named backend answered with this status.
    Failed(String, Code),
}

/// `Answer::Ok(backend)`.
fn ok(backend: &str) -> Answer {
    Answer::Ok(backend.to_owned())
}

/// What lb answers for a call no route matches.
const UNMATCHED: Answer = Answer::Lb(Code::Unimplemented);

/// The gRPC servers `names`, with Services of the same name in the infra
/// namespace whose port speaks h2c. Keep the servers alive for the test.
fn grpc_backends(names: &[&'static str]) -> (Vec<GrpcServer>, String) {
    let servers: Vec<GrpcServer> = names.iter().map(|n| GrpcServer::named(n)).collect();
    let yaml = names
        .iter()
        .zip(&servers)
        .map(|(name, s)| {
            service_yaml(INFRA, name, 8080, None, &[s.addr]).replacen(
                "    protocol: TCP\n",
                "    protocol: TCP\n    appProtocol: kubernetes.io/h2c\n",
                1,
            ) + "---\n"
        })
        .collect();
    (servers, yaml)
}

/// A GRPCRoute in the infra namespace; `parents` is the YAML flow list of
/// parentRefs, `rules` the YAML of `spec.rules` entries.
fn grpc_route(name: &str, parents: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: {name}\n  namespace: {INFRA}\n  creationTimestamp: \"2024-02-01T00:00:00Z\"\nspec:\n  parentRefs: {parents}\n  rules:\n{rules}---\n"
    )
}

/// A tonic client to a Gateway address, plus what it takes to repeat a
/// call on the wire.
#[derive(Clone)]
struct Caller {
    client: Grpc<Channel>,
    gw: SocketAddr,
    /// The :authority of every call.
    authority: String,
}

impl Caller {
    /// A client connected to `gw`; calls carry `authority` as :authority
    /// when given, else the Gateway address.
    async fn connect(gw: SocketAddr, authority: Option<&str>) -> Caller {
        let authority = authority.map_or_else(|| gw.to_string(), str::to_owned);
        let channel = Endpoint::from_shared(format!("http://{gw}"))
            .unwrap()
            .origin(format!("http://{authority}").parse().unwrap())
            .timeout(RPC_TIMEOUT)
            .connect_timeout(RPC_TIMEOUT)
            .connect()
            .await
            .expect("connect to lb");
        Caller {
            client: Grpc::new(channel),
            gw,
            authority,
        }
    }

    /// One unary call of `path` with request `metadata` through tonic: the
    /// response message and the answer. When no backend answered, the code
    /// is the one the gRPC HTTP mapping gives for what lb sent (see
    /// `wire_code`).
    async fn call(&mut self, path: &str, metadata: &[(&str, &str)]) -> (Option<Msg>, Answer) {
        match self.tonic_call(path, metadata).await {
            Ok((who, msg)) => (Some(msg), Answer::Ok(who)),
            Err(status) => match backend(status.metadata()) {
                Some(who) => (None, Answer::Failed(who, status.code())),
                None => (None, Answer::Lb(self.wire_code(path, metadata).await)),
            },
        }
    }

    /// The call through tonic: (backend, response) or tonic's status.
    async fn tonic_call(
        &mut self,
        path: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(String, Msg), Status> {
        self.client.ready().await.expect("channel ready");
        let mut req = tonic::Request::new(Msg {
            text: "hi".into(),
            n: 1,
        });
        for (name, value) in metadata {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap();
            let value: MetadataValue<_> = value.parse().unwrap();
            req.metadata_mut().append(key, value);
        }
        let path = PathAndQuery::try_from(path).unwrap();
        let resp = self
            .client
            .unary(req, path, ProstCodec::<Msg, Msg>::default())
            .await?;
        let who = backend(resp.metadata()).unwrap_or_default();
        Ok((who, resp.into_inner()))
    }

    /// The same call with the h2 crate: the gRPC status of lb's answer,
    /// from `grpc-status` in headers or trailers, else mapped from the HTTP
    /// status as the gRPC spec's HTTP-to-gRPC status mapping says (404 is
    /// UNIMPLEMENTED). Asserts no backend answered.
    async fn wire_code(&self, path: &str, metadata: &[(&str, &str)]) -> Code {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(self.gw).await.unwrap();
            let (send, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(conn);
            let mut send = send.ready().await.unwrap();
            let mut req = http::Request::post(format!("http://{}{path}", self.authority))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            for (name, value) in metadata {
                req = req.header(*name, *value);
            }
            let (resp, mut body) = send.send_request(req.body(()).unwrap(), false).unwrap();
            let payload = prost::Message::encode_to_vec(&Msg {
                text: "hi".into(),
                n: 1,
            });
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            frame.extend_from_slice(&payload);
            // lb may answer (an unmatched call: trailers-only) and close the
            // stream before the body is sent; the answer is what counts.
            let _ = body.send_data(frame.into(), true);
            let (parts, mut recv) = resp.await.unwrap().into_parts();
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.unwrap();
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
            let trailers = recv.trailers().await.unwrap().unwrap_or_default();
            (parts, trailers)
        };
        let (parts, trailers) = tokio::time::timeout(RPC_TIMEOUT, exchange)
            .await
            .expect("raw call answered in time");
        assert!(
            !parts.headers.contains_key("x-backend"),
            "{path}: a backend answered: {parts:?}"
        );
        let grpc_status = trailers
            .get("grpc-status")
            .or(parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
        match grpc_status {
            Some(code) => Code::from_i32(code),
            None => match parts.status.as_u16() {
                400 => Code::Internal,
                401 => Code::Unauthenticated,
                403 => Code::PermissionDenied,
                404 => Code::Unimplemented,
                429 | 502 | 503 | 504 => Code::Unavailable,
                _ => Code::Unknown,
            },
        }
    }
}

/// The `x-backend` metadata: the name of the server that answered.
fn backend(m: &tonic::metadata::MetadataMap) -> Option<String> {
    m.get("x-backend")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Asserts the route is Accepted with resolved refs on Gateway `gateway`.
#[track_caller]
fn expect_accepted(lb: &crate::support::Lb, name: &str, gateway: &str) {
    expect_route(
        lb,
        "GRPCRoute",
        INFRA,
        name,
        gateway,
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
    );
}

/// GRPCExactMethodMatching: exact service and method select the backend;
/// another method, another service, a longer method or another case match
/// nothing.
#[test]
fn grpc_route_exact_method_matching() {
    let infra = Infra::start();
    let (_servers, services) = grpc_backends(&[V1, V2]);
    let rules = format!(
        "  - matches: [{{method: {{service: test.Echo, method: Unary}}}}]\n    backendRefs: [{{name: {V1}, port: 8080}}]\n\
         \x20 - matches: [{{method: {{service: test.Echo, method: EchoTwo}}}}]\n    backendRefs: [{{name: {V2}, port: 8080}}]\n"
    );
    let route = grpc_route("exact-matching", "[{name: same-namespace}]", &rules);
    let lb = infra.lb("gw-grpc-exact", &(services + &route));
    expect_accepted(&lb, "exact-matching", "same-namespace");
    let gw = infra.gw("same-namespace");
    let got = runtime().block_on(async {
        let mut c = Caller::connect(gw, None).await;
        let mut got = Vec::new();
        for path in [
            "/test.Echo/Unary",
            "/test.Echo/EchoTwo",
            "/test.Echo/EchoThree",
            "/test.Other/Unary",
            "/test.Echo/UnaryX",
            "/test.echo/Unary",
            "/test.Echo/unary",
        ] {
            got.push((path, c.call(path, &[]).await.1));
        }
        got
    });
    let want = [
        ("/test.Echo/Unary", ok(V1)),
        ("/test.Echo/EchoTwo", ok(V2)),
        ("/test.Echo/EchoThree", UNMATCHED),
        ("/test.Other/Unary", UNMATCHED),
        ("/test.Echo/UnaryX", UNMATCHED),
        ("/test.echo/Unary", UNMATCHED),
        ("/test.Echo/unary", UNMATCHED),
    ];
    assert_eq!(got, want, "log:\n{}", lb.log_text());
}

/// GRPCRouteHeaderMatching: the suite's 11 metadata cases (plus a value of
/// another case and no metadata at all); no match is UNIMPLEMENTED.
#[test]
fn grpc_route_header_matching() {
    let infra = Infra::start();
    let (_servers, services) = grpc_backends(&[V1, V2]);
    let rule = |matches: &str, backend: &str| {
        format!("  - matches: {matches}\n    backendRefs: [{{name: {backend}, port: 8080}}]\n")
    };
    let rules = [
        rule("[{headers: [{name: version, value: one}]}]", V1),
        rule("[{headers: [{name: version, value: two}]}]", V2),
        rule(
            "[{headers: [{name: version, value: two}, {name: color, value: orange}]}]",
            V1,
        ),
        rule(
            "[{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]",
            V1,
        ),
        rule(
            "[{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]",
            V2,
        ),
    ]
    .concat();
    let route = grpc_route("grpc-header-matching", "[{name: same-namespace}]", &rules);
    let lb = infra.lb("gw-grpc-headers", &(services + &route));
    expect_accepted(&lb, "grpc-header-matching", "same-namespace");
    let gw = infra.gw("same-namespace");
    type Case = (&'static [(&'static str, &'static str)], Answer);
    let cases: Vec<Case> = vec![
        (&[("Version", "one")], ok(V1)),
        (&[("Version", "two")], ok(V2)),
        (&[("Version", "two"), ("Color", "orange")], ok(V1)),
        (&[("Version", "two"), ("Color", "blue")], ok(V2)),
        (&[("Color", "orange")], UNMATCHED),
        (&[("Some-Other-Header", "one")], UNMATCHED),
        (&[("Color", "blue")], ok(V1)),
        (&[("Color", "green")], ok(V1)),
        (&[("Color", "red")], ok(V2)),
        (&[("Color", "yellow")], ok(V2)),
        (&[("Color", "purple")], UNMATCHED),
        (&[("Version", "ONE")], UNMATCHED),
        (&[], UNMATCHED),
    ];
    let got = runtime().block_on(async {
        let mut c = Caller::connect(gw, None).await;
        let mut got = Vec::new();
        for (metadata, _) in &cases {
            got.push(c.call("/test.Echo/Unary", metadata).await.1);
        }
        got
    });
    for ((metadata, want), got) in cases.iter().zip(&got) {
        assert_eq!(got, want, "{metadata:?}; log:\n{}", lb.log_text());
    }
}

/// GRPCRouteListenerHostnameMatching: four Listeners on one port with
/// different hostnames, one route each (v3's on two); :authority selects
/// the Listener, a host no Listener takes is UNIMPLEMENTED.
#[test]
fn grpc_route_listener_hostname_matching() {
    let infra = Infra::start();
    let ip = infra.ip;
    let (_servers, services) = grpc_backends(&[V1, V2, V3]);
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: grpcroute-listener-hostname-matching, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: listener-1, port: 9101, protocol: HTTP, hostname: bar.com}}\n  - {{name: listener-2, port: 9101, protocol: HTTP, hostname: foo.bar.com}}\n  - {{name: listener-3, port: 9101, protocol: HTTP, hostname: \"*.bar.com\"}}\n  - {{name: listener-4, port: 9101, protocol: HTTP, hostname: \"*.foo.com\"}}\n---\n"
    );
    let parent = |section: &str| {
        format!("{{name: grpcroute-listener-hostname-matching, sectionName: {section}}}")
    };
    let all = |backend: &str| format!("  - backendRefs: [{{name: {backend}, port: 8080}}]\n");
    let routes = [
        grpc_route(
            "backend-v1",
            &format!("[{}]", parent("listener-1")),
            &all(V1),
        ),
        grpc_route(
            "backend-v2",
            &format!("[{}]", parent("listener-2")),
            &all(V2),
        ),
        grpc_route(
            "backend-v3",
            &format!("[{}, {}]", parent("listener-3"), parent("listener-4")),
            &all(V3),
        ),
    ]
    .concat();
    let lb = infra.lb("gw-grpc-listener-host", &(services + &gateway + &routes));
    for name in ["backend-v1", "backend-v2", "backend-v3"] {
        expect_accepted(&lb, name, "grpcroute-listener-hostname-matching");
    }
    let gw = SocketAddr::new(ip.into(), 9101);
    let cases = [
        ("bar.com", ok(V1)),
        ("foo.bar.com", ok(V2)),
        ("baz.bar.com", ok(V3)),
        ("boo.bar.com", ok(V3)),
        ("multiple.prefixes.bar.com", ok(V3)),
        ("multiple.prefixes.foo.com", ok(V3)),
        ("foo.com", UNMATCHED),
        ("no.matching.host", UNMATCHED),
        // The port in :authority does not take part in matching.
        ("foo.bar.com:9101", ok(V2)),
        ("foo.com:9101", UNMATCHED),
    ];
    let got = runtime().block_on(async {
        let mut got = Vec::new();
        for (authority, _) in &cases {
            let mut c = Caller::connect(gw, Some(authority)).await;
            got.push(c.call("/test.Echo/Unary", &[]).await.1);
        }
        got
    });
    for ((authority, want), got) in cases.iter().zip(&got) {
        assert_eq!(got, want, "{authority}; log:\n{}", lb.log_text());
    }
}

/// GRPCRouteWeight: 70/30/0 over 500 RPCs, ten at a time on one
/// connection; weight 0 gets nothing, the split is within 5 standard
/// deviations.
#[test]
fn grpc_route_weight() {
    let infra = Infra::start();
    let (_servers, services) = grpc_backends(&[V1, V2, V3]);
    let rules = format!(
        "  - backendRefs:\n    - {{name: {V1}, port: 8080, weight: 70}}\n    - {{name: {V2}, port: 8080, weight: 30}}\n    - {{name: {V3}, port: 8080, weight: 0}}\n"
    );
    let route = grpc_route("weighted-backends", "[{name: same-namespace}]", &rules);
    let lb = infra.lb("gw-grpc-weight", &(services + &route));
    expect_accepted(&lb, "weighted-backends", "same-namespace");
    let gw = infra.gw("same-namespace");
    const TASKS: usize = 10;
    const PER_TASK: usize = 50;
    let answers = runtime().block_on(async {
        let c = Caller::connect(gw, None).await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let mut c = c.clone();
            tasks.spawn(async move {
                let mut got = Vec::with_capacity(PER_TASK);
                for _ in 0..PER_TASK {
                    got.push(c.call("/test.Echo/Unary", &[]).await.1);
                }
                got
            });
        }
        let all = tokio::time::timeout(Duration::from_secs(120), tasks.join_all())
            .await
            .expect("500 RPCs in time");
        all.concat()
    });
    let mut counts = BTreeMap::new();
    for a in &answers {
        *counts.entry(format!("{a:?}")).or_insert(0u32) += 1;
    }
    let n = (TASKS * PER_TASK) as f64;
    let v1 = answers.iter().filter(|a| **a == ok(V1)).count() as f64;
    let v2 = answers.iter().filter(|a| **a == ok(V2)).count() as f64;
    assert_eq!(v1 + v2, n, "only v1 and v2 answer, all OK: {counts:?}");
    // Binomial(500, 0.7): sd = sqrt(500 * 0.7 * 0.3) ~ 10.2.
    let sd = (n * 0.7 * 0.3).sqrt();
    assert!(
        (v1 - 0.7 * n).abs() <= 5.0 * sd,
        "70/30 split within 5 sd: {counts:?}"
    );
}

/// The request metadata a `Metadata` call reached the backend with: name →
/// values joined by `,` (so repeated fields and one comma-joined field
/// compare equal).
fn seen_metadata(msg: &Msg) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in msg.text.lines() {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        out.entry(name.to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    out
}

/// GRPCRouteRequestHeaderModifier: set, add and remove, alone and together;
/// the backend reports the metadata it received.
#[test]
fn grpc_route_request_header_modifier() {
    let infra = Infra::start();
    let (_servers, services) = grpc_backends(&[V1, V2]);
    let rules = format!(
        "  - matches: [{{method: {{service: test.Set, method: Metadata}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: X-Header-Set, value: set-overwrites-values}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{method: {{service: test.Add, method: Metadata}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{{name: X-Header-Add, value: add-appends-values}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{method: {{service: test.Remove, method: Metadata}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove: [X-Header-Remove]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{method: {{service: test.Multiple, method: Metadata}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - {{name: X-Header-Set-1, value: header-set-1}}
        - {{name: X-Header-Set-2, value: header-set-2}}
        add:
        - {{name: X-Header-Add-1, value: header-add-1}}
        - {{name: X-Header-Add-2, value: header-add-2}}
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    backendRefs: [{{name: {V2}, port: 8080}}]
"
    );
    let route = grpc_route(
        "grpc-request-header-modifier",
        "[{name: same-namespace}]",
        &rules,
    );
    let lb = infra.lb("gw-grpc-header-mod", &(services + &route));
    expect_accepted(&lb, "grpc-request-header-modifier", "same-namespace");
    let gw = infra.gw("same-namespace");
    // (method, request metadata, backend, expected: name → Some(joined
    // values) or None for absent).
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static [(&'static str, Option<&'static str>)],
    );
    let cases: &[Case] = &[
        (
            "/test.Set/Metadata",
            &[("Some-Other-Header", "val")],
            V1,
            &[
                ("some-other-header", Some("val")),
                ("x-header-set", Some("set-overwrites-values")),
            ],
        ),
        (
            "/test.Set/Metadata",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            V1,
            &[
                ("some-other-header", Some("val")),
                ("x-header-set", Some("set-overwrites-values")),
            ],
        ),
        (
            "/test.Add/Metadata",
            &[("Some-Other-Header", "val")],
            V1,
            &[
                ("some-other-header", Some("val")),
                ("x-header-add", Some("add-appends-values")),
            ],
        ),
        (
            "/test.Add/Metadata",
            &[("Some-Other-Header", "val"), ("X-Header-Add", "some-value")],
            V1,
            &[
                ("some-other-header", Some("val")),
                ("x-header-add", Some("some-value,add-appends-values")),
            ],
        ),
        (
            "/test.Remove/Metadata",
            &[("X-Header-Remove", "val"), ("Some-Other-Header", "val")],
            V1,
            &[
                ("some-other-header", Some("val")),
                ("x-header-remove", None),
            ],
        ),
        (
            "/test.Multiple/Metadata",
            &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
            ],
            V2,
            &[
                ("x-header-set-1", Some("header-set-1")),
                ("x-header-set-2", Some("header-set-2")),
                ("x-header-add-1", Some("header-add-1")),
                ("x-header-add-2", Some("add-val-2,header-add-2")),
                ("x-header-remove-1", None),
                ("x-header-remove-2", None),
                ("another-header", Some("another-header-val")),
            ],
        ),
    ];
    let got = runtime().block_on(async {
        let mut c = Caller::connect(gw, None).await;
        let mut got = Vec::new();
        for (path, metadata, _, _) in cases {
            got.push(c.call(path, metadata).await);
        }
        got
    });
    for ((path, metadata, backend, want), (msg, answer)) in cases.iter().zip(&got) {
        let what = format!("{path} {metadata:?}");
        assert_eq!(answer, &ok(backend), "{what}; log:\n{}", lb.log_text());
        let seen = seen_metadata(msg.as_ref().expect("a response message"));
        for (name, value) in *want {
            assert_eq!(
                seen.get(*name).map(String::as_str),
                *value,
                "{what}: {name} in {seen:?}"
            );
        }
    }
}

/// An unmatched call as a tonic client sees it: the suite's client reports
/// UNIMPLEMENTED, and so should tonic.
#[test]
fn grpc_route_unmatched_call_is_unimplemented_for_tonic() {
    let infra = Infra::start();
    let (_servers, services) = grpc_backends(&[V1]);
    let rules = format!(
        "  - matches: [{{method: {{service: test.Echo, method: Unary}}}}]\n    backendRefs: [{{name: {V1}, port: 8080}}]\n"
    );
    let route = grpc_route("exact-matching", "[{name: same-namespace}]", &rules);
    let _lb = infra.lb("gw-grpc-unmatched-tonic", &(services + &route));
    let gw = infra.gw("same-namespace");
    let got = runtime().block_on(async {
        let mut c = Caller::connect(gw, None).await;
        let matched = c.tonic_call("/test.Echo/Unary", &[]).await.map(|r| r.0);
        let unmatched = c.tonic_call("/test.Echo/EchoThree", &[]).await.map(|r| r.0);
        (matched, unmatched)
    });
    assert_eq!(got.0.ok().as_deref(), Some(V1));
    let status = got.1.expect_err("no route");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}
