#!/usr/bin/env bash
# Stops and starts single components for failure tests; the data directory is kept, so a
# restarted server comes back with its data, on the ports up.sh gave it.
#
#   e2e/infra/ctl.sh stop|start|restart|kill COMPONENT
#   e2e/infra/ctl.sh status [COMPONENT...]
#
# stop = SIGTERM (SIGKILL after 15 s); kill = SIGKILL. The env file is not changed: the
# component still counts as up for the tests, only its process is gone until `start`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  sed -n '5,6p' "$0" | sed 's/^# *//' >&2
  exit 2
}
[ $# -ge 1 ] || usage
op=$1
shift
init_state

status() {
  local c pid
  for c in "$@"; do
    c=$(canonical "$c")
    if pid=$(own_pid "$c"); then
      load_settings "$c"
      if "ready_$(fn "$c")"; then echo "$c running pid=$pid ready"; else echo "$c running pid=$pid not-ready"; fi
    elif [ -e "$(comp_dir "$c")/up" ]; then
      echo "$c stopped"
    else
      echo "$c down"
    fi
  done
}

case "$op" in
  status)
    [ $# -ge 1 ] || set -- "${ALL_COMPONENTS[@]}"
    status "$@"
    exit 0
    ;;
  stop | start | restart | kill) [ $# -eq 1 ] || usage ;;
  *) usage ;;
esac
c=$(canonical "$1")
lock

if [ "$op" = start ] || [ "$op" = restart ]; then
  [ -f "$(comp_dir "$c")/settings.env" ] || die "$c was never brought up here; run e2e/infra/up.sh $c first"
fi
case "$op" in
  stop) stop_comp "$c" TERM ;;
  kill) stop_comp "$c" KILL ;;
  start) start_comp "$c" ;;
  restart)
    stop_comp "$c" TERM
    start_comp "$c"
    ;;
esac
