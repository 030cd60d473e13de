package consul

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

const wait = 20 * time.Second

// sharedConsul returns the address of the Consul server started by e2e/infra/up.sh.
func sharedConsul(t testing.TB) string {
	t.Helper()
	env := harness.Load(t)
	env.RequireComponent(t, harness.Consul)
	return env.ConsulAddr
}

// checkValid fails unless every service passes catalog.Validate unchanged.
func checkValid(t testing.TB, svcs ...catalog.Service) {
	t.Helper()
	for _, s := range svcs {
		valid, rej, ok := catalog.Validate(s)
		if !ok || len(rej) > 0 || !valid.Equal(s) {
			t.Fatalf("service %s does not validate unchanged: ok=%v rejections=%v", s.Key, ok, rej)
		}
	}
}

// runPlugin configures a new plugin and runs its Watch until the end of the test (or the
// recorder's Stop); Watch must return promptly when cancelled.
func runPlugin(t testing.TB, address string, opts, secrets map[string]string) (*Plugin, *sdktest.Recorder) {
	t.Helper()
	p := New().(*Plugin)
	return p, sdktest.Run(t, p, sdk.Config{Registry: "consul-test", Address: address, Options: opts, Secrets: secrets})
}

// ---------------------------------------------------------------------------------------
// Writing to Consul as applications do.

type registrar struct {
	t      testing.TB
	c      *api.Client
	prefix string // unique per test: every service name starts with it
}

func newRegistrar(t testing.TB, address, token string) *registrar {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: address, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	r := &registrar{t: t, c: c, prefix: fmt.Sprintf("t%06x", rand.Uint32()>>8)}
	t.Cleanup(r.cleanup)
	return r
}

// name is a service name of this test.
func (r *registrar) name(s string) string { return r.prefix + "-" + s }

// pattern matches this test's services, for the services option.
func (r *registrar) pattern() string { return r.prefix + "-*" }

// register registers an instance with the local agent, with a passing TTL check.
func (r *registrar) register(reg api.AgentServiceRegistration) {
	r.t.Helper()
	if reg.Check == nil && reg.Checks == nil {
		reg.Check = &api.AgentServiceCheck{CheckID: checkID(reg.ID), TTL: "10m", Status: api.HealthPassing}
	}
	if err := r.c.Agent().ServiceRegister(&reg); err != nil {
		r.t.Fatalf("registering %s: %v", reg.ID, err)
	}
}

func checkID(serviceID string) string { return "ttl-" + serviceID }

// setCheck sets an instance's TTL check status.
func (r *registrar) setCheck(serviceID, status string) {
	r.t.Helper()
	if err := r.c.Agent().UpdateTTL(checkID(serviceID), "set by test", status); err != nil {
		r.t.Fatalf("updating check of %s: %v", serviceID, err)
	}
}

func (r *registrar) deregister(id string) {
	r.t.Helper()
	if err := r.c.Agent().ServiceDeregister(id); err != nil {
		r.t.Fatalf("deregistering %s: %v", id, err)
	}
}

// registerExternal registers a service on a node of its own through the catalog, as
// external-service monitors do: no agent owns it, and node meta can be set.
func (r *registrar) registerExternal(node, address string, nodeMeta map[string]string, svc *api.AgentService) {
	r.t.Helper()
	_, err := r.c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: address, NodeMeta: nodeMeta, Service: svc}, nil)
	if err != nil {
		r.t.Fatalf("catalog register %s: %v", svc.ID, err)
	}
}

// cleanup removes whatever this test registered, agent services and external nodes alike.
func (r *registrar) cleanup() {
	services, err := r.c.Agent().Services()
	if err == nil {
		for id, s := range services {
			if strings.HasPrefix(s.Service, r.prefix) {
				_ = r.c.Agent().ServiceDeregister(id)
			}
		}
	}
	nodes, _, err := r.c.Catalog().Nodes(nil)
	if err == nil {
		for _, n := range nodes {
			if strings.HasPrefix(n.Node, r.prefix) {
				_, _ = r.c.Catalog().Deregister(&api.CatalogDeregistration{Node: n.Node}, nil)
			}
		}
	}
}
