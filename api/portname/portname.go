// Package portname is the mesh's port naming convention, written by the converter and read by
// the traffic translator. Istio and Aeraki select a port's protocol handling by its name:
// <protocol>[-<suffix>], with tcp-metaprotocol-<application>[-<suffix>] for MetaProtocol
// applications, tcp-dubbo-…, tcp-thrift-…, tcp-redis-… for Envoy's native proxies and
// tcp-kafka-…, tcp-zookeeper-… for Envoy's protocol statistics filters.
package portname

import (
	"fmt"
	"strconv"
	"strings"
)

// MetaProtocolPrefix starts the name of a port the MetaProtocol proxy handles.
const MetaProtocolPrefix = "tcp-metaprotocol"

// MetaProtocol is the name prefix of an application protocol's MetaProtocol ports.
func MetaProtocol(application string) string { return MetaProtocolPrefix + "-" + application }

// Name is a port's name: its protocol prefix and its number.
func Name(prefix string, number uint32) string {
	return prefix + "-" + strconv.FormatUint(uint64(number), 10)
}

// IstioProtocol is the ServiceEntry port protocol Istio needs beside a name with this prefix.
func IstioProtocol(prefix string) string {
	switch first, _, _ := strings.Cut(prefix, "-"); first {
	case "grpc":
		return "GRPC"
	case "http":
		return "HTTP"
	case "http2":
		return "HTTP2"
	case "https":
		return "HTTPS"
	case "tls":
		return "TLS"
	}
	return "TCP"
}

// Kind says which proxy handles a port.
type Kind int

// Kinds of ports.
const (
	Other            Kind = iota // not a layer-7 proxy Meltemi configures (http, grpc, tcp, …)
	MetaProtocolKind             // tcp-metaprotocol-<app>[-<suffix>]
	Dubbo                        // tcp-dubbo[-<suffix>]: Envoy's dubbo_proxy
	Thrift                       // tcp-thrift[-<suffix>]: Envoy's thrift_proxy
	Redis                        // tcp-redis[-<suffix>]: Envoy's redis_proxy
	Kafka                        // tcp-kafka[-<suffix>]: Envoy's kafka_broker before the TCP proxy
	ZooKeeper                    // tcp-zookeeper[-<suffix>]: Envoy's zookeeper_proxy before the TCP proxy
)

// Parse classifies a port by its name; for MetaProtocol ports it returns the application
// protocol. Names are compared case-insensitively, as Istio does; a MetaProtocol name without
// an application is an error.
func Parse(name string) (Kind, string, error) {
	n := strings.ToLower(name)
	switch {
	case n == MetaProtocolPrefix || strings.HasPrefix(n, MetaProtocolPrefix+"-"):
		rest := strings.TrimPrefix(strings.TrimPrefix(n, MetaProtocolPrefix), "-")
		app, _, _ := strings.Cut(rest, "-")
		if app == "" {
			return Other, "", fmt.Errorf("port name %q has no application protocol (want %s-<protocol>-<suffix>)", name, MetaProtocolPrefix)
		}
		return MetaProtocolKind, app, nil
	case hasToken(n, "tcp-dubbo"):
		return Dubbo, "dubbo", nil
	case hasToken(n, "tcp-thrift"):
		return Thrift, "thrift", nil
	case hasToken(n, "tcp-redis"):
		return Redis, "redis", nil
	case hasToken(n, "tcp-kafka"):
		return Kafka, "kafka", nil
	case hasToken(n, "tcp-zookeeper"):
		return ZooKeeper, "zookeeper", nil
	}
	return Other, "", nil
}

// hasToken reports whether name is prefix or starts with prefix and a '-'.
func hasToken(name, prefix string) bool {
	return name == prefix || strings.HasPrefix(name, prefix+"-")
}
