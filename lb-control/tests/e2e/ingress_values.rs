//! An Ingress refused for an invalid value (issue 15 item 1): the admin
//! `/status` lists it with a diagnostic naming the field, the log says so,
//! nothing of it is served, and the Ingress next to it keeps serving.

use bench::echo::EchoServer;

use crate::support::{Lb, admin_get, ingress_named, service_yaml};

#[test]
fn refused_ingress_is_in_status_with_its_field_and_the_rest_serves() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").unwrap();
    let manifests = [
        (
            "a.yaml",
            service_yaml("default", "a", 80, None, &[a.local_addr()]),
        ),
        ("good.yaml", ingress_named("good", "good.test", "a")),
        // Not a lowercase DNS name: the whole Ingress is refused.
        ("bad.yaml", ingress_named("bad", "Bad_Host.test", "a")),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("ingress-values", &refs, "");

    assert_eq!(lb.get("good.test", "/").backend(), "a");
    assert_eq!(lb.get("Bad_Host.test", "/").status, 404);

    let status = admin_get(lb.admin, "/status").expect("/status").json();
    let entries = status.as_array().expect("a list");
    let entry_of = |name: &str| {
        entries
            .iter()
            .find(|e| e["kind"] == "Ingress" && e["metadata"]["name"] == name)
            .cloned()
    };
    let bad = entry_of("bad").unwrap_or_else(|| panic!("no /status entry for bad: {status:#}"));
    assert_eq!(bad["metadata"]["namespace"], "default");
    assert!(
        bad.get("status").is_none(),
        "refused, so no status: {bad:#}"
    );
    let diag = &bad["diagnostics"][0];
    assert_eq!(diag["severity"], "error", "{bad:#}");
    assert_eq!(diag["field"], "spec.rules[0].host", "{bad:#}");
    assert!(
        diag["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Bad_Host.test"),
        "{bad:#}"
    );
    let good = entry_of("good").expect("the served Ingress has status");
    assert!(good["status"]["loadBalancer"].is_object(), "{good:#}");
    assert!(good.get("diagnostics").is_none(), "{good:#}");

    // The log names it too.
    assert!(
        lb.wait_log("spec.rules[0].host", std::time::Duration::from_secs(5)),
        "{}",
        lb.log_text()
    );
}
