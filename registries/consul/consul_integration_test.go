package consul

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/internal/testproxy"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

// These tests run the plugin in process against the shared Consul server (e2e/infra/up.sh
// consul). Every test registers services under a prefix of its own and imports only those
// (option services), so tests never see each other's services.

// datacenterOf returns the name of the agent's datacenter.
func datacenterOf(t *testing.T, c *api.Client) string {
	t.Helper()
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	return self["Config"]["Datacenter"].(string)
}

func TestIntegrationLifecycle(t *testing.T) {
	addr := sharedConsul(t)
	reg := newRegistrar(t, addr, "")
	dc := datacenterOf(t, reg.c)
	web, grpcSvc := reg.name("web"), reg.name("api")
	reg.register(api.AgentServiceRegistration{ID: web + "-1", Name: web, Address: "10.1.0.1", Port: 8080,
		Tags: []string{"version=v1", "canary", "protocol=http"}, Meta: map[string]string{"team": "blue"}})
	reg.register(api.AgentServiceRegistration{ID: web + "-2", Name: web, Address: "10.1.0.2", Port: 8080,
		Tags: []string{"version=v2", "protocol=http"}})
	reg.register(api.AgentServiceRegistration{ID: grpcSvc + "-1", Name: grpcSvc, Address: "10.2.0.1", Port: 9090,
		Meta: map[string]string{"protocol": "grpc"}})
	skipped := reg.name("skipped")
	reg.register(api.AgentServiceRegistration{ID: skipped, Name: skipped, Address: "10.3.0.1", Port: 80})

	_, rec := runPlugin(t, addr, map[string]string{"services": reg.pattern(), "excludeServices": skipped}, nil)
	keyWeb, keyAPI := dc+"/"+web, dc+"/"+grpcSvc
	rec.WaitState(t, wait, "snapshot", func(s *sdktest.State) bool {
		return len(s.Services) == 2 && sdktest.HasAddresses(keyWeb, "10.1.0.1", "10.1.0.2")(s)
	})
	s, _ := rec.Service(keyWeb)
	checkValid(t, s)
	if s.Host != web+".service.consul" {
		t.Errorf("host = %q", s.Host)
	}
	in := s.Instances[0]
	if in.Port != 8080 || in.Protocol != "http" || in.Locality != dc || in.Weight != catalog.DefaultWeight ||
		!maps.Equal(in.Labels, map[string]string{"version": "v1", "team": "blue"}) {
		t.Errorf("instance = %+v", in)
	}
	if a, _ := rec.Service(keyAPI); a.Instances[0].Protocol != "grpc" || a.Instances[0].Port != 9090 {
		t.Errorf("api service = %+v", a)
	}
	rec.WaitFor(t, 0, wait, "healthy", func(ev sdktest.Event) bool { return ev.Kind == sdktest.Health && ev.Connected })
	m := rec.Mark()

	// A failing health check removes the endpoint, a passing one brings it back; warning is
	// not good enough by default.
	reg.setCheck(web+"-1", api.HealthCritical)
	rec.WaitState(t, wait, "critical instance removed", sdktest.HasAddresses(keyWeb, "10.1.0.2"))
	reg.setCheck(web+"-1", api.HealthPassing)
	rec.WaitState(t, wait, "passing instance back", sdktest.HasAddresses(keyWeb, "10.1.0.1", "10.1.0.2"))
	reg.setCheck(web+"-1", api.HealthWarning)
	rec.WaitState(t, wait, "warning instance removed", sdktest.HasAddresses(keyWeb, "10.1.0.2"))
	reg.setCheck(web+"-1", api.HealthPassing)
	rec.WaitState(t, wait, "passing instance back", sdktest.HasAddresses(keyWeb, "10.1.0.1", "10.1.0.2"))

	// Maintenance mode takes an instance out like a failing check.
	if err := reg.c.Agent().EnableServiceMaintenance(web+"-2", "test"); err != nil {
		t.Fatal(err)
	}
	rec.WaitState(t, wait, "instance in maintenance removed", sdktest.HasAddresses(keyWeb, "10.1.0.1"))
	if err := reg.c.Agent().DisableServiceMaintenance(web + "-2"); err != nil {
		t.Fatal(err)
	}
	rec.WaitState(t, wait, "instance out of maintenance", sdktest.HasAddresses(keyWeb, "10.1.0.1", "10.1.0.2"))

	// Instances come and go; the last one gone deletes the service.
	reg.register(api.AgentServiceRegistration{ID: web + "-3", Name: web, Address: "10.1.0.3", Port: 8080})
	rec.WaitState(t, wait, "third instance", sdktest.HasAddresses(keyWeb, "10.1.0.1", "10.1.0.2", "10.1.0.3"))
	reg.deregister(web + "-3")
	rec.WaitState(t, wait, "third instance gone", sdktest.HasAddresses(keyWeb, "10.1.0.1", "10.1.0.2"))
	reg.deregister(web + "-1")
	reg.deregister(web + "-2")
	rec.WaitState(t, wait, "service gone", sdktest.Absent(keyWeb))
	rec.WaitFor(t, m, wait, "delete event", func(ev sdktest.Event) bool { return ev.Kind == sdktest.Delete && ev.Key == keyWeb })

	// A service registered later appears.
	late := reg.name("late")
	reg.register(api.AgentServiceRegistration{ID: late, Name: late, Address: "10.4.0.1", Port: 7000})
	rec.WaitState(t, wait, "late service", sdktest.HasAddresses(dc+"/"+late, "10.4.0.1"))

	for _, ev := range rec.Events(0) {
		switch {
		case ev.Kind == sdktest.Reject:
			t.Errorf("unexpected rejection %s: %s", ev.Key, ev.Message)
		case ev.Key == keyAPI && ev.Kind != sdktest.Snapshot:
			t.Errorf("untouched service %s got %s", keyAPI, ev.Kind)
		case ev.Key == dc+"/"+skipped:
			t.Errorf("excluded service %s reported", skipped)
		}
	}
	if n := rec.Count(0, sdktest.Snapshot); n != 1 {
		t.Errorf("%d snapshots, want 1", n)
	}
}

func TestIntegrationWarningAndWeights(t *testing.T) {
	addr := sharedConsul(t)
	reg := newRegistrar(t, addr, "")
	dc := datacenterOf(t, reg.c)
	name := reg.name("weighted")
	reg.register(api.AgentServiceRegistration{ID: name + "-a", Name: name, Address: "10.5.0.1", Port: 80,
		Weights: &api.AgentWeights{Passing: 10, Warning: 2}})
	reg.register(api.AgentServiceRegistration{ID: name + "-b", Name: name, Address: "10.5.0.2", Port: 80})
	key := dc + "/" + name

	_, rec := runPlugin(t, addr, map[string]string{"services": reg.pattern(), "includeWarning": "true"}, nil)
	weights := func(want map[string]uint32) func(*sdktest.State) bool {
		return func(s *sdktest.State) bool {
			got := map[string]uint32{}
			for _, in := range s.Services[key].Instances {
				got[in.Address] = in.Weight
			}
			return maps.Equal(got, want)
		}
	}
	// Consul's weights relative to its default 1, scaled to the mesh's default.
	d := uint32(catalog.DefaultWeight)
	rec.WaitState(t, wait, "snapshot with weights", weights(map[string]uint32{"10.5.0.1": 10 * d, "10.5.0.2": d}))
	reg.setCheck(name+"-a", api.HealthWarning)
	rec.WaitState(t, wait, "warning instance kept with its warning weight", weights(map[string]uint32{"10.5.0.1": 2 * d, "10.5.0.2": d}))
	reg.setCheck(name+"-a", api.HealthCritical)
	rec.WaitState(t, wait, "critical instance removed", weights(map[string]uint32{"10.5.0.2": d}))
}

func TestIntegrationMappingAndRejections(t *testing.T) {
	addr := sharedConsul(t)
	reg := newRegistrar(t, addr, "")
	dc := datacenterOf(t, reg.c)
	svc := func(s string) (name, key string) { return reg.name(s), dc + "/" + reg.name(s) }

	metaName, metaKey := svc("meta")
	reg.register(api.AgentServiceRegistration{ID: metaName, Name: metaName, Address: "10.6.0.1", Port: 20880,
		Tags: []string{"protocol=http"}, Meta: map[string]string{"protocol": "Dubbo"}})
	tagName, tagKey := svc("tag")
	reg.register(api.AgentServiceRegistration{ID: tagName, Name: tagName, Address: "10.6.0.2", Port: 9090, Tags: []string{"protocol=thrift"}})
	mappedName, mappedKey := svc("mapped")
	reg.register(api.AgentServiceRegistration{ID: mappedName, Name: mappedName, Address: "10.6.0.3", Port: 50051})
	plainName, plainKey := svc("plain")
	reg.register(api.AgentServiceRegistration{ID: plainName + "-1", Name: plainName, Address: "10.6.0.4", Port: 8080,
		Tags: []string{"version=1.2.0", "env=prod", "bad key=x", "long=" + strings.Repeat("x", 70), "pid=4242"},
		Meta: map[string]string{"env": "staging", "owner": "team-a", "zone": "az-1"}})
	// Malformed registrations next to a good one: a host name, a bad protocol, no port.
	reg.register(api.AgentServiceRegistration{ID: plainName + "-host", Name: plainName, Address: "provider.example.com", Port: 8080})
	reg.register(api.AgentServiceRegistration{ID: plainName + "-proto", Name: plainName, Address: "10.6.0.5", Port: 8080, Meta: map[string]string{"protocol": "HTTP/1.1"}})
	reg.register(api.AgentServiceRegistration{ID: plainName + "-noport", Name: plainName, Address: "10.6.0.6"})
	// A service on an external node: the node's address and the zone from its meta.
	extName, extKey := svc("ext")
	reg.registerExternal(reg.name("node"), "10.9.0.1", map[string]string{"zone": "az-9"},
		&api.AgentService{ID: extName, Service: extName, Port: 7000})

	_, rec := runPlugin(t, addr, map[string]string{
		"services": reg.pattern(), "defaultProtocol": "http", "serviceProtocols": mappedName + "=grpc",
	}, nil)
	rec.WaitState(t, wait, "snapshot", func(s *sdktest.State) bool {
		return len(s.Services) == 5 && sdktest.HasAddresses(plainKey, "10.6.0.4")(s)
	})
	for key, want := range map[string]string{metaKey: "dubbo", tagKey: "thrift", mappedKey: "grpc", plainKey: "http", extKey: "http"} {
		s, _ := rec.Service(key)
		checkValid(t, s)
		if got := s.Instances[0].Protocol; got != want {
			t.Errorf("%s: protocol %q, want %q", key, got, want)
		}
	}
	plain, _ := rec.Service(plainKey)
	if in := plain.Instances[0]; !maps.Equal(in.Labels, map[string]string{"version": "1.2.0", "env": "staging", "owner": "team-a"}) || in.Locality != dc+"/az-1" {
		t.Errorf("plain instance labels %v locality %q", in.Labels, in.Locality)
	}
	ext, _ := rec.Service(extKey)
	if in := ext.Instances[0]; in.Address != "10.9.0.1" || in.Locality != dc+"/az-9" {
		t.Errorf("external instance %+v", in)
	}
	for _, id := range []string{"-host", "-proto", "-noport"} {
		rec.WaitFor(t, 0, wait, "rejection of "+id, func(ev sdktest.Event) bool {
			return ev.Kind == sdktest.Reject && strings.HasSuffix(ev.Key, "/"+plainName+id)
		})
	}

	// A change to the service reports nothing new about the known bad registrations.
	m := rec.Mark()
	reg.register(api.AgentServiceRegistration{ID: plainName + "-2", Name: plainName, Address: "10.6.0.7", Port: 8080})
	rec.WaitState(t, wait, "second good instance", sdktest.HasAddresses(plainKey, "10.6.0.4", "10.6.0.7"))
	if n := rec.Count(m, sdktest.Reject); n != 0 {
		t.Errorf("%d rejections repeated:\n%s", n, rec.Dump(m))
	}
	if n := rec.Count(0, sdktest.Reject); n != 3 {
		t.Errorf("%d rejections, want 3:\n%s", n, rec.Dump(0))
	}
}

func TestIntegrationOutageKeepsEverything(t *testing.T) {
	addr := sharedConsul(t)
	reg := newRegistrar(t, addr, "")
	dc := datacenterOf(t, reg.c)
	name := reg.name("svc")
	key := dc + "/" + name
	reg.register(api.AgentServiceRegistration{ID: name + "-a", Name: name, Address: "10.7.0.1", Port: 80})
	reg.register(api.AgentServiceRegistration{ID: name + "-b", Name: name, Address: "10.7.0.2", Port: 80})
	proxy := testproxy.New(t, addr)

	_, rec := runPlugin(t, proxy.Addr(), map[string]string{"services": reg.pattern(), "datacenters": dc}, nil)
	rec.WaitState(t, wait, "snapshot", sdktest.HasAddresses(key, "10.7.0.1", "10.7.0.2"))
	m := rec.Mark()
	proxy.Block()
	rec.WaitFor(t, m, wait, "unhealthy", func(ev sdktest.Event) bool { return ev.Kind == sdktest.Health && !ev.Connected })
	// Changes while the plugin is cut off arrive when it is back; meanwhile nothing goes.
	reg.deregister(name + "-b")
	reg.register(api.AgentServiceRegistration{ID: name + "-c", Name: name, Address: "10.7.0.3", Port: 80})
	time.Sleep(2 * time.Second)
	if s, ok := rec.Service(key); !ok || len(s.Instances) != 2 {
		t.Fatalf("state changed during the outage:\n%s", rec.Dump(m))
	}
	proxy.Unblock()
	rec.WaitState(t, wait, "converged", sdktest.HasAddresses(key, "10.7.0.1", "10.7.0.3"))
	rec.WaitFor(t, m, wait, "healthy", func(ev sdktest.Event) bool { return ev.Kind == sdktest.Health && ev.Connected })
	for _, ev := range rec.Events(m) {
		if ev.Kind == sdktest.Delete || ev.Kind == sdktest.Snapshot {
			t.Errorf("%s after an outage of the same server:\n%s", ev.Kind, rec.Dump(m))
		}
	}
}

func TestIntegrationBoundedWatches(t *testing.T) {
	addr := sharedConsul(t)
	reg := newRegistrar(t, addr, "")
	dc := datacenterOf(t, reg.c)
	const services = 6
	for i := range services {
		name := reg.name(fmt.Sprint("s", i))
		reg.register(api.AgentServiceRegistration{ID: name + "-a", Name: name, Address: "10.8.0.1", Port: 80})
	}
	p, rec := runPlugin(t, addr, map[string]string{"services": reg.pattern(), "maxWatches": "2"}, nil)
	rec.WaitState(t, wait, "snapshot", func(s *sdktest.State) bool {
		return len(s.Services) == services
	})
	// Every service's change is seen although only two watches block at a time.
	for i := range services {
		name := reg.name(fmt.Sprint("s", i))
		reg.register(api.AgentServiceRegistration{ID: name + "-b", Name: name, Address: "10.8.0.2", Port: 80})
	}
	for i := range services {
		rec.WaitState(t, wait, fmt.Sprint("service ", i), sdktest.HasAddresses(dc+"/"+reg.name(fmt.Sprint("s", i)), "10.8.0.1", "10.8.0.2"))
	}
	if got := p.stats.maxBlocking.Load(); got != 2 {
		t.Errorf("at most %d blocking queries in flight, want exactly 2", got)
	}
	if got := p.stats.watched.Load(); got != services {
		t.Errorf("%d services watched, want %d", got, services)
	}
}

func TestIntegrationTLS(t *testing.T) {
	addr := sharedConsul(t)
	reg := newRegistrar(t, addr, "")
	dc := datacenterOf(t, reg.c)
	name := reg.name("tls")
	reg.register(api.AgentServiceRegistration{ID: name, Name: name, Address: "10.10.0.1", Port: 443})

	// Consul's HTTPS listener, as far as a client can tell: TLS in front of its HTTP API.
	target, _ := url.Parse("http://" + addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	srv := httptest.NewUnstartedServer(rp)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the unknown-CA case makes handshakes fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	key := dc + "/" + name

	t.Run("ca file", func(t *testing.T) {
		_, rec := runPlugin(t, srv.URL, map[string]string{"services": reg.pattern(), "tlsCAFile": ca, "waitTime": "5s"}, nil)
		rec.WaitState(t, wait, "snapshot over TLS", sdktest.HasAddresses(key, "10.10.0.1"))
	})
	t.Run("insecure", func(t *testing.T) {
		_, rec := runPlugin(t, srv.URL, map[string]string{"services": reg.pattern(), "tlsInsecureSkipVerify": "true", "waitTime": "5s"}, nil)
		rec.WaitState(t, wait, "snapshot over unverified TLS", sdktest.HasAddresses(key, "10.10.0.1"))
	})
	t.Run("unknown CA", func(t *testing.T) {
		_, rec := runPlugin(t, srv.URL, map[string]string{"services": reg.pattern(), "waitTime": "5s"}, nil)
		rec.WaitFor(t, 0, wait, "certificate error", func(ev sdktest.Event) bool {
			return ev.Kind == sdktest.Health && !ev.Connected && strings.Contains(ev.Message, "certificate")
		})
		if n := rec.Count(0, sdktest.Snapshot); n != 0 {
			t.Errorf("snapshot through an unverified connection")
		}
	})
}

// TestIntegrationWatchAgain: the host may call Watch again (after its stream broke); each
// call starts with a snapshot and leaves no watch behind.
func TestIntegrationWatchAgain(t *testing.T) {
	addr := sharedConsul(t)
	reg := newRegistrar(t, addr, "")
	for _, s := range []string{"a", "b"} {
		reg.register(api.AgentServiceRegistration{ID: reg.name(s), Name: reg.name(s), Address: "10.11.0.1", Port: 80})
	}
	p := New().(*Plugin)
	if err := p.Configure(context.Background(), sdk.Config{Registry: "r", Address: addr, Options: map[string]string{"services": reg.pattern()}}); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		rec := sdktest.NewRecorder(false)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Watch(ctx, rec) }()
		rec.WaitState(t, wait, "snapshot", func(s *sdktest.State) bool { return len(s.Services) == 2 })
		if got := p.stats.watched.Load(); got != 2 {
			t.Errorf("round %d: %d watches, want 2", round, got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("round %d: Watch returned %v", round, err)
		}
		if got := p.stats.watched.Load(); got != 0 {
			t.Errorf("round %d: %d watches left after Watch returned", round, got)
		}
	}
	if got := p.stats.snapshots.Load(); got != 2 {
		t.Errorf("%d snapshots, want one per Watch", got)
	}
}
