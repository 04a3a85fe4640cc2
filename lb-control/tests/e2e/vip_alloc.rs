//! VIP allocation with the real binary: IPv4, IPv6 and dual-stack Services
//! get one address per family, requests are honoured and never handed to a
//! second Service unless both share a key, only Services of lb's class are
//! served, and a Service keeps its address across an older Service's
//! deletion and an lb restart (read back from the API server's status).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;
use ipnet::IpNet;
use lb_compile::endpoints::IpFamily;
use lb_compile::vip_alloc::{SHARED_IP_ANNOTATION, first_choice};

use crate::l4::{backend_via, l4_service};
use crate::support::kube_api::KubeApi;
use crate::support::{Lb, admin_get, free_port, lb_check};

/// `l4_service` with annotations on the Service.
fn annotated(name: &str, port: u16, extra: &str, annotations: &str, eps: &[SocketAddr]) -> String {
    l4_service(name, "LoadBalancer", port, extra, eps).replacen(
        &format!("metadata: {{name: {name}, namespace: default}}"),
        &format!("metadata: {{name: {name}, namespace: default, annotations: {{{annotations}}}}}"),
        1,
    )
}

/// Each Service's addresses in `/status` (by name).
fn vips(lb: &Lb) -> BTreeMap<String, Vec<IpAddr>> {
    let status = admin_get(lb.admin, "/status").expect("/status").json();
    status
        .as_array()
        .expect("a list")
        .iter()
        .filter(|s| s["kind"] == "Service" && s.get("status").is_some())
        .map(|s| {
            let ips = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
                .collect();
            (s["metadata"]["name"].as_str().unwrap().to_owned(), ips)
        })
        .collect()
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

#[test]
fn families_requests_and_sharing() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let eps = [echo.local_addr()];
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let share = format!("{SHARED_IP_ANNOTATION}: k");
    let manifests = [
        annotated(
            "dual",
            p1,
            "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
            &share,
            &eps,
        ),
        // Shares ::1 (the only IPv6 pool address) with dual: another port.
        annotated("v6", p2, "  ipFamilies: [IPv6]\n", &share, &eps),
        l4_service("v4", "LoadBalancer", p3, "", &eps),
        l4_service(
            "req",
            "LoadBalancer",
            p1,
            "  loadBalancerIP: 127.0.96.5\n",
            &eps,
        ),
        // The same address, another port, no sharing key: refused.
        l4_service(
            "thief",
            "LoadBalancer",
            p2,
            "  loadBalancerIP: 127.0.96.5\n",
            &eps,
        ),
    ]
    .join("---\n");
    let lb = Lb::start(
        "vip-families",
        &[("svc.yaml", &manifests)],
        "[loadbalancer]\npools = [\"127.0.96.0/29\", \"::1/128\"]\n",
    );
    let got = vips(&lb);
    let v6: IpAddr = "::1".parse().unwrap();
    let pool: IpNet = "127.0.96.0/29".parse().unwrap();
    let dual = &got["dual"];
    assert_eq!(dual.len(), 2, "{got:?}");
    assert!(pool.contains(&dual[0]) && dual[1] == v6, "{got:?}");
    assert_eq!(got["v6"], [v6]);
    assert_eq!(got["v4"].len(), 1);
    assert!(pool.contains(&got["v4"][0]) && got["v4"][0] != dual[0]);
    assert_eq!(got["req"], ["127.0.96.5".parse::<IpAddr>().unwrap()]);
    assert!(!got.contains_key("thief"), "{got:?}");
    // Every address answers, through the endpoint.
    for (ip, port) in [(dual[0], p1), (v6, p1), (v6, p2), (got["v4"][0], p3)] {
        let addr = SocketAddr::new(ip, port);
        assert_eq!(backend_via(addr).as_deref(), Some("a"), "{addr}");
    }
    assert_eq!(
        backend_via(SocketAddr::new("127.0.96.5".parse().unwrap(), p1)).as_deref(),
        Some("a")
    );
    assert!(refused(SocketAddr::new("127.0.96.5".parse().unwrap(), p2)));
    // `lb check` names the refusal and the way to share.
    let (_, out) = lb_check(&lb.config_path());
    assert!(
        out.contains("Service default/thief")
            && out.contains("127.0.96.5 is already used by Service default/req")
            && out.contains(SHARED_IP_ANNOTATION),
        "{out}"
    );
}

#[test]
fn only_services_of_lbs_class_are_served() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let eps = [echo.local_addr()];
    let port = free_port();
    let with_class = |name: &str, ip: &str, class: Option<&str>| {
        let class = class.map_or(String::new(), |c| format!("  loadBalancerClass: {c}\n"));
        l4_service(
            name,
            "LoadBalancer",
            port,
            &format!("  loadBalancerIP: {ip}\n{class}"),
            &eps,
        )
    };
    let manifests = [
        with_class("ours", "127.0.97.1", Some("edge.example.com/lb")),
        with_class("theirs", "127.0.97.2", Some("other.example.com/lb")),
        with_class("unclassed", "127.0.97.3", None),
    ]
    .join("---\n");
    let lb = Lb::start(
        "vip-class",
        &[("svc.yaml", &manifests)],
        "[loadbalancer]\npools = [\"127.0.97.0/29\"]\nclass = \"edge.example.com/lb\"\ndefault = false\n",
    );
    let at = |last: u8| SocketAddr::new(IpAddr::from([127, 0, 97, last]), port);
    assert_eq!(backend_via(at(1)).as_deref(), Some("a"));
    assert!(refused(at(2)), "another class is not lb's");
    assert!(refused(at(3)), "no class with default = false");
    let got = vips(&lb);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["ours"], "{got:?}");
    drop(lb);
    // default = true: Services without a class are lb's too.
    let lb = Lb::start(
        "vip-class-default",
        &[("svc.yaml", &manifests)],
        "[loadbalancer]\npools = [\"127.0.97.0/29\"]\nclass = \"edge.example.com/lb\"\ndefault = true\n",
    );
    assert_eq!(backend_via(at(3)).as_deref(), Some("a"));
    assert!(refused(at(2)));
    assert_eq!(vips(&lb).len(), 2);
}

/// The address `api` holds in a Service's status, once there.
fn stored_vip(api: &KubeApi, name: &str) -> IpAddr {
    let start = Instant::now();
    loop {
        let svc = api.get("Service", Some("default"), name).expect("stored");
        if let Some(ip) = svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() {
            return ip.parse().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no status: {svc:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_service_keeps_its_address_when_an_older_one_goes_and_across_restarts() {
    let api = KubeApi::start();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let eps = [echo.local_addr()];
    let pools: Vec<IpNet> = vec!["127.0.98.0/29".parse().unwrap()];
    // Two Services whose first choices collide: the younger gets another.
    let first = first_choice(&pools, IpFamily::IPv4, "default/a").unwrap();
    let b = (0..500)
        .map(|n| format!("b{n}"))
        .find(|b| first_choice(&pools, IpFamily::IPv4, &format!("default/{b}")) == Some(first))
        .expect("a colliding name");
    let port = free_port();
    api.apply_yaml(&l4_service("a", "LoadBalancer", port, "", &eps));
    std::thread::sleep(Duration::from_millis(1100)); // a is older by its creationTimestamp
    api.apply_yaml(&l4_service(&b, "LoadBalancer", port, "", &eps));
    let b_vip;
    {
        let lb = Lb::on_api(
            "vip-restart",
            &api,
            "[loadbalancer]\npools = [\"127.0.98.0/29\"]\n",
        );
        assert_eq!(stored_vip(&api, "a"), first);
        b_vip = stored_vip(&api, &b);
        assert_ne!(b_vip, first);
        assert_eq!(
            backend_via(SocketAddr::new(b_vip, port)).as_deref(),
            Some("a")
        );
        // The older Service goes: the younger stays where it is.
        let generation = lb.generation();
        api.delete("Service", Some("default"), "a");
        lb.wait_generation_above(generation, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(vips(&lb)[&b], [b_vip]);
        assert_eq!(
            backend_via(SocketAddr::new(b_vip, port)).as_deref(),
            Some("a")
        );
        assert!(refused(SocketAddr::new(first, port)));
        // A clean stop releases the leader Lease for the next process.
        let mut lb = lb;
        lb.signal("TERM");
        lb.wait_exit(Duration::from_secs(20));
    }
    let writes = |api: &KubeApi| {
        api.status_writes()
            .iter()
            .filter(|w| **w == format!("Service default/{b}"))
            .count()
    };
    let before = writes(&api);
    // A new process reads the address back from the status.
    let lb = Lb::on_api(
        "vip-restart-2",
        &api,
        "[loadbalancer]\npools = [\"127.0.98.0/29\"]\n",
    );
    // It leads (and may allocate) once it holds the Lease.
    lb.wait_metric("lb_leader", 1, Duration::from_secs(30));
    assert!(lb.wait_log("leader now", Duration::from_secs(5)));
    assert_eq!(vips(&lb)[&b], [b_vip]);
    assert_eq!(
        backend_via(SocketAddr::new(b_vip, port)).as_deref(),
        Some("a")
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(writes(&api), before, "{:?}", api.status_writes());
}

#[test]
fn only_the_leader_allocates_and_the_follower_serves_what_it_wrote() {
    let api = KubeApi::start();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    // The leader first; the follower's wider pool would make it choose
    // another address for the Service if it allocated one itself.
    let leader = Lb::on_api(
        "vip-leader-1",
        &api,
        "[loadbalancer]\npools = [\"127.0.99.0/29\"]\n",
    );
    leader.wait_metric("lb_leader", 1, Duration::from_secs(30));
    let follower = Lb::on_api(
        "vip-leader-2",
        &api,
        "[loadbalancer]\npools = [\"127.0.99.0/28\"]\n",
    );
    let narrow: Vec<IpNet> = vec!["127.0.99.0/29".parse().unwrap()];
    let wide: Vec<IpNet> = vec!["127.0.99.0/28".parse().unwrap()];
    let choice = |pools: &[IpNet], name: &str| {
        first_choice(pools, IpFamily::IPv4, &format!("default/{name}"))
    };
    let name = (0..100)
        .map(|n| format!("late{n}"))
        .find(|n| choice(&narrow, n) != choice(&wide, n))
        .unwrap();
    let port = free_port();
    api.apply_yaml(&l4_service(
        &name,
        "LoadBalancer",
        port,
        "",
        &[echo.local_addr()],
    ));
    // Until the leader's status write arrives the follower serves nothing
    // for the Service (it never allocates an address of its own).
    let start = Instant::now();
    let vip = loop {
        let seen = vips(&follower).get(&name).cloned().unwrap_or_default();
        if let Some(vip) = seen.first() {
            break *vip;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the follower never served it; log:\n{}",
            follower.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(stored_vip(&api, &name), vip, "the follower's own choice");
    assert_eq!(choice(&narrow, &name), Some(vip));
    assert_eq!(vips(&leader)[&name], [vip]);
    assert_eq!(
        backend_via(SocketAddr::new(vip, port)).as_deref(),
        Some("a")
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(vips(&follower)[&name], [vip]);
    let what = format!("Service default/{name}");
    let written = api.status_writes().iter().filter(|w| **w == what).count();
    assert_eq!(written, 1, "{:?}", api.status_writes());
    assert_eq!(follower.metric("lb_status_writes_total"), 0);
}
