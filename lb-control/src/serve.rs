//! `lb serve`: start the admin API, compile and publish the first snapshot,
//! bind the listeners, start one worker per core, then react to file changes
//! (reload), SIGHUP (reload) and SIGTERM/SIGINT (drain and exit 0).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use lb_core::counters::CounterSet;
use lb_core::l4::L4Proxy;
use lb_core::listener::bind_per_worker;
use lb_core::runtime::{
    self, Accepted, ConnectionHandler, Drain, DrainController, WorkerPlan, worker_count,
};
use lb_core::snapshot::SnapshotCell;
use lb_http::{ApplianceSnapshot, HttpProxy, ProxySettings};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin;
use crate::config::Config;
use crate::control_state::{ControlState, ReloadResult};
use crate::health::HealthChecker;
use crate::leader::Leader;
use crate::listeners::{GATEWAY_TAG, L4_TAG, L4Listeners};
use crate::pipeline::load_and_compile_with;
use crate::publish::publish;
use crate::sd_notify::Notifier;
use crate::source::files::{Change, FileSource, watch};
use crate::source::kube::KubeSource;
use crate::vip_iface::{VipInterface, wanted_vips};
use lb_compile::vip_alloc::Vips;

/// Runs `lb serve` to completion and returns the process exit code.
pub fn run(config_path: &Path) -> ExitCode {
    let cfg = match Config::load(config_path) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the control runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(config_path, cfg))
}

fn proxy_settings(cfg: &Config) -> ProxySettings {
    ProxySettings {
        header_read_timeout: cfg.http.header_read_timeout,
        idle_timeout: cfg.http.idle_timeout,
        connect_timeout: cfg.http.connect_timeout,
        response_timeout: cfg.http.response_timeout,
        max_header_bytes: cfg.http.max_header_bytes,
        max_headers: cfg.http.max_headers,
        max_uri_bytes: cfg.http.max_uri_bytes,
        max_body_bytes: cfg.http.max_body_bytes,
        body_timeout: cfg.http.body_timeout,
        body_min_rate: cfg.http.body_min_rate,
        tunnel_idle_timeout: cfg.http.tunnel_idle_timeout,
        max_mirrors_in_flight: cfg.http.max_mirrors_in_flight,
        send_timeout: if cfg.runtime.send_timeout.is_zero() {
            lb_core::limits::MAX_SEND_TIMEOUT
        } else {
            cfg.runtime.send_timeout
        },
        http2: lb_http::h2::Http2Settings {
            max_concurrent_streams: cfg.http2.max_concurrent_streams,
            max_header_list_size: cfg
                .http2
                .max_header_list_size
                .unwrap_or(cfg.http.max_header_bytes),
            max_pending_accept_reset_streams: cfg.http2.max_pending_accept_reset_streams,
            max_local_error_reset_streams: cfg.http2.max_local_error_reset_streams,
            max_resets_per_second: cfg.http2.max_resets_per_second,
            max_control_frames_per_second: cfg.http2.max_control_frames_per_second,
            stream_window: cfg.http2.stream_window,
            connection_window: cfg.http2.connection_window,
            goaway_timeout: cfg.http2.goaway_timeout,
        },
        max_idle_per_endpoint: cfg.upstream.max_idle_per_endpoint,
        outlier: lb_http::balance::OutlierSettings {
            consecutive_failures: cfg.upstream.consecutive_failures,
            base_ejection: cfg.upstream.base_ejection,
            max_ejection: cfg.upstream.max_ejection,
        },
    }
}

/// The connection caps and send deadline the workers apply; raises the
/// descriptor limit to its hard limit first (the automatic cap is derived
/// from it).
fn conn_limits(cfg: &Config, workers: usize) -> lb_core::limits::ConnLimits {
    let nofile = lb_core::limits::raise_nofile();
    let max_connections = match cfg.runtime.max_connections {
        0 => lb_core::limits::auto_max_connections(nofile.unwrap_or(1024), workers),
        n => n,
    };
    tracing::info!(
        max_connections,
        max_connections_per_client = cfg.runtime.max_connections_per_client,
        nofile = ?nofile,
        "connection caps per worker"
    );
    lb_core::limits::ConnLimits {
        max_connections,
        max_per_client: cfg.runtime.max_connections_per_client,
        send_timeout: (!cfg.runtime.send_timeout.is_zero()).then_some(cfg.runtime.send_timeout),
    }
}

async fn serve(config_path: &Path, mut cfg: Config) -> ExitCode {
    // Before any key or token is read: no core dump, no ptrace or /proc
    // memory access by other processes of the same user.
    if !cfg.runtime.dumpable
        && let Err(e) = nix::sys::prctl::set_dumpable(false)
    {
        tracing::warn!("cannot make the process non-dumpable: {e}");
    }
    let workers = worker_count(cfg.runtime.workers);
    let counters = Arc::new(CounterSet::new(workers));
    let cell = Arc::new(SnapshotCell::new(ApplianceSnapshot::default()));
    let io = match runtime::resolve_io(cfg.runtime.io) {
        Ok((io, None)) => io,
        Ok((io, Some(reason))) => {
            tracing::warn!("io_uring unavailable, using epoll: {reason}");
            io
        }
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut admin_state = ControlState::new(Arc::clone(&cell), Arc::clone(&counters));
    admin_state.io_mode = io.as_str();
    let state = Arc::new(admin_state);
    let notify = Notifier::from_env();
    notify.spawn_watchdog({
        let state = Arc::clone(&state);
        move || {
            let stalled = state.stalled_workers();
            if !stalled.is_empty() {
                tracing::error!(?stalled, "worker(s) made no progress: no watchdog ping");
            }
            stalled.is_empty()
        }
    });

    let admin_listener = match admin::bind(cfg.admin.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on admin address {}: {e}", cfg.admin.listen);
            return ExitCode::FAILURE;
        }
    };
    let admin_task = tokio::spawn(admin::serve(admin_listener, Arc::clone(&state)));

    // With [sources] kubernetes: the first snapshot waits for the initial list.
    let Some((kube, mut kube_changes)) = crate::source::kube::start_and_sync(&cfg, &state).await
    else {
        admin_task.abort();
        return ExitCode::SUCCESS;
    };
    // With [sources] kubernetes: elect one leader (it alone writes status).
    if let Some(leader) = crate::leader::start(&cfg) {
        let _ = state.leader.set(leader);
    }
    if let (Some(leader), Some(kube)) = (state.leader.get().cloned(), &kube) {
        kube.set_leader_check(Arc::new(move || leader.is_leader()));
    }
    // A new leader allocates the VIPs its predecessor had not and takes
    // the interface's VIPs; a former leader gives them up. Subscribed before
    // the first apply: an election won between that apply and the loop
    // below is then still a change the loop sees (a later subscription
    // would count it as seen, and the VIPs would wait for the next event).
    let (_no_election, mut leading) = tokio::sync::watch::channel(false);
    if let Some(l) = state.leader.get() {
        leading = l.subscribe();
    }
    let (l4, commands) = L4Listeners::new(workers);
    let mut reloader = Reloader {
        source: FileSource::new(cfg.sources.files.clone()),
        kube,
        l4,
        health: HealthChecker::default(),
        vips: Vips::default(),
        leader: state.leader.get().cloned(),
        interface: open_vip_interface(&cfg),
    };
    reloader.apply(&state, &cfg);

    // Plain HTTP listeners first, then HTTPS: a listener's index tells which.
    let addrs: Vec<SocketAddr> = cfg
        .ingress
        .http
        .iter()
        .chain(&cfg.ingress.https)
        .copied()
        .collect();
    let https_from = cfg.ingress.http.len();
    let listeners = match bind_per_worker(&addrs, workers) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            admin_task.abort();
            return ExitCode::FAILURE;
        }
    };
    let (drain_ctl, drain) = DrainController::new();
    let settings = proxy_settings(&cfg);
    let access_log = match &cfg.access_log.path {
        None => None,
        Some(path) => match lb_http::access_log::AccessLog::open(path.clone()) {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::error!("cannot open the access log {}: {e}", path.display());
                admin_task.abort();
                return ExitCode::FAILURE;
            }
        },
    };
    let plan = WorkerPlan {
        listeners,
        drain,
        grace: cfg.runtime.shutdown_grace,
        io,
        pin: cfg.runtime.pin,
        commands,
        progress: Arc::new(lb_core::progress::Progress::new(workers)),
        limits: conn_limits(&cfg, workers),
        counters: Some(Arc::clone(&counters)),
    };
    let progress = Arc::clone(&plan.progress);
    let (w_cell, w_counters) = (Arc::clone(&cell), Arc::clone(&counters));
    let handles = match runtime::start(plan, move |i| Dispatch {
        https_from,
        http: Rc::new(
            HttpProxy::new(
                Arc::clone(&w_cell),
                Arc::clone(&w_counters),
                i,
                settings.clone(),
            )
            .with_access_log(access_log.clone()),
        ),
        l4: Rc::new(L4Proxy::new(
            Arc::clone(&w_cell),
            Arc::clone(&w_counters),
            i,
        )),
    }) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = state.progress.set(progress);
    // Ready (and READY=1) once every worker runs: its first heartbeat.
    let started = std::time::Instant::now();
    while !state.stalled_workers().is_empty()
        && started.elapsed() < crate::control_state::WORKER_STALL
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let stalled @ [_, ..] = state.stalled_workers().as_slice() {
        tracing::error!(?stalled, "worker(s) did not start within 5 s");
    }
    state.set_ready(true);
    notify.ready(&serving_status(&state, workers));
    tracing::info!(workers, io = io.as_str(), http = ?cfg.ingress.http, admin = %cfg.admin.listen, "lb serving");

    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let mut changes = watch_sources(&cfg);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let hup_at = std::time::Instant::now();
                notify.reloading();
                match Config::load(config_path) {
                    Ok(file_cfg) => {
                        let (next, pending) = crate::config_reload::on_reload(&cfg, &file_cfg);
                        if pending.is_empty() {
                            state.set_restart_pending(false);
                        } else {
                            tracing::warn!(
                                "reload: {} changed; these take effect on restart (the running values stay)",
                                pending.join(", ")
                            );
                            state.set_restart_pending(true);
                        }
                        if next.sources.files != cfg.sources.files {
                            // The new source starts from the old one's last
                            // good objects and store.
                            reloader.source =
                                FileSource::succeed(next.sources.files.clone(), &mut reloader.source);
                            changes = watch_sources(&next);
                        }
                        cfg = next;
                    }
                    Err(e) => {
                        tracing::error!("reload: configuration file unusable, keeping the running configuration: {e}");
                        state.count_reload(ReloadResult::Failed);
                        notify.ready(&serving_status(&state, workers));
                        continue;
                    }
                }
                state.note_change(hup_at, 1);
                reloader.apply(&state, &cfg);
                notify.ready(&serving_status(&state, workers));
            }
            Ok(()) = leading.changed() => {
                if *leading.borrow_and_update() {
                    tracing::info!("leader now: allocating the VIPs still missing, taking the interface's VIPs");
                } else {
                    tracing::info!("follower now: giving up the interface's VIPs");
                }
                reloader.apply(&state, &cfg);
            }
            _ = sleep_until_due(reloader.health.next_due()) => {
                if reloader.health.probe_due().await {
                    reloader.health.republish(&state);
                }
            }
            Some(mut change) = kube_changes.recv() => {
                while let Ok(more) = kube_changes.try_recv() {
                    change.merge(more);
                }
                state.note_change(change.first, change.events);
                tracing::debug!(events = change.events, "kubernetes objects changed: reloading");
                reloader.apply(&state, &cfg);
                notify.status(&serving_status(&state, workers));
            }
            Some(mut change) = changes.recv() => {
                // Bursts that ended while the last compile ran: one reload.
                while let Ok(more) = changes.try_recv() {
                    change.merge(more);
                }
                state.note_change(change.first, change.events);
                tracing::info!(events = change.events, "manifest files changed: reloading");
                reloader.apply(&state, &cfg);
                notify.status(&serving_status(&state, workers));
            }
        }
    }

    state.set_ready(false);
    notify.stopping();
    drain_ctl.drain();
    if let Some(Err(e)) = reloader.interface.as_mut().map(VipInterface::remove_all) {
        tracing::error!("{e}");
    }
    if let Some(leader) = state.leader.get() {
        leader.release().await;
    }
    let grace = cfg.runtime.shutdown_grace;
    let join = tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    });
    tokio::select! {
        _ = join => tracing::info!("drained, exiting"),
        _ = tokio::time::sleep(grace + Duration::from_secs(5)) => tracing::warn!("workers did not stop in time, exiting"),
        _ = term.recv() => tracing::warn!("second SIGTERM: exiting now"),
        _ = int.recv() => tracing::warn!("second SIGINT: exiting now"),
    }
    admin_task.abort();
    ExitCode::SUCCESS
}

/// What a reload works on, kept from one reload to the next.
struct Reloader {
    /// The manifest files.
    source: FileSource,
    /// The Kubernetes API server source, when configured.
    kube: Option<KubeSource>,
    /// The L4 and Gateway listeners.
    l4: L4Listeners,
    /// Active health checks.
    health: HealthChecker,
    /// The last compile's VIP allocation.
    vips: Vips,
    /// The leader election, when configured (a follower allocates no VIP).
    leader: Option<Leader>,
    /// `[loadbalancer] interface`, when set and found: the VIPs go on it.
    interface: Option<VipInterface>,
}

impl Reloader {
    /// Loads, compiles (timed for `lb_config_compile_seconds`) and publishes
    /// the configuration, and brings the L4 listeners in line: listeners of
    /// addresses no longer served close first, then the snapshot swaps in,
    /// then new addresses are bound (so a new listener always finds its
    /// Service).
    fn apply(&mut self, state: &ControlState, cfg: &Config) {
        let start = std::time::Instant::now();
        let api_objects = self
            .kube
            .as_ref()
            .map(KubeSource::objects)
            .unwrap_or_default();
        self.vips.follower = self.leader.as_ref().is_some_and(|l| !l.is_leader());
        let mut compiled = load_and_compile_with(cfg, &mut self.source, api_objects, &self.vips);
        self.vips = compiled.vips.clone();
        self.health.filter(&mut compiled.snapshot);
        state.set_compile_time(start.elapsed());
        let wanted = L4Listeners::wanted(&compiled.snapshot.l4, &compiled.snapshot.gateway);
        // On a shared link only the leader holds (and announces) the VIPs.
        let iface_vips = match &self.interface {
            Some(_) if !self.vips.follower => wanted_vips(
                &compiled.snapshot.l4,
                &compiled.snapshot.gateway,
                &cfg.loadbalancer.pools,
            ),
            _ => std::collections::BTreeSet::new(),
        };
        self.l4.remove_stale(&wanted);
        // Status write-back (off this thread): the entries go to the kube source
        // after the listeners below are bound.
        let status = self.kube.as_ref().map(|_| compiled.status.clone());
        state.set_files_kept(self.source.kept());
        publish(state, cfg, compiled);
        for (protocol, addr, error) in self.l4.add_missing(&wanted) {
            tracing::error!(%addr, ?protocol, "address not served: {error}");
        }
        if let Some(Err(e)) = self.interface.as_mut().map(|i| i.sync(&iface_vips)) {
            tracing::error!("{e}");
        }
        // Written once the listeners are bound and the addresses held, so a
        // client that reads an address from the status finds it served.
        if let (Some(k), Some(status)) = (&self.kube, status) {
            k.write_status(status);
        }
    }
}

/// Opens `[loadbalancer] interface` when set; a failure is logged and lb
/// serves on without managing addresses.
fn open_vip_interface(cfg: &Config) -> Option<VipInterface> {
    let name = cfg.loadbalancer.interface.as_deref()?;
    VipInterface::open(name)
        .inspect_err(|e| {
            tracing::error!(
                "{e}; VIPs are not added to an interface (under systemd, [loadbalancer] interface needs the drop-in systemd/lb.service.d/vip-interface.conf for CAP_NET_ADMIN and CAP_NET_RAW)"
            )
        })
        .ok()
}

/// One worker's connection handler: HTTP listeners go to the HTTP proxy, L4
/// listeners (tag [`L4_TAG`]) to the L4 proxy, Gateway listeners (tag
/// [`GATEWAY_TAG`]) to the HTTP proxy's Gateway entry.
struct Dispatch {
    /// Index of the first HTTPS listener among the static listeners.
    https_from: usize,
    http: Rc<HttpProxy>,
    l4: Rc<L4Proxy<ApplianceSnapshot>>,
}

impl ConnectionHandler for Dispatch {
    async fn serve(self: Rc<Self>, conn: Accepted, drain: Drain) {
        if conn.tag == L4_TAG {
            Rc::clone(&self.l4).serve(conn, drain).await;
        } else if conn.tag == GATEWAY_TAG {
            Rc::clone(&self.http).serve_gateway(conn, drain).await;
        } else if conn.listener >= self.https_from {
            Rc::clone(&self.http).serve_tls(conn, drain).await;
        } else {
            Rc::clone(&self.http).serve(conn, drain).await;
        }
    }

    fn serve_datagrams(
        self: Rc<Self>,
        socket: lb_core::datagram::Datagram,
        tag: u32,
    ) -> impl Future<Output = ()> + 'static {
        Rc::clone(&self.l4).serve_datagrams(socket, tag)
    }
}

/// The systemd `STATUS=` line while serving.
fn serving_status(state: &ControlState, workers: usize) -> String {
    let generation = state.snapshot.generation();
    format!(
        "serving generation {generation} on {workers} workers ({})",
        state.io_mode
    )
}

/// Sleeps until `due`; forever when nothing is due.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Starts watching the manifest sources; a failure to watch is logged and
/// leaves SIGHUP as the way to reload.
fn watch_sources(cfg: &Config) -> tokio::sync::mpsc::UnboundedReceiver<Change> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    match watch(&cfg.sources.files) {
        Ok((guard, events)) => {
            std::thread::Builder::new()
                .name("lb-watch".into())
                .spawn(move || {
                    let _guard = guard;
                    while let Ok(change) = events.recv() {
                        if tx.send(change).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| tracing::warn!("cannot start the file watcher thread: {e}"))
                .ok();
        }
        Err(e) => tracing::warn!("cannot watch manifest files ({e}); reload with SIGHUP"),
    }
    rx
}
