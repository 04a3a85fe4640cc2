//! Active health checks of L7 endpoints, opted into per Service by annotation
//! (`lb.example.com/health-check: tcp` or `http:/path`, interval by
//! `lb.example.com/health-check-interval`). The control thread probes each
//! checked endpoint; an endpoint failing two probes in a row leaves its
//! backends' endpoint lists, and two passing probes bring it back. A change
//! publishes a new snapshot through the one swap point. When every endpoint
//! of a backend is down, all of them are kept (failing open).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use lb_http::ApplianceSnapshot;
use lb_http::snapshot::{BackendId, HealthCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::control_state::ControlState;

/// Consecutive probe results that change an endpoint's state.
const THRESHOLD: u32 = 2;

/// One probed endpoint (per check, since two Services may check one address differently).
#[derive(Debug)]
struct Probed {
    up: bool,
    /// Consecutive results contradicting `up`.
    streak: u32,
    next: Instant,
}

/// The control thread's health checker.
#[derive(Debug, Default)]
pub struct HealthChecker {
    /// The checked backends of the last compiled snapshot, with every endpoint.
    watched: Vec<(BackendId, Vec<SocketAddr>, HealthCheck)>,
    probed: HashMap<(SocketAddr, HealthCheck), Probed>,
}

impl HealthChecker {
    /// Takes note of a freshly compiled snapshot (before it is published) and
    /// removes the endpoints currently down from its checked backends.
    pub fn filter(&mut self, snap: &mut ApplianceSnapshot) {
        self.watched.clear();
        let now = Instant::now();
        for (i, b) in snap.backends.iter().enumerate() {
            if let Some(check) = &b.health {
                self.watched
                    .push((BackendId(i as u32), b.endpoints.clone(), check.clone()));
                for a in &b.endpoints {
                    self.probed.entry((*a, check.clone())).or_insert(Probed {
                        up: true,
                        streak: 0,
                        next: now,
                    });
                }
            }
        }
        let wanted: BTreeSet<(SocketAddr, &HealthCheck)> = self
            .watched
            .iter()
            .flat_map(|(_, eps, c)| eps.iter().map(move |a| (*a, c)))
            .collect();
        self.probed.retain(|(a, c), _| wanted.contains(&(*a, c)));
        self.apply(snap);
    }

    /// Sets the checked backends' endpoints of `snap` to those up.
    fn apply(&self, snap: &mut ApplianceSnapshot) {
        for (id, all, check) in &self.watched {
            if let Some(b) = snap.backends.get_mut(id.0 as usize) {
                let up: Vec<SocketAddr> = all
                    .iter()
                    .copied()
                    .filter(|a| self.probed.get(&(*a, check.clone())).is_none_or(|p| p.up))
                    .collect();
                b.endpoints = if up.is_empty() { all.clone() } else { up };
            }
        }
    }

    /// When the next probe is due, if anything is checked.
    pub fn next_due(&self) -> Option<Instant> {
        self.probed.values().map(|p| p.next).min()
    }

    /// Runs the probes that are due, concurrently; returns whether an
    /// endpoint changed state.
    pub async fn probe_due(&mut self) -> bool {
        let now = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for ((addr, check), p) in &self.probed {
            if p.next <= now {
                let (addr, check) = (*addr, check.clone());
                set.spawn(async move {
                    let ok = probe(addr, &check).await;
                    (addr, check, ok)
                });
            }
        }
        let mut changed = false;
        while let Some(Ok((addr, check, ok))) = set.join_next().await {
            let interval = Duration::from_millis(check.interval_ms);
            let Some(p) = self.probed.get_mut(&(addr, check)) else {
                continue;
            };
            p.next = now + interval;
            if ok == p.up {
                p.streak = 0;
                continue;
            }
            p.streak += 1;
            if p.streak >= THRESHOLD {
                p.up = ok;
                p.streak = 0;
                changed = true;
                if ok {
                    tracing::info!(endpoint = %addr, "endpoint up (health check)");
                } else {
                    tracing::warn!(endpoint = %addr, "endpoint down (health check)");
                }
            }
        }
        changed
    }

    /// Publishes the current snapshot again with the checked backends'
    /// endpoints brought up to date.
    pub fn republish(&self, state: &ControlState) {
        let current = state.snapshot.load();
        let mut snap = current.value.clone();
        self.apply(&mut snap);
        let generation = state.snapshot.publish(snap);
        tracing::info!(generation, "published endpoint health");
    }
}

/// One probe: a TCP connect, or an HTTP/1.1 GET expecting 2xx or 3xx.
async fn probe(addr: SocketAddr, check: &HealthCheck) -> bool {
    let timeout = Duration::from_millis(check.timeout_ms);
    let run = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let Some(path) = &check.http_path else {
            return Some(true);
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lb-health-check\r\nConnection: close\r\n\r\n",
            addr.ip()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let m = s.read(&mut buf[n..]).await.ok()?;
            if m == 0 {
                break;
            }
            n += m;
        }
        let line = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, run).await, Ok(Some(true)))
}
