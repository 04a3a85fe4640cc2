//! Leader election among appliances watching one cluster, with a
//! `coordination.k8s.io/v1` Lease.
//!
//! Every lb serves traffic; only the elected leader writes status and
//! allocates VIPs. The Lease is `[sources] kubernetes.lease` (`NAMESPACE/NAME`,
//! default `lb-leader` in `POD_NAMESPACE`, else `lb-system`; see
//! [`KubernetesSource::lease_ref`]); its holder is `[node].name` + `_` + the
//! process id. An lb takes the Lease when it is absent, has no holder, or is
//! expired (`renewTime + leaseDurationSeconds` before now); the holder renews
//! it every [`RENEW_INTERVAL`], the others look every [`RETRY_INTERVAL`].
//! Every write carries the read `resourceVersion`, so of two racing
//! candidates one gets 409 Conflict and stays a follower. On drain the leader
//! releases the Lease (holder emptied) so a successor takes over at its next
//! look instead of after the lease duration.
//!
//! Never two leaders, whatever the API server does (answers, fails, answers
//! slowly, or never answers because the network black-holes the requests):
//!
//! - every Lease call has a deadline, `request_timeout` capped at
//!   [`MAX_CALL_TIMEOUT`] (so a whole renewal, get and replace, fits in one
//!   [`RENEW_INTERVAL`]);
//! - a renewal counts from the instant its `renewTime` was stamped, just
//!   before the write is sent, not from when the answer arrived;
//! - the leader steps down when its last counted renewal is
//!   [`RENEW_DEADLINE`] old. That check is a timer raced against the calls
//!   and the waits between them, so it fires even while a call hangs.
//!
//! The others may take the Lease once `renewTime + leaseDurationSeconds`
//! ([`LEASE_DURATION`]) has passed by their clocks: the leader has stepped
//! down [`LEASE_DURATION`] − [`RENEW_DEADLINE`] (5 s) before that, the margin
//! for clock skew between appliances and for the former leader to give up
//! its VIPs. A renewal whose answer arrives after the deadline does not
//! count. Meanwhile a leader whose renewal failed retries every
//! [`LEADER_RETRY_INTERVAL`].
//!
//! The elector runs on a thread with its own runtime, like the API server
//! source; [`Leader::is_leader`] is one atomic load.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::config::{Config, KubernetesSource};

/// `leaseDurationSeconds`: how long a Lease stays valid after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews the Lease (counted from the last renewal).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How often a follower looks whether the Lease is free or expired.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// How soon a leader whose renewal failed tries again.
pub const LEADER_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// A leader whose last renewal is this old steps down, whatever its calls
/// do: [`LEASE_DURATION`] − [`RENEW_DEADLINE`] before the Lease expires for
/// the others.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// The longest deadline of one Lease call (`request_timeout` when shorter):
/// a renewal's get and replace fit in one [`RENEW_INTERVAL`].
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_millis(2500);
/// The longest [`Leader::release`] waits for the Lease write on drain.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

// The schedule's invariants (also unit-tested below).
const _: () = {
    assert!(RENEW_DEADLINE.as_millis() + 5000 <= LEASE_DURATION.as_millis());
    assert!(RENEW_INTERVAL.as_millis() < RENEW_DEADLINE.as_millis());
    assert!(2 * MAX_CALL_TIMEOUT.as_millis() <= RENEW_INTERVAL.as_millis());
};

#[derive(Debug)]
struct Inner {
    leading: AtomicBool,
    identity: String,
    namespace: String,
    name: String,
    /// Every Lease call's deadline.
    call_timeout: Duration,
    stop: watch::Sender<bool>,
    done: watch::Sender<bool>,
    /// Follows `leading`, for whoever reacts to a change of leadership.
    changed: watch::Sender<bool>,
}

/// This process's view of the election: cheap to clone and to query.
#[derive(Debug, Clone)]
pub struct Leader {
    inner: Arc<Inner>,
}

/// Why a Lease call failed.
#[derive(Debug)]
enum CallError {
    /// No answer within the call's deadline.
    Timeout(Duration),
    Kube(kube::Error),
}

impl CallError {
    fn is_conflict(&self) -> bool {
        matches!(self, CallError::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout(t) => write!(f, "no answer within {t:?}"),
            CallError::Kube(e) => e.fmt(f),
        }
    }
}

/// What one look at the Lease found or did.
#[derive(Debug)]
enum Outcome {
    /// This process wrote the Lease (created, renewed or took it) with a
    /// `renewTime` stamped at `stamp`.
    Held { stamp: Instant, why: &'static str },
    /// Another lb holds the Lease, or won a race for it.
    Follow(&'static str),
    /// A call failed or had no answer in time.
    Failed(&'static str, CallError),
}

/// How a guarded step of the elector ended.
enum Guarded<T> {
    Done(T),
    /// The leader's renewal deadline passed first.
    Deadline,
    /// Drain.
    Stop,
}

impl Leader {
    /// Whether this process holds the Lease (one atomic load).
    pub fn is_leader(&self) -> bool {
        self.inner.leading.load(Ordering::Acquire)
    }

    /// A receiver that sees every change of [`Leader::is_leader`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.changed.subscribe()
    }

    /// This process's holder identity in the Lease.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The Lease, `NAMESPACE/NAME`.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.inner.namespace, self.inner.name)
    }

    /// Appends the `lb_leader` gauge.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP lb_leader Whether this lb holds the leader Lease {} (writes status, allocates VIPs).\n# TYPE lb_leader gauge\nlb_leader {}",
            self.lease(),
            u8::from(self.is_leader())
        );
    }

    /// Stops the elector and, when leading, releases the Lease so a
    /// successor takes over at once. Waits at most a few seconds.
    pub async fn release(&self) {
        let _ = self.inner.stop.send(true);
        let mut done = self.inner.done.subscribe();
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, done.wait_for(|d| *d)).await;
    }

    /// Starts the elector on a thread of its own. Fails only when the thread
    /// cannot start; an unreachable API server is retried.
    pub fn start(k: &KubernetesSource, node_name: &str) -> std::io::Result<Leader> {
        let (namespace, name) = k.lease_ref();
        let leader = Leader {
            inner: Arc::new(Inner {
                leading: AtomicBool::new(false),
                identity: format!("{node_name}_{}", std::process::id()),
                namespace,
                name,
                call_timeout: call_timeout(k.request_timeout),
                stop: watch::Sender::new(false),
                done: watch::Sender::new(false),
                changed: watch::Sender::new(false),
            }),
        };
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (k, elector) = (k.clone(), leader.clone());
        std::thread::Builder::new()
            .name("lb-leader".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(elector.run(k)),
                    Err(e) => tracing::error!("cannot start the leader election runtime: {e}"),
                }
                let _ = elector.inner.done.send(true);
            })?;
        Ok(leader)
    }

    async fn run(&self, k: KubernetesSource) {
        let mut stop = self.inner.stop.subscribe();
        let mut attempts = 0u32;
        let client = loop {
            match crate::kube_client::client(&k).await {
                Ok(c) => break c,
                Err(e) => {
                    attempts += 1;
                    if attempts == 1 {
                        tracing::warn!("leader election: {e}; retrying");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_INTERVAL) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        let api: Api<Lease> = Api::namespaced(client, &self.inner.namespace);
        tracing::info!(
            identity = %self.inner.identity,
            lease = %self.lease(),
            call_timeout = ?self.inner.call_timeout,
            "leader election started"
        );
        // The stamp of the last renewal that counts, while leading.
        let mut last_renew: Option<Instant> = None;
        // The last failure since then, for the step-down's log.
        let mut last_error: Option<String> = None;
        loop {
            // One look at the Lease, cut short at the renewal deadline.
            let deadline = last_renew.map(step_down_at);
            let failed = match guarded(self.tick(&api), deadline, &mut stop).await {
                Guarded::Stop => break,
                Guarded::Deadline => {
                    self.step_down(&mut last_renew, &mut last_error);
                    continue;
                }
                Guarded::Done(outcome) => self.apply(outcome, &mut last_renew, &mut last_error),
            };
            // The wait for the next look, cut short the same way.
            let deadline = last_renew.map(step_down_at);
            let wait = next_look(last_renew, failed, Instant::now());
            match guarded(tokio::time::sleep(wait), deadline, &mut stop).await {
                Guarded::Stop => break,
                Guarded::Deadline => self.step_down(&mut last_renew, &mut last_error),
                Guarded::Done(()) => {}
            }
        }
        if self.is_leader() {
            self.set_leading(false, "draining");
            match tokio::time::timeout(RELEASE_TIMEOUT, self.release_lease(&api)).await {
                Ok(Ok(())) => tracing::info!(lease = %self.lease(), "leader Lease released"),
                Ok(Err(e)) => tracing::warn!("cannot release the leader Lease: {e}"),
                Err(_) => tracing::warn!("cannot release the leader Lease: timed out"),
            }
        }
    }

    /// Takes in a look's outcome; returns whether it failed.
    fn apply(
        &self,
        outcome: Outcome,
        last_renew: &mut Option<Instant>,
        last_error: &mut Option<String>,
    ) -> bool {
        match outcome {
            Outcome::Held { stamp, why } if counts(stamp, Instant::now()) => {
                *last_renew = Some(stamp);
                *last_error = None;
                self.set_leading(true, why);
                false
            }
            Outcome::Held { stamp, .. } => {
                // Renewed, but the answer came too late to count: the
                // others may take the Lease from renewTime + 15 s on.
                let e = format!("the Lease write took {:?}", stamp.elapsed());
                self.failed(last_renew, last_error, e);
                true
            }
            Outcome::Follow(why) => {
                *last_renew = None;
                *last_error = None;
                self.set_leading(false, why);
                false
            }
            Outcome::Failed(call, e) => {
                self.failed(last_renew, last_error, format!("{call}: {e}"));
                true
            }
        }
    }

    /// A failed look: a leader retries until its renewal deadline.
    fn failed(&self, last_renew: &Option<Instant>, last_error: &mut Option<String>, e: String) {
        if self.is_leader() {
            let since = last_renew.map_or(RENEW_DEADLINE, |t| t.elapsed());
            tracing::warn!(
                lease = %self.lease(),
                "cannot renew the leader Lease ({e}), last renewal {since:?} ago; retrying"
            );
        } else {
            tracing::debug!(lease = %self.lease(), "leader election: {e}");
        }
        *last_error = Some(e);
    }

    /// The renewal deadline passed: step down.
    fn step_down(&self, last_renew: &mut Option<Instant>, last_error: &mut Option<String>) {
        let since = last_renew.take().map_or(RENEW_DEADLINE, |t| t.elapsed());
        let cause = last_error.take().unwrap_or_else(|| "no answer".into());
        tracing::warn!(
            lease = %self.lease(),
            "cannot renew the leader Lease for {since:?} ({cause})"
        );
        self.set_leading(false, "no renewal within the renew deadline");
    }

    /// Runs one Lease call under the call deadline.
    async fn call<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, (&'static str, CallError)> {
        let t = self.inner.call_timeout;
        match tokio::time::timeout(t, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((what, CallError::Kube(e))),
            Err(_) => Err((what, CallError::Timeout(t))),
        }
    }

    /// One look at the Lease: acquire it when free or expired, renew it
    /// when held, else follow.
    async fn tick(&self, api: &Api<Lease>) -> Outcome {
        let me = self.inner.identity.as_str();
        let name = self.inner.name.as_str();
        let current = match self.call("get", api.get_opt(name)).await {
            Ok(l) => l,
            Err((call, e)) => return Outcome::Failed(call, e),
        };
        let Some(mut lease) = current else {
            let (stamp, now) = (Instant::now(), Timestamp::now());
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(self.inner.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_spec(me, now, now, 0)),
            };
            return match self
                .call("create", api.create(&PostParams::default(), &lease))
                .await
            {
                Ok(_) => Outcome::Held {
                    stamp,
                    why: "Lease created",
                },
                Err((_, e)) if e.is_conflict() => {
                    Outcome::Follow("another lb created the Lease first")
                }
                Err((call, e)) => Outcome::Failed(call, e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(me);
        if !mine && holder.is_some() && !expired(&spec, Timestamp::now()) {
            return Outcome::Follow("another lb holds the Lease");
        }
        // The renewal counts from here: renewTime is never later than this
        // stamp by this host's clock.
        let (stamp, now) = (Instant::now(), Timestamp::now());
        let (acquired, transitions) = if mine {
            (
                spec.acquire_time.map_or(now, |t| t.0),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0).saturating_add(1))
        };
        // `lease` keeps the read resourceVersion: a concurrent write wins.
        lease.spec = Some(held_spec(me, acquired, now, transitions));
        match self
            .call("replace", api.replace(name, &PostParams::default(), &lease))
            .await
        {
            Ok(_) => Outcome::Held {
                stamp,
                why: if mine {
                    "Lease renewed"
                } else if holder.is_none() {
                    "Lease was free"
                } else {
                    "Lease had expired"
                },
            },
            Err((_, e)) if e.is_conflict() => Outcome::Follow("another lb updated the Lease first"),
            Err((call, e)) => Outcome::Failed(call, e),
        }
    }

    /// Empties the holder, if this process still holds the Lease.
    async fn release_lease(&self, api: &Api<Lease>) -> Result<(), String> {
        let name = self.inner.name.as_str();
        let fail = |(call, e): (&str, CallError)| format!("{call}: {e}");
        let Some(mut lease) = self.call("get", api.get_opt(name)).await.map_err(fail)? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.inner.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        self.call("replace", api.replace(name, &PostParams::default(), &lease))
            .await
            .map(drop)
            .map_err(fail)
    }

    fn set_leading(&self, leading: bool, why: &str) {
        if self.inner.leading.swap(leading, Ordering::AcqRel) != leading {
            if leading {
                tracing::info!(identity = %self.inner.identity, lease = %self.lease(), "became the leader: {why}");
            } else {
                tracing::info!(identity = %self.inner.identity, lease = %self.lease(), "no longer the leader: {why}");
            }
            self.inner.changed.send_replace(leading);
        }
    }
}

/// Runs `fut` unless drain begins or `deadline` (the leader's step-down
/// time) passes first. The deadline does not wait for `fut`: a hung call is
/// dropped.
async fn guarded<T>(
    fut: impl Future<Output = T>,
    deadline: Option<Instant>,
    stop: &mut watch::Receiver<bool>,
) -> Guarded<T> {
    let deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => Guarded::Stop,
        () = deadline => Guarded::Deadline,
        v = fut => Guarded::Done(v),
    }
}

/// Every Lease call's deadline: `request_timeout`, at most [`MAX_CALL_TIMEOUT`].
fn call_timeout(request_timeout: Duration) -> Duration {
    request_timeout.min(MAX_CALL_TIMEOUT)
}

/// When a leader whose last renewal was stamped at `renewed` steps down.
fn step_down_at(renewed: Instant) -> Instant {
    renewed + RENEW_DEADLINE
}

/// Whether a Lease write stamped at `stamp` and answered at `answered`
/// makes (or keeps) this process the leader: only before its step-down time.
fn counts(stamp: Instant, answered: Instant) -> bool {
    answered < step_down_at(stamp)
}

/// How long to wait before the next look: a leader renews
/// [`RENEW_INTERVAL`] after its last renewal and retries a failed one after
/// [`LEADER_RETRY_INTERVAL`]; a follower looks every [`RETRY_INTERVAL`].
fn next_look(last_renew: Option<Instant>, failed: bool, now: Instant) -> Duration {
    match last_renew {
        None => RETRY_INTERVAL,
        Some(_) if failed => LEADER_RETRY_INTERVAL,
        Some(t) => (t + RENEW_INTERVAL).saturating_duration_since(now),
    }
}

/// Whether `renewTime + leaseDurationSeconds` lies before `now` (a Lease
/// without a renewal time is expired).
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
    renewed.0.as_millisecond().saturating_add(duration_ms) < now.as_millisecond()
}

fn held_spec(me: &str, acquired: Timestamp, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// `lb serve`'s start of the elector: when `[sources] kubernetes` is set.
pub fn start(cfg: &Config) -> Option<Leader> {
    let k = cfg.sources.kubernetes.as_ref()?;
    Leader::start(k, &cfg.node.name)
        .map_err(|e| tracing::error!("cannot start the leader election thread: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_renew_time_and_duration() {
        let now = Timestamp::now();
        let mut spec = held_spec("a", now, now, 0);
        assert!(!expired(&spec, now));
        let later = Timestamp::from_millisecond(now.as_millisecond() + 16_000).unwrap();
        assert!(expired(&spec, later));
        spec.renew_time = None;
        assert!(expired(&spec, now));
    }

    #[test]
    fn the_leader_steps_down_well_before_the_lease_expires() {
        // renewTime is stamped at `stamp`; the others may take the Lease
        // LEASE_DURATION later by their clocks; the leader is gone by
        // RENEW_DEADLINE, 5 s before.
        let stamp = Instant::now();
        let margin = (stamp + LEASE_DURATION) - step_down_at(stamp);
        assert!(margin >= Duration::from_secs(5), "{margin:?}");
        // Of the lease duration the others see, none is left to the leader
        // past the deadline, however late a renewal's answer comes.
        assert!(counts(stamp, stamp));
        assert!(counts(
            stamp,
            stamp + RENEW_DEADLINE - Duration::from_millis(1)
        ));
        assert!(!counts(stamp, stamp + RENEW_DEADLINE));
        assert!(!counts(stamp, stamp + LEASE_DURATION));
    }

    #[test]
    fn call_deadlines_fit_the_schedule() {
        assert_eq!(call_timeout(Duration::from_secs(5)), MAX_CALL_TIMEOUT);
        assert_eq!(call_timeout(Duration::from_secs(60)), MAX_CALL_TIMEOUT);
        assert_eq!(
            call_timeout(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        // A renewal (get + replace) fits in one renew interval, and one
        // whose first call hangs leaves time for another attempt (on a new
        // connection) before the deadline.
        let renewal = 2 * MAX_CALL_TIMEOUT;
        assert!(renewal <= RENEW_INTERVAL);
        let retry = RENEW_INTERVAL + MAX_CALL_TIMEOUT + LEADER_RETRY_INTERVAL;
        assert!(
            RENEW_DEADLINE - retry >= Duration::from_secs(1),
            "{retry:?}"
        );
    }

    #[test]
    fn looks_follow_the_role() {
        let now = Instant::now();
        assert_eq!(next_look(None, false, now), RETRY_INTERVAL);
        assert_eq!(next_look(None, true, now), RETRY_INTERVAL);
        // A leader renews RENEW_INTERVAL after the last renewal's stamp,
        // however long the renewal took to answer.
        assert_eq!(next_look(Some(now), false, now), RENEW_INTERVAL);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            next_look(Some(now), false, later),
            RENEW_INTERVAL - Duration::from_secs(2)
        );
        assert_eq!(
            next_look(Some(now), false, now + Duration::from_secs(7)),
            Duration::ZERO
        );
        assert_eq!(next_look(Some(now), true, later), LEADER_RETRY_INTERVAL);
    }

    #[tokio::test]
    async fn the_deadline_cuts_a_hung_call() {
        let (tx, mut rx) = watch::channel(false);
        let start = Instant::now();
        let hung = std::future::pending::<()>();
        let deadline = start + Duration::from_millis(50);
        assert!(matches!(
            guarded(hung, Some(deadline), &mut rx).await,
            Guarded::Deadline
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        // A call that answers in time is taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(matches!(
            guarded(async { 7 }, Some(deadline), &mut rx).await,
            Guarded::Done(7)
        ));
        // Without a deadline (a follower), drain still ends the wait.
        tx.send_replace(true);
        assert!(matches!(
            guarded(std::future::pending::<()>(), None, &mut rx).await,
            Guarded::Stop
        ));
    }
}
