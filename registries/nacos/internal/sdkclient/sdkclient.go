// Package sdkclient creates nacos-sdk-go naming clients, for the plugin and for tests that
// play applications.
package sdkclient

import (
	"fmt"

	"github.com/nacos-group/nacos-sdk-go/v2/clients/nacos_client"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/common/http_agent"
)

// New creates a naming client as the library's client factory does, without its
// configuration client (and the cloud KMS libraries that come with it). Servers without a
// gRPC port get the HTTP port + 1000, as in the factory.
func New(cc constant.ClientConfig, servers []constant.ServerConfig) (naming_client.INamingClient, error) {
	for i := range servers {
		if servers[i].GrpcPort == 0 {
			servers[i].GrpcPort = servers[i].Port + constant.RpcPortOffset
		}
	}
	nc := &nacos_client.NacosClient{}
	if err := nc.SetClientConfig(cc); err != nil {
		return nil, fmt.Errorf("client configuration: %w", err)
	}
	if err := nc.SetServerConfig(servers); err != nil {
		return nil, fmt.Errorf("server configuration: %w", err)
	}
	if err := nc.SetHttpAgent(&http_agent.HttpAgent{TlsConfig: cc.TLSCfg}); err != nil {
		return nil, fmt.Errorf("HTTP agent: %w", err)
	}
	return naming_client.NewNamingClient(nc)
}
