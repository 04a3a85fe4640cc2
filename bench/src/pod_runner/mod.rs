//! `lb-pod-runner`: a small kubelet and scheduler stand-in for a local, real Kubernetes
//! control plane (etcd, kube-apiserver and kube-controller-manager, no kubelet and no
//! scheduler), so that Deployments, ReplicaSets and EndpointSlices in tests all come from
//! the real controllers.
//!
//! * [`node`]: registers one Node (Ready, with a zone label) and keeps it alive like a
//!   kubelet: a `kube-node-lease` Lease renewed every 10 s and the Ready condition's
//!   heartbeat refreshed every 30 s.
//! * [`scheduler`]: binds every unscheduled pod of the default scheduler to that node.
//! * [`pods`] and [`worker`]: run the node's pods. Each pod gets an IP from `--pod-cidr`
//!   (see [`ipam`]; a loopback range, or any range that is local inside the network
//!   namespace `--netns`, see [`netns`]) and one process per TCP container port ([`plan`],
//!   [`process`]): `lb-echo` by default, or a binary chosen by image. Readiness is a TCP
//!   connect (or the container's tcpSocket/httpGet readiness probe, see [`probe`]) polled
//!   every 100 ms until it first succeeds; status is patched as a kubelet writes it
//!   ([`status`]). Deletion honours the grace period: SIGTERM at once, SIGKILL when it
//!   ends, then the pod is deleted for good.
//!
//! Every action is logged to stderr as one line prefixed `lb-pod-runner:`.

/// Logs one line to stderr, prefixed `lb-pod-runner:`.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("lb-pod-runner: {}", format_args!($($arg)*))
    };
}

pub mod args;
pub mod ipam;
pub mod netns;
pub mod node;
pub mod plan;
pub mod pods;
pub mod probe;
pub mod process;
pub mod scheduler;
pub mod status;
pub mod worker;

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{oneshot, watch};

pub use args::Options;

/// What every part of the runner shares.
pub struct Ctx {
    /// The API client.
    pub client: kube::Client,
    /// The command line.
    pub opts: Options,
    /// Pod IPs in use.
    pub ipam: Mutex<ipam::Ipam>,
}

/// Entry point of the `lb-pod-runner` binary: parses `args` (without the program name),
/// runs until SIGTERM or SIGINT, and returns the exit code.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let opts = match args::parse(args) {
        Ok(opts) => opts,
        Err(msg) if msg.is_empty() => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("lb-pod-runner: {msg}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    // The kube client's TLS takes the process-wide provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lb-pod-runner")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(opts));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            say!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the node until SIGTERM or SIGINT, then kills every child process and returns.
pub async fn run(opts: Options) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    if let Some(path) = &opts.ready_file {
        let _ = std::fs::remove_file(path);
    }
    if let Some(name) = &opts.netns {
        netns::check(name).map_err(|e| format!("--netns {name}: {e}"))?;
    }
    std::fs::create_dir_all(&opts.log_dir)
        .map_err(|e| format!("--log-dir {}: {e}", opts.log_dir.display()))?;
    let client = client(&opts.kubeconfig).await?;
    let ctx = Arc::new(Ctx {
        client,
        ipam: Mutex::new(ipam::Ipam::new(opts.pod_cidr)),
        opts,
    });
    say!(
        "node {} (zone {}), pod IPs from {}{}, echo {}",
        ctx.opts.node,
        ctx.opts.zone,
        ctx.opts.pod_cidr,
        match &ctx.opts.netns {
            Some(name) => format!(" in network namespace {name}"),
            None => String::new(),
        },
        ctx.opts.echo.display()
    );

    // Register the node first (retrying while the API server is not up yet).
    let registered = tokio::select! {
        r = node::register_until_ok(&ctx) => r,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };

    let (shutdown_tx, shutdown) = watch::channel(false);
    let keep_alive = tokio::spawn(node::keep_alive(ctx.clone(), registered, shutdown.clone()));
    let (sched_synced_tx, sched_synced) = oneshot::channel();
    let scheduler = tokio::spawn(scheduler::run(
        ctx.clone(),
        sched_synced_tx,
        shutdown.clone(),
    ));
    let (pods_synced_tx, pods_synced) = oneshot::channel();
    let pods = tokio::spawn(pods::run(ctx.clone(), pods_synced_tx, shutdown.clone()));

    let synced = async {
        let _ = sched_synced.await;
        let _ = pods_synced.await;
    };
    let mut stopped = false;
    tokio::select! {
        () = synced => {
            if let Some(path) = &ctx.opts.ready_file {
                write_ready_file(path, &ctx.opts.node)?;
            }
            say!("ready: node {} registered, pod watches synced", ctx.opts.node);
        }
        _ = term.recv() => stopped = true,
        _ = int.recv() => stopped = true,
    }
    if !stopped {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    say!("stopping: killing every pod process");
    let _ = shutdown_tx.send(true);
    let _ = pods.await;
    let _ = scheduler.await;
    let _ = keep_alive.await;
    if let Some(path) = &ctx.opts.ready_file {
        let _ = std::fs::remove_file(path);
    }
    say!("stopped");
    Ok(())
}

/// Writes `content` to `path` through a temporary file, so a reader never sees it half
/// written.
fn write_ready_file(path: &Path, content: &str) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{content}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("--ready-file {}: {e}", path.display()))
}

/// A client from a kubeconfig file (its current context).
pub async fn client(path: &Path) -> Result<kube::Client, String> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

/// Whether `err` is an API answer with HTTP status `code`.
pub(crate) fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// The current time as a Kubernetes timestamp.
pub(crate) fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// Resolves once `shutdown` is true (or its sender is gone).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
