#!/usr/bin/env bash
# The real-node suite (`npm run test:node`): lockmig installed by helm on a real Kubernetes node
# (kube-apiserver, kubelet, containerd, runc), checked as a user would, with kubectl and from the
# host's /proc (through a privileged hostPID pod, so the same checks run on any cluster).
#
# Two ways to run it:
#  1. This repository's kit (../shared/k8s + ../shared/images, as root): builds the lockmig image
#     from the Dockerfile and the workload images under test/node/images with buildah, starts a
#     cluster of two nodes (node-a, and node-b joined to it: both on this host, see the kit's README),
#     imports the images, runs the suite inside the cluster's network namespace, and removes the
#     cluster again.
#       LOCKMIG_NODE_DIR=DIR     where the cluster lives (default .lmk8s in the repository)
#       LOCKMIG_IMAGES_WORK=DIR  buildah state (default .imgwork in the repository; reused between runs)
#       LOCKMIG_NODE_KEEP=1      leave the cluster running afterwards (DIR/kubectl get pods -A)
#  2. Any cluster (kind, minikube, a test cluster): LOCKMIG_NODE_KUBECONFIG=/path/to/kubeconfig, and
#     the three images loaded into its nodes (e.g. `kind load docker-image`), named by
#       LOCKMIG_NODE_IMAGE (default localhost/lockmig:dev), LOCKMIG_NODE_WORKLOAD_IMAGE
#       (localhost/lockmig-workload:1), LOCKMIG_NODE_STATIC_IMAGE (localhost/lockmig-static:1).
#     The suite installs the chart into lockmig-system and runs everything on the first Ready node.
# Without either (no kit, not root) it prints a loud SKIPPING banner and exits 0, or 1 under CI.
# Vitest writes test-results-node.json (counted by .ci/run); extra arguments go to vitest.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
KIT=$REPO/../shared
export LOCKMIG_NODE_IMAGE=${LOCKMIG_NODE_IMAGE:-localhost/lockmig:dev}
export LOCKMIG_NODE_WORKLOAD_IMAGE=${LOCKMIG_NODE_WORKLOAD_IMAGE:-localhost/lockmig-workload:1}
export LOCKMIG_NODE_STATIC_IMAGE=${LOCKMIG_NODE_STATIC_IMAGE:-localhost/lockmig-static:1}
# Which suites run on the cluster, one after the other: "node" (test/node/*.node.test.ts, report
# test-results-node.json), "faults" (test/node/faults, test-results-faults.json; `npm run test:faults`).
SUITES=${LOCKMIG_NODE_SUITES:-node}
vitest_for() { # SUITE → the vitest command line
  case "$1" in
    node) echo "$REPO/test/node/vitest.config.ts" ;;
    faults) echo "$REPO/test/node/faults.config.ts" ;;
    *) echo "unknown suite $1 in LOCKMIG_NODE_SUITES (node, faults)" >&2; exit 2 ;;
  esac
}
report_for() { case "$1" in node) echo test-results-node.json ;; faults) echo test-results-faults.json ;; esac; }
run_suites() { # runs every suite with the given prefix command; returns the first failure
  local rc=0 r s cfg
  for s in $SUITES; do
    cfg=$(vitest_for "$s") || return 2
    local t1; t1=$(t)
    log "suite $s"
    "$@" node "$REPO/node_modules/vitest/vitest.mjs" run --config "$cfg" "${ARGS[@]}"
    r=$?
    log "suite $s finished in $(since "$t1") s (exit $r)"
    [ "$rc" -eq 0 ] && rc=$r
  done
  return "$rc"
}
ARGS=("$@")

skip() {
  printf '\n!!!!!!!! SKIPPING the real-node suites (%s): %s — these tests did NOT run !!!!!!!!\n\n' "$SUITES" "$1" >&2
  for s in $SUITES; do rm -f "$(report_for "$s")"; done
  [ -n "${CI:-}" ] && { echo "CI must provide it" >&2; exit 1; }
  exit 0
}
t() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(t)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[test:node %6ss] %s\n' "$(since "$T0")" "$*"; }
T0=$(t)

if [ -n "${LOCKMIG_NODE_KUBECONFIG:-}" ]; then
  [ -f "$LOCKMIG_NODE_KUBECONFIG" ] || { echo "LOCKMIG_NODE_KUBECONFIG=$LOCKMIG_NODE_KUBECONFIG does not exist" >&2; exit 2; }
  log "running against the cluster of $LOCKMIG_NODE_KUBECONFIG"
  KUBECONFIG=$LOCKMIG_NODE_KUBECONFIG run_suites env
  exit $?
fi

[ "$(id -u)" = 0 ] || skip "needs root for the node kit (or LOCKMIG_NODE_KUBECONFIG for a cluster of your own)"
[ -x "$KIT/k8s/node-up.sh" ] && [ -x "$KIT/images/bud.sh" ] || skip "the node kit ($KIT/k8s, $KIT/images) is not here (or set LOCKMIG_NODE_KUBECONFIG)"

NODE_DIR=${LOCKMIG_NODE_DIR:-$REPO/.lmk8s}
WORK=${LOCKMIG_IMAGES_WORK:-$REPO/.imgwork}
mkdir -p "$WORK/out"
in_cluster() { KUBECONFIG=$NODE_DIR/kubeconfig LOCKMIG_NODE_KIT_DIR=$NODE_DIR PATH="$(cat "$NODE_DIR/bindir"):$PATH" "$NODE_DIR/nsexec" "$@"; }

# LOCKMIG_NODE_REUSE=1: the cluster in NODE_DIR is up already (an earlier run with LOCKMIG_NODE_KEEP=1,
# images imported): run the suites on it and leave it up.
if [ "${LOCKMIG_NODE_REUSE:-}" = 1 ]; then
  [ -f "$NODE_DIR/kubeconfig" ] || { echo "LOCKMIG_NODE_REUSE=1 but no cluster in $NODE_DIR" >&2; exit 2; }
  log "reusing the cluster in $NODE_DIR"
  run_suites in_cluster
  exit $?
fi

build() { # CONTEXT TAG TAR [args]
  local ctx=$1 tag=$2 tar=$3; shift 3
  local s; s=$(t)
  if ! "$KIT/images/bud.sh" "$WORK" "$ctx" "$tag" "$tar" "$@" >"$WORK/out/$(basename "$tar").log" 2>&1; then
    tail -40 "$WORK/out/$(basename "$tar").log"; echo "image build of $tag failed" >&2; exit 1
  fi
  log "built $tag in $(since "$s") s ($(du -m "$tar" | cut -f1) MB)"
}
log "building images (buildah, $WORK)"
build "$REPO" "$LOCKMIG_NODE_IMAGE" "$WORK/out/lockmig.tar" --layers
build "$REPO/test/node/images/workload" "$LOCKMIG_NODE_WORKLOAD_IMAGE" "$WORK/out/workload.tar" --layers --build-arg BASE=localhost/debian:bookworm-minbase
build "$REPO/test/node/images/static" "$LOCKMIG_NODE_STATIC_IMAGE" "$WORK/out/static.tar" --layers --build-arg BASE=localhost/debian:bookworm-minbase

# Under CI the machine is fresh and the suite owns it: a cluster of the kit still up on this host
# (a run cut off before its node-down.sh, in any directory) is stale. Find the directory that made it
# from its daemons' log files (DIR/logs/NAME.log on their stdout) and take it down, rather than wait
# for a host that never becomes free. Outside CI (a developer's own cluster may be up) it waits.
reclaim_stale() {
  local ns=${LMK8S_NETNS:-lmk8s} dirs="" pid out d
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    case "$(cat /proc/$pid/comm 2>/dev/null)" in
      kubelet|etcd|kube-apiserver|containerd|kube-proxy|kube-scheduler|kube-controller) ;;
      *) continue ;;
    esac
    out=$(readlink "/proc/$pid/fd/1" 2>/dev/null) || continue
    case "$out" in */logs/*.log) d=${out%/logs/*} ;; *) continue ;; esac
    [ -f "$d/netns" ] || d=$(dirname "$d")   # a joined node logs into DIR/NAME/logs
    [ -f "$d/netns" ] && case " $dirs " in *" $d "*) ;; *) dirs="$dirs $d" ;; esac
  done
  if [ -z "$dirs" ] && [ -e "/run/netns/$ns" ]; then
    d=$(mktemp -d); echo "$ns" > "$d/netns"; dirs=$d
  fi
  for d in $dirs; do
    log "CI: a cluster of the kit is still up on this host (made in $d): taking it down first"
    "$KIT/k8s/node-down.sh" "$d" >"$WORK/out/node-down-stale.log" 2>&1 || tail -20 "$WORK/out/node-down-stale.log"
  done
}
if [ -n "${CI:-}" ] && [ "${LOCKMIG_NODE_REUSE:-}" != 1 ]; then reclaim_stale; fi

s=$(t)
if ! LMK8S_IMAGES_EXTRA="$WORK/out/lockmig.tar $WORK/out/workload.tar $WORK/out/static.tar" LMK8S_WAIT_FREE=${LMK8S_WAIT_FREE:-600} \
    "$KIT/k8s/node-up.sh" "$NODE_DIR" >"$WORK/out/node-up.log" 2>&1; then
  tail -30 "$WORK/out/node-up.log"; echo "node-up.sh failed" >&2
  "$KIT/k8s/node-down.sh" "$NODE_DIR" >/dev/null 2>&1
  exit 1
fi
log "node up in $(since "$s") s"
# a second kubelet (node-b) for the cross-node migrations (test/node/40-migration: drain to another node)
s=$(t)
if ! "$KIT/k8s/node-join.sh" "$NODE_DIR" node-b >"$WORK/out/node-join.log" 2>&1; then
  tail -30 "$WORK/out/node-join.log"; echo "node-join.sh failed" >&2
  [ "${LOCKMIG_NODE_KEEP:-}" = 1 ] || "$KIT/k8s/node-down.sh" "$NODE_DIR" --purge >/dev/null 2>&1
  exit 1
fi
log "node-b joined in $(since "$s") s"

run_suites in_cluster
rc=$?

if [ "${LOCKMIG_NODE_KEEP:-}" = 1 ]; then
  log "cluster kept: $NODE_DIR/kubectl get pods -A; remove with $KIT/k8s/node-down.sh $NODE_DIR --purge"
else
  s=$(t)
  "$KIT/k8s/node-down.sh" "$NODE_DIR" --purge >"$WORK/out/node-down.log" 2>&1 || tail -20 "$WORK/out/node-down.log"
  log "node down in $(since "$s") s"
fi
exit $rc
