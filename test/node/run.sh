#!/usr/bin/env bash
# The real-node suite (`npm run test:node`): lockmig installed by helm on a real Kubernetes node
# (kube-apiserver, kubelet, containerd, runc), checked as a user would, with kubectl and from the
# host's /proc (through a privileged hostPID pod, so the same checks run on any cluster).
#
# Two ways to run it:
#  1. This repository's kit (../shared/k8s + ../shared/images, as root): builds the lockmig image
#     from the Dockerfile and the workload images under test/node/images with buildah, starts a
#     one-node cluster, imports the images, runs the suite inside the cluster's network namespace,
#     and removes the cluster again.
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
VITEST=(node "$REPO/node_modules/vitest/vitest.mjs" run --config "$REPO/test/node/vitest.config.ts" "$@")

skip() {
  printf '\n!!!!!!!! SKIPPING the real-node suite: %s — these tests did NOT run !!!!!!!!\n\n' "$1" >&2
  rm -f test-results-node.json
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
  KUBECONFIG=$LOCKMIG_NODE_KUBECONFIG "${VITEST[@]}"
  exit $?
fi

[ "$(id -u)" = 0 ] || skip "needs root for the node kit (or LOCKMIG_NODE_KUBECONFIG for a cluster of your own)"
[ -x "$KIT/k8s/node-up.sh" ] && [ -x "$KIT/images/bud.sh" ] || skip "the node kit ($KIT/k8s, $KIT/images) is not here (or set LOCKMIG_NODE_KUBECONFIG)"

NODE_DIR=${LOCKMIG_NODE_DIR:-$REPO/.lmk8s}
WORK=${LOCKMIG_IMAGES_WORK:-$REPO/.imgwork}
mkdir -p "$WORK/out"

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

s=$(t)
if ! LMK8S_IMAGES_EXTRA="$WORK/out/lockmig.tar $WORK/out/workload.tar $WORK/out/static.tar" LMK8S_WAIT_FREE=${LMK8S_WAIT_FREE:-600} \
    "$KIT/k8s/node-up.sh" "$NODE_DIR" >"$WORK/out/node-up.log" 2>&1; then
  tail -30 "$WORK/out/node-up.log"; echo "node-up.sh failed" >&2
  "$KIT/k8s/node-down.sh" "$NODE_DIR" >/dev/null 2>&1
  exit 1
fi
log "node up in $(since "$s") s"

s=$(t)
KUBECONFIG=$NODE_DIR/kubeconfig LOCKMIG_NODE_KIT_DIR=$NODE_DIR PATH="$(cat "$NODE_DIR/bindir"):$PATH" "$NODE_DIR/nsexec" "${VITEST[@]}"
rc=$?
log "suite finished in $(since "$s") s (exit $rc)"

if [ "${LOCKMIG_NODE_KEEP:-}" = 1 ]; then
  log "cluster kept: $NODE_DIR/kubectl get pods -A; remove with $KIT/k8s/node-down.sh $NODE_DIR --purge"
else
  s=$(t)
  "$KIT/k8s/node-down.sh" "$NODE_DIR" --purge >"$WORK/out/node-down.log" 2>&1 || tail -20 "$WORK/out/node-down.log"
  log "node down in $(since "$s") s"
fi
exit $rc
