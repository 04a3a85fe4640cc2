//! `tls`: TLS 1.3 termination in lb, HAProxy and nginx, all three serving
//! the same ECDSA P-256 certificate generated for the run, in front of the
//! plain HTTP backend. Two loads, rounds interleaved: wrk over `https://`
//! with keep-alive connections (requests/s), and full handshakes per second
//! with one request per connection.
//!
//! wrk and `h2load --h1` both resume TLS sessions when they reconnect
//! (checked against an nginx logging `$ssl_session_reused`: wrk keeps each
//! connection's OpenSSL object, and its session, across `SSL_clear`). So
//! the handshake load comes from a client of our own in this process:
//! rustls with resumption disabled, X25519 only (the group OpenSSL 3.0's
//! clients offer first), the certificate pinned and its signature checked on
//! every handshake. It counts the handshake kinds it sees, so a resumed
//! session would show.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, Resumption};
use rustls::crypto::{WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::http1::{WrkTarget, ratio_chart, wrk_rounds};
use super::{Options, Target, load_failure, table_with_failures};
use crate::harness::{cpu_micros, peak_rss_kib, ports_free, scratch, wait_listening};
use crate::proxies::{
    Cert, Listen, TLS_HOST, other_cores, ports, start_haproxy_listen, start_lb_tls,
    start_nginx_listen,
};
use crate::report::{Figures, ratios, result_path};

/// How long a proxy gets to start listening.
const START_LIMIT: Duration = Duration::from_secs(20);
/// Time one connection of the handshake load may take, connect to response.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connection, so a dead proxy is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// The request of the handshake load.
const REQUEST: &[u8] = b"GET /fixed HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n";

/// Runs the scenario and writes `bench/results/tls.svg`.
pub fn run(o: &Options) -> Result<String, String> {
    ports_free(&ports::ALL)?;
    let dir = scratch("tls");
    let result = run_in(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(o: &Options, dir: &Path) -> Result<String, String> {
    let cores = other_cores();
    let cert = Cert::generate(dir)?;
    let client = client_config(&cert)?;
    let _backend = o.backend.start(dir)?;
    let backend = SocketAddr::from(([127, 0, 0, 1], ports::BACKEND));
    if !wait_listening(backend, START_LIMIT) {
        return Err(format!("backend did not start listening on {backend}"));
    }
    let sub = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok::<_, String>(d)
    };
    let (lb_dir, ha_dir, ng_dir) = (sub("lb")?, sub("haproxy")?, sub("nginx")?);
    let target = |name, proc_, port, log| Target {
        name,
        proc_,
        port,
        log,
        down: None,
    };
    let mut targets = vec![
        target(
            "lb",
            start_lb_tls(&lb_dir, &cert)?,
            ports::LB,
            lb_dir.join("lb.log"),
        ),
        target(
            "haproxy",
            start_haproxy_listen(&ha_dir, Listen::Tls(cert.clone()))?,
            ports::HAPROXY,
            ha_dir.join("haproxy.log"),
        ),
        target(
            "nginx",
            start_nginx_listen(&ng_dir, Listen::Tls(cert.clone()))?,
            ports::NGINX,
            ng_dir.join("nginx.err"),
        ),
    ];
    for t in &mut targets {
        t.wait_up(START_LIMIT);
    }
    if targets.iter().all(|t| t.down.is_some()) {
        let why: Vec<String> = targets
            .iter()
            .map(|t| format!("{}: {}", t.name, t.down.as_deref().unwrap_or_default()))
            .collect();
        return Err(format!("no proxy is serving TLS ({})", why.join("; ")));
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let mut out = format!(
        "backend: {} (plain HTTP/1.1 behind each proxy)\n\n\
         TLS 1.3 only, one ECDSA P-256 self-signed certificate for `{TLS_HOST}` generated with `openssl req` for this run and served by all three: lb `[ingress] https` with the certificate as a `kubernetes.io/tls` Secret (also the `default_certificate`) and an Ingress with `spec.tls`; HAProxy `bind ... ssl crt ... alpn http/1.1 ssl-min-ver TLSv1.3`; nginx `listen ... ssl; ssl_protocols TLSv1.3`. Server-side session caches and tickets are left at each proxy's defaults (each issues TLS 1.3 session tickets); what matters is that the handshake client never resumes. Each proxy on core 0 with one worker; wrk, the handshake client and the backend on the other cores. CPU is the proxy's utime+stime from /proc over each run.\n",
        o.backend.name()
    );
    let mut chart = ratio_chart("tls", o);

    // (a) Keep-alive requests over TLS with wrk.
    let live: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].down.is_none())
        .collect();
    let wrk_targets: Vec<WrkTarget> = live
        .iter()
        .map(|&i| WrkTarget {
            pid: Some(targets[i].pid()),
            base: format!("https://127.0.0.1:{}", targets[i].port),
        })
        .collect();
    let measured = wrk_rounds(o, &cores, &wrk_targets, "/fixed", &[])?;
    let mut figs = vec![Figures::default(); targets.len()];
    for (&i, f) in live.iter().zip(measured) {
        figs[i] = f;
    }
    for t in &mut targets {
        t.check_alive();
    }
    let failed: Vec<Option<String>> = targets
        .iter()
        .zip(&figs)
        .map(|(t, f)| load_failure(f, t.down.as_ref()))
        .collect();
    let _ = writeln!(
        out,
        "\n### requests/s over TLS, keep-alive: wrk `GET https://.../fixed` ({} rounds x {} s, {} connections, median)\n",
        o.rounds, o.seconds, o.connections
    );
    out.push_str(&table_with_failures(&names, &figs, &failed));
    push_ratios(&mut chart, "keep-alive req/s", &names, &figs, &failed);

    // (b) Full handshakes, one request per connection, with our client.
    // The handshake client runs in this process, on threads pinned to the
    // other cores like wrk.
    let threads =
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1));
    let unpinned = Arc::new(AtomicBool::new(false));
    let rt = {
        let (cores, unpinned) = (cores.clone(), Arc::clone(&unpinned));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .on_thread_start(move || {
                if !pin_current_thread(&cores) {
                    unpinned.store(true, Ordering::Relaxed);
                }
            })
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?
    };
    let connector = TlsConnector::from(Arc::new(client));
    let mut figs = vec![Figures::default(); targets.len()];
    let mut tallies = vec![Tally::default(); targets.len()];
    let mut client_cpu = Vec::new();
    // Busy and total jiffies of core 0 and of the other cores over all runs.
    let mut cores_busy = [(0u64, 0u64); 2];
    for _ in 0..o.rounds {
        for (i, t) in targets.iter_mut().enumerate() {
            if t.down.is_some() {
                continue;
            }
            let pid = t.pid();
            let before = cpu_micros(pid);
            let me_before = cpu_micros(std::process::id());
            let jiffies_before = core_jiffies();
            let r = handshake_load(&rt, &connector, t.port, o.connections, o.seconds);
            let after = cpu_micros(pid);
            let me_after = cpu_micros(std::process::id());
            if let (Some(b), Some(a)) = (jiffies_before, core_jiffies()) {
                for (acc, (b, a)) in cores_busy.iter_mut().zip(b.iter().zip(a)) {
                    acc.0 += a.0.saturating_sub(b.0);
                    acc.1 += a.1.saturating_sub(b.1);
                }
            }
            let f = &mut figs[i];
            f.rps
                .push(r.responses as f64 / r.elapsed.as_secs_f64().max(1e-9));
            f.p50.push(percentile(&r.latency_us, 50.0));
            f.p99.push(percentile(&r.latency_us, 99.0));
            f.p999.push(percentile(&r.latency_us, 99.9));
            f.errors += r.errors + r.non_2xx;
            if let (Some(b), Some(a)) = (before, after) {
                f.cpu_us_per_req
                    .push(a.saturating_sub(b) as f64 / r.responses.max(1) as f64);
            }
            if let (Some(b), Some(a)) = (me_before, me_after) {
                let busy = a.saturating_sub(b) as f64
                    / (r.elapsed.as_secs_f64() * 1e6 * threads as f64).max(1.0);
                client_cpu.push((
                    a.saturating_sub(b) as f64 / r.handshakes().max(1) as f64,
                    busy,
                ));
            }
            f.rss_kib = peak_rss_kib(pid).unwrap_or(0);
            tallies[i].add(r);
            t.check_alive();
        }
    }
    drop(rt);
    if unpinned.load(Ordering::Relaxed) {
        return Err(format!(
            "could not pin the handshake client's threads to cores {cores}"
        ));
    }
    let failed: Vec<Option<String>> = targets
        .iter()
        .zip(&figs)
        .zip(&tallies)
        .map(|((t, f), tally)| {
            load_failure(f, t.down.as_ref()).map(|why| match &tally.first_error {
                Some(e) => format!("{why}; first error: {e}"),
                None => why,
            })
        })
        .collect();
    let _ = writeln!(
        out,
        "\n### full TLS handshakes/s, one request per connection: `GET /fixed` with `Connection: close` ({} rounds x {} s, {} concurrent connections, median)\n",
        o.rounds, o.seconds, o.connections
    );
    let table = table_with_failures(&names, &figs, &failed)
        .replacen(
            "| req/s | CPU µs/req |",
            "| handshakes/s | CPU µs/handshake |",
            1,
        )
        .replacen("ratios: req/s", "ratios: handshakes/s", 1)
        .replacen("; CPU/req", "; CPU/handshake", 1);
    out.push_str(&table);
    push_ratios(&mut chart, "handshakes/s", &names, &figs, &failed);
    out.push_str(
        "\nEach connection: TCP connect, a full TLS 1.3 handshake (resumption disabled in the client), one request, the response read, close; latency is all of it. Handshakes seen by the client (all rounds):\n\n",
    );
    for (t, tally) in targets.iter().zip(&tallies) {
        let _ = writeln!(
            out,
            "- {}: {} full, {} full with HelloRetryRequest, {} resumed; {}",
            t.name,
            tally.full,
            tally.full_hrr,
            tally.resumed,
            tally.negotiated.as_deref().unwrap_or("nothing negotiated")
        );
    }
    if !client_cpu.is_empty() {
        let per = crate::harness::median(client_cpu.iter().map(|c| c.0).collect());
        let busy = crate::harness::median(client_cpu.iter().map(|c| c.1).collect());
        let _ = writeln!(
            out,
            "\nThe handshake client (this process, {threads} thread(s) on cores {cores}) used {per:.0} µs CPU per handshake, {:.0}% of its thread(s) (median over runs); near 100% the client, not the proxy, sets the pace.",
            busy * 100.0
        );
    }
    if cores_busy[0].1 > 0 && cores_busy[1].1 > 0 {
        let pct = |(busy, total): (u64, u64)| busy as f64 * 100.0 / total as f64;
        let _ = writeln!(
            out,
            "Over these runs core 0 (the proxy) was {:.0}% busy and cores {cores} (client, backend) {:.0}%, counting every process on the machine (/proc/stat).",
            pct(cores_busy[0]),
            pct(cores_busy[1])
        );
    }
    drop(targets);
    chart.write_svg(&result_path("tls", "svg"))?;
    Ok(out)
}

/// Adds lb's four ratios for one load to the chart, unless a row failed.
fn push_ratios(
    chart: &mut crate::chart::Bars,
    group: &str,
    names: &[&str],
    figs: &[Figures],
    failed: &[Option<String>],
) {
    if failed.iter().any(Option::is_some) {
        return;
    }
    if let Some(r) = ratios(names, figs) {
        chart.groups.push(group.to_owned());
        for (s, v) in chart.series.iter_mut().zip(r) {
            s.values.push(v);
        }
    }
}

/// Pins the calling thread to `cores` with the `taskset` command (no unsafe
/// code): its thread id is the last part of `/proc/thread-self`.
fn pin_current_thread(cores: &str) -> bool {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|l| l.file_name().and_then(|t| t.to_str()).map(str::to_owned));
    let Some(tid) = tid else {
        return false;
    };
    Command::new("taskset")
        .args(["-p", "-c", cores, &tid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Busy and total jiffies (/proc/stat) of core 0 and of all other cores;
/// idle and iowait count as not busy.
fn core_jiffies() -> Option<[(u64, u64); 2]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(parse_core_jiffies(&stat))
}

fn parse_core_jiffies(stat: &str) -> [(u64, u64); 2] {
    let mut out = [(0, 0); 2];
    for line in stat.lines() {
        // "cpuN user nice system idle iowait irq softirq steal ..."; not the "cpu " total.
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let Some(id) = fields.next().and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let v: Vec<u64> = fields.take(8).filter_map(|x| x.parse().ok()).collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let slot = &mut out[usize::from(id != 0)];
        slot.0 += total.saturating_sub(idle);
        slot.1 += total;
    }
    out
}

/// The handshake client's configuration: TLS 1.3, X25519, ALPN `http/1.1`,
/// no session resumption, and `cert` as the only certificate accepted.
fn client_config(cert: &Cert) -> Result<ClientConfig, String> {
    let der = CertificateDer::from_pem_file(&cert.crt)
        .map_err(|e| format!("{}: {e}", cert.crt.display()))?;
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    let verifier = Pinned {
        cert: der,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS client setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts exactly the benchmark certificate, and checks the handshake
/// signature with it as a real client would.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the benchmark certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What one run of the handshake load saw.
#[derive(Debug, Clone, Default)]
struct Tally {
    /// Responses read (any status).
    responses: u64,
    /// Responses with a status of 400 or more.
    non_2xx: u64,
    /// Connections that failed (connect, handshake, I/O, timeout).
    errors: u64,
    full: u64,
    full_hrr: u64,
    resumed: u64,
    /// Connect-to-response time of each response, µs.
    latency_us: Vec<u32>,
    /// Wall time of the run.
    elapsed: Duration,
    first_error: Option<String>,
    /// Protocol, cipher suite and key exchange of the first handshake.
    negotiated: Option<String>,
}

impl Tally {
    fn handshakes(&self) -> u64 {
        self.full + self.full_hrr + self.resumed
    }

    /// Adds `o`'s counts (not its latencies) to these.
    fn add(&mut self, o: Tally) {
        self.responses += o.responses;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
        self.full += o.full;
        self.full_hrr += o.full_hrr;
        self.resumed += o.resumed;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        if self.negotiated.is_none() {
            self.negotiated = o.negotiated;
        }
    }
}

/// `connections` concurrent clients, each making one request per new TLS
/// connection to `127.0.0.1:port` until `seconds` have passed; a connection
/// in flight then gets up to [`CONN_TIMEOUT`] to finish.
fn handshake_load(
    rt: &tokio::runtime::Runtime,
    connector: &TlsConnector,
    port: u16,
    connections: u32,
    seconds: u32,
) -> Tally {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(u64::from(seconds));
    let mut total = rt.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(client_loop(connector.clone(), addr, deadline)))
            .collect();
        let mut total = Tally::default();
        for t in tasks {
            match t.await {
                Ok(mut tally) => {
                    total.latency_us.append(&mut tally.latency_us);
                    total.add(tally);
                }
                Err(e) => {
                    total.errors += 1;
                    total.first_error.get_or_insert(format!("client task: {e}"));
                }
            }
        }
        total
    });
    total.elapsed = start.elapsed();
    total.latency_us.sort_unstable();
    total
}

/// One client: connection after connection until `deadline`.
async fn client_loop(connector: TlsConnector, addr: SocketAddr, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    let Ok(name) = ServerName::try_from(TLS_HOST) else {
        t.errors += 1;
        t.first_error = Some(format!("{TLS_HOST} is not a server name"));
        return t;
    };
    while Instant::now() < deadline {
        let start = Instant::now();
        let failure = match tokio::time::timeout(
            CONN_TIMEOUT,
            one_request(&connector, addr, name.to_owned()),
        )
        .await
        {
            Ok(Ok(done)) => {
                t.responses += 1;
                if done.status >= 400 {
                    t.non_2xx += 1;
                }
                match done.kind {
                    Some(HandshakeKind::Full) => t.full += 1,
                    Some(HandshakeKind::FullWithHelloRetryRequest) => t.full_hrr += 1,
                    Some(HandshakeKind::Resumed) => t.resumed += 1,
                    None => {}
                }
                if t.negotiated.is_none() {
                    t.negotiated = Some(done.negotiated);
                }
                t.latency_us
                    .push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no response within {} s", CONN_TIMEOUT.as_secs())),
        };
        if let Some(e) = failure {
            t.errors += 1;
            t.first_error.get_or_insert(e);
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    t
}

/// What one connection of the handshake load ended with.
struct Done {
    status: u16,
    kind: Option<HandshakeKind>,
    negotiated: String,
}

/// Connects, completes a TLS handshake, sends [`REQUEST`] and reads the
/// whole response (by its Content-Length, or to the end of the stream).
async fn one_request(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
) -> Result<Done, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tls.get_ref().1;
    let kind = conn.handshake_kind();
    let negotiated = format!(
        "{:?}, {:?}, {:?}",
        conn.protocol_version(),
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        conn.negotiated_key_exchange_group().map(|g| g.name())
    )
    .replace("Some(", "")
    .replace(')', "");
    tls.write_all(REQUEST)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    // (status, total length when known) once the head is complete.
    let mut head: Option<(u16, Option<usize>)> = None;
    loop {
        let n = match tls.read(&mut chunk).await {
            Ok(n) => n,
            // A peer that closes without close_notify after the response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            return match head {
                Some((status, None)) => Ok(Done {
                    status,
                    kind,
                    negotiated,
                }),
                _ => Err("connection closed before the whole response".into()),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            head = parse_head(&buf)?;
        }
        if let Some((status, Some(total))) = head
            && buf.len() >= total
        {
            return Ok(Done {
                status,
                kind,
                negotiated,
            });
        }
    }
}

/// The status and total length (head + Content-Length, when given) of the
/// response at the start of `buf`, once its head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Option<usize>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let body = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            Ok(Some((resp.code.unwrap_or(0), body.map(|b| len + b))))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad response: {e}")),
    }
}

/// The `p`th percentile of sorted `values` (0 when empty).
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_and_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_head(r), Ok(Some((200, Some(r.len())))));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nCont"), Ok(None));
        assert_eq!(
            parse_head(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"),
            Ok(Some((502, None)))
        );
        assert!(parse_head(b"\x16\x03\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn core_jiffies_split_core_0_from_the_others() {
        let stat = "cpu  30 0 30 140 0 0 0 0 0 0\ncpu0 10 0 10 80 0 0 0 0 0 0\ncpu1 20 0 20 60 0 0 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0 0 0\nintr 5\n";
        assert_eq!(parse_core_jiffies(stat), [(20, 100), (40, 100)]);
    }

    #[test]
    fn percentiles_of_sorted_values() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 501.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    /// A rustls server with default session handling (it issues TLS 1.3
    /// tickets) answering `n` connections with a 200.
    async fn serve(cert: &Cert, n: usize) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        use rustls::pki_types::PrivateKeyDer;
        let chain = vec![CertificateDer::from_pem_file(&cert.crt).expect("crt")];
        let key = PrivateKeyDer::from_pem_file(&cert.key).expect("key");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            for _ in 0..n {
                let (tcp, _) = listener.accept().await.expect("accept");
                let mut tls = acceptor.accept(tcp).await.expect("server handshake");
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        (addr, task)
    }

    #[test]
    fn the_client_does_a_full_handshake_every_time() {
        let dir = scratch("tls-client-test");
        let cert = Cert::generate(&dir).expect("openssl generates the certificate");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let kinds = |config: ClientConfig| {
            rt.block_on(async {
                let (addr, server) = serve(&cert, 3).await;
                let connector = TlsConnector::from(Arc::new(config));
                let mut kinds = Vec::new();
                for _ in 0..3 {
                    let name = ServerName::try_from(TLS_HOST).expect("name").to_owned();
                    let done = one_request(&connector, addr, name).await.expect("request");
                    assert_eq!(done.status, 200);
                    assert!(done.negotiated.contains("TLSv1_3"), "{}", done.negotiated);
                    assert!(done.negotiated.contains("X25519"), "{}", done.negotiated);
                    kinds.push(done.kind);
                }
                server.await.expect("server");
                kinds
            })
        };
        let ours = client_config(&cert).expect("client config");
        assert_eq!(kinds(ours), vec![Some(HandshakeKind::Full); 3]);
        // The same client with rustls' default resumption does resume, so
        // the check above would notice.
        let mut resuming = client_config(&cert).expect("client config");
        resuming.resumption = Resumption::default();
        let seen = kinds(resuming);
        assert_eq!(seen[0], Some(HandshakeKind::Full));
        assert_eq!(seen[2], Some(HandshakeKind::Resumed));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
