//! One pod's life on the node: IP, processes, readiness, status, restarts and graceful
//! deletion. Each pod has its own task running [`run`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;

use super::plan::{ContainerPlan, PodPlace, ProcSpec, Run, plan_pod, processes};
use super::process::{Proc, describe, exit_code};
use super::status::{
    Conditions, ContainerView, PodView, Terminated, container_id, pod_status, readiness_gates,
    status_patch,
};
use super::{Ctx, is_status, now};

/// How often a pod's processes and pending readiness checks are looked at.
pub const TICK: Duration = Duration::from_millis(100);
/// Delay before a dead process is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Delay before a failed API call (status, deletion) or IP assignment is retried.
const RETRY: Duration = Duration::from_secs(1);
/// How long after writing the status a pod that shows another one counts as changed
/// by someone else (rather than not yet updated in the watch).
const DRIFT_AFTER: Duration = Duration::from_secs(2);

/// Runs the pod that `updates` carries (`None` once it is gone from the API) until it is
/// deleted, gone or `shutdown` turns true.
pub async fn run(
    ctx: Arc<Ctx>,
    mut updates: watch::Receiver<Option<Arc<Pod>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let mut worker = Worker::new(ctx, pod);
    loop {
        if worker.step().await == Flow::Done {
            return;
        }
        tokio::select! {
            biased;
            () = super::stopping(&mut shutdown) => {
                worker.kill_all("runner stopping").await;
                return;
            }
            changed = updates.changed() => {
                let latest = match changed {
                    Ok(()) => updates.borrow_and_update().clone(),
                    Err(_) => None,
                };
                match latest {
                    Some(pod) => worker.pod = pod,
                    None => {
                        worker.kill_all("pod gone from the API").await;
                        say!("gone {}", worker.key);
                        return;
                    }
                }
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

/// A pod IP, returned to the pool when dropped.
struct IpLease {
    ctx: Arc<Ctx>,
    ip: Ipv4Addr,
}

impl Drop for IpLease {
    fn drop(&mut self) {
        if let Ok(mut ipam) = self.ctx.ipam.lock() {
            ipam.release(self.ip);
        }
    }
}

/// One process of a container.
struct Slot {
    spec: ProcSpec,
    proc: Option<Proc>,
    started_at: Option<Time>,
    /// When to start it (again) while it does not run.
    restart_at: Option<Instant>,
}

/// Readiness checking state of a container.
struct Probing {
    /// The check has succeeded since the container (re)started; checks are then
    /// `period` apart instead of [`TICK`].
    succeeded: bool,
    next: Instant,
    failures: u32,
}

struct ContainerRun {
    plan: ContainerPlan,
    slots: Vec<Slot>,
    restart_count: i32,
    started_at: Option<Time>,
    last_terminated: Option<Terminated>,
    ready: bool,
    probing: Probing,
}

impl ContainerRun {
    fn running(&self, has_ip: bool) -> bool {
        match self.plan.run {
            Run::Nothing => has_ip,
            _ => !self.slots.is_empty() && self.slots.iter().all(|s| s.proc.is_some()),
        }
    }
}

struct Worker {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    /// `namespace/name`, for the log.
    key: String,
    namespace: String,
    name: String,
    uid: String,
    containers: Vec<ContainerRun>,
    ip: Option<IpLease>,
    ip_retry_at: Instant,
    ip_failure_logged: bool,
    start_time: Time,
    conds: Conditions,
    /// When the runner first saw the deletion.
    terminating: Option<Instant>,
    last_status: Option<serde_json::Value>,
    /// When `last_status` was written.
    last_status_at: Instant,
    status_retry_at: Instant,
    delete_retry_at: Instant,
    pod_ready: bool,
}

impl Worker {
    fn new(ctx: Arc<Ctx>, pod: Arc<Pod>) -> Worker {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let (plans, notes) = plan_pod(&pod, &ctx.opts.image_bins);
        for note in notes {
            say!("{key}: {note}");
        }
        let old_statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let start = Instant::now();
        let containers = plans
            .into_iter()
            .map(|plan| ContainerRun {
                // An adopted pod keeps its restart counts.
                restart_count: old_statuses
                    .iter()
                    .find(|s| s.name == plan.name)
                    .map_or(0, |s| s.restart_count),
                plan,
                slots: Vec::new(),
                started_at: None,
                last_terminated: None,
                ready: false,
                probing: Probing {
                    succeeded: false,
                    next: start,
                    failures: 0,
                },
            })
            .collect();
        Worker {
            conds: Conditions::from_pod(&pod),
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .unwrap_or_else(now),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ctx,
            pod,
            key,
            namespace,
            name,
            containers,
            ip: None,
            ip_retry_at: start,
            ip_failure_logged: false,
            terminating: None,
            last_status: None,
            last_status_at: start,
            status_retry_at: start,
            delete_retry_at: start,
            pod_ready: false,
        }
    }

    async fn step(&mut self) -> Flow {
        let now = Instant::now();
        if self.terminating.is_none() && self.pod.metadata.deletion_timestamp.is_some() {
            self.begin_termination(now);
        }
        if let Some(seen) = self.terminating {
            return self.step_terminating(seen, now).await;
        }
        if self.ip.is_none() && now >= self.ip_retry_at {
            if self.assign_ip() {
                self.start_containers();
            } else {
                self.ip_retry_at = now + RETRY;
            }
        }
        if self.ip.is_some() {
            self.reap_and_restart(now);
            self.check_readiness(now).await;
        }
        self.write_status(now).await;
        Flow::Continue
    }

    /// Every TCP port of the pod.
    fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .containers
            .iter()
            .flat_map(|c| c.plan.tcp_ports.iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    fn assign_ip(&mut self) -> bool {
        let ports = self.ports();
        let preferred = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        // Ports are bound for the check where the pod's processes will bind them.
        let ip = match self.ctx.ipam.lock() {
            Ok(mut ipam) => {
                let ipam = &mut *ipam;
                super::netns::in_netns(self.ctx.opts.netns.as_deref(), || {
                    ipam.allocate(preferred, |ip| ports_free(ip, &ports))
                })
                .unwrap_or_else(|e| {
                    say!("{}: {e}", self.key);
                    None
                })
            }
            Err(_) => None,
        };
        match ip {
            Some(ip) => {
                self.ip = Some(IpLease {
                    ctx: self.ctx.clone(),
                    ip,
                });
                true
            }
            None => {
                if !self.ip_failure_logged {
                    say!(
                        "{}: no IP in {} has ports {ports:?} free (retrying)",
                        self.key,
                        self.ctx.opts.pod_cidr
                    );
                    self.ip_failure_logged = true;
                }
                false
            }
        }
    }

    fn pod_ip(&self) -> Option<Ipv4Addr> {
        self.ip.as_ref().map(|l| l.ip)
    }

    fn start_containers(&mut self) {
        let Some(ip) = self.pod_ip() else { return };
        let place = PodPlace {
            namespace: &self.namespace,
            name: &self.name,
            ip,
        };
        let echo = self.ctx.opts.echo.clone();
        let now = Instant::now();
        for c in &mut self.containers {
            c.slots = processes(&c.plan, place, &echo)
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    proc: None,
                    started_at: None,
                    restart_at: None,
                })
                .collect();
            if c.plan.run == Run::Nothing {
                c.started_at = Some(super::now());
                c.ready = true;
                say!(
                    "started {} container {} (no TCP ports: nothing to run)",
                    self.key,
                    c.plan.name
                );
            }
            for i in 0..c.slots.len() {
                start_slot(
                    &self.ctx,
                    &self.key,
                    &self.namespace,
                    &self.name,
                    ip,
                    c,
                    i,
                    now,
                );
            }
        }
    }

    /// Notices dead processes and starts them again [`RESTART_DELAY`] later.
    fn reap_and_restart(&mut self, now: Instant) {
        let Some(ip) = self.pod_ip() else { return };
        for c in &mut self.containers {
            for i in 0..c.slots.len() {
                let slot = &mut c.slots[i];
                if let Some(proc) = &mut slot.proc
                    && let Some(status) = proc.poll()
                {
                    let pid = proc.pid();
                    say!(
                        "exited {} container {} pid {pid}: {}; restarting in {}s",
                        self.key,
                        c.plan.name,
                        describe(status),
                        RESTART_DELAY.as_secs()
                    );
                    let (code, signal) = exit_code(status);
                    c.last_terminated = Some(Terminated {
                        exit_code: code,
                        signal,
                        started_at: slot.started_at.clone(),
                        finished_at: super::now(),
                        container_id: Some(container_id(pid)),
                    });
                    slot.proc = None;
                    slot.restart_at = Some(now + RESTART_DELAY);
                    c.ready = false;
                    c.probing.succeeded = false;
                }
                if slot.proc.is_none() && slot.restart_at.is_some_and(|at| at <= now) {
                    c.restart_count += 1;
                    start_slot(
                        &self.ctx,
                        &self.key,
                        &self.namespace,
                        &self.name,
                        ip,
                        c,
                        i,
                        now,
                    );
                }
            }
        }
    }

    /// Runs the readiness checks that are due, all at once.
    async fn check_readiness(&mut self, now: Instant) {
        let Some(ip) = self.pod_ip() else { return };
        let ip = IpAddr::V4(ip);
        let due: Vec<usize> = (0..self.containers.len())
            .filter(|&i| {
                let c = &self.containers[i];
                !c.plan.readiness.checks.is_empty() && c.running(true) && now >= c.probing.next
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let results = futures_util::future::join_all(due.iter().map(|&i| {
            let readiness = &self.containers[i].plan.readiness;
            async move {
                for check in &readiness.checks {
                    if !super::probe::run(ip, check, readiness.timeout).await {
                        return false;
                    }
                }
                true
            }
        }))
        .await;
        let now = Instant::now();
        for (i, ok) in due.into_iter().zip(results) {
            let c = &mut self.containers[i];
            let readiness = &c.plan.readiness;
            if ok {
                if !c.ready {
                    say!(
                        "container ready {} {} on {ip}:{:?}",
                        self.key,
                        c.plan.name,
                        c.plan.tcp_ports
                    );
                }
                c.ready = true;
                c.probing.succeeded = true;
                c.probing.failures = 0;
                c.probing.next = now + readiness.period;
            } else if c.probing.succeeded {
                c.probing.failures += 1;
                if c.probing.failures >= readiness.failure_threshold {
                    say!(
                        "container unready {} {}: {} readiness checks failed",
                        self.key,
                        c.plan.name,
                        c.probing.failures
                    );
                    c.ready = false;
                    c.probing.succeeded = false;
                    c.probing.next = now + TICK;
                } else {
                    c.probing.next = now + readiness.period;
                }
            } else {
                c.probing.next = now + TICK;
            }
        }
    }

    fn view(&self) -> PodView {
        let has_ip = self.ip.is_some();
        PodView {
            ip: self.pod_ip(),
            start_time: self.start_time.clone(),
            containers: self
                .containers
                .iter()
                .map(|c| {
                    let running = c.running(has_ip);
                    ContainerView {
                        name: c.plan.name.clone(),
                        image: c.plan.image.clone(),
                        container_id: c
                            .slots
                            .first()
                            .and_then(|s| s.proc.as_ref())
                            .filter(|_| running)
                            .map(|p| container_id(p.pid())),
                        running,
                        ready: running && c.ready,
                        started_at: c.started_at.clone(),
                        restart_count: c.restart_count,
                        last_terminated: c.last_terminated.clone(),
                    }
                })
                .collect(),
            readiness_gates: readiness_gates(&self.pod),
        }
    }

    /// Patches the pod status when it changed.
    async fn write_status(&mut self, now: Instant) {
        if now < self.status_retry_at {
            return;
        }
        let view = self.view();
        let status = pod_status(&view, &mut self.conds, &super::now());
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let patch = status_patch(&self.uid, &status);
        // Unchanged, and the pod still shows it (someone else, such as the node
        // lifecycle controller, may have rewritten it; watch events lag our own writes,
        // so a difference counts only a while after the last write).
        if self.last_status.as_ref() == Some(&patch)
            && (now < self.last_status_at + DRIFT_AFTER || !drifted(&self.pod, &patch))
        {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let pp = PatchParams {
            field_manager: Some(super::node::FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api
            .patch_status(&self.name, &pp, &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                self.last_status = Some(patch);
                self.last_status_at = now;
                if ready != self.pod_ready {
                    match (ready, view.ip) {
                        (true, Some(ip)) => say!("ready {} ({ip})", self.key),
                        _ => say!("not ready {}", self.key),
                    }
                    self.pod_ready = ready;
                }
            }
            Err(e) if is_status(&e, 404) => self.status_retry_at = now + RETRY,
            Err(e) => {
                say!("writing the status of {}: {e}", self.key);
                self.status_retry_at = now + RETRY;
            }
        }
    }

    /// The deletion grace period now (it may be shortened by a second deletion).
    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }

    /// SIGTERM to every process, as a kubelet does; the Ready condition is left alone.
    fn begin_termination(&mut self, now: Instant) {
        self.terminating = Some(now);
        let mut pids = Vec::new();
        for c in &mut self.containers {
            for slot in &mut c.slots {
                slot.restart_at = None;
                if let Some(proc) = &mut slot.proc
                    && proc.poll().is_none()
                {
                    proc.signal(Signal::SIGTERM);
                    pids.push(proc.pid());
                }
            }
        }
        say!(
            "terminating {} (grace {}s): SIGTERM to pids {pids:?}",
            self.key,
            self.grace().as_secs()
        );
    }

    /// Waits for the processes to exit or the grace period to end, kills what is left
    /// and deletes the pod for good.
    async fn step_terminating(&mut self, seen: Instant, now: Instant) -> Flow {
        let mut live = 0;
        for c in &mut self.containers {
            for slot in &mut c.slots {
                if let Some(proc) = &mut slot.proc {
                    if let Some(status) = proc.poll() {
                        say!(
                            "exited {} container {} pid {}: {}",
                            self.key,
                            c.plan.name,
                            proc.pid(),
                            describe(status)
                        );
                        slot.proc = None;
                    } else {
                        live += 1;
                    }
                }
            }
        }
        if live > 0 && now < seen + self.grace() {
            return Flow::Continue;
        }
        if live > 0 {
            self.kill_all("grace period over").await;
        }
        if now < self.delete_retry_at {
            return Flow::Continue;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&self.name, &dp).await {
            Ok(_) => {}
            // Gone already, or the name now belongs to another pod.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => {
                say!("deleting {}: {e} (retrying)", self.key);
                self.delete_retry_at = now + RETRY;
                return Flow::Continue;
            }
        }
        let ip = self.ip.take().map(|l| l.ip);
        match ip {
            Some(ip) => say!("deleted {} (freed {ip})", self.key),
            None => say!("deleted {}", self.key),
        }
        Flow::Done
    }

    /// SIGKILLs every process that still runs and waits for it.
    async fn kill_all(&mut self, why: &str) {
        for c in &mut self.containers {
            for slot in &mut c.slots {
                slot.restart_at = None;
                if let Some(mut proc) = slot.proc.take()
                    && proc.poll().is_none()
                {
                    let pid = proc.pid();
                    let status = proc.kill().await;
                    say!(
                        "killed {} container {} pid {pid} ({why}): {}",
                        self.key,
                        c.plan.name,
                        describe(status)
                    );
                }
            }
        }
    }
}

/// Whether the pod as last seen differs from what `patch` wrote, in what endpoints
/// depend on: pod IP and the Ready condition.
fn drifted(pod: &Pod, patch: &serde_json::Value) -> bool {
    let status = pod.status.as_ref();
    let ip = status.and_then(|s| s.pod_ip.as_deref());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str());
    let want_ready = patch["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str());
    ip != patch["status"]["podIP"].as_str() || ready != want_ready
}

/// Whether every port can be bound on `ip` (no other process listens there).
fn ports_free(ip: Ipv4Addr, ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|&port| std::net::TcpListener::bind((ip, port)).is_ok())
}

/// Starts slot `i` of container `c`; a failure schedules another attempt.
#[allow(clippy::too_many_arguments)]
fn start_slot(
    ctx: &Ctx,
    key: &str,
    namespace: &str,
    pod: &str,
    ip: Ipv4Addr,
    c: &mut ContainerRun,
    i: usize,
    now: Instant,
) {
    let log = ctx
        .opts
        .log_dir
        .join(format!("{namespace}_{pod}_{}.log", c.plan.name));
    let slot = &mut c.slots[i];
    slot.restart_at = None;
    match Proc::spawn(&slot.spec, ctx.opts.netns.as_deref(), &log) {
        Ok(proc) => {
            say!(
                "started {key} container {} pid {} on {ip}:{} ({})",
                c.plan.name,
                proc.pid(),
                slot.spec.port,
                slot.spec.program.display()
            );
            let started = super::now();
            slot.started_at = Some(started.clone());
            slot.proc = Some(proc);
            c.started_at = Some(started);
            c.ready = false;
            c.probing = Probing {
                succeeded: false,
                next: now + c.plan.readiness.initial_delay,
                failures: 0,
            };
        }
        Err(e) => {
            say!(
                "starting {key} container {}: {}: {e}; retrying in {}s",
                c.plan.name,
                slot.spec.program.display(),
                RESTART_DELAY.as_secs()
            );
            c.last_terminated = Some(Terminated {
                exit_code: 127,
                signal: None,
                started_at: None,
                finished_at: super::now(),
                container_id: None,
            });
            slot.restart_at = Some(now + RESTART_DELAY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_seen_in_ip_and_ready() {
        let pod = |ip: &str, ready: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        let patch = serde_json::json!({"status": {"podIP": "10.0.0.2",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}});
        assert!(!drifted(&pod("10.0.0.2", "True"), &patch));
        assert!(drifted(&pod("10.0.0.2", "False"), &patch));
        assert!(drifted(&pod("10.0.0.3", "True"), &patch));
    }

    #[test]
    fn port_check_sees_listeners() {
        // An address of its own, so no other test's socket takes the port meanwhile.
        let ip: Ipv4Addr = "127.88.77.66".parse().unwrap();
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!ports_free(ip, &[port]));
        drop(listener);
        assert!(ports_free(ip, &[port]));
        assert!(ports_free(ip, &[]));
    }
}
