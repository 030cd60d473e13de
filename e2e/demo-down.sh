#!/usr/bin/env bash
# `make demo-down`: stops the demo's meltemi, seeder and servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export MELTEMI_E2E_STATE=${MELTEMI_DEMO_STATE:-/tmp/meltemi-demo}
# shellcheck source=demo-lib.sh
. e2e/demo-lib.sh
stop_demo_process meltemi
stop_demo_process dubbo-seed
e2e/infra/down.sh --purge
