#!/usr/bin/env bash
# `make demo-down`: stops the demo's meltemi, seeder and servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export MELTEMI_E2E_STATE=${MELTEMI_DEMO_STATE:-/tmp/meltemi-demo}
for p in meltemi dubbo-seed; do
  f="$MELTEMI_E2E_STATE/pids/$p.pid"
  if [ -f "$f" ]; then
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  fi
done
e2e/infra/down.sh --purge
