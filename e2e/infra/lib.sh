# shellcheck shell=bash
# Shared by up.sh, down.sh and ctl.sh: where state lives, which ports each component takes, how
# to start a component, how to tell that it is ready and how to stop only what we started.
#
# Layout of the state directory ($MELTEMI_E2E_STATE, default /tmp/meltemi-e2e):
#   <component>/          data, configuration and settings.env (the ports it was started with)
#   <component>/up        present while the component is brought up (up.sh) and not brought down
#   logs/<component>.log  server output, appended across restarts
#   pids/<component>.pid  pid of the server process we started
#   env                   `export` lines for the components that are up, for tests and the demo
#   kubeconfig            admin kubeconfig for the kube-apiserver

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INFRA_DIR/../.." && pwd)
TOOLS="$INFRA_DIR/tools.sh"

# Start order; dependencies first. down.sh walks it backwards.
ALL_COMPONENTS=(etcd kube-apiserver istiod zookeeper etcd-registry consul polaris)

# Polaris reads its ports from its stock configuration; these are all the listeners it opens.
POLARIS_PORTS=(8848 9848 8090 8091 8093 8761 15010)

log() { printf '[e2e] %s\n' "$*" >&2; }
die() { printf '[e2e] ERROR: %s\n' "$*" >&2; exit 1; }

# init_state makes the state directory absolute (the Go harness and the scripts may run from
# different directories) and marks it as ours, so that --purge never deletes a foreign folder.
init_state() {
  STATE=${MELTEMI_E2E_STATE:-/tmp/meltemi-e2e}
  mkdir -p "$STATE"
  STATE=$(cd "$STATE" && pwd)
  export MELTEMI_E2E_STATE=$STATE
  if [ ! -e "$STATE/.meltemi-e2e-state" ]; then
    [ -z "$(ls -A "$STATE")" ] || die "$STATE is not empty and was not created by these scripts; set MELTEMI_E2E_STATE"
    touch "$STATE/.meltemi-e2e-state"
  fi
  mkdir -p "$STATE/logs" "$STATE/pids"
}

# lock serialises concurrent runs (parallel make targets, tests calling ctl.sh) on one state dir.
# Servers are started with fd 9 closed so they never hold the lock.
lock() {
  exec 9>"$STATE/.lock"
  flock -w 300 9 || die "another up/down/ctl run holds $STATE/.lock"
}

canonical() {
  case "$1" in
    etcd | kube-apiserver | istiod | zookeeper | etcd-registry | consul | polaris) echo "$1" ;;
    kube | apiserver) echo kube-apiserver ;;
    istio | pilot) echo istiod ;;
    zk) echo zookeeper ;;
    nacos) echo polaris ;;
    *) die "unknown component '$1' (known: ${ALL_COMPONENTS[*]})" ;;
  esac
}

fn() { echo "${1//-/_}"; } # component name -> function-name suffix

comp_dir() { echo "$STATE/$1"; }
pid_file() { echo "$STATE/pids/$1.pid"; }
log_file() { echo "$STATE/logs/$1.log"; }

# ---------------------------------------------------------------------------------------------
# Settings: the ports a component uses. up.sh takes them from the environment (or defaults) and
# saves them; ctl.sh start reuses the saved ones so a restart comes back on the same ports.

settings_from_env() {
  local c=$1 f
  f="$(comp_dir "$c")/settings.env"
  mkdir -p "$(comp_dir "$c")"
  case "$c" in
    etcd) printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\n' \
      "${MELTEMI_E2E_ETCD_PORT:-12379}" "${MELTEMI_E2E_ETCD_PEER_PORT:-12380}" >"$f" ;;
    kube-apiserver) printf 'KUBE_PORT=%s\n' "${MELTEMI_E2E_KUBE_PORT:-16443}" >"$f" ;;
    # Istio's own defaults (8080, 15010, 15014, 9876) are moved off: Polaris takes 15010.
    istiod) printf 'ISTIOD_HTTP_PORT=%s\nISTIOD_GRPC_PORT=%s\nISTIOD_MONITORING_PORT=%s\nISTIOD_CTRLZ_PORT=%s\nISTIOD_DEBOUNCE_MS=%s\n' \
      "${MELTEMI_E2E_ISTIOD_HTTP_PORT:-15880}" "${MELTEMI_E2E_ISTIOD_GRPC_PORT:-15810}" \
      "${MELTEMI_E2E_ISTIOD_MONITORING_PORT:-15814}" "${MELTEMI_E2E_ISTIOD_CTRLZ_PORT:-15876}" \
      "${MELTEMI_E2E_ISTIOD_DEBOUNCE_MS:-100}" >"$f" ;;
    zookeeper) printf 'ZK_PORT=%s\n' "${MELTEMI_E2E_ZK_PORT:-12181}" >"$f" ;;
    etcd-registry) printf 'REG_PORT=%s\nREG_PEER_PORT=%s\n' \
      "${MELTEMI_E2E_REGISTRY_ETCD_PORT:-22379}" "${MELTEMI_E2E_REGISTRY_ETCD_PEER_PORT:-22380}" >"$f" ;;
    consul) printf 'CONSUL_HTTP_PORT=%s\nCONSUL_SERVER_PORT=%s\nCONSUL_SERF_LAN_PORT=%s\nCONSUL_SERF_WAN_PORT=%s\nCONSUL_GRPC_PORT=%s\n' \
      "${MELTEMI_E2E_CONSUL_PORT:-18500}" "${MELTEMI_E2E_CONSUL_SERVER_PORT:-18300}" \
      "${MELTEMI_E2E_CONSUL_SERF_LAN_PORT:-18301}" "${MELTEMI_E2E_CONSUL_SERF_WAN_PORT:-18302}" \
      "${MELTEMI_E2E_CONSUL_GRPC_PORT:-18502}" >"$f" ;;
    polaris) : >"$f" ;;
  esac
  local line
  while read -r line; do
    if ! [[ "$line" =~ ^[A-Z_]+=([1-9][0-9]*)$ ]] || ((BASH_REMATCH[1] < 1 || BASH_REMATCH[1] > 65535)); then
      die "invalid port setting for $c: $line"
    fi
  done <"$f"
  load_settings "$c"
}

load_settings() {
  local f
  f="$(comp_dir "$1")/settings.env"
  [ -f "$f" ] || settings_from_env "$1"
  # shellcheck disable=SC1090 # generated above: NAME=number lines only
  . "$f"
}

ports_of() {
  load_settings "$1"
  case "$1" in
    etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$KUBE_PORT" ;;
    istiod) echo "$ISTIOD_HTTP_PORT $ISTIOD_GRPC_PORT $ISTIOD_MONITORING_PORT $ISTIOD_CTRLZ_PORT" ;;
    zookeeper) echo "$ZK_PORT" ;;
    etcd-registry) echo "$REG_PORT $REG_PEER_PORT" ;;
    consul) echo "$CONSUL_HTTP_PORT $CONSUL_SERVER_PORT $CONSUL_SERF_LAN_PORT $CONSUL_SERF_WAN_PORT $CONSUL_GRPC_PORT" ;;
    polaris) echo "${POLARIS_PORTS[*]}" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Processes. A pid file is trusted only while that pid is alive (zombies count as dead) and its
# command line still contains the component's state directory, so a recycled pid that now
# belongs to a stranger is never signalled.

alive() {
  local st
  st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

is_ours() { # pid component
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$STATE/$2/"
}

# own_pid prints the pid of our running instance of a component, or fails.
own_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  is_ours "$pid" "$1" || return 1
  echo "$pid"
}

port_listening() {
  [ -n "$(ss -Hltun "( sport = :$1 )" 2>/dev/null)" ]
}

# port_guard refuses to start when a port is taken: a readiness probe could otherwise succeed
# against a server that is not the one we just started.
port_guard() {
  local c=$1 p busy=()
  for p in $(ports_of "$c"); do
    port_listening "$p" && busy+=("$p")
  done
  [ ${#busy[@]} -eq 0 ] && return 0
  for p in "${busy[@]}"; do
    log "port $p is in use: $(ss -Hltunp "( sport = :$p )" 2>/dev/null | head -n1 | tr -s ' ')"
  done
  local hint="or override the port (see e2e/infra/README.md)"
  [ "$c" = polaris ] && hint="(Polaris's ports are fixed by its configuration)"
  die "cannot start $c: port(s) ${busy[*]} already in use by a process these scripts did not start; stop it $hint"
}

# launch COMPONENT WORKDIR CMD... starts a server in its own process group (Ctrl-C on a test
# run must not kill it) with every inherited fd closed or redirected, so callers that wait for
# our stdout (the Go harness) are not kept waiting by the server.
launch() {
  local c=$1 dir=$2 pid
  shift 2
  printf '\n=== %s starting %s\n' "$(date -Is)" "$c" >>"$(log_file "$c")"
  (cd "$dir" && exec setsid "$@" >>"$(log_file "$c")" 2>&1 </dev/null 9>&-) &
  pid=$!
  echo "$pid" >"$(pid_file "$c")"
  LAUNCHED_PID=$pid
}

# wait_ready COMPONENT PID [quiet]: polls the real readiness probe while checking that the
# process lives.
wait_ready() {
  local c=$1 pid=$2 quiet=${3:-} timeout start now
  timeout=$(timeout_of "$c")
  start=$(date +%s%N)
  while :; do
    if ! alive "$pid"; then
      fail_start "$c" "$pid" "$c (pid $pid) exited while starting"
    fi
    if "ready_$(fn "$c")"; then
      now=$(date +%s%N)
      [ -n "$quiet" ] || log "$c ready after $(((now - start) / 1000000)) ms (pid $pid)"
      return 0
    fi
    now=$(date +%s%N)
    if (((now - start) / 1000000000 >= timeout)); then
      fail_start "$c" "$pid" "$c (pid $pid) not ready after ${timeout}s"
    fi
    sleep 0.1
  done
}

fail_start() {
  local c=$1 pid=$2 msg=$3
  log "$msg; last lines of $(log_file "$c"):"
  tail -n 30 "$(log_file "$c")" >&2 || true
  # Leave nothing half-started behind; the log stays for inspection.
  if is_ours "$pid" "$c"; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$(pid_file "$c")"
  die "$msg"
}

timeout_of() {
  local t
  case "$1" in
    kube-apiserver) t=120 ;;
    etcd | etcd-registry) t=30 ;;
    *) t=60 ;;
  esac
  echo "${MELTEMI_E2E_READY_TIMEOUT:-$t}"
}

# stop_comp COMPONENT [SIGNAL]: signal our instance, wait for it to die, escalate to SIGKILL.
stop_comp() {
  local c=$1 sig=${2:-TERM} f pid i
  f=$(pid_file "$c")
  if ! pid=$(own_pid "$c"); then
    [ -e "$f" ] && log "$c: pid file $f names no running instance of ours; removing it"
    rm -f "$f"
    return 0
  fi
  kill -"$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do # 15 s
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$c (pid $pid) ignored SIG$sig for 15s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
  fi
  alive "$pid" && die "$c (pid $pid) did not exit"
  rm -f "$f"
  # A dead server's listening socket can linger until the process is reaped; a restart must
  # not trip the port guard on it.
  local p
  for p in $(ports_of "$c"); do
    for ((i = 0; i < 100; i++)); do
      port_listening "$p" || break
      sleep 0.1
    done
  done
  log "$c stopped (pid $pid, SIG$sig)"
}

# start_comp starts a component with its saved settings (or takes our running instance) and
# waits until it is ready.
start_comp() {
  local c=$1 pid
  load_settings "$c"
  if pid=$(own_pid "$c"); then
    wait_ready "$c" "$pid"
    return 0
  fi
  port_guard "$c"
  "prepare_$(fn "$c")"
  "start_$(fn "$c")"
  wait_ready "$c" "$LAUNCHED_PID"
}

# write_env rewrites $STATE/env from the components that are up; written to a temporary file
# and renamed so a reader never sees half a file.
write_env() {
  local c up=() tmp="$STATE/env.tmp"
  for c in "${ALL_COMPONENTS[@]}"; do
    [ -e "$(comp_dir "$c")/up" ] && up+=("$c")
  done
  {
    echo "# Written by e2e/infra/up.sh and down.sh: the servers that are up. Source it."
    echo "export MELTEMI_E2E_STATE=$STATE"
    echo "export MELTEMI_E2E_COMPONENTS=\"${up[*]}\""
    for c in "${up[@]}"; do
      load_settings "$c"
      "env_$(fn "$c")"
    done
  } >"$tmp"
  mv "$tmp" "$STATE/env"
}

mark_up() { touch "$(comp_dir "$1")/up"; }
mark_down() { rm -f "$(comp_dir "$1")/up"; }

# ---------------------------------------------------------------------------------------------
# etcd (storage of the kube-apiserver) and etcd-registry (a Dubbo registry). Same binary.

run_etcd() { # component client-port peer-port
  local c=$1 dir
  dir=$(comp_dir "$c")
  launch "$c" "$dir" "$("$TOOLS" path etcd)" \
    --name default --data-dir "$dir/data" \
    --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
    --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
    --initial-cluster "default=http://127.0.0.1:$3" --logger zap --log-outputs stderr
}

etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health":"true"'; }

prepare_etcd() { mkdir -p "$(comp_dir etcd)"; }
start_etcd() { run_etcd etcd "$ETCD_PORT" "$ETCD_PEER_PORT"; }
ready_etcd() { etcd_healthy "$ETCD_PORT"; }
env_etcd() { echo "export MELTEMI_KUBE_ETCD_ADDR=127.0.0.1:$ETCD_PORT"; }

prepare_etcd_registry() { mkdir -p "$(comp_dir etcd-registry)"; }
start_etcd_registry() { run_etcd etcd-registry "$REG_PORT" "$REG_PEER_PORT"; }
ready_etcd_registry() { etcd_healthy "$REG_PORT"; }
env_etcd_registry() { echo "export MELTEMI_ETCD_REGISTRY_ADDR=127.0.0.1:$REG_PORT"; }

# ---------------------------------------------------------------------------------------------
# kube-apiserver

admin_token() { cat "$(comp_dir kube-apiserver)/admin.token"; }

prepare_kube_apiserver() {
  local dir tok
  dir=$(comp_dir kube-apiserver)
  mkdir -p "$dir/certs"
  [ -s "$dir/admin.token" ] || openssl rand -hex 24 >"$dir/admin.token"
  tok=$(admin_token)
  # The admin line is rewritten on every start; any further lines appended by tests (token,user,
  # uid,"group1,group2") are kept and take effect on the next start.
  {
    echo "$tok,meltemi-e2e-admin,meltemi-e2e-admin,\"system:masters\""
    if [ -f "$dir/tokens.csv" ]; then grep -v ',meltemi-e2e-admin,' "$dir/tokens.csv" || true; fi
  } >"$dir/tokens.csv.tmp"
  mv "$dir/tokens.csv.tmp" "$dir/tokens.csv"
  if [ ! -s "$dir/sa.key" ]; then
    openssl genrsa -out "$dir/sa.key.tmp" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key.tmp" -pubout -out "$dir/sa.pub" 2>/dev/null
    mv "$dir/sa.key.tmp" "$dir/sa.key"
  fi
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: meltemi-e2e
  cluster:
    server: https://127.0.0.1:$KUBE_PORT
    insecure-skip-tls-verify: true
users:
- name: meltemi-e2e-admin
  user:
    token: $tok
contexts:
- name: meltemi-e2e
  context:
    cluster: meltemi-e2e
    user: meltemi-e2e-admin
current-context: meltemi-e2e
EOF
}

start_kube_apiserver() {
  local dir
  dir=$(comp_dir kube-apiserver)
  load_settings etcd
  launch kube-apiserver "$dir" "$("$TOOLS" path kube-apiserver)" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_PORT" \
    --cert-dir "$dir/certs" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --disable-admission-plugins ServiceAccount \
    --profiling="${MELTEMI_E2E_KUBE_PROFILING:-false}"
}

# The whole body must be "ok": a failing /readyz still contains "[+]... ok" lines.
ready_kube_apiserver() {
  local body
  body=$(curl -sk --max-time 3 -H "Authorization: Bearer $(admin_token)" \
    "https://127.0.0.1:$KUBE_PORT/readyz" 2>/dev/null) || return 1
  [ "$body" = ok ]
}

env_kube_apiserver() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export MELTEMI_KUBE_API=https://127.0.0.1:$KUBE_PORT"
}

# apply_crds installs the Istio CRDs and the project's own CRDs and waits until they are served.
# Server-side apply: some Istio CRDs are too large for the client-side last-applied annotation.
apply_crds() {
  local kc="$STATE/kubeconfig" files=() f
  files+=("$("$TOOLS" path istio-crds)")
  if [ -d "$REPO_ROOT/charts/meltemi/crds" ]; then
    for f in "$REPO_ROOT"/charts/meltemi/crds/*.yaml "$REPO_ROOT"/charts/meltemi/crds/*.yml; do
      [ -f "$f" ] && files+=("$f")
    done
  fi
  for f in "${files[@]}"; do
    kubectl --kubeconfig "$kc" apply --server-side --force-conflicts --field-manager meltemi-e2e -f "$f" >/dev/null ||
      die "applying CRDs from $f failed"
  done
  for f in "${files[@]}"; do
    kubectl --kubeconfig "$kc" wait --for condition=Established --timeout 60s -f "$f" >/dev/null ||
      die "CRDs from $f not Established within 60s"
  done
  log "CRDs established (${#files[@]} file(s))"
}

# ---------------------------------------------------------------------------------------------
# istiod (pilot-discovery): a real Istio control plane against the kube-apiserver, without a
# cluster: no CA, no webhooks, plaintext xDS on loopback. Its version (MELTEMI_ISTIO) is the
# one tools.sh builds; the env file names it.

kubectl_admin() { kubectl --kubeconfig "$STATE/kubeconfig" "$@"; }

prepare_istiod() {
  local dir
  dir=$(comp_dir istiod)
  mkdir -p "$dir"
  kubectl_admin get namespace istio-system >/dev/null 2>&1 || kubectl_admin create namespace istio-system >/dev/null ||
    die "istiod: cannot create namespace istio-system"
  cat >"$dir/mesh.yaml" <<EOF
rootNamespace: istio-system
trustDomain: cluster.local
defaultConfig:
  discoveryAddress: 127.0.0.1:$ISTIOD_GRPC_PORT
EOF
  "$TOOLS" path istiod >"$dir/binary"
}

start_istiod() {
  local dir
  dir=$(comp_dir istiod)
  # PILOT_ENVOY_FILTER_STATS: istiod counts EnvoyFilter patches that failed to apply, which the
  # conformance harness reads.
  launch istiod "$dir" env POD_NAMESPACE=istio-system POD_NAME=istiod-local CLUSTER_ID=Kubernetes \
    ENABLE_CA_SERVER=false PILOT_CERT_PROVIDER=none VALIDATION_WEBHOOK_CONFIG_NAME= INJECTION_WEBHOOK_CONFIG_NAME= \
    PILOT_ENVOY_FILTER_STATS=true PILOT_DEBOUNCE_AFTER="${ISTIOD_DEBOUNCE_MS}ms" \
    "$(cat "$dir/binary")" discovery --kubeconfig "$STATE/kubeconfig" --meshConfig "$dir/mesh.yaml" \
    --httpAddr "127.0.0.1:$ISTIOD_HTTP_PORT" --httpsAddr "" --grpcAddr "127.0.0.1:$ISTIOD_GRPC_PORT" \
    --secureGRPCAddr "" --monitoringAddr "127.0.0.1:$ISTIOD_MONITORING_PORT" --ctrlz_port "$ISTIOD_CTRLZ_PORT" \
    --ctrlz_address 127.0.0.1
}

ready_istiod() { curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$ISTIOD_HTTP_PORT/ready" 2>/dev/null; }

env_istiod() {
  local bin
  bin=$(cat "$(comp_dir istiod)/binary")
  echo "export MELTEMI_ISTIOD_XDS_ADDR=127.0.0.1:$ISTIOD_GRPC_PORT"
  echo "export MELTEMI_ISTIOD_HTTP_ADDR=127.0.0.1:$ISTIOD_HTTP_PORT"
  echo "export MELTEMI_ISTIOD_MONITORING_ADDR=127.0.0.1:$ISTIOD_MONITORING_PORT"
  echo "export MELTEMI_ISTIOD_LOG=$(log_file istiod)"
  echo "export MELTEMI_ISTIOD_DEBOUNCE_MS=$ISTIOD_DEBOUNCE_MS"
  # The istio.io/istio version, from the cache path the binary was built into.
  echo "export MELTEMI_ISTIOD_VERSION=$(basename "$(dirname "$bin")" | sed 's/^istiod-//')"
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper, run with java directly (the Debian service wrapper wants root and systemd).

prepare_zookeeper() {
  local dir
  dir=$(comp_dir zookeeper)
  mkdir -p "$dir/data"
  # admin.enableServer=false: its Jetty would take port 8080.
  cat >"$dir/zoo.cfg" <<EOF
tickTime=2000
dataDir=$dir/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons
EOF
}

start_zookeeper() {
  local dir
  dir=$(comp_dir zookeeper)
  command -v java >/dev/null || die "java not found (apt-get install default-jre-headless)"
  # The heap and jute.maxbuffer allow benchmark-sized registries (100,000 ephemeral nodes in
  # a session whose close is one large transaction that must replay after a restart).
  launch zookeeper "$dir" java -Xmx"${MELTEMI_E2E_ZK_HEAP:-1g}" -XX:+UseSerialGC -Djute.maxbuffer=67108864 \
    -Dzookeeper.log.dir="$STATE/logs" -Dzookeeper.admin.enableServer=false \
    -cp "$("$TOOLS" path zookeeper-jar):/usr/share/java/slf4j-simple.jar" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg"
}

# `ruok` answers before the server serves; `srvr` reports the mode only once it does.
ready_zookeeper() {
  local out
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  out=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && cat <&3' _ "$ZK_PORT" 2>/dev/null) || true
  grep -q 'Mode: standalone' <<<"$out"
}

env_zookeeper() { echo "export MELTEMI_ZK_ADDR=127.0.0.1:$ZK_PORT"; }

# ---------------------------------------------------------------------------------------------
# Consul: a single server with a data directory (unlike -dev) so that a restart keeps its
# catalog. Every port is moved off the defaults; DNS and HTTPS/gRPC-TLS are disabled.

prepare_consul() {
  local dir
  dir=$(comp_dir consul)
  mkdir -p "$dir/data"
  # Raft timing as in -dev mode: a single server elects itself in well under a second.
  cat >"$dir/consul.json" <<EOF
{
  "performance": {"raft_multiplier": 1},
  "disable_update_check": true,
  "telemetry": {"disable_hostname": true}
}
EOF
}

start_consul() {
  local dir
  dir=$(comp_dir consul)
  launch consul "$dir" "$("$TOOLS" path consul)" agent -server -bootstrap-expect 1 \
    -node meltemi-e2e -data-dir "$dir/data" -config-file "$dir/consul.json" \
    -bind 127.0.0.1 -advertise 127.0.0.1 -client 127.0.0.1 \
    -http-port "$CONSUL_HTTP_PORT" -https-port -1 -dns-port -1 \
    -grpc-port "$CONSUL_GRPC_PORT" -grpc-tls-port -1 \
    -server-port "$CONSUL_SERVER_PORT" -serf-lan-port "$CONSUL_SERF_LAN_PORT" \
    -serf-wan-port "$CONSUL_SERF_WAN_PORT"
}

ready_consul() {
  local leader
  leader=$(curl -sf --max-time 2 "http://127.0.0.1:$CONSUL_HTTP_PORT/v1/status/leader" 2>/dev/null) || return 1
  [ -n "$leader" ] && [ "$leader" != '""' ]
}

env_consul() { echo "export MELTEMI_CONSUL_ADDR=127.0.0.1:$CONSUL_HTTP_PORT"; }

# ---------------------------------------------------------------------------------------------
# Polaris, serving the Nacos 1.x (HTTP 8848) and 2.x (gRPC 9848) protocols. Its stock
# configuration (listeners bound to 127.0.0.1) keeps its data in ./polaris.bolt.

prepare_polaris() {
  local dir
  dir=$(comp_dir polaris)
  mkdir -p "$dir"
  cp "$("$TOOLS" path polaris-conf)" "$dir/polaris-server.yaml"
}

start_polaris() {
  local dir
  dir=$(comp_dir polaris)
  launch polaris "$dir" "$("$TOOLS" path polaris)" start -c "$dir/polaris-server.yaml"
}

ready_polaris() {
  curl -sf --max-time 2 -o /dev/null \
    "http://127.0.0.1:8848/nacos/v1/ns/service/list?pageNo=1&pageSize=1" 2>/dev/null &&
    port_listening 9848
}

env_polaris() {
  echo "export MELTEMI_NACOS_ADDR=127.0.0.1:8848"
  echo "export MELTEMI_NACOS_GRPC_ADDR=127.0.0.1:9848"
}

# tools_for prints the tools.sh components a server component needs.
tools_for() {
  case "$1" in
    kube-apiserver) echo "apt kube-apiserver istio-crds" ;;
    istiod) echo "apt kube-apiserver istio-crds istiod" ;;
    consul) echo consul ;;
    polaris) echo polaris ;;
    *) echo apt ;;
  esac
}
