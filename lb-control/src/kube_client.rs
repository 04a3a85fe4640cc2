//! The Kubernetes API client lb's sources, status writer and leader
//! election use: built from a kubeconfig (and context) or the in-cluster
//! service account.

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesSource;

/// A client from a kubeconfig (and context) or the in-cluster service account.
pub async fn client(cfg: &KubernetesSource) -> Result<kube::Client, String> {
    let config = if let Some(path) = &cfg.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
        let options = KubeConfigOptions {
            context: cfg.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
    } else {
        kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))?
    };
    kube::Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

