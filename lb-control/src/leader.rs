//! Leader election among appliances watching one cluster, with a
//! `coordination.k8s.io/v1` Lease.
//!
//! Every lb serves traffic; only the elected leader writes status and
//! allocates VIPs. The Lease is `lb-leader` in the namespace `POD_NAMESPACE`
//! (default `lb-system`); its holder is `[node].name` + `_` + the process id.
//! An lb takes the Lease when it is absent, has no holder, or is expired
//! (`renewTime + leaseDurationSeconds` before now); the holder renews it every
//! [`RENEW_INTERVAL`], the others look every [`RETRY_INTERVAL`]. Every write
//! carries the read `resourceVersion`, so of two racing candidates one gets
//! 409 Conflict and stays a follower. A leader that cannot renew for
//! [`RENEW_DEADLINE`] steps down (before the Lease expires for the others);
//! on drain it releases the Lease (holder emptied) so a successor takes over
//! at its next look instead of after the lease duration.
//!
//! The elector runs on a thread with its own runtime, like the API server
//! source; [`Leader::is_leader`] is one atomic load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::config::{Config, KubernetesSource};

/// The Lease's name.
pub const LEASE_NAME: &str = "lb-leader";
/// The Lease's namespace when `POD_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "lb-system";
/// `leaseDurationSeconds`: how long a Lease stays valid after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews the Lease.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How often a follower looks whether the Lease is free or expired.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// A leader whose renewals fail this long steps down (one renewal before the
/// Lease expires for the others).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// The longest [`Leader::release`] waits for the Lease write on drain.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Inner {
    leading: AtomicBool,
    identity: String,
    namespace: String,
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

    /// Appends the `lb_leader` gauge.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP lb_leader Whether this lb holds the leader Lease (writes status, allocates VIPs).\n# TYPE lb_leader gauge\nlb_leader {}",
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
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let leader = Leader {
            inner: Arc::new(Inner {
                leading: AtomicBool::new(false),
                identity: format!("{node_name}_{}", std::process::id()),
                namespace,
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
            lease = %format!("{}/{LEASE_NAME}", self.inner.namespace),
            "leader election started"
        );
        let mut last_renew: Option<Instant> = None;
        loop {
            self.tick(&api, &mut last_renew).await;
            let wait = if self.is_leader() {
                RENEW_INTERVAL
            } else {
                RETRY_INTERVAL
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if self.is_leader() {
            self.set_leading(false, "draining");
            match tokio::time::timeout(RELEASE_TIMEOUT, self.release_lease(&api)).await {
                Ok(Ok(())) => tracing::info!("leader Lease released"),
                Ok(Err(e)) => tracing::warn!("cannot release the leader Lease: {e}"),
                Err(_) => tracing::warn!("cannot release the leader Lease: timed out"),
            }
        }
    }

    /// One look at the Lease: acquire it when free or expired, renew it
    /// when held, else follow.
    async fn tick(&self, api: &Api<Lease>, last_renew: &mut Option<Instant>) {
        let now = Timestamp::now();
        let me = self.inner.identity.as_str();
        let current = match api.get_opt(LEASE_NAME).await {
            Ok(l) => l,
            Err(e) => return self.failed(last_renew, &e),
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    namespace: Some(self.inner.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_spec(me, now, now, 0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    *last_renew = Some(Instant::now());
                    self.set_leading(true, "Lease created");
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.set_leading(false, "another lb created the Lease first");
                }
                Err(e) => self.failed(last_renew, &e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(me);
        if !mine && holder.is_some() && !expired(&spec, now) {
            if self.is_leader() {
                self.set_leading(false, "another lb holds the Lease");
            }
            return;
        }
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
        match api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                *last_renew = Some(Instant::now());
                let why = if mine {
                    "Lease renewed"
                } else if holder.is_none() {
                    "Lease was free"
                } else {
                    "Lease had expired"
                };
                self.set_leading(true, why);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.set_leading(false, "another lb updated the Lease first");
            }
            Err(e) => self.failed(last_renew, &e),
        }
    }

    /// A failed read or write: a leader steps down once its last successful
    /// renewal is [`RENEW_DEADLINE`] old.
    fn failed(&self, last_renew: &Option<Instant>, e: &kube::Error) {
        if self.is_leader() {
            let since = last_renew.map_or(RENEW_DEADLINE, |t| t.elapsed());
            if since >= RENEW_DEADLINE {
                tracing::warn!("cannot renew the leader Lease for {since:?} ({e})");
                self.set_leading(false, "renewal failed past the deadline");
            } else {
                tracing::warn!("cannot renew the leader Lease ({e}); retrying");
            }
        } else {
            tracing::debug!("leader election: {e}");
        }
    }

    /// Empties the holder, if this process still holds the Lease.
    async fn release_lease(&self, api: &Api<Lease>) -> Result<(), kube::Error> {
        let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
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
        api.replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .map(drop)
    }

    fn set_leading(&self, leading: bool, why: &str) {
        if self.inner.leading.swap(leading, Ordering::AcqRel) != leading {
            if leading {
                tracing::info!(identity = %self.inner.identity, "became the leader: {why}");
            } else {
                tracing::info!(identity = %self.inner.identity, "no longer the leader: {why}");
            }
            self.inner.changed.send_replace(leading);
        }
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
}
