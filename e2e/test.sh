#!/usr/bin/env bash
# `make test`: unit tests and the e2e tests on real servers. Starts the servers the tests
# need (building them on a cold machine), runs every test with MELTEMI_E2E=1 so a missing
# server fails instead of skipping, and stops what it started, also when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPONENTS=(${MELTEMI_TEST_COMPONENTS:-kube-apiserver istiod zookeeper etcd-registry consul polaris})
export MELTEMI_E2E=1
export MELTEMI_E2E_STATE=${MELTEMI_E2E_STATE:-/tmp/meltemi-e2e}
export MELTEMI_BIN_DIR=${MELTEMI_BIN_DIR:-$PWD/bin}

# Components already running (e.g. a developer's) are reused and left running.
# shellcheck source=infra/session.sh
. e2e/infra/session.sh
session_up "${COMPONENTS[@]}"
# Tests that read addresses from the environment see the servers just started.
# shellcheck disable=SC1091
. "$MELTEMI_E2E_STATE/env"

e2e/infra/tools.sh helm # the chart tests run helm
GO_TEST_FLAGS=(-count=1 ${GO_TEST_FLAGS:-})
# Packages with integration tests share the servers; the e2e package restarts them, so it
# runs on its own after the others.
mapfile -t pkgs < <(go list ./... | grep -v '/e2e$')
# Both phases always run, so one CI run shows every failure; the exit status reports any.
status=0
echo "== unit and integration tests"
go test "${GO_TEST_FLAGS[@]}" -timeout 20m "${pkgs[@]}" || status=1
echo "== e2e tests"
go test "${GO_TEST_FLAGS[@]}" -timeout 25m -v ./e2e/ || status=1
exit "$status"
