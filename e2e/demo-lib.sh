# shellcheck shell=bash
# Shared by demo.sh and demo-down.sh.

# stop_demo_process NAME stops the demo's NAME process (meltemi, dubbo-seed) by the PID it
# recorded, only if that PID still runs NAME: a reused PID is never signalled.
stop_demo_process() {
  local name=$1 f pid
  f="$MELTEMI_E2E_STATE/pids/$name.pid"
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "/$name "; then
    kill "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
