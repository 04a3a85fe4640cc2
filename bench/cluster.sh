#!/usr/bin/env bash
# A local, real Kubernetes control plane on loopback, for tests, benchmarks and CI.
#
#   bench/cluster.sh build                  build everything up needs (cached)
#   bench/cluster.sh up DIR                 build (cached), then start a cluster in DIR
#   bench/cluster.sh down DIR               stop everything up started in DIR
#   bench/cluster.sh crds DIR standard|experimental|none
#                                           install (or remove) the Gateway API CRDs
#   bench/cluster.sh apiserver DIR stop|start
#                                           stop or start DIR's kube-apiserver only
#
# up starts etcd, kube-apiserver and kube-controller-manager (one Kubernetes release,
# pinned in bench/cluster/go.mod and built from its Go modules) and lb-pod-runner
# (bench/src/pod_runner: registers a Node, binds Pods and runs an echo process per
# container port on the Pod's IP). The control plane listens on 127.0.0.1 only.
#
# Pod IPs cannot be loopback addresses: the API server refuses them in
# EndpointSlices. So the Pods live in a network namespace of their own that up
# creates (lbpods-ID): every address of POD_CIDR (10.N.0.0/16) is local inside it,
# and a veth pair routes POD_CIDR from this host into it and nowhere else. That
# needs root (CI runs as root).
# DIR then holds:
#   admin.kubeconfig  cluster-admin (client certificate, group system:masters)
#   lb.kubeconfig     a token of ServiceAccount lb-system/lb, whose only permissions
#                     are those of config/kubernetes/rbac.yaml
#   bin/kubectl       kubectl of the same release
#   audit.log         the API server's audit log (JSON lines, Metadata level)
#   cluster.env       ports, pod CIDR and the processes' ids (shell syntax)
#   logs/, pods/      the components' logs, the pods' processes' logs
#
# Environment:
#   LB_CLUSTER_CACHE  where built binaries are kept (default ~/.cache/lb-cluster)
#   LB_CLUSTER_POD_CIDR
#                     pod IPs (default: a free 10.N.0.0/16 with N in 100..199)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODDIR="$ROOT/bench/cluster"
CACHE="${LB_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lb-cluster}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
GATEWAY_API_MODULE="sigs.k8s.io/gateway-api@v1.6.3"
SERVICE_CIDR="10.96.0.0/16"
NODE_NAME="lb-node"
NODE_ZONE="zone-a"

say() { echo "cluster.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The Kubernetes release pinned in go.mod, e.g. v1.37.2.
k8s_release() {
  awk '$1 == "k8s.io/kubernetes" { print $2 }' "$MODDIR/go.mod"
}

# What `version` reports (the release's own build stamps it the same way).
ldflags() {
  local v major minor flags="-s -w" pkg
  v="$(k8s_release)"
  major="$(echo "${v#v}" | cut -d. -f1)"
  minor="$(echo "${v#v}" | cut -d. -f2)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}

# The Go binaries' cache key: the pinned modules, the build flags and the Go version.
cache_key() {
  { cat "$MODDIR/go.mod" "$MODDIR/go.sum"; ldflags; go version; } | sha256sum | cut -c1-16
}

GO_BINS=(etcd kube-apiserver kube-controller-manager kubectl)

# Builds the control plane from its Go modules once (cached by cache_key) and the
# project's pod runner and echo backend (cargo, incremental). Prints the Go bin dir.
build() {
  command -v go >/dev/null || die "go not found: the control plane is built from its Go modules (Go 1.26)"
  local bin
  bin="$CACHE/$(cache_key)/bin"
  mkdir -p "$CACHE"
  (
    flock 9
    local missing=0
    for b in "${GO_BINS[@]}"; do [ -x "$bin/$b" ] || missing=1; done
    if [ "$missing" = 1 ]; then
      say "building etcd, kube-apiserver, kube-controller-manager and kubectl (first time: several minutes)"
      local start=$SECONDS tmp
      tmp="$(mktemp -d "$CACHE/build.XXXXXX")"
      (cd "$MODDIR" && GOFLAGS=-mod=readonly go build -trimpath -ldflags="$(ldflags)" -o "$tmp/" \
        go.etcd.io/etcd/server/v3 \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl)
      # The etcd server's package is go.etcd.io/etcd/server/v3: go names it `server`.
      mv "$tmp/server" "$tmp/etcd"
      rm -rf "$bin"
      mkdir -p "$(dirname "$bin")"
      mv "$tmp" "$bin"
      say "built in $((SECONDS - start)) s into $bin"
    fi
  ) 9>"$CACHE/lock"
  (cd "$ROOT" && cargo build --release --quiet -p bench --bin lb-pod-runner --bin lb-echo) >&2
  echo "$bin"
}

# A TCP port on 127.0.0.1 that nothing listens on, outside the ephemeral range.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    if python3 - "$p" <<'EOF' 2>/dev/null; then
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
EOF
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

# A 10.N.0.0/16 for pod IPs that no route of this host uses yet.
pick_pod_cidr() {
  if [ -n "${LB_CLUSTER_POD_CIDR:-}" ]; then
    echo "$LB_CLUSTER_POD_CIDR"
    return
  fi
  local n
  for _ in $(seq 1 100); do
    n=$((100 + RANDOM % 100))
    if [ -z "$(ip -4 route show to match "10.$n.0.1")" ] ||
      ip -4 route show to match "10.$n.0.1" | grep -q '^default'; then
      echo "10.$n.0.0/16"
      return
    fi
  done
  die "no free pod CIDR"
}

# The Pods' network namespace NETNS: POD_CIDR is local inside it (any address can be
# bound), routed to it from this host over the veth pair VETH_HOST/VETH_PODS.
# POD_GATEWAY (on the host's end) is the only address the namespace routes back to.
make_pod_network() {
  ip netns add "$NETNS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_PODS" netns "$NETNS"
  ip link set "$VETH_HOST" up
  ip addr add "$POD_GATEWAY/32" dev "$VETH_HOST"
  ip route add "$POD_CIDR" dev "$VETH_HOST" src "$POD_GATEWAY"
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" link set "$VETH_PODS" up
  ip -n "$NETNS" route add local "$POD_CIDR" dev lo
  ip -n "$NETNS" route add "$POD_GATEWAY/32" dev "$VETH_PODS"
}

remove_pod_network() {
  [ -n "${NETNS:-}" ] || return 0
  if ip netns list | grep -qw "$NETNS"; then
    local pids
    pids="$(ip netns pids "$NETNS" || true)"
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
      sleep 0.2
    fi
    ip netns del "$NETNS"
  fi
  ip link del "$VETH_HOST" 2>/dev/null || true
}

# Certificates and keys: one CA, the API server's serving certificate, client
# certificates for the admin and kube-controller-manager, the service-account key.
make_pki() {
  local pki="$1/pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=lb-test-cluster-ca" 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    cat >apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    sign() { # name subject extfile
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$3" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" apiserver.ext
    sign admin "/O=system:masters/CN=lb-test-admin" client.ext
    sign kcm "/CN=system:kube-controller-manager" client.ext
  )
}

# kubeconfig NAME SERVER then either "cert CERT KEY" or "token TOKEN".
kubeconfig() {
  local dir="$1" name="$2" server="$3" kind="$4"
  local ca
  ca="$(base64 -w0 "$dir/pki/ca.crt")"
  {
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $server
    certificate-authority-data: $ca
contexts:
- name: $name@local
  context:
    cluster: local
    user: $name
current-context: $name@local
users:
- name: $name
  user:
EOF
    if [ "$kind" = cert ]; then
      echo "    client-certificate-data: $(base64 -w0 "$5")"
      echo "    client-key-data: $(base64 -w0 "$6")"
    else
      echo "    token: $5"
    fi
  } >"$dir/$name.kubeconfig"
  chmod 600 "$dir/$name.kubeconfig"
}

# start DIR NAME CMD...: runs CMD in a session of its own (so down can stop it
# with everything it started), logging to DIR/logs/NAME.log; records its pid.
start() {
  local dir="$1" name="$2"
  shift 2
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

# wait_for SECONDS PIDFILE CMD...: retries CMD every 0.2 s while the process of
# PIDFILE (or "-" for none) lives.
wait_for() {
  local limit="$1" pidfile="$2" i
  shift 2
  for i in $(seq 1 $((limit * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    if [ "$pidfile" != - ] && ! alive "$pidfile"; then
      say "$(basename "$pidfile" .pid) exited"
      return 1
    fi
    sleep 0.2
  done
  return 1
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop PIDFILE: TERM to the process group, KILL after 10 s; waits until gone.
stop() {
  local pidfile="$1" pid i
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      pgrep -g "$pid" >/dev/null 2>&1 || kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if pgrep -g "$pid" >/dev/null 2>&1 || kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$pidfile"
}

load_env() {
  local dir="$1"
  [ -f "$dir/cluster.env" ] || die "$dir: no cluster here (run: bench/cluster.sh up $dir)"
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
}

apiserver_readyz() {
  curl -sf --cacert "$1/pki/ca.crt" --cert "$1/pki/admin.crt" --key "$1/pki/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null
}

start_apiserver() {
  local dir="$1"
  start "$dir" kube-apiserver "$dir/bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --endpoint-reconciler-type=none \
    --audit-policy-file="$dir/audit-policy.yaml" \
    --audit-log-path="$dir/audit.log" --audit-log-format=json --audit-log-maxsize=0 \
    --profiling=false
  if ! wait_for 60 "$dir/kube-apiserver.pid" apiserver_readyz "$dir"; then
    tail -n 30 "$dir/logs/kube-apiserver.log" >&2
    die "kube-apiserver did not become ready (log: $dir/logs/kube-apiserver.log)"
  fi
}

cmd_up() {
  local dir="$1" bin started=$SECONDS
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  for p in etcd kube-apiserver kube-controller-manager pod-runner; do
    alive "$dir/$p.pid" && die "$dir: $p is already running (bench/cluster.sh down $dir first)"
  done
  [ "$(id -u)" = 0 ] || die "up needs root: the Pods get a network namespace of their own"
  command -v ip >/dev/null || die "ip (iproute2) not found"
  bin="$(build)"
  rm -rf "$dir/etcd" "$dir/logs" "$dir/pods" "$dir/pki" "$dir/bin" "$dir"/*.kubeconfig \
    "$dir/audit.log" "$dir/cluster.env" "$dir/pod-runner.ready"
  mkdir -p "$dir/bin" "$dir/logs" "$dir/pods"
  for b in "${GO_BINS[@]}"; do ln -s "$bin/$b" "$dir/bin/$b"; done
  make_pki "$dir"

  ETCD_PORT="$(free_port)"
  ETCD_PEER_PORT="$(free_port)"
  API_PORT="$(free_port)"
  POD_CIDR="$(pick_pod_cidr)"
  local id n
  id="$(echo "$dir" | sha256sum | cut -c1-8)"
  n="$(echo "$POD_CIDR" | cut -d. -f2)"
  NETNS="lbpods-$id" VETH_HOST="lbh$id" VETH_PODS="lbn$id" POD_GATEWAY="100.64.$n.1"
  remove_pod_network
  make_pod_network
  cat >"$dir/cluster.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
API_SERVER=https://127.0.0.1:$API_PORT
POD_CIDR=$POD_CIDR
POD_GATEWAY=$POD_GATEWAY
NETNS=$NETNS
VETH_HOST=$VETH_HOST
VETH_PODS=$VETH_PODS
NODE_NAME=$NODE_NAME
NODE_ZONE=$NODE_ZONE
KUBECONFIG=$dir/admin.kubeconfig
EOF
  cat >"$dir/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
EOF
  kubeconfig "$dir" admin "https://127.0.0.1:$API_PORT" cert "$dir/pki/admin.crt" "$dir/pki/admin.key"
  kubeconfig "$dir" kcm "https://127.0.0.1:$API_PORT" cert "$dir/pki/kcm.crt" "$dir/pki/kcm.key"

  # etcd: a single member on loopback. Test data: fsync off.
  start "$dir" etcd "$dir/bin/etcd" --name default --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  wait_for 30 "$dir/etcd.pid" curl -sf "http://127.0.0.1:$ETCD_PORT/health" ||
    die "etcd did not become healthy (log: $dir/logs/etcd.log)"

  start_apiserver "$dir"

  start "$dir" kube-controller-manager "$dir/bin/kube-controller-manager" \
    --kubeconfig="$dir/kcm.kubeconfig" \
    --authentication-kubeconfig="$dir/kcm.kubeconfig" \
    --authorization-kubeconfig="$dir/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 \
    --service-account-private-key-file="$dir/pki/sa.key" \
    --root-ca-file="$dir/pki/ca.crt" \
    --use-service-account-credentials=true \
    --leader-elect=false \
    --profiling=false

  local kubectl=("$dir/bin/kubectl" --kubeconfig "$dir/admin.kubeconfig")
  # lb's identity: the ServiceAccount and RBAC of config/kubernetes/rbac.yaml, nothing more.
  "${kubectl[@]}" apply -f "$ROOT/config/kubernetes/rbac.yaml" >/dev/null
  local token
  token="$("${kubectl[@]}" -n lb-system create token lb --duration 48h)"
  kubeconfig "$dir" lb "https://127.0.0.1:$API_PORT" token "$token"

  # --netns: the runner starts each Pod's processes in that namespace
  # (`ip netns exec NETNS CMD...`), where every address of --pod-cidr is local.
  start "$dir" pod-runner "$TARGET/release/lb-pod-runner" \
    --kubeconfig "$dir/admin.kubeconfig" --node "$NODE_NAME" --zone "$NODE_ZONE" \
    --pod-cidr "$POD_CIDR" --netns "$NETNS" --echo "$TARGET/release/lb-echo" \
    --log-dir "$dir/pods" --ready-file "$dir/pod-runner.ready"
  if ! wait_for 60 "$dir/pod-runner.pid" test -s "$dir/pod-runner.ready"; then
    tail -n 30 "$dir/logs/pod-runner.log" >&2
    die "lb-pod-runner did not become ready (log: $dir/logs/pod-runner.log)"
  fi
  # The default ServiceAccount (made by kube-controller-manager) must exist before
  # Pods can be created in a namespace.
  wait_for 60 "$dir/kube-controller-manager.pid" "${kubectl[@]}" -n default get serviceaccount default ||
    die "kube-controller-manager made no default ServiceAccount (log: $dir/logs/kube-controller-manager.log)"
  say "up in $((SECONDS - started)) s: API server https://127.0.0.1:$API_PORT, pods on $POD_CIDR, KUBECONFIG=$dir/admin.kubeconfig"
}

cmd_down() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  dir="$(cd "$dir" && pwd)"
  # Pods first (their processes belong to the runner's session), the API server last
  # but for etcd.
  for p in pod-runner kube-controller-manager kube-apiserver etcd; do
    stop "$dir/$p.pid"
  done
  if [ -f "$dir/cluster.env" ]; then
    load_env "$dir"
    remove_pod_network
  fi
  rm -f "$dir/pod-runner.ready"
  # Checked: nothing this cluster started is left.
  local left
  left="$(pgrep -af -- "$dir/" || true)"
  if [ -n "$left" ]; then
    say "still running after down:"
    echo "$left" >&2
    exit 1
  fi
}

cmd_crds() {
  local dir="$1" channel="$2"
  load_env "$dir"
  local kubectl=("$dir/bin/kubectl" --kubeconfig "$dir/admin.kubeconfig")
  local src
  src="$(cd "$MODDIR" && go mod download -json "$GATEWAY_API_MODULE" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/config/crd"
  case "$channel" in
  standard | experimental)
    # The CRD files only (the folder also holds a ValidatingAdmissionPolicy).
    local files=() names=() f base
    for f in "$src/$channel"/gateway.networking*.yaml; do
      case "$f" in *_vap_*) continue ;; esac
      files+=(-f "$f")
      base="$(basename "$f" .yaml)" # GROUP_PLURAL
      names+=("crd/${base#*_}.${base%%_*}")
    done
    "${kubectl[@]}" apply --server-side --force-conflicts "${files[@]}" >/dev/null
    "${kubectl[@]}" wait --for condition=Established --timeout=60s "${names[@]}" >/dev/null
    say "Gateway API CRDs ($channel, $GATEWAY_API_MODULE) installed"
    ;;
  none)
    local crds
    crds="$("${kubectl[@]}" get crd -o name | grep -E '\.gateway\.networking\.(x-)?k8s\.io$' || true)"
    if [ -n "$crds" ]; then
      # shellcheck disable=SC2086
      "${kubectl[@]}" delete --wait=true $crds >/dev/null
    fi
    say "Gateway API CRDs removed"
    ;;
  *) usage ;;
  esac
}

cmd_apiserver() {
  local dir="$1" action="$2"
  dir="$(cd "$dir" && pwd)"
  load_env "$dir"
  case "$action" in
  stop) stop "$dir/kube-apiserver.pid" ;;
  start)
    alive "$dir/kube-apiserver.pid" && die "kube-apiserver is running"
    start_apiserver "$dir"
    ;;
  *) usage ;;
  esac
}

case "${1:-}" in
build) build >/dev/null ;;
up) [ $# -eq 2 ] || usage && cmd_up "$2" ;;
down) [ $# -eq 2 ] || usage && cmd_down "$2" ;;
crds) [ $# -eq 3 ] || usage && cmd_crds "$2" "$3" ;;
apiserver) [ $# -eq 3 ] || usage && cmd_apiserver "$2" "$3" ;;
*) usage ;;
esac
