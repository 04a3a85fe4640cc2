//! Active/standby VIP failover on a shared link: two real `lb` processes,
//! each in its own network namespace, are ports of one bridge in a third
//! namespace that holds the client and the stand-in Kubernetes API server.
//! Both elect a leader with the Lease on that server. Only the leader puts
//! the LoadBalancer Service's VIP on its interface and announces it (the
//! bridge side's neighbour table learns the leader's MAC); the follower
//! holds none. When the leader drains (SIGTERM) it removes the VIP and
//! releases the Lease; the follower becomes the leader, adds the VIP,
//! announces it (the neighbour entry moves to its MAC) and serves it.
//!
//! Traffic stays on loopback and inside the three namespaces. The test needs
//! root (to create namespaces) and skips with a note without it.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::support::kube_api::KubeApi;
use crate::support::netns::{self, NsLb, wait_until};
use crate::support::{scratch_dir, test_io};

const VIP: &str = "10.250.0.1";
const PORT: u16 = 8080;
/// lb's admin API, inside each lb's own namespace.
const ADMIN: &str = "127.0.0.1:19921";
/// The bridge side's address: the client and the API server.
const SWITCH_IP: &str = "10.250.2.10";

/// One lb's namespace and its end of the link.
struct Node {
    ns: String,
    dev: &'static str,
}

impl Node {
    /// The addresses on the node's link device.
    fn addresses(&self) -> Vec<IpAddr> {
        netns::addresses(&self.ns, self.dev)
    }

    fn has_vip(&self) -> bool {
        self.addresses().contains(&vip())
    }

    fn mac(&self) -> String {
        netns::mac(&self.ns, self.dev)
    }

    /// GET `path` from this node's lb admin API; None unless 2xx.
    fn admin_get(&self, path: &str) -> Option<String> {
        netns::admin_get(&self.ns, ADMIN, path)
    }

    /// The `lb_leader` gauge, when the admin API answers.
    fn leader_gauge(&self) -> Option<u64> {
        self.admin_get("/metrics")?
            .lines()
            .find_map(|l| l.strip_prefix("lb_leader ")?.trim().parse().ok())
    }
}

/// Three namespaces: `a` and `b` (one lb each) and the switch `p` (bridge,
/// client, API server), all deleted on drop (also when the test panics).
struct Topology {
    a: Node,
    b: Node,
    p: String,
}

impl Topology {
    /// The namespaces, or None (with a note) when they cannot be made here.
    fn create() -> Option<Topology> {
        if !netns::can_create("vip_failover") {
            return None;
        }
        let pid = std::process::id();
        let name = |n: &str| format!("lb-fo-{pid}-{n}");
        let out = netns::run("ip", &["netns", "add", &name("p")]);
        if !out.status.success() {
            eprintln!(
                "skipping vip_failover: ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        // From here on the guard deletes whatever exists.
        let mut t = Topology {
            a: Node {
                ns: String::new(),
                dev: "fa0",
            },
            b: Node {
                ns: String::new(),
                dev: "fb0",
            },
            p: name("p"),
        };
        netns::ip(&["netns", "add", &name("a")]);
        t.a.ns = name("a");
        netns::ip(&["netns", "add", &name("b")]);
        t.b.ns = name("b");
        let p = t.p.as_str();
        netns::ip(&["-n", p, "link", "add", "fbr0", "type", "bridge"]);
        for (node, port, addr) in [
            (&t.a, "fpa", "10.250.2.1/24"),
            (&t.b, "fpb", "10.250.2.2/24"),
        ] {
            let n = node.ns.as_str();
            netns::ip(&[
                "-n", n, "link", "add", node.dev, "type", "veth", "peer", "name", port, "netns", p,
            ]);
            netns::ip(&["-n", p, "link", "set", port, "master", "fbr0"]);
            netns::ip(&["-n", n, "addr", "add", addr, "dev", node.dev]);
            netns::ip(&["-n", n, "link", "set", "lo", "up"]);
            netns::ip(&["-n", n, "link", "set", node.dev, "up"]);
            netns::ip(&["-n", p, "link", "set", port, "up"]);
        }
        netns::ip(&["-n", p, "link", "set", "lo", "up"]);
        netns::ip(&[
            "-n",
            p,
            "addr",
            "add",
            &format!("{SWITCH_IP}/24"),
            "dev",
            "fbr0",
        ]);
        netns::ip(&["-n", p, "link", "set", "fbr0", "up"]);
        // The VIP pool is on the link, seen from the switch side.
        netns::ip(&["-n", p, "route", "add", "10.250.0.0/29", "dev", "fbr0"]);
        // Learn neighbours from gratuitous ARP.
        netns::sysctl(
            p,
            &[
                "net.ipv4.conf.all.arp_accept=1",
                "net.ipv4.conf.fbr0.arp_accept=1",
            ],
        );
        Some(t)
    }

    /// The switch side's neighbour entry for the VIP: its link-layer address.
    fn switch_neighbour(&self) -> Option<String> {
        netns::neighbour(&self.p, "fbr0", vip())
    }

    fn neighbours(&self) -> String {
        netns::neighbours(&self.p)
    }

    /// curl from the switch side to the VIP; curl's exit code.
    fn switch_curl(&self) -> i32 {
        netns::curl_code(&self.p, vip(), PORT)
    }

    /// The stand-in API server, listening on the switch side's address: it
    /// is started on a thread that entered the switch namespace, so its
    /// listening socket is made there (and its own thread is spawned from
    /// there too).
    fn start_api(&self) -> KubeApi {
        let path = format!("/var/run/netns/{}", self.p);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            KubeApi::start_on(SocketAddr::new(SWITCH_IP.parse().unwrap(), 0))
        })
        .join()
        .expect("API server thread")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.a.ns, &self.b.ns, &self.p] {
            if !ns.is_empty() {
                let _ = netns::run("ip", &["netns", "del", ns]);
            }
        }
    }
}

fn vip() -> IpAddr {
    VIP.parse().unwrap()
}

/// Writes the node's `lb.toml` and starts lb in its namespace; does not wait.
fn spawn(node: &Node, name: &str, kubeconfig: &Path) -> NsLb {
    let dir = scratch_dir(&format!("vip-failover-{name}"));
    let config = format!(
        "[runtime]\nworkers = 1\nshutdown_grace = \"2s\"\nio = \"{io}\"\npin = false\n\
             [admin]\nlisten = \"{ADMIN}\"\n\
             [ingress]\nhttp = []\n\
             [node]\nname = \"{name}\"\n\
             [sources]\nfiles = [\"{manifests}\"]\n\
             kubernetes = {{ kubeconfig = \"{kubeconfig}\", context = \"test\" }}\n\
             [loadbalancer]\npools = [\"10.250.0.0/29\"]\ninterface = \"{dev}\"\n",
        io = test_io(),
        manifests = dir.join("manifests").display(),
        kubeconfig = kubeconfig.display(),
        dev = node.dev,
    );
    std::fs::write(dir.join("lb.toml"), config).unwrap();
    NsLb::spawn(&node.ns, dir)
}

/// A LoadBalancer Service `web` asking for [`VIP`] on TCP port [`PORT`],
/// without endpoints (lb accepts connections to it, then closes them).
fn service() -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  loadBalancerIP: {VIP}
  ports: [{{name: tcp, port: {PORT}, protocol: TCP}}]
"
    )
}

/// Both lbs' logs (and the switch's neighbours), for failure messages.
fn logs(a: &NsLb, b: Option<&NsLb>, t: &Topology) -> String {
    format!(
        "\n--- lb a log ---\n{}\n--- lb b log ---\n{}\n--- switch neighbours ---\n{}",
        a.log(),
        b.map(NsLb::log).unwrap_or_default(),
        t.neighbours()
    )
}

/// Waits until `lb` in `node` is ready and reports `lb_leader` = `leader`.
fn wait_ready_with_gauge(node: &Node, lb: &mut NsLb, leader: u64, limit: Duration) -> bool {
    wait_until(limit, || {
        lb.exited().is_none()
            && node.admin_get("/readyz").is_some()
            && node.leader_gauge() == Some(leader)
    })
}

#[test]
fn only_the_leader_holds_the_vip_and_a_new_leader_takes_it_over() {
    let Some(t) = Topology::create() else {
        return;
    };
    let api = t.start_api();
    api.apply_yaml(&service());
    let kc_dir = scratch_dir("vip-failover-kc");
    let kubeconfig = api.kubeconfig(&kc_dir);

    // 1. lb a starts alone and leads.
    let mut a = spawn(&t.a, "a", &kubeconfig);
    assert!(
        wait_ready_with_gauge(&t.a, &mut a, 1, Duration::from_secs(20)),
        "lb a not ready and leading (exit: {:?}){}",
        a.exited(),
        logs(&a, None, &t)
    );

    // 2. The VIP is on a's link and announced: the switch side learnt a's
    // MAC without asking (no traffic to the VIP has been sent yet).
    assert!(
        wait_until(Duration::from_secs(10), || t.a.has_vip()),
        "{VIP} not on fa0: {:?}{}",
        t.a.addresses(),
        logs(&a, None, &t)
    );
    let mac_a = t.a.mac();
    assert!(
        wait_until(Duration::from_secs(5), || t.switch_neighbour().as_deref()
            == Some(mac_a.as_str())),
        "switch has no neighbour entry {VIP} -> {mac_a} (fa0){}",
        logs(&a, None, &t)
    );

    // 3. lb b starts, follows, and holds no VIP; a keeps it.
    let mut b = spawn(&t.b, "b", &kubeconfig);
    assert!(
        wait_ready_with_gauge(&t.b, &mut b, 0, Duration::from_secs(20)),
        "lb b not ready as a follower (exit: {:?}){}",
        b.exited(),
        logs(&a, Some(&b), &t)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !t.b.has_vip(),
        "follower b put {VIP} on fb0: {:?}{}",
        t.b.addresses(),
        logs(&a, Some(&b), &t)
    );
    assert!(
        t.a.has_vip(),
        "{VIP} left fa0 while a leads: {:?}{}",
        t.a.addresses(),
        logs(&a, Some(&b), &t)
    );
    assert_eq!(t.a.leader_gauge(), Some(1), "{}", logs(&a, Some(&b), &t));
    assert_eq!(t.b.leader_gauge(), Some(0), "{}", logs(&a, Some(&b), &t));

    // 4. a drains: the VIP leaves fa0.
    a.signal("TERM");
    assert!(
        a.wait_exit(Duration::from_secs(20)),
        "lb a did not exit after SIGTERM{}",
        logs(&a, Some(&b), &t)
    );
    assert!(
        !t.a.has_vip(),
        "{VIP} still on fa0 after a drained: {:?}{}",
        t.a.addresses(),
        logs(&a, Some(&b), &t)
    );

    // 5. b takes over: leads, holds the VIP, and announced it (the switch's
    // entry moved to b's MAC).
    assert!(
        wait_until(Duration::from_secs(15), || t.b.leader_gauge() == Some(1)),
        "b did not become the leader{}",
        logs(&a, Some(&b), &t)
    );
    assert!(
        wait_until(Duration::from_secs(10), || t.b.has_vip()),
        "{VIP} not on fb0 after the takeover: {:?}{}",
        t.b.addresses(),
        logs(&a, Some(&b), &t)
    );
    let mac_b = t.b.mac();
    assert_ne!(mac_a, mac_b);
    assert!(
        wait_until(Duration::from_secs(5), || t.switch_neighbour().as_deref()
            == Some(mac_b.as_str())),
        "switch's neighbour entry for {VIP} is {:?}, not b's {mac_b} (fb0){}",
        t.switch_neighbour(),
        logs(&a, Some(&b), &t)
    );

    // 6. b serves the VIP: the connection is accepted (and closed, the
    // Service has no endpoints); curl exits 7 when it cannot connect.
    let code = t.switch_curl();
    assert!(
        code != 7 && code != 28,
        "curl to {VIP}:{PORT} from the switch exited {code}{}",
        logs(&a, Some(&b), &t)
    );
    assert!(b.exited().is_none(), "{}", logs(&a, Some(&b), &t));

    drop(b);
    drop(api);
    let _ = std::fs::remove_dir_all(&kc_dir);
}
