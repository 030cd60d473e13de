package xds

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestBuildResourceRefusesWhatProxiesWouldReject(t *testing.T) {
	noRoutes := routeConfig("a_1", "c")
	noRoutes.VirtualHosts[0].Routes = nil
	twoHosts := routeConfig("a_1", "c")
	twoHosts.VirtualHosts = append(twoHosts.VirtualHosts, clone(twoHosts).VirtualHosts[0])
	noHosts := routeConfig("a_1", "c")
	noHosts.VirtualHosts = nil
	badRegex := routeConfig("a_1", "c")
	badRegex.VirtualHosts[0].Routes[0].Match.Headers[0].GetStringMatch().MatchPattern =
		&matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{}} // regex required
	noAction := routeConfig("a_1", "c")
	noAction.VirtualHosts[0].Routes[1].Action = nil

	for _, tc := range []struct {
		name string
		key  string
		rc   *routev3.RouteConfiguration
		want string // substring of the error; "" for success
	}{
		{"valid", "a_1", routeConfig("a_1", "c"), ""},
		{"empty key", "", routeConfig("", "c"), "empty resource name"},
		{"nil", "a_1", nil, "nil route configuration"},
		{"name differs from key", "a_1", routeConfig("b_1", "c"), `named "b_1"`},
		{"no virtual host", "a_1", noHosts, "0 virtual hosts"},
		{"two virtual hosts", "a_1", twoHosts, "2 virtual hosts"},
		{"no routes", "a_1", noRoutes, "no routes"},
		{"empty regex", "a_1", badRegex, "invalid route configuration"},
		{"route without action", "a_1", noAction, "invalid route configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := buildResource(tc.key, tc.rc, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want == "" && (r.version == "" || r.any.GetTypeUrl() != RouteType):
				t.Fatalf("bad resource %+v", r)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestUpdateKeepsPreviousVersionOfInvalidEntry(t *testing.T) {
	s, err := New(Config{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(routes("a_1", "a1"))
	before := s.current()["a_1"]

	bad := routes("a_1", "a2", "b_1", "b1")
	bad["a_1"].VirtualHosts[0].Routes = nil
	bad["b_1"].Name = "wrong"
	s.Update(bad)

	after := s.current()
	if after["a_1"] != before {
		t.Fatal("an invalid entry replaced the version served before")
	}
	if _, ok := after["b_1"]; ok {
		t.Fatal("an invalid new entry is served")
	}
	if n := value(t, s.m.rejected); n != 2 {
		t.Fatalf("rejected_total = %v, want 2", n)
	}
	if n := value(t, s.m.resources); n != 1 {
		t.Fatalf("resources = %v, want 1", n)
	}
}

func TestVersionsAreContentHashes(t *testing.T) {
	one, _ := New(Config{Logger: discardLogger()})
	two, _ := New(Config{Logger: discardLogger()})
	one.Update(routes("a_1", "a1", "b_1", "b1"))
	two.Update(routes("b_1", "b1"))
	two.Update(routes("b_1", "b1", "a_1", "a1"))
	for _, n := range []string{"a_1", "b_1"} {
		if v1, v2 := one.current()[n].version, two.current()[n].version; v1 != v2 {
			t.Fatalf("%s: version %q on one replica, %q on the other", n, v1, v2)
		}
	}

	// The same content keeps its version; other content gets another.
	one.Update(routes("a_1", "a1", "b_1", "b2"))
	if one.current()["a_1"].version != two.current()["a_1"].version {
		t.Fatal("unchanged resource changed version")
	}
	if one.current()["b_1"].version == two.current()["b_1"].version {
		t.Fatal("changed resource kept its version")
	}
}

func TestSetVersion(t *testing.T) {
	a, _ := buildResource("a_1", routeConfig("a_1", "a1"), nil)
	b, _ := buildResource("b_1", routeConfig("b_1", "b1"), nil)
	b2, _ := buildResource("b_1", routeConfig("b_1", "b2"), nil)
	for _, tc := range []struct {
		name string
		got  string
		want string
		same bool
	}{
		{"nothing", setVersion(nil), "", true},
		{"one resource is its own version", setVersion([]*resource{a}), a.version, true},
		{"two differ from either", setVersion([]*resource{a, b}), a.version, false},
		{"content counts", setVersion([]*resource{a, b}), setVersion([]*resource{a, b2}), false},
		{"stable", setVersion([]*resource{a, b}), setVersion([]*resource{a, b}), true},
	} {
		if (tc.got == tc.want) != tc.same {
			t.Errorf("%s: %q vs %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestSelection(t *testing.T) {
	var sel selection
	add, remove, changed := sel.replace([]string{"a", "b"})
	if !changed || len(add) != 2 || len(remove) != 0 {
		t.Fatalf("replace [a b]: add %v remove %v changed %v", add, remove, changed)
	}
	if _, _, changed = sel.replace([]string{"b", "a"}); changed {
		t.Fatal("same names in another order counted as a change")
	}
	add, remove, changed = sel.replace([]string{"b", "*"})
	if !changed || len(add) != 0 || len(remove) != 1 || remove[0] != "a" || !sel.wildcard {
		t.Fatalf("replace [b *]: add %v remove %v changed %v wildcard %v", add, remove, changed, sel.wildcard)
	}
	if !sel.has("anything") {
		t.Fatal("wildcard does not select every name")
	}
	if _, _, changed = sel.replace([]string{"b"}); !changed || sel.wildcard || sel.has("a") {
		t.Fatal("dropping the wildcard")
	}
	if _, _, changed = sel.change(nil, []string{"not-subscribed"}); changed {
		t.Fatal("unsubscribing from an unknown name counted as a change")
	}
}

func TestUpdateNotifiesOnlyWatchersOfChangedNames(t *testing.T) {
	s, _ := New(Config{Logger: discardLogger()})
	s.Update(routes("a_1", "a1", "b_1", "b1"))
	wa, wb, wall := newWatcher(), newWatcher(), newWatcher()
	s.subscribe(wa, []string{"a_1"}, nil, false)
	s.subscribe(wb, []string{"b_1"}, nil, false)
	s.subscribe(wall, nil, nil, true)
	signalled := func(w *watcher) bool {
		select {
		case <-w.notify:
			return w.pending.Swap(0) != 0
		default:
			return false
		}
	}

	for _, step := range []struct {
		name          string
		update        map[string]*routev3.RouteConfiguration
		a, b, anyName bool
	}{
		{"same content", routes("b_1", "b1", "a_1", "a1"), false, false, false},
		{"b changes", routes("a_1", "a1", "b_1", "b2"), false, true, true},
		{"c appears", routes("a_1", "a1", "b_1", "b2", "c_1", "c1"), false, false, true},
		{"a removed", routes("b_1", "b2", "c_1", "c1"), true, false, true},
	} {
		s.Update(step.update)
		if got := [3]bool{signalled(wa), signalled(wb), signalled(wall)}; got != [3]bool{step.a, step.b, step.anyName} {
			t.Fatalf("%s: signalled a, b, wildcard = %v, want %v", step.name, got, [3]bool{step.a, step.b, step.anyName})
		}
	}
}
