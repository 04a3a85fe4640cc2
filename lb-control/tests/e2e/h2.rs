//! HTTP/2 through the running binary: curl with prior knowledge on the plain
//! listener and with ALPN `h2` over TLS, a bounded h2load run, gRPC between
//! a tonic client and a tonic server (unary, server streaming, status
//! trailers), rapid reset (the resetting connection gets GOAWAY while
//! another keeps working), HTTP/1.1 and HTTP/2 clients to h2c backends, and
//! a drain that lets an open stream finish.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;
use bytes::Bytes;
use h2::Reason;
use http::uri::PathAndQuery;
use http::{HeaderMap, Request};
use prost::Message;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::codegen::{BoxFuture, Service};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::support::h2c::H2cServer;
use crate::support::{Lb, scratch_dir, service_yaml};

const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.example.com/ingress-controller}\n";

/// A Service for `backend` whose port declares `appProtocol`.
pub(crate) fn service_with_protocol(name: &str, backend: SocketAddr, app_protocol: &str) -> String {
    service_yaml("default", name, 80, None, &[backend]).replacen(
        "    protocol: TCP\n",
        &format!("    protocol: TCP\n    appProtocol: {app_protocol}\n"),
        1,
    )
}

/// An Ingress with one rule per (host, path, service); an empty host is a
/// rule for any host. `tls` is (host, secret).
fn ingress(rules: &[(&str, &str, &str)], tls: Option<(&str, &str)>) -> String {
    let mut out = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: h2\n  namespace: default\nspec:\n  ingressClassName: lb\n".to_owned();
    if let Some((host, secret)) = tls {
        out.push_str(&format!(
            "  tls:\n  - hosts: [\"{host}\"]\n    secretName: {secret}\n"
        ));
    }
    out.push_str("  rules:\n");
    for (host, path, svc) in rules {
        if host.is_empty() {
            out.push_str("  - http:\n");
        } else {
            out.push_str(&format!("  - host: \"{host}\"\n    http:\n"));
        }
        out.push_str(&format!(
            "      paths:\n      - path: {path}\n        pathType: Prefix\n        backend:\n          service: {{name: {svc}, port: {{number: 80}}}}\n"
        ));
    }
    out
}

fn start_lb(tag: &str, manifests: &[(&str, String)], extra: &str, ingress_toml: &str) -> Lb {
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    Lb::start_with(tag, &refs, extra, ingress_toml)
}

/// What curl saw.
struct Curl {
    version: String,
    status: u16,
    body: Vec<u8>,
}

/// Runs curl with `args`, writing the body to a file in `dir`.
fn curl(dir: &Path, args: &[&str]) -> Curl {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let file = dir.join(format!("curl-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-o"])
        .arg(&file)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let (version, code) = w.trim().split_once(' ').unwrap_or(("", "0"));
    Curl {
        version: version.to_owned(),
        status: code.parse().unwrap_or(0),
        body: std::fs::read(&file).unwrap_or_default(),
    }
}

/// The value of header `name` in the echo backend's JSON description.
fn echoed_header(json: &serde_json::Value, name: &str) -> Option<String> {
    json["headers"].as_array()?.iter().find_map(|pair| {
        let n = pair[0].as_str()?;
        n.eq_ignore_ascii_case(name)
            .then(|| pair[1].as_str().unwrap_or_default().to_owned())
    })
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn curl_http2_prior_knowledge_on_the_plain_listener() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        ("ing.yaml", ingress(&[("h2.test", "/", "web")], None)),
    ];
    let lb = start_lb("h2-plain", &manifests, "", "");
    let port = lb.http.port();
    let resolve = format!("h2.test:{port}:127.0.0.1");
    let url = |path: &str| format!("http://h2.test:{port}{path}");
    let h2 = ["--http2-prior-knowledge", "--resolve", &resolve];

    let r = curl(&lb.dir, &[&h2[..], &[&url("/hello?x=1")]].concat());
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("echo JSON");
    assert_eq!(json["path"], "/hello?x=1");
    assert_eq!(json["host"], format!("h2.test:{port}"));
    assert_eq!(
        echoed_header(&json, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echoed_header(&json, "x-forwarded-proto").as_deref(),
        Some("http")
    );

    // Request and response bodies stream both ways.
    let payload = pattern(300_000);
    let file = lb.dir.join("payload");
    std::fs::write(&file, &payload).unwrap();
    let data = format!("@{}", file.display());
    let r = curl(
        &lb.dir,
        &[&h2[..], &["--data-binary", &data, &url("/echo")]].concat(),
    );
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    assert!(r.body == payload, "echoed {} bytes", r.body.len());
    let r = curl(&lb.dir, &[&h2[..], &[&url("/bytes/1000000")]].concat());
    assert_eq!(r.status, 200);
    assert!(r.body == pattern(1_000_000), "got {} bytes", r.body.len());

    // lb's own answers, and HTTP/1.1 on the same listener.
    let other = format!("http://127.0.0.1:{port}/");
    let r = curl(&lb.dir, &["--http2-prior-knowledge", &other]);
    assert_eq!((r.version.as_str(), r.status), ("2", 404));
    let r = curl(&lb.dir, &["--resolve", &resolve, &url("/")]);
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
}

fn self_signed(dir: &std::path::Path, name: &str) -> (String, String) {
    crate::support::certs::self_signed(dir, name, &[name])
}

fn secret(name: &str, cert: &(String, String)) -> String {
    crate::support::certs::tls_secret(name, cert)
}

#[test]
fn curl_http2_over_tls_negotiates_h2_by_alpn() {
    let dir = scratch_dir("h2-tls-cert");
    let cert = self_signed(&dir, "h2.test");
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        ("secret.yaml", secret("cert", &cert)),
        (
            "ing.yaml",
            ingress(&[("h2.test", "/", "web")], Some(("h2.test", "cert"))),
        ),
    ];
    let lb = start_lb(
        "h2-tls",
        &manifests,
        "",
        "default_certificate = \"default/cert\"",
    );
    let port = lb.https.port();
    let resolve = format!("h2.test:{port}:127.0.0.1");
    let url = format!("https://h2.test:{port}/tls");
    let r = curl(&lb.dir, &["-k", "--http2", "--resolve", &resolve, &url]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200));
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("echo JSON");
    assert_eq!(json["path"], "/tls");
    assert_eq!(
        echoed_header(&json, "x-forwarded-proto").as_deref(),
        Some("https")
    );
    let r = curl(&lb.dir, &["-k", "--http1.1", "--resolve", &resolve, &url]);
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
}

/// The counts of h2load's `requests:` line: (succeeded, failed, errored).
fn h2load_counts(text: &str) -> Option<(u64, u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("requests:"))?;
    let count = |word: &str| {
        line.split(',')
            .find(|p| p.trim().ends_with(word))
            .and_then(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()))
    };
    Some((count("succeeded")?, count("failed")?, count("errored")?))
}

#[test]
fn h2load_bounded_runs_have_no_failures() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let h2c = H2cServer::start("h2c");
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        (
            "h2c.yaml",
            service_with_protocol("h2c", h2c.local_addr(), "h2c"),
        ),
        (
            "ing.yaml",
            ingress(&[("", "/h2c", "h2c"), ("", "/", "web")], None),
        ),
    ];
    let lb = start_lb("h2-load", &manifests, "", "");
    for path in ["/fixed", "/h2c"] {
        let url = format!("http://127.0.0.1:{}{path}", lb.http.port());
        let out = Command::new("timeout")
            .args(["60", "h2load", "-n", "2000", "-c", "4", "-m", "10", &url])
            .stdin(Stdio::null())
            .output()
            .expect("h2load runs (package nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("h2load {url}:\n{text}");
        assert_eq!(
            h2load_counts(&text),
            Some((2000, 0, 0)),
            "h2load output:\n{text}\nlb log:\n{}",
            lb.log_text()
        );
    }
    assert!(h2c.connections() <= 2, "one h2c connection per worker");
}

/// The message of the test gRPC service.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Msg {
    #[prost(string, tag = "1")]
    pub(crate) text: String,
    #[prost(uint32, tag = "2")]
    pub(crate) n: u32,
}

/// `/test.Echo/Unary`: echoes with `n + 1`; text `fail` answers
/// INVALID_ARGUMENT.
struct Unary;

impl tonic::server::UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, Status>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            if m.text == "fail" {
                return Err(Status::invalid_argument("bad things happen"));
            }
            Ok(tonic::Response::new(Msg {
                text: format!("echo: {}", m.text),
                n: m.n + 1,
            }))
        })
    }
}

/// `/test.Echo/Count`: streams `n` messages.
struct Count;

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

impl tonic::server::ServerStreamingService<Msg> for Count {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<tonic::Response<MsgStream>, Status>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            let items: Vec<Result<Msg, Status>> = (0..m.n)
                .map(|i| {
                    Ok(Msg {
                        text: format!("{} #{i}", m.text),
                        n: i,
                    })
                })
                .collect();
            Ok(tonic::Response::new(
                Box::pin(tokio_stream::iter(items)) as MsgStream
            ))
        })
    }
}

/// `*/Metadata`: answers with the request metadata the server saw, one
/// `name=value` line per value, in order.
struct Metadata;

impl tonic::server::UnaryService<Msg> for Metadata {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, Status>;

    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let headers = req.metadata().clone().into_headers();
            let text = headers
                .iter()
                .map(|(name, value)| {
                    format!("{name}={}\n", String::from_utf8_lossy(value.as_bytes()))
                })
                .collect();
            Ok(tonic::Response::new(Msg { text, n: 0 }))
        })
    }
}

/// The tonic server: dispatches by path, no generated code; every response
/// carries `x-backend: <name>`. Methods: `/test.Echo/Unary` (also as
/// `/test.Echo/EchoTwo` and `/test.Other/Unary`), `/test.Echo/Count`, and
/// `Metadata` of any service; anything else is UNIMPLEMENTED.
#[derive(Clone)]
struct EchoGrpc {
    name: &'static str,
}

impl Service<http::Request<tonic::body::Body>> for EchoGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let name = self.name;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            let mut resp = match req.uri().path() {
                "/test.Echo/Unary" | "/test.Echo/EchoTwo" | "/test.Other/Unary" => {
                    grpc.unary(Unary, req).await
                }
                "/test.Echo/Count" => grpc.server_streaming(Count, req).await,
                p if p.ends_with("/Metadata") => grpc.unary(Metadata, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            resp.headers_mut()
                .insert("x-backend", http::HeaderValue::from_static(name));
            Ok(resp)
        })
    }
}

/// A tonic gRPC server on its own thread; stops when dropped.
pub(crate) struct GrpcServer {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    fn start() -> GrpcServer {
        Self::named("grpc")
    }

    /// A server whose responses carry `x-backend: name`.
    pub(crate) fn named(name: &'static str) -> GrpcServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming_shutdown(EchoGrpc { name }, incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        GrpcServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One gRPC call with the h2 crate, to see the wire: (response headers,
/// body, trailers).
async fn raw_grpc(lb: SocketAddr, path: &str, msg: &Msg) -> (HeaderMap, Vec<u8>, HeaderMap) {
    let tcp = tokio::net::TcpStream::connect(lb).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = Request::post(format!("http://grpc.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    let payload = msg.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    body.send_data(Bytes::from(frame), true).unwrap();
    let (parts, mut recv) = resp.await.unwrap().into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.unwrap().unwrap_or_default();
    (parts.headers, data, trailers)
}

#[test]
fn grpc_unary_and_server_streaming_through_lb() {
    let server = GrpcServer::start();
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_with_protocol("grpc", server.addr, "grpc"),
        ),
        ("ing.yaml", ingress(&[("", "/", "grpc")], None)),
    ];
    let lb = start_lb("h2-grpc", &manifests, "", "");
    let codec = || ProstCodec::<Msg, Msg>::default();
    runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", lb.http))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        let unary = PathAndQuery::from_static("/test.Echo/Unary");
        client.ready().await.unwrap();
        let msg = Msg {
            text: "hi".into(),
            n: 41,
        };
        let resp = client
            .unary(tonic::Request::new(msg), unary.clone(), codec())
            .await
            .expect("unary call");
        assert_eq!(
            resp.into_inner(),
            Msg {
                text: "echo: hi".into(),
                n: 42
            }
        );
        client.ready().await.unwrap();
        let fail = Msg {
            text: "fail".into(),
            n: 0,
        };
        let err = client
            .unary(tonic::Request::new(fail), unary, codec())
            .await
            .expect_err("status passes through");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "bad things happen");

        client.ready().await.unwrap();
        let count = Msg {
            text: "s".into(),
            n: 5,
        };
        let mut stream = client
            .server_streaming(
                tonic::Request::new(count),
                PathAndQuery::from_static("/test.Echo/Count"),
                codec(),
            )
            .await
            .expect("streaming call")
            .into_inner();
        let mut got = Vec::new();
        while let Some(m) = stream.message().await.expect("message") {
            got.push(m.text);
        }
        assert_eq!(got, ["s #0", "s #1", "s #2", "s #3", "s #4"]);

        // The status travels in trailers, exactly as the server sent them.
        let ok = Msg {
            text: "raw".into(),
            n: 1,
        };
        let (headers, body, trailers) = raw_grpc(lb.http, "/test.Echo/Unary", &ok).await;
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(trailers["grpc-status"], "0");
        assert!(body.len() > 5, "one length-prefixed message");
        let decoded = Msg::decode(&body[5..]).unwrap();
        assert_eq!(decoded.text, "echo: raw");
        let bad = Msg {
            text: "fail".into(),
            n: 0,
        };
        let (headers, _, trailers) = raw_grpc(lb.http, "/test.Echo/Unary", &bad).await;
        let status = trailers.get("grpc-status").or(headers.get("grpc-status"));
        assert_eq!(status.unwrap(), "3");
        let message = trailers.get("grpc-message").or(headers.get("grpc-message"));
        assert_eq!(message.unwrap(), "bad%20things%20happen", "percent-encoded");
    });
}

/// Opens streams and resets them at once until the connection fails
/// (bounded in count and time); returns the error that ended it.
async fn rapid_reset(lb: SocketAddr) -> Option<h2::Error> {
    let tcp = tokio::net::TcpStream::connect(lb).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let started = Instant::now();
    let mut failure = None;
    for i in 0..50_000u32 {
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        send = match send.ready().await {
            Ok(s) => s,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let req = Request::get(format!("http://rr.test/{i}"))
            .body(())
            .unwrap();
        match send.send_request(req, false) {
            Ok((_resp, mut stream)) => stream.send_reset(Reason::CANCEL),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    match ended {
        Ok(Ok(Err(e))) if failure.as_ref().is_none_or(|f| f.reason().is_none()) => Some(e),
        _ => failure,
    }
}

/// Plain requests on their own connection while another is attacked:
/// all must succeed.
async fn steady_requests(lb: SocketAddr, n: usize) -> usize {
    let tcp = tokio::net::TcpStream::connect(lb).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut ok = 0;
    let mut send = send;
    for _ in 0..n {
        send = send.ready().await.unwrap();
        let req = Request::get("http://rr.test/fixed").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("answered in time")
            .unwrap();
        if resp.status() == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ok
}

#[test]
fn rapid_reset_gets_goaway_while_other_connections_work() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        ("ing.yaml", ingress(&[("", "/", "web")], None)),
    ];
    // Defaults: h2's bound on reset streams waiting to be accepted, and the
    // per-second count, whichever trips first. Then the per-second count
    // alone, with h2's own bound out of the way.
    let lbs = [
        start_lb("h2-rr", &manifests, "", ""),
        start_lb(
            "h2-rr-rate",
            &manifests,
            "[http2]\nmax_pending_accept_reset_streams = 1000000\nmax_resets_per_second = 50\n",
            "",
        ),
    ];
    let rt = runtime();
    for lb in &lbs {
        let (failure, ok) = rt
            .block_on(async { tokio::join!(rapid_reset(lb.http), steady_requests(lb.http, 100)) });
        let failure = failure.expect("the resetting connection was ended");
        assert_eq!(
            failure.reason(),
            Some(Reason::ENHANCE_YOUR_CALM),
            "{failure}; log:\n{}",
            lb.log_text()
        );
        assert!(failure.is_go_away() || failure.is_remote(), "{failure}");
        assert_eq!(ok, 100, "the other connection kept working");
        let after = rt.block_on(steady_requests(lb.http, 3));
        assert_eq!(after, 3, "new connections work after the attack");
    }
    assert!(
        lbs[1].log_text().contains("reset too many streams"),
        "{}",
        lbs[1].log_text()
    );
}

#[test]
fn http1_clients_reach_h2c_backends() {
    let h2c = H2cServer::start("h2c");
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_with_protocol("h2c", h2c.local_addr(), "kubernetes.io/h2c"),
        ),
        ("ing.yaml", ingress(&[("h2c.test", "/", "h2c")], None)),
    ];
    let lb = start_lb("h2-h1-h2c", &manifests, "", "");
    let mut c = lb.client();
    let r = c.get("h2c.test", "/hello?x=1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "h2c");
    let text = r.text();
    for line in [
        "method=GET",
        "path=/hello?x=1",
        "authority=h2c.test",
        "host=\n",
        "x-forwarded-for=127.0.0.1",
        "x-forwarded-proto=http",
        "x-forwarded-host=h2c.test",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert_eq!(
        r.header("content-length"),
        Some(text.len().to_string().as_str())
    );

    // A Content-Length body, echoed back chunked.
    let payload = pattern(200_000);
    let r = c
        .request("POST", "h2c.test", "/echo", &[], Some(&payload))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.body == payload, "echoed {} bytes", r.body.len());

    // A chunked body.
    c.send_raw(b"POST /echo HTTP/1.1\r\nHost: h2c.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));

    // A streamed response.
    let r = c.get("h2c.test", "/stream/3");
    assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\n");
    assert_eq!(
        c.get("h2c.test", "/").status,
        200,
        "the connection was kept alive"
    );
    assert!(h2c.connections() <= 2, "one h2c connection per worker");
}

#[test]
fn h2_streams_reach_h2c_backends_with_trailers_and_drain_gracefully() {
    let h2c = H2cServer::start("h2c");
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_with_protocol("h2c", h2c.local_addr(), "h2c"),
        ),
        (
            "web.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        (
            "ing.yaml",
            ingress(&[("h2c.test", "/", "h2c"), ("slow.test", "/", "web")], None),
        ),
    ];
    let mut lb = start_lb("h2-h2c", &manifests, "", "");
    let addr = lb.http;
    let rt = runtime();
    let (send, driver) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        (send, tokio::spawn(conn))
    });
    rt.block_on(async {
        let mut send = send.clone().ready().await.unwrap();
        let req = Request::get("http://h2c.test/trailers")
            .header("x-test", "1")
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let (parts, mut body) = resp.await.unwrap().into_parts();
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["x-backend"], "h2c");
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            data.extend_from_slice(&chunk.unwrap());
        }
        let text = String::from_utf8(data).unwrap();
        assert!(text.contains("authority=h2c.test\n"), "{text}");
        assert!(text.contains("x-forwarded-proto=http\n"), "{text}");
        assert!(text.contains("x-test=1\n"), "{text}");
        let trailers = body.trailers().await.unwrap().expect("trailers");
        assert_eq!(trailers["x-trailer"], "done");

        // A body both ways, larger than the flow-control windows.
        let mut send = send.ready().await.unwrap();
        let req = Request::post("http://h2c.test/echo").body(()).unwrap();
        let (resp, mut up) = send.send_request(req, false).unwrap();
        let payload = pattern(600_000);
        let sender = {
            let payload = payload.clone();
            tokio::spawn(async move {
                for piece in payload.chunks(16 * 1024) {
                    up.reserve_capacity(piece.len());
                    while up.capacity() < piece.len() {
                        std::future::poll_fn(|cx| up.poll_capacity(cx))
                            .await
                            .unwrap()
                            .unwrap();
                    }
                    up.send_data(Bytes::copy_from_slice(piece), false).unwrap();
                }
                up.send_data(Bytes::new(), true).unwrap();
            })
        };
        let (_, mut body) = resp.await.unwrap().into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        sender.await.unwrap();
        assert!(data == payload, "echoed {} bytes", data.len());
    });

    // Draining: the open stream finishes, the connection gets GOAWAY.
    let slow = rt.spawn(async move {
        let mut send = send.ready().await.unwrap();
        let req = Request::get("http://slow.test/sleep/800").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        resp.await.map(|r| r.status())
    });
    std::thread::sleep(Duration::from_millis(300));
    lb.signal("TERM");
    let status = rt.block_on(slow).unwrap().expect("stream finished");
    assert_eq!(status, 200);
    let ended = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), driver).await });
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "connection closed cleanly after GOAWAY: {ended:?}"
    );
    assert!(lb.wait_exit(Duration::from_secs(10)).success());
}
