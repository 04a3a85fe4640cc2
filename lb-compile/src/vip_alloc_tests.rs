//! Allocation through the whole compile: Services from YAML in, each
//! Service's addresses and diagnostics out.

use std::path::Path;

use super::*;
use crate::compile::{Compiled, compile_with};
use crate::diag::Severity;
use crate::manifests::objects_from_str;
use crate::settings::Settings;
use crate::store::Store;

const POOLS: &str = r#""127.0.20.0/29", "fd00:20::/125""#;

fn cfg(extra: &str) -> Settings {
    toml::from_str::<Settings>(&format!(
        "[loadbalancer]\npools = [{POOLS}]\nmaglev_table_size = 251\n{extra}"
    ))
    .expect("config")
}

/// A LoadBalancer Service; `created` orders Services by age, `extra` is
/// added to the spec (indented two spaces), `meta` to the metadata.
fn svc(name: &str, created: &str, port: i32, meta: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  creationTimestamp: \"{created}\"\n{meta}spec:\n  type: LoadBalancer\n  selector: {{app: x}}\n  ports: [{{port: {port}, protocol: TCP}}]\n{extra}---\n"
    )
}

fn compiled(yaml: &str, cfg: &Settings, prior: &Vips) -> Compiled {
    let (raws, diags) = objects_from_str(yaml, Path::new("t.yaml"));
    assert!(diags.is_empty(), "{diags:?}");
    let (store, diags) = Store::build(&raws);
    assert!(diags.is_empty(), "{diags:?}");
    compile_with(&store, cfg, prior)
}

fn vips(c: &Compiled, key: &str) -> Vec<String> {
    c.vips.by_service[key]
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pools() -> Vec<IpNet> {
    vec![
        "127.0.20.0/29".parse().unwrap(),
        "fd00:20::/125".parse().unwrap(),
    ]
}

#[test]
fn families_decide_how_many_addresses() {
    let yaml = [
        svc("v4", "2026-01-01T00:00:00Z", 80, "", ""),
        svc(
            "v6",
            "2026-01-01T00:00:01Z",
            80,
            "",
            "  ipFamilies: [IPv6]\n",
        ),
        svc(
            "dual",
            "2026-01-01T00:00:02Z",
            80,
            "",
            "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6, IPv4]\n",
        ),
        svc(
            "prefer",
            "2026-01-01T00:00:03Z",
            80,
            "",
            "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv4, IPv6]\n",
        ),
    ]
    .concat();
    let c = compiled(&yaml, &cfg(""), &Vips::default());
    let fam = |key: &str| -> Vec<IpFamily> {
        c.vips.by_service[key]
            .iter()
            .map(|a| IpFamily::of(*a))
            .collect()
    };
    assert_eq!(fam("default/v4"), [IpFamily::IPv4]);
    assert_eq!(fam("default/v6"), [IpFamily::IPv6]);
    assert_eq!(fam("default/dual"), [IpFamily::IPv6, IpFamily::IPv4]);
    assert_eq!(fam("default/prefer"), [IpFamily::IPv4, IpFamily::IPv6]);
    let all: BTreeSet<IpAddr> = c.vips.by_service.values().flatten().copied().collect();
    assert_eq!(all.len(), 6, "every address distinct: {:?}", c.vips);
    assert!(all.iter().all(|a| pools().iter().any(|p| p.contains(a))));
    // The status names each address with ipMode VIP and the ports.
    let status = serde_json::to_string(&c.status).unwrap();
    for a in &all {
        assert!(status.contains(&format!("\"ip\":\"{a}\"")), "{status}");
    }
    assert!(status.contains("\"ipMode\":\"VIP\""), "{status}");
}

#[test]
fn requested_addresses_win_and_are_never_handed_to_a_second_service() {
    let yaml = [
        svc(
            "old",
            "2026-01-01T00:00:00Z",
            80,
            "",
            "  loadBalancerIP: 127.0.20.3\n",
        ),
        svc(
            "young",
            "2026-01-01T00:00:01Z",
            81,
            "",
            "  loadBalancerIP: 127.0.20.3\n",
        ),
        svc(
            "both",
            "2026-01-01T00:00:02Z",
            82,
            &format!("  annotations: {{{IPS_ANNOTATION}: \"127.0.20.4, fd00:20::4\"}}\n"),
            "",
        ),
    ]
    .concat();
    let c = compiled(&yaml, &cfg(""), &Vips::default());
    assert_eq!(vips(&c, "default/old"), ["127.0.20.3"]);
    assert!(vips(&c, "default/young").is_empty());
    assert_eq!(vips(&c, "default/both"), ["127.0.20.4", "fd00:20::4"]);
    let refused = c
        .diagnostics
        .iter()
        .find(|d| d.message.contains("already used by Service default/old"))
        .expect("a diagnostic for the second request");
    assert_eq!(refused.severity, Severity::Error);
    assert!(refused.message.contains(SHARED_IP_ANNOTATION));
    // Only the older Service listens on the address.
    assert_eq!(c.snapshot.l4.services.len(), 3, "{:?}", c.snapshot.l4);
    // A requested address is never allocated, even to an older Service:
    // with two usable addresses, the other one is the only choice.
    let small = toml::from_str::<Settings>(
        "[loadbalancer]\npools = [\"127.0.21.0/30\"]\nmaglev_table_size = 251\n",
    )
    .unwrap();
    for requested in ["127.0.21.1", "127.0.21.2"] {
        let yaml = [
            svc("older", "2026-01-01T00:00:00Z", 80, "", ""),
            svc(
                "younger",
                "2026-01-01T00:00:01Z",
                80,
                "",
                &format!("  loadBalancerIP: {requested}\n"),
            ),
        ]
        .concat();
        let c = compiled(&yaml, &small, &Vips::default());
        assert_eq!(vips(&c, "default/younger"), [requested]);
        assert_eq!(vips(&c, "default/older").len(), 1);
        assert_ne!(vips(&c, "default/older"), [requested]);
    }
}

#[test]
fn a_sharing_key_lets_services_on_other_ports_share_an_address() {
    let share = format!("  annotations: {{{SHARED_IP_ANNOTATION}: dns}}\n");
    let yaml = [
        svc("dns-tcp", "2026-01-01T00:00:00Z", 53, &share, ""),
        svc("dns-udp", "2026-01-01T00:00:01Z", 53, &share, "")
            .replace("protocol: TCP", "protocol: UDP"),
        // Same key, same port: not shared.
        svc("dns-clash", "2026-01-01T00:00:02Z", 53, &share, ""),
        // No key: never shared.
        svc("other", "2026-01-01T00:00:03Z", 53, "", ""),
    ]
    .concat();
    let c = compiled(&yaml, &cfg(""), &Vips::default());
    let tcp = vips(&c, "default/dns-tcp");
    assert_eq!(vips(&c, "default/dns-udp"), tcp);
    assert_ne!(vips(&c, "default/dns-clash"), tcp);
    assert_ne!(vips(&c, "default/other"), tcp);
    assert_ne!(vips(&c, "default/other"), vips(&c, "default/dns-clash"));
    // Requests share the same way.
    let yaml = [
        svc(
            "a",
            "2026-01-01T00:00:00Z",
            80,
            &share,
            "  loadBalancerIP: 127.0.20.5\n",
        ),
        svc(
            "b",
            "2026-01-01T00:00:01Z",
            443,
            &share,
            "  loadBalancerIP: 127.0.20.5\n",
        ),
    ]
    .concat();
    let c = compiled(&yaml, &cfg(""), &Vips::default());
    assert_eq!(vips(&c, "default/b"), ["127.0.20.5"]);
    assert_eq!(c.snapshot.l4.services.len(), 2);
}

#[test]
fn an_address_in_status_or_from_the_last_compile_is_kept() {
    let first = first_choice(&pools(), IpFamily::IPv4, "default/web").unwrap();
    let other = (1..=6)
        .map(|n| ip(&format!("127.0.20.{n}")))
        .find(|a| *a != first)
        .unwrap();
    // Read back from status (a restart, with the API server's copy).
    let status = format!("status:\n  loadBalancer:\n    ingress: [{{ip: {other}}}]\n");
    let yaml =
        svc("web", "2026-01-01T00:00:00Z", 80, "", "").replace("---\n", &format!("{status}---\n"));
    let c = compiled(&yaml, &cfg(""), &Vips::default());
    assert_eq!(c.vips.by_service["default/web"], [other]);
    // From the previous compile (files carry no status).
    let plain = svc("web", "2026-01-01T00:00:00Z", 80, "", "");
    let prior = Vips {
        by_service: [("default/web".to_owned(), vec![other])].into(),
        follower: false,
    };
    let c = compiled(&plain, &cfg(""), &prior);
    assert_eq!(c.vips.by_service["default/web"], [other]);
    // Outside the pools now: a new address.
    let prior = Vips {
        by_service: [("default/web".to_owned(), vec![ip("127.0.99.1")])].into(),
        follower: false,
    };
    let c = compiled(&plain, &cfg(""), &prior);
    assert_eq!(c.vips.by_service["default/web"], [first]);
}

#[test]
fn a_younger_service_keeps_its_address_when_the_older_one_goes() {
    // Two Services whose first choices collide: the younger gets the next.
    let a = "default/a";
    let first = first_choice(&pools(), IpFamily::IPv4, a).unwrap();
    let b = (0..200)
        .map(|n| format!("b{n}"))
        .find(|b| first_choice(&pools(), IpFamily::IPv4, &format!("default/{b}")) == Some(first))
        .expect("a colliding name");
    let both = [
        svc("a", "2026-01-01T00:00:00Z", 80, "", ""),
        svc(&b, "2026-01-01T00:00:01Z", 80, "", ""),
    ]
    .concat();
    let c = compiled(&both, &cfg(""), &Vips::default());
    let b_key = format!("default/{b}");
    let b_vip = c.vips.by_service[&b_key].clone();
    assert_ne!(b_vip, [first]);
    let alone = svc(&b, "2026-01-01T00:00:01Z", 80, "", "");
    let kept = compiled(&alone, &cfg(""), &c.vips);
    assert_eq!(kept.vips.by_service[&b_key], b_vip);
    // Without memory it would have moved.
    let fresh = compiled(&alone, &cfg(""), &Vips::default());
    assert_eq!(fresh.vips.by_service[&b_key], [first]);
}

#[test]
fn a_follower_allocates_nothing_but_serves_what_status_says() {
    let plain = svc("web", "2026-01-01T00:00:00Z", 80, "", "");
    let follower = Vips {
        by_service: BTreeMap::new(),
        follower: true,
    };
    let c = compiled(&plain, &cfg(""), &follower);
    assert!(c.vips.by_service["default/web"].is_empty());
    assert!(c.snapshot.l4.services.is_empty());
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.message.contains("the leader lb allocates it")),
        "{:?}",
        c.diagnostics
    );
    let status = "status:\n  loadBalancer:\n    ingress: [{ip: 127.0.20.2}]\n";
    let written = plain.replace("---\n", &format!("{status}---\n"));
    let c = compiled(&written, &cfg(""), &follower);
    assert_eq!(vips(&c, "default/web"), ["127.0.20.2"]);
    // Requests need no leader.
    let requested = svc(
        "r",
        "2026-01-01T00:00:00Z",
        80,
        "",
        "  loadBalancerIP: 127.0.20.6\n",
    );
    let c = compiled(&requested, &cfg(""), &follower);
    assert_eq!(vips(&c, "default/r"), ["127.0.20.6"]);
}

#[test]
fn class_filtering() {
    let class = |name: &str, class: Option<&str>| {
        let extra = class.map_or(String::new(), |c| format!("  loadBalancerClass: {c}\n"));
        svc(name, "2026-01-01T00:00:00Z", 80, "", &extra)
    };
    let yaml = [
        class("ours", Some("lb.example.com/lb")),
        class("theirs", Some("other.example.com/lb")),
        class("none", None),
    ]
    .concat();
    let c = compiled(&yaml, &cfg(""), &Vips::default());
    assert_eq!(vips(&c, "default/ours").len(), 1);
    assert!(!c.vips.by_service.contains_key("default/theirs"));
    assert_eq!(vips(&c, "default/none").len(), 1, "default = true");
    let c = compiled(&yaml, &cfg("default = false\n"), &Vips::default());
    assert!(!c.vips.by_service.contains_key("default/none"));
    let c = compiled(
        &yaml,
        &cfg("class = \"other.example.com/lb\"\n"),
        &Vips::default(),
    );
    assert!(c.vips.by_service.contains_key("default/theirs"));
    assert!(!c.vips.by_service.contains_key("default/ours"));
    // Only served Services listen.
    let served: BTreeSet<&str> = c
        .snapshot
        .l4
        .services
        .values()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        served,
        BTreeSet::from(["default/theirs:80", "default/none:80"])
    );
}

#[test]
fn bad_requests_are_errors() {
    let two_v4 = svc(
        "x",
        "2026-01-01T00:00:00Z",
        80,
        &format!("  annotations: {{{IPS_ANNOTATION}: \"127.0.20.1,127.0.20.2\"}}\n"),
        "",
    );
    let c = compiled(&two_v4, &cfg(""), &Vips::default());
    assert!(c.diagnostics.iter().any(|d| d.severity == Severity::Error
        && d.message.contains("at most one address per IP family")));
    assert!(c.snapshot.l4.services.is_empty());
    let bad = svc(
        "y",
        "2026-01-01T00:00:00Z",
        80,
        "",
        "  loadBalancerIP: nope\n",
    );
    let c = compiled(&bad, &cfg(""), &Vips::default());
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.message.contains("\"nope\" is not an IP address"))
    );
}

#[test]
fn requests_outside_every_pool_are_refused_and_not_served() {
    // The router's address, by spec field and by annotation (one family
    // in the pool, the other not: the whole request is refused).
    for (meta, extra, field) in [
        ("", "  loadBalancerIP: 192.168.1.1\n", "spec.loadBalancerIP"),
        (
            &*format!("  annotations: {{{IPS_ANNOTATION}: \"127.0.20.2, fd00:99::1\"}}\n"),
            "",
            IPS_ANNOTATION,
        ),
    ] {
        let yaml = svc("hijack", "2026-01-01T00:00:00Z", 80, meta, extra);
        let c = compiled(&yaml, &cfg(""), &Vips::default());
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.message.contains("outside every [loadbalancer] pool"))
            .unwrap_or_else(|| panic!("no diagnostic: {:?}", c.diagnostics));
        assert_eq!(d.severity, Severity::Error);
        assert!(
            d.field.as_deref().unwrap_or_default().contains(field),
            "{d:?}"
        );
        assert!(
            c.vips
                .by_service
                .get("default/hijack")
                .is_none_or(Vec::is_empty)
        );
        assert!(c.snapshot.l4.services.is_empty(), "{:?}", c.snapshot.l4);
        assert!(
            c.status.iter().all(|s| s["kind"] != "Service"),
            "{:?}",
            c.status
        );
    }
    // Inside a pool, the same request is honoured.
    let yaml = svc(
        "ok",
        "2026-01-01T00:00:00Z",
        80,
        "",
        "  loadBalancerIP: 127.0.20.2\n",
    );
    let c = compiled(&yaml, &cfg(""), &Vips::default());
    assert_eq!(vips(&c, "default/ok"), ["127.0.20.2"]);
}

#[test]
fn pick_skips_network_broadcast_and_taken_addresses() {
    let pools: Vec<IpNet> = vec!["127.0.10.0/29".parse().unwrap()];
    let mut taken = BTreeSet::new();
    for i in 0..6 {
        let a = pick(&pools, Some(IpFamily::IPv4), 1, &format!("ns/s{i}"), &taken).unwrap();
        assert!(a != ip("127.0.10.0") && a != ip("127.0.10.7"));
        assert!(taken.insert(a));
    }
    assert_eq!(pick(&pools, Some(IpFamily::IPv4), 1, "ns/s6", &taken), None);
    assert_eq!(
        pick(&pools, Some(IpFamily::IPv6), 1, "ns/s0", &BTreeSet::new()),
        None
    );
    let single: Vec<IpNet> = vec!["::1/128".parse().unwrap()];
    assert_eq!(
        pick(&single, Some(IpFamily::IPv6), 1, "ns/a", &BTreeSet::new()),
        Some(ip("::1"))
    );
}
