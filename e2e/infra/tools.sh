#!/usr/bin/env bash
# Installs or builds the real servers the e2e tests and the demo run against, and caches the
# built binaries outside the repository, keyed by version, so warm runs only check for them.
#
#   e2e/infra/tools.sh [component...]      components: apt kube-apiserver istio-crds consul polaris helm istiod
#                                          istio-bootstrap (Envoy bootstrap template of that istiod's proxies)
#   e2e/infra/tools.sh path <component>    prints where a component's binary or file lives
#
# Nothing here downloads prebuilt binaries: Debian packages come through apt-get, everything
# else is compiled from the Go module proxy in a throw-away wrapper module.
#
# istiod is built in the version MELTEMI_ISTIO selects: "current" (default) or "previous", the
# two Istio versions the conformance suite is held to, or an explicit istio.io/istio version.
#
# Every cached entry is built under a lock of its own in the cache, so two runs (two state
# directories, a test and a demo) never build into the same path at once; the second waits and
# then finds the binary.
set -euo pipefail

CACHE=${MELTEMI_CACHE:-$HOME/.cache/meltemi}
KUBE_VERSION=v1.35.4
KUBE_STAGING_VERSION=v0.35.4
ISTIO_API_VERSION=v1.31.1
CONSUL_VERSION=v1.22.6
POLARIS_VERSION=v1.18.1
# Bumped whenever the local patch to Polaris changes, so cached builds are rebuilt.
POLARIS_PATCH=1
HELM_VERSION=v3.19.0
# istio.io/istio publishes pseudo-versions only. current: the 1.31 line of 2026-08-27 (istio.io/api
# v1.31); previous: the line of 2026-04-23 (istio.io/api v1.30).
ISTIO_VERSION_CURRENT=v0.0.0-20260827124520-eed52ebb66ad
ISTIO_VERSION_PREVIOUS=v0.0.0-20260423205519-b01690e6db7d
HELM_KUBE_MINOR=34 # the Kubernetes minor of the client-go that helm version uses
APT_PACKAGES=(zookeeper etcd-server openssl curl netcat-openbsd)

log() { printf '[tools] %s\n' "$*" >&2; }

# istio_version prints the istio.io/istio version MELTEMI_ISTIO selects.
istio_version() {
  case "${MELTEMI_ISTIO:-current}" in
    current | N) echo "$ISTIO_VERSION_CURRENT" ;;
    previous | N-1) echo "$ISTIO_VERSION_PREVIOUS" ;;
    v*) echo "$MELTEMI_ISTIO" ;;
    *) log "MELTEMI_ISTIO=$MELTEMI_ISTIO: want current, previous or an istio.io/istio version"; return 2 ;;
  esac
}

# cached NAME BUILD-FUNCTION OUTPUT: runs the build function unless OUTPUT exists, holding the
# cache entry's lock; after waiting for the lock it looks again, since the holder may have
# built it meanwhile.
cached() {
  local name=$1 build=$2 out=$3 fd
  [ -e "$out" ] && return 0
  mkdir -p "$CACHE/locks"
  exec {fd}>"$CACHE/locks/$name.lock"
  if ! flock -n "$fd"; then
    log "waiting for another build of $name to finish"
    flock -w 3600 "$fd" || { log "gave up waiting for the build lock of $name"; return 1; }
  fi
  local rc=0
  [ -e "$out" ] || "$build" || rc=$?
  exec {fd}>&-
  return "$rc"
}

path_of() {
  case "$1" in
    kube-apiserver) echo "$CACHE/kube-apiserver-$KUBE_VERSION/kube-apiserver" ;;
    istio-crds) echo "$CACHE/istio-api-$ISTIO_API_VERSION/crds.yaml" ;;
    consul) echo "$CACHE/consul-$CONSUL_VERSION/consul" ;;
    polaris) echo "$CACHE/polaris-$POLARIS_VERSION-p$POLARIS_PATCH/polaris-server" ;;
    polaris-conf) echo "$CACHE/polaris-$POLARIS_VERSION-p$POLARIS_PATCH/polaris-server.yaml" ;;
    helm) echo "$CACHE/helm-$HELM_VERSION/helm" ;;
    istiod) echo "$CACHE/istiod-$(istio_version)/pilot-discovery" ;;
    istio-bootstrap) echo "$CACHE/istio-bootstrap-$(istio_version)/envoy_bootstrap.json" ;;
    etcd) command -v etcd || echo /usr/bin/etcd ;;
    zookeeper-jar) echo /usr/share/java/zookeeper.jar ;;
    *) echo "unknown component: $1" >&2; return 2 ;;
  esac
}

ensure_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# wrapper_build DIR OUTPUT PACKAGE LDFLAGS -- writes DIR/go.mod (already prepared by the caller)
# and builds PACKAGE into OUTPUT atomically, so an interrupted build never leaves a half binary.
wrapper_build() {
  local dir=$1 out=$2 pkg=$3 ldflags=$4
  (cd "$dir" && { GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true; })
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
}

build_kube_apiserver() {
  local out; out=$(path_of kube-apiserver)
  log "building kube-apiserver $KUBE_VERSION (cold: about 4 minutes)"
  local dir="$CACHE/build/kube-apiserver-$KUBE_VERSION"
  mkdir -p "$dir" "$(dirname "$out")"
  local modfile
  modfile=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module meltemi.local/kube-apiserver-build"
    echo "go 1.25"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo "replace ("
    # k8s.io/kubernetes pins its staging modules to ./staging; a dependency's replaces are
    # ignored, so point each at its published version instead.
    sed -n '/^replace (/,/^)/p' "$modfile" | awk '/=> \.\/staging/ {print "\t" $1 " => " $1 " '"$KUBE_STAGING_VERSION"'"}'
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  local v=k8s.io/component-base/version
  (cd "$dir" && { GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >/dev/null 2>&1 || true; })
  wrapper_build "$dir" "$out" k8s.io/kubernetes/cmd/kube-apiserver \
    "-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=35"
}

build_istio_crds() {
  local out; out=$(path_of istio-crds)
  mkdir -p "$(dirname "$out")"
  local dir
  dir=$(cd "$(dirname "$out")" && GOFLAGS=-mod=mod go mod download -json "istio.io/api@$ISTIO_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp "$dir/kubernetes/customresourcedefinitions.gen.yaml" "$out.tmp"
  mv "$out.tmp" "$out"
}

build_consul() {
  local out; out=$(path_of consul)
  log "building consul $CONSUL_VERSION (cold: about 4 minutes)"
  local dir="$CACHE/build/consul-$CONSUL_VERSION"
  mkdir -p "$dir" "$(dirname "$out")"
  cat > "$dir/go.mod" <<GOMOD
module meltemi.local/consul-build

go 1.25

require (
	github.com/hashicorp/consul $CONSUL_VERSION
	github.com/hashicorp/consul/api v1.33.4
	github.com/hashicorp/consul/sdk v0.17.2
	github.com/hashicorp/consul/proto-public v0.7.2
	github.com/hashicorp/consul/envoyextensions v0.9.4
	github.com/hashicorp/consul/troubleshoot v0.8.5
)
GOMOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/hashicorp/consul"\n' > "$dir/tools.go"
  # The checksum database does not serve these three submodules.
  export GONOSUMDB=github.com/hashicorp/consul/proto-public,github.com/hashicorp/consul/troubleshoot,github.com/hashicorp/consul/envoyextensions
  wrapper_build "$dir" "$out" github.com/hashicorp/consul "-s -w"
}

build_polaris() {
  local out; out=$(path_of polaris)
  log "building polaris $POLARIS_VERSION with patch $POLARIS_PATCH (cold: about 1 minute)"
  local dir="$CACHE/build/polaris-$POLARIS_VERSION-p$POLARIS_PATCH"
  mkdir -p "$dir" "$(dirname "$out")"
  local src
  src=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "github.com/polarismesh/polaris@$POLARIS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$dir/polaris"
  cp -r "$src" "$dir/polaris"
  chmod -R u+w "$dir/polaris"
  # v1.18.1 deadlocks its Nacos gRPC push path the first time a push goes unacknowledged:
  # notifyOutDateInFlight deletes from a map while holding that map's read lock. Iterating
  # over a copy (Range) instead of under the lock (ReadRange) removes the self-deadlock.
  local f="$dir/polaris/apiserver/nacosserver/v2/remote/inflights.go"
  sed -i 's/val\.inFlights\.ReadRange(func(reqId string/val.inFlights.Range(func(reqId string/' "$f"
  grep -q 'val.inFlights.Range(func(reqId string' "$f" || { log "polaris patch did not apply to $f"; return 1; }
  cat > "$dir/go.mod" <<GOMOD
module meltemi.local/polaris-build

go 1.25

require github.com/polarismesh/polaris $POLARIS_VERSION

replace github.com/polarismesh/polaris => ./polaris

replace gopkg.in/yaml.v2 => gopkg.in/yaml.v2 v2.2.2
GOMOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/polarismesh/polaris"\n' > "$dir/tools.go"
  # The configuration first: the binary's presence is what marks the entry complete.
  sed 's/0\.0\.0\.0/127.0.0.1/g' "$dir/polaris/release/conf/polaris-server.yaml" > "$(path_of polaris-conf)"
  wrapper_build "$dir" "$out" github.com/polarismesh/polaris "-s -w"
}

build_helm() {
  local out; out=$(path_of helm)
  log "building helm $HELM_VERSION"
  mkdir -p "$(dirname "$out")"
  # Helm's own build stamps its version and the Kubernetes version it renders for; unstamped it
  # reports v1.20 and rejects charts that need a newer cluster.
  local h=helm.sh/helm/v3
  GOBIN="$(dirname "$out")" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X $h/internal/version.version=$HELM_VERSION \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR" "$h/cmd/helm@$HELM_VERSION"
}

build_istiod() {
  local version out dir
  version=$(istio_version)
  out=$(path_of istiod)
  log "building istiod (pilot-discovery) istio.io/istio $version (cold: about 9 minutes)"
  dir="$CACHE/build/istiod-$version"
  mkdir -p "$dir" "$(dirname "$out")"
  # istio.io/istio's go.mod has no replace directives, so a plain require resolves it.
  cat > "$dir/go.mod" <<GOMOD
module meltemi.local/istiod-build

go 1.26

require istio.io/istio $version
GOMOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "istio.io/istio/pilot/cmd/pilot-discovery"\n' > "$dir/tools.go"
  wrapper_build "$dir" "$out" istio.io/istio/pilot/cmd/pilot-discovery \
    "-s -w -X istio.io/istio/pkg/version.buildVersion=$version -X istio.io/istio/pkg/version.buildStatus=Clean"
}

# The bootstrap template istio-agent renders for the proxies of that Istio version: tests check
# that the static clusters a bootstrap override relies on (sds-grpc) are defined there.
build_istio_bootstrap() {
  local out dir
  out=$(path_of istio-bootstrap)
  mkdir -p "$(dirname "$out")"
  dir=$(cd "$(dirname "$out")" && GOFLAGS=-mod=mod go mod download -json "istio.io/istio@$(istio_version)" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp "$dir/tools/packaging/common/envoy_bootstrap.json" "$out.tmp"
  chmod 0644 "$out.tmp"
  mv "$out.tmp" "$out"
}

ensure() { # component
  local c=$1
  case "$c" in
    kube-apiserver) cached "kube-apiserver-$KUBE_VERSION" build_kube_apiserver "$(path_of kube-apiserver)" ;;
    istio-crds) cached "istio-api-$ISTIO_API_VERSION" build_istio_crds "$(path_of istio-crds)" ;;
    consul) cached "consul-$CONSUL_VERSION" build_consul "$(path_of consul)" ;;
    polaris)
      # An entry from before the configuration was written first may lack it: rebuild it.
      [ -s "$(path_of polaris-conf)" ] || rm -f "$(path_of polaris)"
      cached "polaris-$POLARIS_VERSION-p$POLARIS_PATCH" build_polaris "$(path_of polaris)" ;;
    helm) cached "helm-$HELM_VERSION" build_helm "$(path_of helm)" ;;
    istiod) cached "istiod-$(istio_version)" build_istiod "$(path_of istiod)" ;;
    istio-bootstrap) cached "istio-bootstrap-$(istio_version)" build_istio_bootstrap "$(path_of istio-bootstrap)" ;;
  esac
}

main() {
  if [ "${1:-}" = path ]; then path_of "$2"; return; fi
  [ $# -eq 0 ] && set -- apt kube-apiserver istio-crds
  for c in "$@"; do
    case "$c" in
      apt) ensure_apt ;;
      kube-apiserver | istio-crds | consul | polaris | helm | istiod | istio-bootstrap) ensure "$c" ;;
      *) log "unknown component $c"; exit 2 ;;
    esac
  done
}
main "$@"
