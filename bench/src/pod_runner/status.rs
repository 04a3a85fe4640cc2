//! Pod status as a kubelet writes it, built from what the runner knows about the pod's
//! processes. Pure: the caller patches the result into `pods/{name}/status`.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The node's (and so every pod's) host IP.
pub const HOST_IP: &str = "127.0.0.1";

/// Pod condition types the runner owns, in the order a kubelet writes them.
pub const OWN_CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// Condition states with the time each last changed, so `lastTransitionTime` moves only
/// on a transition.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    entries: Vec<(String, bool, Time)>,
}

impl Conditions {
    /// Seeded from the conditions `pod` already has (a pod adopted after a restart keeps
    /// its transition times while nothing changes).
    pub fn from_pod(pod: &Pod) -> Conditions {
        let mut out = Conditions::default();
        for c in pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(time) = &c.last_transition_time {
                out.entries
                    .push((c.type_.clone(), c.status == "True", time.clone()));
            }
        }
        out
    }

    /// Records that condition `ty` is `status` at `now`; returns its transition time.
    pub fn observe(&mut self, ty: &str, status: bool, now: &Time) -> Time {
        match self.entries.iter_mut().find(|(t, _, _)| t == ty) {
            Some((_, old, time)) => {
                if *old != status {
                    *old = status;
                    *time = now.clone();
                }
                time.clone()
            }
            None => {
                self.entries.push((ty.to_owned(), status, now.clone()));
                now.clone()
            }
        }
    }
}

/// How a container ended last time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Exit code (128 + signal when killed by one).
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When it had started.
    pub started_at: Option<Time>,
    /// When it ended.
    pub finished_at: Time,
    /// Its container ID.
    pub container_id: Option<String>,
}

/// What the runner knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// `lbpod://<pid>` of its (first) process while running.
    pub container_id: Option<String>,
    /// Whether all its processes run.
    pub running: bool,
    /// Whether it passes its readiness check.
    pub ready: bool,
    /// When the current run started.
    pub started_at: Option<Time>,
    /// Restarts so far.
    pub restart_count: i32,
    /// The previous run, if one ended.
    pub last_terminated: Option<Terminated>,
}

/// What the runner knows about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// The pod IP, once assigned.
    pub ip: Option<Ipv4Addr>,
    /// When the runner first took the pod on.
    pub start_time: Time,
    /// Every container, in spec order.
    pub containers: Vec<ContainerView>,
    /// The pod's readiness gates and whether each is met.
    pub readiness_gates: Vec<(String, bool)>,
}

/// The readiness gates of `pod` and whether each is met (its condition is True).
pub fn readiness_gates(pod: &Pod) -> Vec<(String, bool)> {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|gate| {
            let met = conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == gate.condition_type && c.status == "True");
            (gate.condition_type.clone(), met)
        })
        .collect()
}

/// The container ID the runner reports for a process.
pub fn container_id(pid: u32) -> String {
    format!("lbpod://{pid}")
}

fn condition(
    conds: &mut Conditions,
    ty: &str,
    status: bool,
    now: &Time,
    why_not: Option<(&str, String)>,
) -> PodCondition {
    let time = conds.observe(ty, status, now);
    let (reason, message) = match why_not {
        Some((reason, message)) if !status => (Some(reason.to_owned()), Some(message)),
        _ => (None, None),
    };
    PodCondition {
        type_: ty.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        last_transition_time: Some(time),
        reason,
        message,
        ..PodCondition::default()
    }
}

/// The status to write for `view`, updating the condition transition times in `conds`.
pub fn pod_status(view: &PodView, conds: &mut Conditions, now: &Time) -> PodStatus {
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = view.ip.is_some() && unready.is_empty();
    let gates_unmet: Vec<&str> = view
        .readiness_gates
        .iter()
        .filter(|(_, met)| !met)
        .map(|(name, _)| name.as_str())
        .collect();
    let not_ready = if view.ip.is_none() {
        ("ContainersNotReady", "the pod has no IP yet".to_owned())
    } else if !unready.is_empty() {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    } else {
        (
            "ReadinessGatesNotReady",
            format!("readiness gates not met: [{}]", gates_unmet.join(" ")),
        )
    };
    let containers_not_ready = (
        "ContainersNotReady",
        if view.ip.is_none() {
            "the pod has no IP yet".to_owned()
        } else {
            format!("containers with unready status: [{}]", unready.join(" "))
        },
    );
    let conditions = vec![
        condition(
            conds,
            "PodReadyToStartContainers",
            view.ip.is_some(),
            now,
            None,
        ),
        condition(conds, "Initialized", true, now, None),
        condition(
            conds,
            "Ready",
            containers_ready && gates_unmet.is_empty(),
            now,
            Some(not_ready),
        ),
        condition(
            conds,
            "ContainersReady",
            containers_ready,
            now,
            Some(containers_not_ready),
        ),
        condition(conds, "PodScheduled", true, now, None),
    ];
    let container_statuses = view
        .containers
        .iter()
        .map(|c| container_status(c, view.ip.is_some()))
        .collect();
    let ip = view.ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(if ip.is_some() { "Running" } else { "Pending" }.to_owned()),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        host_ip: Some(HOST_IP.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: HOST_IP.to_owned(),
        }]),
        start_time: Some(view.start_time.clone()),
        conditions: Some(conditions),
        container_statuses: Some(container_statuses),
        ..PodStatus::default()
    }
}

/// The strategic merge patch of `pods/{name}/status` that writes `status`. Conditions
/// merge by type, so a condition's `reason` and `message` are nulled explicitly when it
/// has none now (else an old reason would stay). The UID makes the patch fail rather
/// than touch a new pod of the same name.
pub fn status_patch(uid: &str, status: &PodStatus) -> serde_json::Value {
    let mut status = serde_json::to_value(status).unwrap_or_default();
    if let Some(conditions) = status
        .get_mut("conditions")
        .and_then(serde_json::Value::as_array_mut)
    {
        for condition in conditions.iter_mut().filter_map(|c| c.as_object_mut()) {
            for field in ["reason", "message"] {
                condition.entry(field).or_insert(serde_json::Value::Null);
            }
        }
    }
    serde_json::json!({"metadata": {"uid": uid}, "status": status})
}

fn container_status(c: &ContainerView, has_ip: bool) -> ContainerStatus {
    let state = if c.running {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: c.started_at.clone(),
            }),
            ..ContainerState::default()
        }
    } else {
        let (reason, message) = match (&c.last_terminated, has_ip) {
            (_, false) => ("ContainerCreating", None),
            (Some(_), true) => (
                "CrashLoopBackOff",
                Some(format!(
                    "back-off 1s restarting failed container={}",
                    c.name
                )),
            ),
            (None, true) => ("ContainerCreating", None),
        };
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                message,
            }),
            ..ContainerState::default()
        }
    };
    let last_state = c.last_terminated.as_ref().map(|t| ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(
                if t.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_owned(),
            ),
            started_at: t.started_at.clone(),
            finished_at: Some(t.finished_at.clone()),
            container_id: t.container_id.clone(),
            message: None,
        }),
        ..ContainerState::default()
    });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("lbpod://{}", c.image),
        container_id: c.container_id.clone(),
        ready: c.ready && c.running,
        started: Some(c.running),
        restart_count: c.restart_count,
        state: Some(state),
        last_state,
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn container(name: &str, running: bool, ready: bool) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "example/echo:1".into(),
            container_id: running.then(|| container_id(42)),
            running,
            ready,
            started_at: running.then(|| t("2025-01-01T00:00:01Z")),
            restart_count: 0,
            last_terminated: None,
        }
    }

    fn view(containers: Vec<ContainerView>) -> PodView {
        PodView {
            ip: Some("127.77.0.2".parse().unwrap()),
            start_time: t("2025-01-01T00:00:00Z"),
            containers,
            readiness_gates: Vec::new(),
        }
    }

    fn cond<'a>(status: &'a PodStatus, ty: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == ty)
            .unwrap()
    }

    #[test]
    fn running_and_ready() {
        let mut conds = Conditions::default();
        let now = t("2025-01-01T00:00:02Z");
        let status = pod_status(&view(vec![container("a", true, true)]), &mut conds, &now);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("127.77.0.2"));
        assert_eq!(status.pod_ips.as_ref().unwrap()[0].ip, "127.77.0.2");
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(status.host_ips.as_ref().unwrap()[0].ip, "127.0.0.1");
        for ty in OWN_CONDITIONS {
            let c = cond(&status, ty);
            assert_eq!(c.status, "True", "{ty}");
            assert_eq!(c.last_transition_time, Some(now.clone()));
            assert!(c.reason.is_none());
        }
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.started, Some(true));
        assert_eq!(cs.container_id.as_deref(), Some("lbpod://42"));
        assert_eq!(cs.image_id, "lbpod://example/echo:1");
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at,
            Some(t("2025-01-01T00:00:01Z"))
        );
        // The wire form a strategic merge patch carries.
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["containerStatuses"][0]["containerID"], "lbpod://42");
        assert_eq!(
            json["conditions"][2]["lastTransitionTime"],
            "2025-01-01T00:00:02Z"
        );
    }

    #[test]
    fn patch_clears_old_reasons() {
        let mut conds = Conditions::default();
        let now = t("2025-01-01T00:00:02Z");
        let status = pod_status(&view(vec![container("a", true, true)]), &mut conds, &now);
        let patch = status_patch("u-1", &status);
        assert_eq!(patch["metadata"]["uid"], "u-1");
        let ready = patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert!(ready["reason"].is_null() && ready.get("reason").is_some());
        assert!(ready["message"].is_null() && ready.get("message").is_some());
        assert_eq!(patch["status"]["phase"], "Running");
        let status = pod_status(&view(vec![container("a", true, false)]), &mut conds, &now);
        let patch = status_patch("u-1", &status);
        let ready = &patch["status"]["conditions"][2];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["reason"], "ContainersNotReady");
    }

    #[test]
    fn transition_times_move_only_on_transitions() {
        let mut conds = Conditions::default();
        let t1 = t("2025-01-01T00:00:01Z");
        let t2 = t("2025-01-01T00:00:02Z");
        let t3 = t("2025-01-01T00:00:03Z");
        let s = pod_status(&view(vec![container("a", true, false)]), &mut conds, &t1);
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ContainersNotReady")
        );
        assert_eq!(
            cond(&s, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [a]")
        );
        let s = pod_status(&view(vec![container("a", true, false)]), &mut conds, &t2);
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(t1.clone()));
        let s = pod_status(&view(vec![container("a", true, true)]), &mut conds, &t3);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(t3.clone()));
        assert_eq!(cond(&s, "Initialized").last_transition_time, Some(t1));
    }

    #[test]
    fn seeded_from_existing_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-12-31T00:00:00Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2024-12-31T00:00:05Z"}
            ]}
        }))
        .unwrap();
        let mut conds = Conditions::from_pod(&pod);
        let now = t("2025-01-01T00:00:00Z");
        let s = pod_status(&view(vec![container("a", true, false)]), &mut conds, &now);
        assert_eq!(
            cond(&s, "PodScheduled").last_transition_time,
            Some(t("2024-12-31T00:00:00Z"))
        );
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(now));
    }

    #[test]
    fn restarts_no_ip_and_gates() {
        let mut conds = Conditions::default();
        let now = t("2025-01-01T00:00:09Z");
        let mut dead = container("a", false, false);
        dead.restart_count = 2;
        dead.last_terminated = Some(Terminated {
            exit_code: 137,
            signal: Some(9),
            started_at: Some(t("2025-01-01T00:00:01Z")),
            finished_at: t("2025-01-01T00:00:08Z"),
            container_id: Some(container_id(7)),
        });
        let s = pod_status(
            &view(vec![dead, container("b", true, true)]),
            &mut conds,
            &now,
        );
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(!cs.ready);
        assert_eq!(cs.restart_count, 2);
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.signal), (137, Some(9)));
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(cond(&s, "Ready").status, "False");

        let mut v = view(vec![container("a", false, false)]);
        v.ip = None;
        let s = pod_status(&v, &mut Conditions::default(), &now);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert!(s.pod_ip.is_none());
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );

        let mut v = view(vec![container("a", true, true)]);
        v.readiness_gates = vec![("example.com/gate".into(), false)];
        let s = pod_status(&v, &mut Conditions::default(), &now);
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ReadinessGatesNotReady")
        );
    }

    #[test]
    fn gates_from_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "readinessGates": [{"conditionType": "g1"}, {"conditionType": "g2"}]},
            "status": {"conditions": [{"type": "g1", "status": "True"}, {"type": "g2", "status": "False"}]}
        }))
        .unwrap();
        assert_eq!(
            readiness_gates(&pod),
            [("g1".to_owned(), true), ("g2".to_owned(), false)]
        );
    }
}
