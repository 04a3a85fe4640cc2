//! The `lb` command: `lb serve`, `lb check`, `lb explain`, `lb --version`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A high-performance L4/L7 load balancer for Kubernetes edge hosts.
#[derive(Debug, Parser)]
#[command(name = "lb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve traffic for the configured objects until SIGTERM/SIGINT; SIGHUP reloads.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "config/lb.toml")]
        config: PathBuf,
    },
    /// Load and compile the configuration and every object, print a summary and
    /// every diagnostic. Exit 0 when clean, 1 when any object is invalid, 2 when
    /// the configuration file itself is unusable.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = "config/lb.toml")]
        config: PathBuf,
    },
    /// Explain how a request would be routed: listener, matching rule and why
    /// the others do not match, backend and endpoints. Exit 0 when a route
    /// matches, 1 when none does (404), 2 when the configuration is unusable.
    Explain {
        /// The configuration file.
        #[arg(long, short, default_value = "config/lb.toml")]
        config: PathBuf,
        /// The request's Host (port and case allowed).
        #[arg(long)]
        host: String,
        /// The request target: /path?query, or http://host/path.
        #[arg(long, value_parser = lb_compile::explain::parse_target)]
        path: String,
        /// The request method (Gateway routes match on it; Ingress routing does not).
        #[arg(long, default_value = "GET")]
        method: String,
        /// A request header NAME:VALUE, repeatable (Gateway routes match on them).
        #[arg(long = "header", value_parser = lb_compile::explain::parse_header)]
        headers: Vec<(String, String)>,
        /// The listener kind the request arrives on.
        #[arg(long, value_enum, default_value = "http")]
        listener: ListenerArg,
        /// Explain a request arriving on this Gateway port (ADDRESS:PORT)
        /// instead of the Ingress listeners.
        #[arg(long)]
        gateway: Option<std::net::SocketAddr>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `--listener`: the Ingress listener kind a request arrives on.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListenerArg {
    /// `[ingress].http`.
    Http,
    /// `[ingress].https`.
    Https,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lb_control::logging::init();
    match cli.command {
        Command::Serve { config } => lb_control::serve::run(&config),
        Command::Check { config } => {
            let report = lb_control::check::check(&config);
            print!("{report}");
            ExitCode::from(report.exit_code())
        }
        Command::Explain {
            config,
            host,
            path,
            method,
            headers,
            listener,
            gateway,
            json,
        } => {
            let request = lb_compile::explain::Request {
                method,
                host,
                path,
                headers,
                listener: match listener {
                    ListenerArg::Http => lb_compile::explain::Listener::Http,
                    ListenerArg::Https => lb_compile::explain::Listener::Https,
                },
                gateway,
            };
            let report = lb_control::explain::explain(&config, &request);
            if json {
                println!("{}", report.to_json());
            } else if report.config_error.is_some() {
                eprint!("{report}");
            } else {
                print!("{report}");
            }
            ExitCode::from(report.exit_code)
        }
    }
}
