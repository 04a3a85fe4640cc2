//! The Kubernetes API clients lb's sources, status writer and leader
//! election use: built from a kubeconfig (and context) or the in-cluster
//! service account.
//!
//! kube's own default is no read timeout at all, so a request to an API
//! server that stops answering (a black-holed connection, a partition) would
//! hang forever. lb's clients always have connect, write and read timeouts:
//!
//! - [`client`], for ordinary requests (get, list, create, replace, status
//!   writes): all three are `request_timeout` (default 5 s). The read timeout
//!   restarts when a request is written, so the time a pooled connection sat
//!   idle does not count against the next response.
//! - [`watch_client`], for watches, which are long polls: kube-runtime's
//!   watcher asks the server to end each watch after
//!   [`WATCH_SERVER_TIMEOUT`] (`timeoutSeconds=290`), and a quiet watch may
//!   receive nothing until then. Its read timeout is
//!   [`WATCH_READ_TIMEOUT`], longer than that, so a healthy watch never
//!   trips it but a black-holed one still ends (and the watcher re-lists).
//!   Connect and write timeouts are `request_timeout`.
//!
//! Callers with a schedule of their own (the leader election) still put a
//! deadline around each call: a read timeout bounds the silence between two
//! reads, not the length of a whole response.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesSource;

/// The server-side timeout kube-runtime's watcher asks for on every watch
/// call when its `watcher::Config::timeout` is unset (`timeoutSeconds=290`).
pub const WATCH_SERVER_TIMEOUT: Duration = Duration::from_secs(290);

/// The watch client's read timeout: the server ends a watch after
/// [`WATCH_SERVER_TIMEOUT`] even when nothing happened, so a connection
/// silent for longer than this is dead.
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(290 + 30);

/// A client for ordinary requests (everything but watches): connect, write
/// and read timeouts of `request_timeout`.
pub async fn client(cfg: &KubernetesSource) -> Result<kube::Client, String> {
    build(cfg, cfg.request_timeout).await
}

/// A client for watches: connect and write timeouts of `request_timeout`,
/// a read timeout of [`WATCH_READ_TIMEOUT`] (longer than the watch's own
/// server-side timeout). Use it for kube-runtime watchers, [`client`] for
/// everything else.
pub async fn watch_client(cfg: &KubernetesSource) -> Result<kube::Client, String> {
    build(cfg, WATCH_READ_TIMEOUT).await
}

async fn build(cfg: &KubernetesSource, read_timeout: Duration) -> Result<kube::Client, String> {
    let mut config = base_config(cfg).await?;
    set_timeouts(&mut config, cfg.request_timeout, read_timeout);
    kube::Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

/// The connection settings of a kubeconfig (and context) or of the in-cluster
/// service account, with kube's default timeouts.
async fn base_config(cfg: &KubernetesSource) -> Result<kube::Config, String> {
    if let Some(path) = &cfg.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
        let options = KubeConfigOptions {
            context: cfg.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| format!("kubeconfig {}: {e}", path.display()))
    } else {
        kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))
    }
}

fn set_timeouts(config: &mut kube::Config, request_timeout: Duration, read_timeout: Duration) {
    config.connect_timeout = Some(request_timeout);
    config.write_timeout = Some(request_timeout);
    config.read_timeout = Some(read_timeout);
    // The read timeout counts from the request, not from when its pooled
    // connection went idle.
    config.reset_reader_on_write = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_watches_get_their_timeouts() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert_eq!(config.read_timeout, None, "kube's default: none");
        set_timeouts(&mut config, Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.write_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.read_timeout, Some(Duration::from_secs(5)));
        assert!(config.reset_reader_on_write);
        // A quiet watch stays silent until the server ends it: the watch
        // client must wait longer than that.
        assert!(WATCH_READ_TIMEOUT > WATCH_SERVER_TIMEOUT + Duration::from_secs(10));
    }

    #[tokio::test]
    async fn clients_from_a_kubeconfig() {
        let dir = std::env::temp_dir().join(format!("lb-kube-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"http://127.0.0.1:1\"}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user: {token: t}\n",
        )
        .unwrap();
        let k = KubernetesSource {
            kubeconfig: Some(path),
            ..KubernetesSource::default()
        };
        assert!(client(&k).await.is_ok());
        assert!(watch_client(&k).await.is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
