//! Test certificates: self-signed ECDSA P-256 certificates made with the
//! openssl command, and `kubernetes.io/tls` Secret manifests holding them.

use std::path::Path;
use std::process::{Command, Stdio};

/// A self-signed certificate for `names` with subject CN `cn`, written under
/// `dir`: (certificate PEM, key PEM).
pub fn self_signed(dir: &Path, cn: &str, names: &[&str]) -> (String, String) {
    let stem = dir.join(cn.replace('*', "star"));
    let (crt, key) = (stem.with_extension("crt"), stem.with_extension("key"));
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl req failed");
    (
        std::fs::read_to_string(crt).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

/// A `kubernetes.io/tls` Secret manifest in namespace `default`.
pub fn tls_secret(name: &str, (crt, key): &(String, String)) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    )
}
