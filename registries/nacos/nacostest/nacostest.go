// Package nacostest plays applications against a real Nacos-protocol server in tests: it
// registers, updates and deregisters instances with nacos-sdk-go as applications do.
package nacostest

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/meltemi-mesh/meltemi/registries/nacos/internal/sdkclient"
)

// App is one application's naming client, bound to a namespace.
type App struct {
	naming_client.INamingClient
	t         testing.TB
	addr      string
	namespace string
}

// NewApp connects to the server whose HTTP API is at addr (host:port), in namespace ("public"
// or "" for the default one). The client is closed when the test ends.
func NewApp(t testing.TB, addr, namespace string) *App {
	t.Helper()
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("Nacos address %q: %v", addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		t.Fatalf("Nacos address %q: %v", addr, err)
	}
	// The client library's logger is global and outlives a test: its files go into one
	// directory for all test processes rather than into a test's temporary directory.
	dir := filepath.Join(os.TempDir(), "meltemi-nacos-apps")
	cc := constant.ClientConfig{
		NamespaceId: namespace, TimeoutMs: 5000, LogDir: dir, CacheDir: dir, LogLevel: "error",
		NotLoadCacheAtStart: true,
	}
	c, err := sdkclient.New(cc, []constant.ServerConfig{{IpAddr: host, Port: port}})
	if err != nil {
		t.Fatalf("application client: %v", err)
	}
	t.Cleanup(c.CloseClient)
	return &App{INamingClient: c, t: t, addr: addr, namespace: namespace}
}

// Instance is a registration with the defaults applications use: healthy, enabled,
// weight 1, ephemeral.
func Instance(service, group, ip string, port uint64, metadata map[string]string) vo.RegisterInstanceParam {
	return vo.RegisterInstanceParam{
		Ip: ip, Port: port, Weight: 1, Enable: true, Healthy: true, Ephemeral: true,
		ServiceName: service, GroupName: group, Metadata: metadata,
	}
}

// DubboProviders is the Nacos service name Dubbo registers an interface's providers under.
func DubboProviders(iface, version, group string) string {
	return "providers:" + iface + ":" + version + ":" + group
}

// DubboMetadata is the metadata Dubbo's Nacos registry writes for a provider: the provider
// URL's parameters.
func DubboMetadata(iface, application, version, group string) map[string]string {
	md := map[string]string{
		"interface": iface, "application": application, "side": "provider", "protocol": "dubbo",
		"category": "providers", "path": iface, "methods": "greet,hello", "dubbo": "2.0.2",
		"release": "3.2.0", "timestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "pid": "4242",
		"anyhost": "true", "dynamic": "true", "generic": "false", "deprecated": "false",
	}
	if version != "" {
		md["version"] = version
	}
	if group != "" {
		md["group"] = group
	}
	return md
}

// Register registers an instance. A failed attempt is repeated, as the client library
// repeats registrations itself after reconnecting.
func (a *App) Register(p vo.RegisterInstanceParam) {
	a.t.Helper()
	var ok bool
	var err error
	for range 5 {
		if ok, err = a.RegisterInstance(p); err == nil && ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	a.t.Fatalf("registering %s %s:%d: ok=%v err=%v", p.ServiceName, p.Ip, p.Port, ok, err)
}

// Deregister removes a registered instance.
func (a *App) Deregister(p vo.RegisterInstanceParam) {
	a.t.Helper()
	ok, err := a.DeregisterInstance(vo.DeregisterInstanceParam{
		Ip: p.Ip, Port: p.Port, ServiceName: p.ServiceName, GroupName: p.GroupName, Ephemeral: p.Ephemeral, Cluster: p.ClusterName,
	})
	if err != nil || !ok {
		a.t.Fatalf("deregistering %s %s:%d: ok=%v err=%v", p.ServiceName, p.Ip, p.Port, ok, err)
	}
}

// Update changes a registered instance (weight, enabled, metadata) as applications and
// operators do.
func (a *App) Update(p vo.RegisterInstanceParam) {
	a.t.Helper()
	ok, err := a.UpdateInstance(vo.UpdateInstanceParam(p))
	if err != nil || !ok {
		a.t.Fatalf("updating %s %s:%d: ok=%v err=%v", p.ServiceName, p.Ip, p.Port, ok, err)
	}
}

// Beat sends one heartbeat for an instance over the 1.x HTTP API, as Nacos 1.x clients do
// every few seconds; an instance whose heartbeats stop turns unhealthy. It may be called
// from any goroutine.
func (a *App) Beat(p vo.RegisterInstanceParam) error {
	group := p.GroupName
	if group == "" {
		group = constant.DEFAULT_GROUP
	}
	q := url.Values{
		"serviceName": {group + "@@" + p.ServiceName}, "namespaceId": {a.namespace},
		"ip": {p.Ip}, "port": {strconv.FormatUint(p.Port, 10)},
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+a.addr+"/nacos/v1/ns/instance/beat?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("heartbeat of %s %s:%d: %w", p.ServiceName, p.Ip, p.Port, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heartbeat of %s %s:%d: HTTP %d", p.ServiceName, p.Ip, p.Port, resp.StatusCode)
	}
	return nil
}
