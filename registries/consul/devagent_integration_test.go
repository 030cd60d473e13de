package consul

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
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

	r := runPlugin(t, east.addr(), map[string]string{"datacenters": "east,west", "services": re.pattern()}, nil)
	r.rec.await(t, "both datacenters", func(state map[string]sdk.Service) error {
		for _, check := range []func(map[string]sdk.Service) error{
			hasAddresses("east/"+web, "10.20.0.1"), hasAddresses("west/"+web, "10.21.0.1"), hasAddresses("east/"+only, "10.20.0.2"),
		} {
			if err := check(state); err != nil {
				return err
			}
		}
		return nil
	})
	e, _ := r.rec.service("east/" + web)
	w, _ := r.rec.service("west/" + web)
	// One host: the mesh merges both into one ServiceEntry, told apart by locality.
	if e.Host != web+".service.consul" || w.Host != e.Host {
		t.Errorf("hosts %q and %q, want both %s.service.consul", e.Host, w.Host, web)
	}
	if e.Instances[0].Locality != "east/e1" || w.Instances[0].Locality != "west" {
		t.Errorf("localities %q and %q", e.Instances[0].Locality, w.Instances[0].Locality)
	}

	// A change in one datacenter leaves the other alone.
	m := r.rec.mark()
	rw.deregister(web)
	r.rec.await(t, "west instance gone", absent("west/"+web))
	r.rec.await(t, "east kept", hasAddresses("east/"+web, "10.20.0.1"))
	for _, ev := range r.rec.since(m) {
		if strings.HasPrefix(ev.key, "east/") {
			t.Errorf("east service %s got %s", ev.key, ev.kind)
		}
	}

	t.Run("datacenter in the host", func(t *testing.T) {
		r := runPlugin(t, east.addr(), map[string]string{"datacenters": "east", "services": re.pattern(),
			"hostTemplate": "{{.Service}}.service.{{.Datacenter}}.consul"}, nil)
		r.rec.await(t, "host with datacenter", func(state map[string]sdk.Service) error {
			if h := state["east/"+web].Host; h != web+".service.east.consul" {
				return fmt.Errorf("host %q", h)
			}
			return nil
		})
	})
	t.Run("agent's own datacenter by default", func(t *testing.T) {
		r := runPlugin(t, west.addr(), map[string]string{"services": re.pattern()}, nil)
		r.rec.await(t, "west only", func(state map[string]sdk.Service) error {
			if len(state) != 0 {
				return fmt.Errorf("services %v; west has none left", state)
			}
			return nil
		})
	})
	t.Run("unknown datacenter", func(t *testing.T) {
		r := runPlugin(t, east.addr(), map[string]string{"datacenters": "east,north", "services": re.pattern()}, nil)
		r.rec.awaitEvent(t, 0, "error about north", func(ev emitted) bool {
			return ev.kind == "health" && !ev.ok && strings.Contains(ev.msg, "datacenter north")
		})
		if n := r.rec.count(0, "snapshot"); n != 0 {
			t.Errorf("a snapshot without datacenter north:\n%s", r.rec.dump(0))
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
	r := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern()}, nil)
	r.rec.await(t, "first snapshot", hasAddresses("idx/"+keep, "10.30.0.1"))
	m := r.rec.mark()

	// While the agent is down nothing goes. It comes back empty (a -dev agent keeps nothing),
	// as after a restore of an older snapshot: its indexes are lower than the plugin's.
	a.stop()
	r.rec.awaitEvent(t, m, "unhealthy", func(ev emitted) bool { return ev.kind == "health" && !ev.ok })
	time.Sleep(time.Second)
	if n := r.rec.count(m, "delete") + r.rec.count(m, "snapshot"); n > 0 {
		t.Fatalf("deletions while the agent is down:\n%s", r.rec.dump(m))
	}
	a.start()
	reg.register(api.AgentServiceRegistration{ID: keep, Name: keep, Address: "10.30.0.9", Port: 80})
	r.rec.await(t, "resynced", func(state map[string]sdk.Service) error {
		if r.p.stats.resyncs.Load() == 0 {
			return fmt.Errorf("no resync yet")
		}
		if err := absent("idx/" + gone)(state); err != nil {
			return err
		}
		return hasAddresses("idx/"+keep, "10.30.0.9")(state)
	})
	// The resync's snapshot may follow the watches' own updates: wait for it, then make sure
	// there was exactly one.
	r.rec.awaitEvent(t, m, "the resync's snapshot", func(ev emitted) bool { return ev.kind == "snapshot" })
	if n := r.rec.count(m, "snapshot"); n != 1 {
		t.Fatalf("%d new snapshots, want 1:\n%s", n, r.rec.dump(m))
	}
	// And the new state is watched again.
	later := reg.name("later")
	reg.register(api.AgentServiceRegistration{ID: later, Name: later, Address: "10.30.0.3", Port: 80})
	r.rec.await(t, "watching after the resync", hasAddresses("idx/"+later, "10.30.0.3"))
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
		r := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern()}, map[string]string{"token": root})
		r.rec.await(t, "both services", func(state map[string]sdk.Service) error {
			if len(state) != 2 {
				return fmt.Errorf("%d services", len(state))
			}
			return nil
		})
	})
	t.Run("limited token", func(t *testing.T) {
		r := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern()}, map[string]string{"token": limited.SecretID})
		r.rec.await(t, "public service only", func(state map[string]sdk.Service) error {
			if len(state) != 1 {
				return fmt.Errorf("%d services", len(state))
			}
			return hasAddresses("acl/"+pub, "10.40.0.1")(state)
		})
	})
	t.Run("unknown token", func(t *testing.T) {
		bad := fmt.Sprintf("bad-%016x", rand.Uint64())
		r := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern(), "datacenters": "acl"}, map[string]string{"token": bad})
		r.rec.awaitEvent(t, 0, "ACL error", func(ev emitted) bool {
			return ev.kind == "health" && !ev.ok && strings.Contains(ev.msg, "ACL not found")
		})
		for _, ev := range r.rec.since(0) {
			if ev.kind == "snapshot" {
				t.Errorf("snapshot with a rejected token")
			}
			if strings.Contains(ev.msg, bad) || strings.Contains(ev.key, bad) {
				t.Errorf("token leaked: %s %s", ev.kind, ev.msg)
			}
		}
	})
	t.Run("token in the environment is not used", func(t *testing.T) {
		t.Setenv("CONSUL_HTTP_TOKEN", root)
		r := runPlugin(t, a.addr(), map[string]string{"services": reg.pattern(), "datacenters": "acl"}, nil)
		// Anonymous reads under a deny policy see an empty catalog.
		r.rec.await(t, "nothing visible", func(state map[string]sdk.Service) error {
			if len(state) != 0 {
				return fmt.Errorf("services %v visible without a configured token", state)
			}
			return nil
		})
	})
}
