#!/usr/bin/env bash
# `make demo`: a local ZooKeeper and kube-apiserver (with Istio's CRDs), a few Dubbo providers
# registered the way Dubbo does, and Meltemi bridging them; ends by listing the ServiceEntries.
# Everything keeps running for poking around; `make demo-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

export MELTEMI_E2E_STATE=${MELTEMI_DEMO_STATE:-/tmp/meltemi-demo}
# Ports of their own, so the demo runs next to the test servers (make test) without a clash.
export MELTEMI_E2E_ETCD_PORT=${MELTEMI_DEMO_ETCD_PORT:-13379}
export MELTEMI_E2E_ETCD_PEER_PORT=${MELTEMI_DEMO_ETCD_PEER_PORT:-13380}
export MELTEMI_E2E_KUBE_PORT=${MELTEMI_DEMO_KUBE_PORT:-17443}
export MELTEMI_E2E_ZK_PORT=${MELTEMI_DEMO_ZK_PORT:-13181}
BIN=${MELTEMI_BIN_DIR:-$PWD/bin}
NS=meltemi-system
# shellcheck source=demo-lib.sh
. e2e/demo-lib.sh
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting ZooKeeper and kube-apiserver (first run builds kube-apiserver: about 4 minutes)"
e2e/infra/up.sh kube-apiserver zookeeper
# shellcheck disable=SC1091
. "$MELTEMI_E2E_STATE/env"
kc() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }

say "seeding Dubbo providers in ZooKeeper ($MELTEMI_ZK_ADDR)"
stop_demo_process dubbo-seed
nohup "$BIN/dubbo-seed" --zk "$MELTEMI_ZK_ADDR" >"$MELTEMI_E2E_STATE/logs/dubbo-seed.log" 2>&1 &
echo $! >"$MELTEMI_E2E_STATE/pids/dubbo-seed.pid"

say "configuring the registry as a ServiceRegistry"
kc get namespace "$NS" >/dev/null 2>&1 || kc create namespace "$NS"
kc apply -f - <<YAML
apiVersion: meltemi.io/v1alpha1
kind: ServiceRegistry
metadata:
  name: demo-zookeeper
  namespace: $NS
spec:
  kind: zookeeper
  address: $MELTEMI_ZK_ADDR
  options:
    roots: dubbo
    mode: both
YAML

say "starting meltemi"
stop_demo_process meltemi
nohup "$BIN/meltemi" run --kubeconfig "$KUBECONFIG" --namespace "$NS" --plugin-dir "$BIN" \
  --listen 127.0.0.1:19090 --log-format text >"$MELTEMI_E2E_STATE/logs/meltemi.log" 2>&1 &
echo $! >"$MELTEMI_E2E_STATE/pids/meltemi.pid"
for _ in $(seq 1 120); do
  if [ "$(curl -s http://127.0.0.1:19090/readyz)" = ok ]; then break; fi
  kill -0 "$(cat "$MELTEMI_E2E_STATE/pids/meltemi.pid")" 2>/dev/null || {
    tail -n 30 "$MELTEMI_E2E_STATE/logs/meltemi.log"
    echo "meltemi exited" >&2
    exit 1
  }
  sleep 0.5
done
[ "$(curl -s http://127.0.0.1:19090/readyz)" = ok ] || { echo "meltemi did not become ready" >&2; exit 1; }
sleep 1

say "kubectl get serviceentries -A"
kc get serviceentries -A -o wide
# The registry's status is written every few seconds; show it once it has caught up.
for _ in $(seq 1 40); do
  [ "$(kc get serviceregistry demo-zookeeper -n "$NS" -o jsonpath='{.status.synced}' 2>/dev/null)" = true ] && break
  sleep 0.25
done
say "kubectl get serviceregistries -A"
kc get serviceregistries -A
cat <<TXT

Poke around with:
  export KUBECONFIG=$KUBECONFIG
  kubectl get serviceentries -n $NS -o yaml
  curl -s http://127.0.0.1:19090/metrics | grep ^meltemi_
  tail -f $MELTEMI_E2E_STATE/logs/meltemi.log
Stop everything with: make demo-down
TXT
