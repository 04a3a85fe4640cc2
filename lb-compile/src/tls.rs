//! Compiling TLS for the HTTPS listeners: certificates from the
//! `kubernetes.io/tls` Secrets that served Ingresses name in `spec.tls`
//! (exact names before wildcards; the older Ingress keeps a contested name),
//! the configured default certificate, and the hosts whose plain-HTTP
//! requests are redirected to HTTPS. Pure: no I/O.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::Ingress;
use lb_http::tls::CertIndex;

use crate::diag::Diagnostic;
use crate::model::core::SecretObject;
use crate::model::{Object, Typed};
use crate::settings::Settings;
use crate::store::Store;

/// Ingress annotation turning the HTTP-to-HTTPS redirect off (`"false"`).
pub const SSL_REDIRECT_ANNOTATION: &str = "lb.example.com/ssl-redirect";

/// What [`compile_tls`] produces.
#[derive(Debug, Default)]
pub struct CompiledTls {
    /// Certificates by server name, and the default.
    pub certs: CertIndex,
    /// Hosts redirected from HTTP to HTTPS.
    pub redirect: BTreeSet<String>,
    /// The port redirects point at (the first HTTPS listener).
    pub https_port: Option<u16>,
    /// Diagnostics about Ingress TLS and Secrets.
    pub diagnostics: Vec<Diagnostic>,
}

pub use crate::model::core::certificate;

fn find_secret<'a>(store: &'a Store, ns: &str, name: &str) -> Option<&'a Typed<SecretObject>> {
    match store.find("Secret", Some(ns), name) {
        Some(Object::Secret(s)) => Some(s),
        _ => None,
    }
}

/// Compiles the TLS part for `served` Ingresses (oldest first).
pub fn compile_tls(
    store: &Store,
    cfg: &Settings,
    served: &[(&Object, &Typed<Ingress>)],
) -> CompiledTls {
    let mut out = CompiledTls {
        https_port: cfg.ingress.https.first().map(|a| a.port()),
        ..CompiledTls::default()
    };
    if let Some(default) = &cfg.ingress.default_certificate
        && let Some((ns, name)) = default.split_once('/')
    {
        match find_secret(store, ns, name) {
            None => out.diagnostics.push(Diagnostic::warning(format!(
                "ingress.default_certificate: Secret {default} not found; clients without a matching server name fail the handshake"
            ))),
            Some(s) => match s.value.certificate(default) {
                Ok(c) => out.certs.default = Some(c),
                Err(e) => out.diagnostics.push(Diagnostic::error(format!(
                    "ingress.default_certificate: {e}"
                ))),
            },
        }
    }
    for (obj, ing) in served {
        let Some(spec) = &ing.value.spec else {
            continue;
        };
        let ns = ing.value.metadata.namespace.as_deref().unwrap_or("default");
        let redirect = ing
            .value
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
            .is_none_or(|v| v != "false");
        // Hosts of the rules, for TLS entries that list none.
        let rule_hosts: Vec<String> = spec
            .rules
            .iter()
            .flatten()
            .filter_map(|r| r.host.clone())
            .collect();
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let hosts: Vec<String> = match tls.hosts.as_deref() {
                Some(h) if !h.is_empty() => h.to_vec(),
                _ => rule_hosts.clone(),
            };
            let hosts: Vec<String> = hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            if redirect && out.https_port.is_some() {
                out.redirect.extend(hosts.iter().cloned());
            }
            let Some(secret_name) = tls.secret_name.as_deref() else {
                continue;
            };
            let field = format!("spec.tls[{i}].secretName");
            let source = format!("{ns}/{secret_name}");
            let cert =
                match find_secret(store, ns, secret_name) {
                    None => {
                        out.diagnostics.push(obj.diagnostic(
                        Diagnostic::warning(format!(
                            "Secret {source} not found; its hosts get the default certificate"
                        ))
                        .field(field),
                    ));
                        continue;
                    }
                    Some(s) => match s.value.certificate(&source) {
                        Ok(c) => c,
                        Err(e) => {
                            out.diagnostics
                                .push(obj.diagnostic(Diagnostic::error(e).field(field)));
                            continue;
                        }
                    },
                };
            for host in hosts {
                if let Some(first) = out.certs.names.get(&host) {
                    if first.source != source {
                        out.diagnostics.push(obj.diagnostic(
                            Diagnostic::warning(format!(
                                "host {host} already has the certificate of Secret {} (older Ingress); not replaced",
                                first.source
                            ))
                            .field(format!("spec.tls[{i}].hosts")),
                        ));
                    }
                    continue;
                }
                out.certs.names.insert(host, cert.clone());
            }
        }
    }
    out
}
