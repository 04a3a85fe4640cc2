//! `[loadbalancer] interface`: the real `lb` runs in a network namespace the
//! test creates, joined by a veth pair to a second ("peer") namespace. lb
//! puts a dual-stack LoadBalancer Service's VIPs on its end of the pair,
//! announces them (the peer's neighbour table learns lb's MAC without
//! asking), serves connections to them from the peer, takes them off when
//! the Service goes and on drain, never removes an address it did not add,
//! and removes the addresses a crashed lb left behind.
//!
//! Traffic stays inside the two namespaces. The tests need root (to create
//! namespaces) and skip with a note without it.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::support::netns::{self, NsLb, ip, wait_until};
use crate::support::{scratch_dir, test_io};

const LB_DEV: &str = "vip0";
const PEER_DEV: &str = "vip1";
const ADMIN: &str = "127.0.0.1:19901";
const PORT: u16 = 8080;

/// Two namespaces joined by a veth pair; both deleted on drop (also when a
/// test panics).
struct Netns {
    lb: String,
    peer: String,
}

impl Netns {
    /// The namespaces, or None (with a note) when they cannot be made here.
    fn create(tag: &str) -> Option<Netns> {
        if !netns::can_create(&format!("vip_iface::{tag}")) {
            return None;
        }
        let pid = std::process::id();
        let lb = format!("lb-vip-{pid}-{tag}");
        let peer = format!("lb-vip-{pid}-{tag}-peer");
        let out = netns::run("ip", &["netns", "add", &lb]);
        if !out.status.success() {
            eprintln!(
                "skipping vip_iface::{tag}: ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let ns = Netns {
            lb,
            peer: peer.clone(),
        };
        ip(&["netns", "add", &peer]);
        let (l, p) = (ns.lb.as_str(), ns.peer.as_str());
        ip(&[
            "-n", l, "link", "add", LB_DEV, "type", "veth", "peer", "name", PEER_DEV, "netns", p,
        ]);
        for (n, dev) in [(l, LB_DEV), (p, PEER_DEV)] {
            ip(&["-n", n, "link", "set", "lo", "up"]);
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        ip(&["-n", l, "addr", "add", "10.250.1.1/24", "dev", LB_DEV]);
        ip(&[
            "-n",
            l,
            "addr",
            "add",
            "fd00:251::1/64",
            "dev",
            LB_DEV,
            "nodad",
        ]);
        ip(&["-n", p, "addr", "add", "10.250.1.2/24", "dev", PEER_DEV]);
        ip(&[
            "-n",
            p,
            "addr",
            "add",
            "fd00:251::2/64",
            "dev",
            PEER_DEV,
            "nodad",
        ]);
        // The VIP pools are on the link, seen from the peer.
        ip(&["-n", p, "route", "add", "10.250.0.0/29", "dev", PEER_DEV]);
        ip(&[
            "-n",
            p,
            "-6",
            "route",
            "add",
            "fd00:250::/125",
            "dev",
            PEER_DEV,
        ]);
        // Learn neighbours from gratuitous ARP and unsolicited NA (the
        // latter only on a router: forwarding on).
        netns::sysctl(
            p,
            &[
                &format!("net.ipv4.conf.{PEER_DEV}.arp_accept=1"),
                &format!("net.ipv6.conf.{PEER_DEV}.accept_untracked_na=1"),
                &format!("net.ipv6.conf.{PEER_DEV}.forwarding=1"),
            ],
        );
        Some(ns)
    }

    /// The addresses on lb's end of the pair.
    fn addresses(&self) -> Vec<IpAddr> {
        netns::addresses(&self.lb, LB_DEV)
    }

    /// Polls until `done(addresses)` holds; false after `limit`.
    fn wait_addresses(&self, limit: Duration, done: impl Fn(&[IpAddr]) -> bool) -> bool {
        wait_until(limit, || done(&self.addresses()))
    }

    fn mac(&self) -> String {
        netns::mac(&self.lb, LB_DEV)
    }

    /// The peer's neighbour entry for `ip`: its link-layer address.
    fn peer_neighbour(&self, ip: IpAddr) -> Option<String> {
        netns::neighbour(&self.peer, PEER_DEV, ip)
    }

    /// curl from the peer to `ip`:PORT; curl's exit code.
    fn peer_curl(&self, ip: IpAddr) -> i32 {
        netns::curl_code(&self.peer, ip, PORT)
    }

    /// GET `path` from lb's admin API inside its namespace; None unless 2xx.
    fn admin_get(&self, path: &str) -> Option<String> {
        netns::admin_get(&self.lb, ADMIN, path)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.lb, &self.peer] {
            let _ = netns::run("ip", &["netns", "del", ns]);
        }
    }
}

/// Writes `lb.toml` and the manifests, starts lb in the lb namespace and
/// waits until it is ready.
fn start(ns: &Netns, tag: &str, manifests: &[(&str, &str)]) -> NsLb {
    let dir = scratch_dir(tag);
    for (name, body) in manifests {
        std::fs::write(dir.join("manifests").join(name), body).unwrap();
    }
    let config = format!(
        "[runtime]\nworkers = 2\nshutdown_grace = \"2s\"\nio = \"{io}\"\npin = false\n\
             [admin]\nlisten = \"{ADMIN}\"\n\
             [ingress]\nclass = \"lb\"\nhttp = [\"127.0.0.1:18080\"]\n\
             [sources]\nfiles = [\"{manifests}\"]\n\
             [loadbalancer]\npools = [\"10.250.0.0/29\", \"fd00:250::/125\"]\ninterface = \"{LB_DEV}\"\n",
        io = test_io(),
        manifests = dir.join("manifests").display(),
    );
    std::fs::write(dir.join("lb.toml"), config).unwrap();
    let mut lb = NsLb::spawn(&ns.lb, dir);
    let ready = wait_until(Duration::from_secs(20), || {
        lb.exited().is_none() && ns.admin_get("/readyz").is_some()
    });
    assert!(
        ready,
        "lb not ready ({:?}); log:\n{}",
        lb.exited(),
        lb.log()
    );
    lb
}

/// A dual-stack LoadBalancer Service `web` on TCP port [`PORT`], no endpoints.
fn dual_stack_service() -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  ports: [{{name: tcp, port: {PORT}, protocol: TCP}}]
"
    )
}

fn in_pools(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [10, 250, 0] && v4.octets()[3] < 8,
        IpAddr::V6(v6) => {
            let base: Ipv6Addr = "fd00:250::".parse().unwrap();
            v6.octets()[..15] == base.octets()[..15] && v6.octets()[15] < 8
        }
    }
}

/// The Service's VIPs from lb's `/status`, once both families have one.
fn status_vips(ns: &Netns) -> Vec<IpAddr> {
    let start = Instant::now();
    loop {
        let vips: Vec<IpAddr> = ns
            .admin_get("/status")
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|s| {
                let svc = s
                    .as_array()?
                    .iter()
                    .find(|o| o["kind"] == "Service")?
                    .clone();
                Some(
                    svc["status"]["loadBalancer"]["ingress"]
                        .as_array()?
                        .iter()
                        .filter_map(|i| i["ip"].as_str()?.parse().ok())
                        .collect(),
                )
            })
            .unwrap_or_default();
        if vips.len() == 2 {
            return vips;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no dual-stack VIPs in /status: {vips:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn vips_are_added_announced_served_removed_and_others_left_alone() {
    let Some(ns) = Netns::create("life") else {
        return;
    };
    let mut lb = start(&ns, "vip-iface", &[("web.yaml", &dual_stack_service())]);
    let vips = status_vips(&ns);
    assert!(vips.iter().all(in_pools), "{vips:?}");
    assert!(
        vips[0].is_ipv4() != vips[1].is_ipv4(),
        "one per family: {vips:?}"
    );

    // Both VIPs on the interface, as host addresses.
    assert!(
        ns.wait_addresses(Duration::from_secs(5), |a| vips
            .iter()
            .all(|v| a.contains(v))),
        "VIPs {vips:?} not on {LB_DEV}: {:?}; log:\n{}",
        ns.addresses(),
        lb.log()
    );
    let info = netns::ip_json(&["-n", &ns.lb, "-j", "addr", "show", "dev", LB_DEV]);
    for vip in &vips {
        let entry = info[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["local"].as_str() == Some(&vip.to_string()))
            .unwrap();
        let host = if vip.is_ipv4() { 32 } else { 128 };
        assert_eq!(entry["prefixlen"], host, "{entry}");
        // iproute2 6.2 and newer print the IFA_PROTO mark.
        if let Some(proto) = entry.get("protocol") {
            assert_eq!(proto, "108", "{entry}");
        }
    }
    // Announced: the peer learnt both with lb's MAC, without asking (no
    // traffic to them has been sent yet).
    let mac = ns.mac();
    let start = Instant::now();
    for vip in &vips {
        while ns.peer_neighbour(*vip).as_deref() != Some(mac.as_str()) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "peer has no neighbour entry {vip} -> {mac}: {}",
                netns::neighbours(&ns.peer)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Served: the connection is accepted (and closed, the Service has no
    // endpoints); curl exits 7 when it cannot connect, 28 on a timeout.
    for vip in &vips {
        let code = ns.peer_curl(*vip);
        assert!(
            code == 52 || code == 56,
            "curl to {vip}:{PORT} exited {code}"
        );
    }

    // The Service goes: both addresses go.
    std::fs::remove_file(lb.manifest("web.yaml")).unwrap();
    assert!(
        ns.wait_addresses(Duration::from_secs(10), |a| !vips
            .iter()
            .any(|v| a.contains(v))),
        "VIPs still on {LB_DEV}: {:?}; log:\n{}",
        ns.addresses(),
        lb.log()
    );
    assert!(lb.log().contains("VIP removed from the interface"));

    // Addresses added by hand, one of them a pool address lb might pick:
    // lb never removes them.
    let by_hand: Vec<IpAddr> = ["10.250.0.7", "fd00:250::7", "192.0.2.9"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    for a in &by_hand {
        let host = format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 });
        let mut args = vec!["-n", &ns.lb, "addr", "add", &host, "dev", LB_DEV];
        if a.is_ipv6() {
            args.push("nodad");
        }
        ip(&args);
    }
    // The Service comes back: its VIPs are added again (a reload syncs).
    std::fs::write(lb.manifest("web.yaml"), dual_stack_service()).unwrap();
    let vips = status_vips(&ns);
    assert!(
        ns.wait_addresses(Duration::from_secs(10), |a| vips
            .iter()
            .all(|v| a.contains(v))),
        "VIPs {vips:?} not back on {LB_DEV}: {:?}",
        ns.addresses()
    );
    assert!(by_hand.iter().all(|a| ns.addresses().contains(a)));

    // Drain: lb's addresses go, the others stay.
    lb.signal("TERM");
    assert!(lb.wait_exit(Duration::from_secs(15)));
    let left = ns.addresses();
    for vip in vips.iter().filter(|v| !by_hand.contains(v)) {
        assert!(
            !left.contains(vip),
            "{vip} still on {LB_DEV} after drain: {left:?}"
        );
    }
    for a in &by_hand {
        assert!(left.contains(a), "{a} (added by hand) removed: {left:?}");
    }
    assert!(left.contains(&"10.250.1.1".parse().unwrap()));
}

#[test]
fn addresses_a_crashed_lb_left_are_removed_at_start() {
    let Some(ns) = Netns::create("stale") else {
        return;
    };
    let mut first = start(&ns, "vip-iface-a", &[("web.yaml", &dual_stack_service())]);
    let vips = status_vips(&ns);
    assert!(
        ns.wait_addresses(Duration::from_secs(5), |a| vips
            .iter()
            .all(|v| a.contains(v))),
        "VIPs {vips:?} not on {LB_DEV}: {:?}",
        ns.addresses()
    );
    // A crash: no drain, the addresses stay.
    first.signal("KILL");
    assert!(first.wait_exit(Duration::from_secs(5)));
    drop(first);
    let left = ns.addresses();
    assert!(vips.iter().all(|v| left.contains(v)), "{left:?}");
    ip(&["-n", &ns.lb, "addr", "add", "10.250.0.6/32", "dev", LB_DEV]);

    // The next lb serves no Service: it removes the addresses carrying its
    // mark, and only those.
    let second = start(&ns, "vip-iface-b", &[]);
    assert!(
        ns.wait_addresses(Duration::from_secs(5), |a| !vips
            .iter()
            .any(|v| a.contains(v))),
        "stale VIPs still on {LB_DEV}: {:?}; log:\n{}",
        ns.addresses(),
        second.log()
    );
    let left = ns.addresses();
    assert!(left.contains(&"10.250.0.6".parse().unwrap()), "{left:?}");
    assert!(
        second.log().contains("from an earlier run"),
        "{}",
        second.log()
    );
}
