//! `bench SCENARIO`: side-by-side load benchmarks of lb, HAProxy, nginx and the
//! direct path on loopback. Each proxy gets core 0 (lb with one worker); the
//! load generator and the backend get the other cores. Rounds are interleaved
//! and medians reported; the report is printed and written to
//! `bench/results/<scenario>.md`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use bench::backends::Backend;
use bench::report::{machine, result_path};
use bench::scenarios::{Options, conns, gateway, http1, http2, l4, reload, scale, tls};

const SCENARIOS: &str = "http1, http1-close, tls, http2, gateway, conns, reload, scale, l4";

fn parse_args() -> Result<(String, Options), String> {
    let mut args = std::env::args().skip(1);
    let mut scenario = String::new();
    let mut o = Options {
        seconds: 5,
        rounds: 3,
        connections: 50,
        backend: Backend::default(),
        idle: 10_000,
        changes: 100,
        objects: scale::DEFAULT_OBJECTS.to_vec(),
    };
    let mut seconds_given = false;
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Result<u32, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{what} needs a number"))
        };
        match a.as_str() {
            "--seconds" => {
                o.seconds = num("--seconds")?;
                seconds_given = true;
            }
            "--idle" => o.idle = num("--idle")? as usize,
            "--changes" => o.changes = num("--changes")?,
            "--objects" => o.objects = scale::parse_objects(&args.next().unwrap_or_default())?,
            "--backend" => o.backend = Backend::parse(&args.next().unwrap_or_default())?,
            "--rounds" => o.rounds = num("--rounds")? as usize,
            "--connections" => o.connections = num("--connections")?,
            s if !s.starts_with('-') && scenario.is_empty() => scenario = s.to_owned(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if scenario.is_empty() {
        return Err(format!(
            "usage: bench SCENARIO [--seconds N] [--rounds N] [--connections N] [--backend nginx|echo] [--idle N] [--changes N] [--objects N,N]\nscenarios: {SCENARIOS}"
        ));
    }
    if scenario == "reload" && !seconds_given {
        o.seconds = 20;
    }
    Ok((scenario, o))
}

fn main() -> ExitCode {
    let (scenario, o) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (title, result) = match scenario.as_str() {
        "http1" => (
            "http1: lb vs HAProxy vs nginx vs direct (keep-alive)",
            http1::run(&o, "http1", &["/fixed", "/bytes/1024", "/bytes/65536"], &[]),
        ),
        "http1-close" => (
            "http1-close: lb vs HAProxy vs nginx vs direct (new connection per request)",
            http1::run(&o, "http1-close", &["/fixed"], &["Connection: close"]),
        ),
        "tls" => (
            "tls: TLS 1.3 termination, lb vs HAProxy vs nginx (keep-alive requests and full handshakes)",
            tls::run(&o),
        ),
        "http2" => (
            "http2: HTTP/2 cleartext (h2c) with h2load, lb vs HAProxy vs nginx",
            http2::run(&o),
        ),
        "gateway" => (
            "gateway: Gateway API routing (100 HTTPRoutes) vs Ingress routing in one lb, HAProxy, nginx, direct",
            gateway::run(&o),
        ),
        "conns" => (
            "conns: memory per idle keep-alive connection, lb vs HAProxy vs nginx vs direct",
            conns::run(&o),
        ),
        "reload" => (
            "reload: failed requests during configuration changes under load",
            reload::run(&o),
        ),
        "l4" => (
            "l4: TCP proxying, lb vs HAProxy vs nginx vs direct",
            l4::run(&o),
        ),
        "scale" => (
            "scale: lb startup, compile, publish, reload and memory by object count",
            scale::run(&o),
        ),
        other => (
            "",
            Err(format!("unknown scenario {other}; available: {SCENARIOS}")),
        ),
    };
    match result {
        Ok(body) => {
            let report = format!("## {title}\n\n{}\n{body}", machine());
            println!("{report}");
            let path = result_path(&scenario, "md");
            if let Err(e) = std::fs::write(&path, &report) {
                eprintln!("cannot write {}: {e}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
