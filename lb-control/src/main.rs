//! The `lb` command: `lb serve`, `lb check`, `lb --version`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    }
}
