#!/usr/bin/env bash
# The test command (README "Tests"). On a fresh Debian machine, as root, it
# installs what the tests need (real clients and peers from Debian's packages;
# the Kubernetes control plane, built from its Go modules by bench/cluster.sh),
# starts the local cluster the Kubernetes tests share, runs every test with the
# I/O engine `auto` picks, then the proxy and end-to-end suites again on epoll,
# fails if the API server refused lb anything (RBAC) during the run, and then
# runs every fuzz target for 30 s (fuzz/run.sh; LB_FUZZ_SECONDS changes it, 0
# skips fuzzing, which a filtered run does too).
#
#   ./test.sh [CARGO TEST ARGS...]     e.g. ./test.sh kube::  (a filter)
#
# LB_TEST_CLUSTER=DIR uses a cluster already up in DIR (bench/cluster.sh up DIR)
# instead of starting one in target/test-cluster and stopping it at the end.
set -euo pipefail
cd "$(dirname "$0")"

# Real clients and peers the tests and benchmarks use, and iproute2 for the
# cluster's Pod network namespace.
PACKAGES=(curl wrk haproxy nginx libnginx-mod-stream openssl nghttp2-client iperf3 procps iproute2 systemd python3)
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages start their daemons; tests and benchmarks run their own.
    systemctl stop nginx haproxy 2>/dev/null || true
    pkill -x nginx 2>/dev/null || true
    pkill -x haproxy 2>/dev/null || true
  fi
fi

if [ -n "${LB_TEST_CLUSTER:-}" ]; then
  dir="$LB_TEST_CLUSTER"
else
  dir="$PWD/target/test-cluster"
  bench/cluster.sh down "$dir" >/dev/null 2>&1 || true
  trap 'bench/cluster.sh down "$dir"' EXIT
  bench/cluster.sh up "$dir"
  export LB_TEST_CLUSTER="$dir"
fi
mark=$(stat -c %s "$dir/audit.log")

cargo test --workspace -- "$@"
LB_TEST_IO=epoll cargo test -p lb-http -p lb-control -- "$@"

# lb's ServiceAccount has only config/kubernetes/'s RBAC: any 403 for it during
# the run is a permission lb needs and the manifests lack (or a call it should
# not make).
python3 - "$dir/audit.log" "$mark" <<'PY'
import json, sys
path, mark = sys.argv[1], int(sys.argv[2])
user = "system:serviceaccount:lb-system:lb"
with open(path, "rb") as f:
    f.seek(mark)
    refused = [e for e in (json.loads(l) for l in f if l.strip())
               if e.get("user", {}).get("username") == user
               and e.get("responseStatus", {}).get("code") == 403]
for e in refused[:20]:
    print("403 for lb:", e.get("verb"), e.get("requestURI"))
if refused:
    sys.exit(f"test.sh: the API server refused lb {len(refused)} time(s) during the run")
print("test.sh: no 403 for lb in the audit log")
PY

# Bounded fuzzing of the parsers and the compile (fuzz/run.sh installs the
# pinned cargo-fuzz and builds the targets with the nightly toolchain). Only
# on a whole run: a filtered run (test names given) is about those tests.
fuzz_seconds="${LB_FUZZ_SECONDS:-30}"
# A new finding (an input no earlier run had) is printed with its target's
# log and saved under fuzz/artifacts/, and reported as such at the end, but
# it does not fail the run: exploration is random, and a finding becomes a
# fix plus a regression test (unit test and corpus entry), which the suites
# above then hold. LB_FUZZ_STRICT=1 makes a finding fail the run.
if [ $# -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then
  if ! fuzz/run.sh "$fuzz_seconds"; then
    echo "test.sh: FUZZING FOUND FAILING INPUTS (above; inputs in fuzz/artifacts/)"
    if [ "${LB_FUZZ_STRICT:-0}" = 1 ]; then exit 1; fi
  fi
else
  echo "test.sh: fuzzing skipped (filtered run or LB_FUZZ_SECONDS=0)"
fi
exit 0
