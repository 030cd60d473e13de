package consul

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

// These tests run agents of their own (see devAgent): two federated datacenters, an agent
// that loses its state, an agent with ACLs.

func TestIntegrationSeveralDatacenters(t *testing.T) {
	east := startDevAgent(t, "east", "")
	west := startDevAgent(t, "west", "")
	west.joinWAN(east)
	re, rw := newRegistrar(t, east.addr(), ""), newRegistrar(t, west.addr(), "")
	rw.prefix = re.prefix // one service name in both datacenters
	web, only := re.name("web"), re.name("only")
	re.register(api.AgentServiceRegistration{ID: web, Name: web, Address: "10.20.0.1", Port: 80, Meta: map[string]string{"zone": "e1"}})
	rw.register(api.AgentServiceRegistration{ID: web, Name: web, Address: "10.21.0.1", Port: 80})
	re.register(api.AgentServiceRegistration{ID: only, Name: only, Address: "10.20.0.2", Port: 80})

	_, rec := runPlugin(t, east.addr(), map[string]string{"datacenters": "east,west", "services": re.pattern()}, nil)
	rec.WaitState(t, wait, "both datacenters", func(s *sdktest.State) bool {
		return sdktest.HasAddresses("east/"+web, "10.20.0.1")(s) && sdktest.HasAddresses("west/"+web, "10.21.0.1")(s) &&
			sdktest.HasAddresses("east/"+only, "10.20.0.2")(s)
	})
	e, _ := rec.Service("east/" + web)
	w, _ := rec.Service("west/" + web)
	// One host: the mesh merges both into one ServiceEntry, told apart by locality.
	if e.Host != web+".service.consul" || w.Host != e.Host {
		t.Errorf("hosts %q and %q, want both %s.service.consul", e.Host, w.Host, web)
	}
	if e.Instances[0].Locality != "east/e1" || w.Instances[0].Locality != "west" {
		t.Errorf("localities %q and %q", e.Instances[0].Locality, w.Instances[0].Locality)
	}

	// A change in one datacenter leaves the other alone.
	m := rec.Mark()
	rw.deregister(web)
	rec.WaitState(t, wait, "west instance gone", sdktest.Absent("west/"+web))
	rec.WaitState(t, wait, "east kept", sdktest.HasAddresses("east/"+web, "10.20.0.1"))
	for _, ev := range rec.Events(m) {
		if strings.HasPrefix(ev.Key, "east/") {
			t.Errorf("east service %s got %s", ev.Key, ev.Kind)
		}
	}

	t.Run("datacenter in the host", func(t *testing.T) {
		_, rec := runPlugin(t, east.addr(), map[string]string{"datacenters": "east", "services": re.pattern(),
			"hostTemplate": "{{.Service}}.service.{{.Datacenter}}.consul"}, nil)
		rec.WaitState(t, wait, "host with datacenter", func(s *sdktest.State) bool {
			return s.Services["east/"+web].Host == web+".service.east.consul"
		})
	})
	t.Run("agent's own datacenter by default", func(t *testing.T) {
		_, rec := runPlugin(t, west.addr(), map[string]string{"services": re.pattern()}, nil)
		rec.WaitState(t, wait, "west only", func(s *sdktest.State) bool {
			return s.Synced && len(s.Services) == 0 // west has none left
		})
	})
	t.Run("unknown datacenter", func(t *testing.T) {
		_, rec := runPlugin(t, east.addr(), map[string]string{"datacenters": "east,north", "services": re.pattern()}, nil)
		rec.WaitFor(t, 0, wait, "error about north", func(ev sdktest.Event) bool {
			return ev.Kind == sdktest.Health && !ev.Connected && strings.Contains(ev.Message, "datacenter north")
		})
		if n := rec.Count(0, sdktest.Snapshot); n != 0 {
			t.Errorf("a snapshot without datacenter north:\n%s", rec.Dump(0))
		}
	})
}

func TestIntegrationIndexBackwardsResyncs(t *testing.T) {
	a := startDevAgent(t, "idx", "")
	reg := newRegistrar(t, a.addr(), "")
	keep, gone := reg.name("keep"), reg.name("gone")
	reg.register(api.AgentServiceRegistration{ID: keep, Name: keep, Address: "10.30.0.1", Port: 80})
	reg.register(api.AgentServiceRegistration{ID: gone, Name: gone, Address: "10.30.0.2", Port: 80})
	// Raise the indexes well above what a fresh agent reaches.
	for i := range 30 {
		id := reg.name(fmt.Sprint("churn", i))
		reg.register(api.AgentServiceRegistration{ID: id, Name: reg.name("churn"), Address: "10.30.1.1", Port: 80})
		reg.deregister(id)
	}
	p, rec := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern()}, nil)
	rec.WaitState(t, wait, "first snapshot", sdktest.HasAddresses("idx/"+keep, "10.30.0.1"))
	m := rec.Mark()

	// While the agent is down nothing goes. It comes back empty (a -dev agent keeps nothing),
	// as after a restore of an older snapshot: its indexes are lower than the plugin's.
	a.stop()
	rec.WaitFor(t, m, wait, "unhealthy", func(ev sdktest.Event) bool { return ev.Kind == sdktest.Health && !ev.Connected })
	time.Sleep(time.Second)
	if n := rec.Count(m, sdktest.Delete) + rec.Count(m, sdktest.Snapshot); n > 0 {
		t.Fatalf("deletions while the agent is down:\n%s", rec.Dump(m))
	}
	a.start()
	reg.register(api.AgentServiceRegistration{ID: keep, Name: keep, Address: "10.30.0.9", Port: 80})
	rec.WaitState(t, wait, "resynced", func(s *sdktest.State) bool {
		return p.stats.resyncs.Load() > 0 && sdktest.Absent("idx/"+gone)(s) && sdktest.HasAddresses("idx/"+keep, "10.30.0.9")(s)
	})
	// The resync lists everything once and sends the host only the difference: no second
	// snapshot.
	if n := p.stats.snapshots.Load(); n != 2 {
		t.Fatalf("%d listings, want 2", n)
	}
	if n := rec.Count(m, sdktest.Snapshot); n != 0 {
		t.Fatalf("%d new snapshots sent, want the difference only:\n%s", n, rec.Dump(m))
	}
	// And the new state is watched again.
	later := reg.name("later")
	reg.register(api.AgentServiceRegistration{ID: later, Name: later, Address: "10.30.0.3", Port: 80})
	rec.WaitState(t, wait, "watching after the resync", sdktest.HasAddresses("idx/"+later, "10.30.0.3"))
}

func TestIntegrationACLToken(t *testing.T) {
	root := fmt.Sprintf("root-%016x", rand.Uint64())
	a := startDevAgent(t, "acl", fmt.Sprintf(`acl { enabled = true
  default_policy = "deny"
  tokens { initial_management = %q
    agent = %q } }`, root, root))
	reg := newRegistrar(t, a.addr(), root)
	pub, priv := reg.name("public"), reg.name("private")
	reg.register(api.AgentServiceRegistration{ID: pub, Name: pub, Address: "10.40.0.1", Port: 80})
	reg.register(api.AgentServiceRegistration{ID: priv, Name: priv, Address: "10.40.0.2", Port: 80})

	// A token that reads only the public service.
	policy, _, err := reg.c.ACL().PolicyCreate(&api.ACLPolicy{Name: reg.name("reader"),
		Rules: fmt.Sprintf(`service %q { policy = "read" }
node_prefix "" { policy = "read" }`, pub)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	limited, _, err := reg.c.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("management token", func(t *testing.T) {
		_, rec := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern()}, map[string]string{"token": root})
		rec.WaitState(t, wait, "both services", func(s *sdktest.State) bool {
			return len(s.Services) == 2
		})
	})
	t.Run("limited token", func(t *testing.T) {
		_, rec := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern()}, map[string]string{"token": limited.SecretID})
		rec.WaitState(t, wait, "public service only", func(s *sdktest.State) bool {
			return len(s.Services) == 1 && sdktest.HasAddresses("acl/"+pub, "10.40.0.1")(s)
		})
	})
	t.Run("unknown token", func(t *testing.T) {
		bad := fmt.Sprintf("bad-%016x", rand.Uint64())
		_, rec := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern(), "datacenters": "acl"}, map[string]string{"token": bad})
		rec.WaitFor(t, 0, wait, "ACL error", func(ev sdktest.Event) bool {
			return ev.Kind == sdktest.Health && !ev.Connected && strings.Contains(ev.Message, "ACL not found")
		})
		for _, ev := range rec.Events(0) {
			if ev.Kind == sdktest.Snapshot {
				t.Errorf("snapshot with a rejected token")
			}
			if strings.Contains(ev.Message, bad) || strings.Contains(ev.Key, bad) {
				t.Errorf("token leaked: %s %s", ev.Kind, ev.Message)
			}
		}
	})
	t.Run("token in the environment is not used", func(t *testing.T) {
		t.Setenv("CONSUL_HTTP_TOKEN", root)
		_, rec := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern(), "datacenters": "acl"}, nil)
		// Anonymous reads under a deny policy see an empty catalog.
		rec.WaitState(t, wait, "nothing visible", func(s *sdktest.State) bool {
			return s.Synced && len(s.Services) == 0 // visible without a configured token
		})
	})
}
