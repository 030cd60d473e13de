#!/usr/bin/env bash
# `make bench`: every Go benchmark, against the same real servers as the e2e tests, at the
# sizes the issues name; the results go into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPONENTS=(${MELTEMI_TEST_COMPONENTS:-kube-apiserver zookeeper etcd-registry consul polaris})
export MELTEMI_E2E=1
export MELTEMI_E2E_STATE=${MELTEMI_E2E_STATE:-/tmp/meltemi-e2e}
export MELTEMI_BIN_DIR=${MELTEMI_BIN_DIR:-$PWD/bin}
# Full sizes; smaller ones make quick local runs (e.g. MELTEMI_BENCH_SERVICES=1000 make bench).
export MELTEMI_BENCH_SERVICES=${MELTEMI_BENCH_SERVICES:-10000}
export MELTEMI_BENCH_ZK_INTERFACES=${MELTEMI_BENCH_ZK_INTERFACES:-10000}
export MELTEMI_BENCH_INSTANCES=${MELTEMI_BENCH_INSTANCES:-100000}

# shellcheck source=infra/session.sh
. e2e/infra/session.sh
session_up "${COMPONENTS[@]}"
# Tests that read addresses from the environment see the servers just started.
# shellcheck disable=SC1091
. "$MELTEMI_E2E_STATE/env"

out="$MELTEMI_E2E_STATE/logs/bench.txt"
# One package at a time: benchmarks share the machine and the servers.
# Benchmarks that take one sample per iteration get a fixed count of samples in a second pass,
# so their percentiles rest on enough of them; every other benchmark sizes itself.
per_sample='ToServiceEntry|ChangeToUpsert|PushToUpsert'
# The Istio benchmarks run against an istiod started for them alone: it would spend the CPU of
# every other benchmark on their ServiceEntries.
istio='RegistryToSidecar|IstiodCost'
# A failing package does not stop the others: the report shows what ran, the exit status
# says something failed.
status=0
go test -p 1 -count=1 -run '^$' -bench "${BENCH:-.}" -skip "$per_sample|$istio" -benchmem -timeout 90m ./... 2>&1 | tee "$out" || status=1
# With BENCH set, this pass runs the alternatives of BENCH (full names) that are per-sample
# benchmarks.
samples=$per_sample
if [[ -n "${BENCH:-}" ]]; then
  samples=$(tr '|' '\n' <<<"$BENCH" | grep -E "$per_sample" | paste -sd '|' || true)
fi
if [[ -n "$samples" ]]; then
  go test -p 1 -count=1 -run '^$' -bench "$samples" -benchtime "${BENCH_SAMPLES:-50}x" -benchmem -timeout 30m \
    ./e2e/ ./registries/consul/ ./registries/nacos/ 2>&1 | tee -a "$out" || status=1
fi
if [[ -z "${BENCH:-}" || "$BENCH" =~ Sidecar|Istiod ]]; then
  # istiod with its default debounce, then with 10 ms for the latency to the sidecar.
  session_up istiod
  . "$MELTEMI_E2E_STATE/env"
  go test -p 1 -count=1 -run '^$' -bench "$istio" -timeout 60m ./e2e/ 2>&1 | tee -a "$out" || status=1
  e2e/infra/down.sh istiod
  MELTEMI_E2E_ISTIOD_DEBOUNCE_MS=10 e2e/infra/up.sh istiod
  go test -p 1 -count=1 -run '^$' -bench RegistryToSidecar -timeout 20m ./e2e/ 2>&1 | tee -a "$out" || status=1
  e2e/infra/down.sh istiod
fi
# A run of some benchmarks (BENCH=...) updates their rows and keeps the others, each with its date.
report=(-in "$out" -out BENCHMARKS.md -notes e2e/bench-notes.md)
if [[ -n "${BENCH:-}" && -f BENCHMARKS.md ]]; then
  report+=(-keep BENCHMARKS.md -command "BENCH='$BENCH' make bench")
else
  report+=(-command "make bench")
fi
go run ./e2e/cmd/benchreport "${report[@]}"
echo "wrote BENCHMARKS.md"
if [ "$status" -ne 0 ]; then
  echo "some benchmarks failed; see $out" >&2
fi
exit "$status"
