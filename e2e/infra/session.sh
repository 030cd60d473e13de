# shellcheck shell=bash
# Sourced by scripts that need servers for their own duration (make test, make bench):
#   session_up COMPONENT...
# starts the components that are not up yet and stops exactly those when the script exits,
# also on failure. Components already running (a developer's) are reused and left running.
session_up() {
  local already="" c
  export MELTEMI_E2E_STATE=${MELTEMI_E2E_STATE:-/tmp/meltemi-e2e}
  if [ -f "$MELTEMI_E2E_STATE/env" ]; then
    already=$(. "$MELTEMI_E2E_STATE/env" && echo "${MELTEMI_E2E_COMPONENTS:-}")
  fi
  # Called again (another set, another Istio version), it adds to what it stops at exit.
  [ -n "${SESSION_STARTED+set}" ] || SESSION_STARTED=()
  for c in "$@"; do
    case " $already ${SESSION_STARTED[*]} " in *" $c "*) ;; *) SESSION_STARTED+=("$c") ;; esac
  done
  if [[ " ${SESSION_STARTED[*]} " == *" istiod "* && " $already ${SESSION_STARTED[*]} " != *" kube-apiserver "* ]]; then
    SESSION_STARTED+=(kube-apiserver)
  fi
  if [[ " ${SESSION_STARTED[*]} " == *" kube-apiserver "* && " $already ${SESSION_STARTED[*]} " != *" etcd "* ]]; then
    SESSION_STARTED+=(etcd)
  fi
  trap session_down EXIT
  "$(dirname "${BASH_SOURCE[0]}")/up.sh" "$@"
}

session_down() {
  if [ "${#SESSION_STARTED[@]}" -gt 0 ]; then
    "$(dirname "${BASH_SOURCE[0]}")/down.sh" "${SESSION_STARTED[@]}" || true
  fi
}
