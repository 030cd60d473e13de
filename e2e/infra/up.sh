#!/usr/bin/env bash
# Starts real servers for the e2e tests and the demo, and writes $MELTEMI_E2E_STATE/env.
#
#   e2e/infra/up.sh COMPONENT...
#
# Components: etcd kube-apiserver (implies etcd; installs the Istio and Meltemi CRDs) istiod
# (implies kube-apiserver; MELTEMI_ISTIO selects its version) zookeeper etcd-registry consul
# polaris. A component whose own instance is already running and ready is
# left alone, so running it twice is harmless. Missing binaries are built first (tools.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 1 ] || {
  echo "usage: $0 COMPONENT...  (${ALL_COMPONENTS[*]})" >&2
  exit 2
}

declare -A wanted=()
for arg in "$@"; do
  c=$(canonical "$arg")
  wanted[$c]=1
  [ "$c" = istiod ] && wanted[kube-apiserver]=1
  [ "$c" = kube-apiserver ] || [ "$c" = istiod ] && wanted[etcd]=1
done
order=()
needed_tools=()
for c in "${ALL_COMPONENTS[@]}"; do
  [ -n "${wanted[$c]:-}" ] || continue
  order+=("$c")
  read -ra t <<<"$(tools_for "$c")"
  needed_tools+=("${t[@]}")
done

init_state
begin=$(date +%s%N)
# Building can take minutes on a cold cache; it happens before we take the lock.
mapfile -t needed_tools < <(printf '%s\n' "${needed_tools[@]}" | awk '!seen[$0]++')
"$TOOLS" "${needed_tools[@]}"
lock
# Keep the env file in step with the up markers even when a start fails half way.
trap write_env EXIT

up_one() {
  local c=$1 pid
  # A running istiod of another version than the one asked for is replaced.
  if [ "$c" = istiod ] && own_pid istiod >/dev/null &&
    [ "$(cat "$(comp_dir istiod)/binary" 2>/dev/null)" != "$("$TOOLS" path istiod)" ]; then
    log "istiod runs another Istio version than MELTEMI_ISTIO=${MELTEMI_ISTIO:-current} asks for; restarting it"
    load_settings istiod
    stop_comp istiod
  fi
  if pid=$(own_pid "$c"); then
    load_settings "$c"
    wait_ready "$c" "$pid" quiet
    log "$c already up (pid $pid)"
  else
    mark_down "$c"
    settings_from_env "$c"
    start_comp "$c"
  fi
  mark_up "$c"
  if [ "$c" = kube-apiserver ]; then apply_crds; fi
}

for c in "${order[@]}"; do
  up_one "$c"
done
log "up: ${order[*]} in $((($(date +%s%N) - begin) / 1000000)) ms; source $STATE/env"
