package sdk

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

func svcAt(key, host string, addrs ...string) catalog.Service {
	s := catalog.Service{Key: key, Host: host}
	for _, a := range addrs {
		s.Instances = append(s.Instances, catalog.Instance{Address: a, Port: 80, Protocol: "http"})
	}
	return s
}

// describeChanges renders changes on one line each, for comparing.
func describeChanges(cs []Change) string {
	var out []string
	for _, c := range cs {
		switch c.Kind {
		case ChangeSnapshot:
			var keys []string
			for _, s := range c.Services {
				keys = append(keys, fmt.Sprintf("%s@%s%v", s.Key, s.Host, addresses(s)))
			}
			out = append(out, "snapshot "+strings.Join(keys, " "))
		case ChangeUpsert:
			out = append(out, fmt.Sprintf("upsert %s@%s%v", c.Key, c.Service.Host, addresses(c.Service)))
		case ChangeDelete:
			out = append(out, "delete "+c.Key)
		case ChangeReject:
			out = append(out, "reject "+c.Item+": "+c.Reason)
		}
	}
	return strings.Join(out, "\n")
}

func addresses(s catalog.Service) []string {
	var out []string
	for _, in := range s.Instances {
		out = append(out, in.Address)
	}
	return out
}

// TestPlan: what the plugin states, step by step, and what the host is told each time.
func TestPlan(t *testing.T) {
	type step struct {
		do   func(p *Plan) []Change
		want string
	}
	snapshot := func(s ...catalog.Service) func(*Plan) []Change {
		return func(p *Plan) []Change { return p.Snapshot(s) }
	}
	set := func(s catalog.Service) func(*Plan) []Change { return func(p *Plan) []Change { return p.Set(s) } }
	remove := func(k string) func(*Plan) []Change { return func(p *Plan) []Change { return p.Remove(k) } }
	reject := func(item, reason string) func(*Plan) []Change {
		return func(p *Plan) []Change { return p.Reject(item, reason) }
	}
	for _, tc := range []struct {
		name        string
		uniqueHosts bool
		steps       []step
	}{
		{name: "nothing before the first snapshot", steps: []step{
			{set(svcAt("a", "a.x", "10.0.0.1")), ""},
			{remove("a"), ""},
			{snapshot(svcAt("b", "b.x", "10.0.0.2"), svcAt("a", "a.x", "10.0.0.1")), "snapshot a@a.x[10.0.0.1] b@b.x[10.0.0.2]"},
		}},
		{name: "only changes after it", steps: []step{
			{snapshot(svcAt("a", "a.x", "10.0.0.1")), "snapshot a@a.x[10.0.0.1]"},
			{set(svcAt("a", "a.x", "10.0.0.1")), ""},
			{set(svcAt("a", "a.x", "10.0.0.2", "10.0.0.1")), "upsert a@a.x[10.0.0.1 10.0.0.2]"},
			{set(svcAt("a", "a.x", "10.0.0.1", "10.0.0.2")), ""}, // order does not matter
			{set(svcAt("b", "b.x", "10.0.0.3")), "upsert b@b.x[10.0.0.3]"},
			{remove("c"), ""},
			{remove("b"), "delete b"},
			{remove("b"), ""},
			{set(svcAt("a", "a.x")), "delete a"}, // no instances: gone
		}},
		{name: "empty services are not in a snapshot", steps: []step{
			{snapshot(svcAt("a", "a.x"), svcAt("b", "b.x", "10.0.0.1")), "snapshot b@b.x[10.0.0.1]"},
		}},
		{name: "a later snapshot sends the difference", steps: []step{
			{snapshot(svcAt("a", "a.x", "10.0.0.1"), svcAt("b", "b.x", "10.0.0.2")), "snapshot a@a.x[10.0.0.1] b@b.x[10.0.0.2]"},
			{snapshot(svcAt("b", "b.x", "10.0.0.2"), svcAt("c", "c.x", "10.0.0.3")), "delete a\nupsert c@c.x[10.0.0.3]"},
			{snapshot(svcAt("b", "b.x", "10.0.0.2"), svcAt("c", "c.x", "10.0.0.3")), ""},
		}},
		{name: "shared hosts allowed by default", steps: []step{
			{snapshot(svcAt("dc1/web", "web.x", "10.0.0.1"), svcAt("dc2/web", "web.x", "10.0.1.1")), "snapshot dc1/web@web.x[10.0.0.1] dc2/web@web.x[10.0.1.1]"},
		}},
		{name: "unique hosts: the first key keeps a host", uniqueHosts: true, steps: []step{
			{snapshot(svcAt("b", "h.x", "10.0.0.2"), svcAt("a", "h.x", "10.0.0.1")),
				"snapshot a@h.x[10.0.0.1]\nreject b: host h.x is already the host of a; make the host templates tell them apart"},
			// The blocked service changes: still blocked, reported once.
			{set(svcAt("b", "h.x", "10.0.0.3")), ""},
			// The holder goes: the waiting service takes the host, in its latest state.
			{remove("a"), "delete a\nupsert b@h.x[10.0.0.3]"},
			{set(svcAt("a", "h.x", "10.0.0.1")), "reject a: host h.x is already the host of b; make the host templates tell them apart"},
			// b moves to another host: a gets h.x.
			{set(svcAt("b", "other.x", "10.0.0.3")), "upsert a@h.x[10.0.0.1]\nupsert b@other.x[10.0.0.3]"},
			// a service that had a host and moves onto a taken one is deleted and reported.
			{set(svcAt("b", "h.x", "10.0.0.3")), "delete b\nreject b: host h.x is already the host of a; make the host templates tell them apart"},
		}},
		{name: "unique hosts: a waiting service that leaves the registry is forgotten", uniqueHosts: true, steps: []step{
			{snapshot(svcAt("a", "h.x", "10.0.0.1"), svcAt("b", "h.x", "10.0.0.2")), "snapshot a@h.x[10.0.0.1]\nreject b: host h.x is already the host of a; make the host templates tell them apart"},
			{remove("b"), ""},
			{remove("a"), "delete a"},
		}},
		{name: "rejections once per reason", steps: []step{
			{reject("node", "bad port"), "reject node: bad port"},
			{reject("node", "bad port"), ""},
			{reject("node", "bad address"), "reject node: bad address"},
			{reject("other", "bad port"), "reject other: bad port"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPlan(tc.uniqueHosts)
			for i, st := range tc.steps {
				if got := describeChanges(st.do(p)); got != st.want {
					t.Fatalf("step %d: got\n%s\nwant\n%s", i, got, st.want)
				}
			}
		})
	}
}

func TestPlanUnsentRestoresWhatTheHostHas(t *testing.T) {
	p := NewPlan(false)
	p.Snapshot([]catalog.Service{svcAt("a", "a.x", "10.0.0.1")})
	cs := p.Set(svcAt("a", "a.x", "10.0.0.2"))
	if len(cs) != 1 || !cs[0].Had {
		t.Fatalf("changes %+v", cs)
	}
	p.Unsent("a", cs[0].Prev, cs[0].Had)
	if got, _ := p.Sent("a"); addresses(got)[0] != "10.0.0.1" {
		t.Fatalf("sent %v after Unsent, want the previous state", got)
	}
	// Planned again, the same state is an upsert again.
	if got := describeChanges(p.Set(svcAt("a", "a.x", "10.0.0.2"))); got != "upsert a@a.x[10.0.0.2]" {
		t.Fatalf("got %q", got)
	}
	cs = p.Set(svcAt("new", "n.x", "10.0.0.9"))
	p.Unsent("new", cs[0].Prev, cs[0].Had)
	if _, ok := p.Sent("new"); ok {
		t.Fatal("an unsent new service counts as sent")
	}
}
