#!/usr/bin/env bash
# Regenerates the Go code of the local MetaProtocol protos. Their Envoy imports are resolved from
# the descriptors compiled into go-control-plane, so no Envoy .proto sources are needed.
# Needs protoc and protoc-gen-go v1.36.12 (make generate installs it into ~/.cache/meltemi/bin).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="${MELTEMI_CACHE:-$HOME/.cache/meltemi}/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go run descriptors.go -o "$tmp/deps.binpb"
cd ..
protoc --descriptor_set_in="$tmp/deps.binpb" -I . --go_out=. --go_opt=paths=source_relative mpproto/*.proto
