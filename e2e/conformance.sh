#!/usr/bin/env bash
# `make conformance`: the conformance suite (TestConformance*: registries -> Meltemi -> API
# server -> istiod -> a sidecar's xDS) against every Istio version Meltemi supports, one after
# the other. MELTEMI_CONFORMANCE_ISTIO narrows the list (values as for MELTEMI_ISTIO).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=(${MELTEMI_CONFORMANCE_ISTIO:-current previous})
COMPONENTS=(kube-apiserver istiod zookeeper consul polaris)
export MELTEMI_E2E=1
export MELTEMI_E2E_STATE=${MELTEMI_E2E_STATE:-/tmp/meltemi-e2e}
export MELTEMI_BIN_DIR=${MELTEMI_BIN_DIR:-$PWD/bin}

# Build every version first, so that no build competes with a running suite for the CPUs.
for v in "${VERSIONS[@]}"; do
  MELTEMI_ISTIO=$v e2e/infra/tools.sh istiod
done
# shellcheck source=infra/session.sh
. e2e/infra/session.sh
status=0
for v in "${VERSIONS[@]}"; do
  echo "== conformance against Istio $v"
  export MELTEMI_ISTIO=$v
  session_up "${COMPONENTS[@]}" # replaces a running istiod of another version
  go test -count=1 ${GO_TEST_FLAGS:-} -timeout 20m -v -run '^TestConformance' ./e2e/ || status=1
done
exit "$status"
