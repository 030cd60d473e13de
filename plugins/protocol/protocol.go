// Package protocol is the wire side of the registry plugin contract shared by the host
// (plugins/supervisor) and the SDK (plugins/sdk): the go-plugin handshake, the protocol versions,
// and the Watch stream's messages encoded from and decoded into plugins/catalog (wire.go).
package protocol

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
)

// Version is the plugin protocol version this build speaks (plugins/proto/registry/v1).
const Version = 1

// PluginName is the name under which the registry service is dispensed.
const PluginName = "registry"

// BinaryPrefix names registry plugin executables: meltemi-registry-<kind>.
const BinaryPrefix = "meltemi-registry-"

// HostPIDEnv passes the host's process ID to a plugin. A plugin whose parent is not (or no
// longer) that process exits: no plugin outlives its host, even one killed with SIGKILL.
const HostPIDEnv = "MELTEMI_PLUGIN_HOST_PID"

// MaxMessageBytes bounds one Watch message on the wire. The SDK rejects a single service
// that would not fit (rather than break the stream), and the host refuses larger messages.
const MaxMessageBytes = 64 << 20

// Handshake is checked before anything else: the cookie keeps a plugin binary from being run
// by hand by mistake (it then prints a hint and exits). It is not a security measure.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  Version,
	MagicCookieKey:   "MELTEMI_REGISTRY_PLUGIN",
	MagicCookieValue: "d1f1c0a5-5a1e-4bb0-9f4e-3c0e1b7d6b2a",
}

// servedVersion can be set at link time (-X) to build a plugin that speaks another protocol
// version; only the tests for version negotiation do that. Empty means Version. (-X only
// sets string variables without an initialiser computed at run time, hence the string.)
var servedVersion string

// ServedVersion is the protocol version a plugin built from this module serves.
func ServedVersion() int {
	v, err := strconv.Atoi(servedVersion)
	if err != nil {
		return Version
	}
	return v
}

// GRPCPlugin adapts the Registry service to go-plugin. Impl is set on the plugin side only.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl registryv1.RegistryServer
}

// GRPCServer registers the plugin's implementation.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return fmt.Errorf("registry plugin has no implementation")
	}
	registryv1.RegisterRegistryServer(s, p.Impl)
	return nil
}

// GRPCClient returns the client the host uses.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return registryv1.NewRegistryClient(c), nil
}
