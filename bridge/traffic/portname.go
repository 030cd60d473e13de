package traffic

import (
	"fmt"
	"strings"
)

// portKind says which proxy handles a service port.
type portKind int

const (
	portOther        portKind = iota // not Meltemi's business (http, grpc, tcp, …)
	portMetaProtocol                 // tcp-metaprotocol-<app>[-<suffix>]
	portDubbo                        // tcp-dubbo[-<suffix>]: Envoy's dubbo_proxy
	portThrift                       // tcp-thrift[-<suffix>]: Envoy's thrift_proxy
)

const metaProtocolPrefix = "tcp-metaprotocol"

// parsePortName classifies a port by its name, following Istio's and Aeraki's protocol
// selection. For MetaProtocol ports it returns the application protocol. Names are compared
// case-insensitively, as Istio does; a MetaProtocol name without an application is an error.
func parsePortName(name string) (portKind, string, error) {
	n := strings.ToLower(name)
	switch {
	case n == metaProtocolPrefix || strings.HasPrefix(n, metaProtocolPrefix+"-"):
		rest := strings.TrimPrefix(strings.TrimPrefix(n, metaProtocolPrefix), "-")
		app, _, _ := strings.Cut(rest, "-")
		if app == "" {
			return portOther, "", fmt.Errorf("port name %q has no application protocol (want tcp-metaprotocol-<protocol>-<suffix>)", name)
		}
		return portMetaProtocol, app, nil
	case n == "tcp-dubbo" || strings.HasPrefix(n, "tcp-dubbo-"):
		return portDubbo, "dubbo", nil
	case n == "tcp-thrift" || strings.HasPrefix(n, "tcp-thrift-"):
		return portThrift, "thrift", nil
	}
	return portOther, "", nil
}
