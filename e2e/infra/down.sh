#!/usr/bin/env bash
# Stops what up.sh started and rewrites $MELTEMI_E2E_STATE/env.
#
#   e2e/infra/down.sh [--purge] [COMPONENT...]
#
# Without components: stops all. Only processes named in our pid files whose command line still
# points into the state directory are signalled (SIGTERM, then SIGKILL after 15 s).
# --purge also deletes the data: the whole state directory, or the named components' data.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=""
declare -A wanted=()
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    -h | --help)
      sed -n '2,8p' "$0"
      exit 0
      ;;
    *) wanted[$(canonical "$arg")]=1 ;;
  esac
done
all=""
[ ${#wanted[@]} -eq 0 ] && all=1

if [ ! -d "${MELTEMI_E2E_STATE:-/tmp/meltemi-e2e}" ]; then
  log "nothing to stop: no state directory"
  exit 0
fi
init_state
lock

for ((i = ${#ALL_COMPONENTS[@]} - 1; i >= 0; i--)); do
  c=${ALL_COMPONENTS[i]}
  [ -n "$all" ] || [ -n "${wanted[$c]:-}" ] || continue
  stop_comp "$c"
  mark_down "$c"
  if [ -n "$purge" ] && [ -z "$all" ]; then
    rm -rf -- "$(comp_dir "$c")" "$(log_file "$c")"
    log "$c: data removed"
  fi
done
write_env

if [ -n "$purge" ] && [ -n "$all" ]; then
  case "$STATE" in / | "$HOME" | "$REPO_ROOT") die "refusing to delete $STATE" ;; esac
  [ -e "$STATE/.meltemi-e2e-state" ] || die "$STATE is not a state directory of these scripts"
  rm -rf -- "$STATE"
  log "removed $STATE"
fi
