#!/usr/bin/env bash
# Writes a kubeconfig for an lb edge host outside the cluster, authenticated as
# the lb ServiceAccount of rbac.yaml. Run it where kubectl reaches the cluster:
#   config/kubernetes/kubeconfig.sh > lb.kubeconfig
# then copy lb.kubeconfig to the edge host (/etc/lb/kubeconfig, mode 0640,
# group lb) and point [sources] kubernetes.kubeconfig at it. The token lasts
# DURATION (default 8760h, a year; the API server may cap it): renew before.
set -euo pipefail
duration="${DURATION:-8760h}"
context="$(kubectl config current-context)"
cluster="$(kubectl config view --minify -o jsonpath='{.contexts[0].context.cluster}')"
server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca="$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
token="$(kubectl -n lb-system create token lb --duration "$duration")"
cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: ${cluster}
  cluster:
    server: ${server}
    certificate-authority-data: ${ca}
users:
- name: lb
  user:
    token: ${token}
contexts:
- name: lb@${context}
  context:
    cluster: ${cluster}
    user: lb
current-context: lb@${context}
KUBECONFIG
