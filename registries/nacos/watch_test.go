package nacos

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

// fakeRegistry stands in for Nacos in the watcher's unit tests: it lists what it is told and
// pushes instance lists to its subscribers as the client library does.
type fakeRegistry struct {
	mu           sync.Mutex
	listed       map[string][]serviceID // namespace -> services
	listErr      error
	instances    map[serviceID][]nacosmodel.Instance
	subscribers  map[serviceID]func([]nacosmodel.Instance)
	subscribes   int
	unsubscribes int
	connected    bool
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{
		listed: map[string][]serviceID{}, instances: map[serviceID][]nacosmodel.Instance{},
		subscribers: map[serviceID]func([]nacosmodel.Instance){}, connected: true,
	}
}

func (f *fakeRegistry) Namespaces(context.Context) ([]string, error) {
	return nil, errors.New("no console API")
}

func (f *fakeRegistry) Services(_ context.Context, ns string, groups groupSet) ([]serviceID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []serviceID
	for _, id := range f.listed[ns] {
		if groups.all || slices.Contains(groups.names, id.group) {
			out = append(out, id)
		}
	}
	return out, nil
}

func (f *fakeRegistry) Subscribe(id serviceID, push func([]nacosmodel.Instance)) (func(), error) {
	f.mu.Lock()
	f.subscribers[id] = push
	f.subscribes++
	current := slices.Clone(f.instances[id])
	f.mu.Unlock()
	push(current)
	return func() {
		f.mu.Lock()
		delete(f.subscribers, id)
		f.unsubscribes++
		f.mu.Unlock()
	}, nil
}

func (f *fakeRegistry) Connected() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.connected {
		return true, ""
	}
	return false, "server gone"
}

func (f *fakeRegistry) Close() {}

// add lists a service with instances at the given addresses (ip:port).
func (f *fakeRegistry) add(id serviceID, md map[string]string, addrs ...string) {
	f.mu.Lock()
	if !slices.Contains(f.listed[id.namespace], id) {
		f.listed[id.namespace] = append(f.listed[id.namespace], id)
	}
	f.mu.Unlock()
	f.set(id, md, addrs...)
}

// set changes a service's instances and pushes them to its subscriber.
func (f *fakeRegistry) set(id serviceID, md map[string]string, addrs ...string) {
	hosts := make([]nacosmodel.Instance, 0, len(addrs))
	for _, a := range addrs {
		ip, port, _ := strings.Cut(a, ":")
		p := uint64(0)
		for _, c := range port {
			p = p*10 + uint64(c-'0')
		}
		hosts = append(hosts, nacosmodel.Instance{Ip: ip, Port: p, Weight: 1, Healthy: true, Enable: true, Metadata: md})
	}
	f.mu.Lock()
	f.instances[id] = hosts
	push := f.subscribers[id]
	f.mu.Unlock()
	if push != nil {
		push(slices.Clone(hosts))
	}
}

// remove takes a service out of the listing.
func (f *fakeRegistry) remove(id serviceID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listed[id.namespace] = slices.DeleteFunc(f.listed[id.namespace], func(x serviceID) bool { return x == id })
}

func (f *fakeRegistry) counts() (subscribers, subscribes, unsubscribes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subscribers), f.subscribes, f.unsubscribes
}

// startFake runs the plugin's watch against a fake registry with short intervals.
func startFake(t *testing.T, f *fakeRegistry, options map[string]string, tune func(*config)) (*Plugin, *sdktest.Recorder) {
	t.Helper()
	p := New().(*Plugin)
	if err := p.Configure(context.Background(), sdkConfig("nacos.test:8848", options)); err != nil {
		t.Fatal(err)
	}
	p.cfg.listInterval = 20 * time.Millisecond
	if tune != nil {
		tune(p.cfg)
	}
	p.newRegistry = func(context.Context, *config) (registry, error) { return f, nil }
	return p, sdktest.Watch(t, p)
}

const quick = 5 * time.Second

func id(ns, group, name string) serviceID { return serviceID{ns, group, name} }

func TestWatcherSnapshotThenChanges(t *testing.T) {
	f := newFakeRegistry()
	orders := id("public", defaultGroup, "orders")
	f.add(orders, nil, "10.0.0.1:80", "10.0.0.2:81")
	_, rec := startFake(t, f, nil, nil)

	rec.WaitState(t, quick, "snapshot", func(s *sdktest.State) bool { return s.Snapshots == 1 })
	if s, ok := rec.Service(orders.String()); !ok || s.Host != "orders.nacos" || strings.Join(sdktest.Endpoints(s), ",") != "10.0.0.1:80,10.0.0.2:81" {
		t.Fatalf("snapshot state = %+v", s)
	}
	f.set(orders, nil, "10.0.0.2:81")
	rec.WaitState(t, quick, "one endpoint", sdktest.HasEndpoints(orders.String(), "10.0.0.2:81"))
	f.set(orders, nil)
	rec.WaitState(t, quick, "deleted", sdktest.Absent(orders.String()))

	billing := id("public", defaultGroup, "billing")
	f.add(billing, nil, "10.0.1.1:80")
	rec.WaitState(t, quick, "new service", sdktest.HasEndpoints(billing.String(), "10.0.1.1:80"))
}

func TestWatcherMergesDubboVersionsIntoOneService(t *testing.T) {
	f := newFakeRegistry()
	v1 := id("public", defaultGroup, "providers:org.example.Greeter:1.0.0:")
	v2 := id("public", defaultGroup, "providers:org.example.Greeter:2.0.0:")
	consumer := id("public", defaultGroup, "consumers:org.example.Greeter:1.0.0:")
	f.add(v1, map[string]string{"version": "1.0.0", "application": "greeter"}, "10.0.0.1:20880")
	f.add(v2, map[string]string{"version": "2.0.0", "application": "greeter"}, "10.0.0.2:20880")
	f.add(consumer, map[string]string{"side": "consumer"}, "10.0.9.9:1")
	// The version is part of the host only while all providers share it.
	_, rec := startFake(t, f, map[string]string{"dubboHostTemplate": "{{.Interface}}{{with .Version}}.v{{.}}{{end}}"}, nil)

	const key = "dubbo:org.example.Greeter"
	rec.WaitState(t, quick, "merged service", sdktest.HasEndpoints(key, "10.0.0.1:20880", "10.0.0.2:20880"))
	if s, _ := rec.Service(key); s.Host != "org.example.greeter" || s.Instances[0].Protocol != "dubbo" {
		t.Fatalf("service = %+v", s)
	}
	f.set(v2, nil)
	rec.WaitState(t, quick, "host with the remaining version", func(s *sdktest.State) bool {
		return sdktest.HasEndpoints(key, "10.0.0.1:20880")(s) && s.Services[key].Host == "org.example.greeter.v1.0.0"
	})
	if subscribers, _, _ := f.counts(); subscribers != 2 {
		t.Errorf("subscribers = %d, want 2 (the consumer is not subscribed)", subscribers)
	}
}

func TestWatcherUnsubscribesFromRemovedServices(t *testing.T) {
	f := newFakeRegistry()
	a, b := id("public", defaultGroup, "a"), id("public", defaultGroup, "b")
	f.add(a, nil, "10.0.0.1:80")
	f.add(b, nil, "10.0.0.2:80")
	p, rec := startFake(t, f, map[string]string{"recoveryGrace": "0"}, nil)
	rec.WaitState(t, quick, "both", func(s *sdktest.State) bool { return len(s.Services) == 2 })

	f.remove(b)
	rec.WaitState(t, quick, "b deleted", sdktest.Absent(b.String()))
	if subscribers, _, _ := f.counts(); subscribers != 1 || p.stats.subscriptions.Load() != 1 {
		t.Errorf("subscribers = %d, subscriptions = %d; want 1 and 1", subscribers, p.stats.subscriptions.Load())
	}
	// Coming back, it is subscribed again.
	f.add(b, nil, "10.0.0.3:80")
	rec.WaitState(t, quick, "b back", sdktest.HasEndpoints(b.String(), "10.0.0.3:80"))
}

func TestWatcherKeepsServicesWhenListingFails(t *testing.T) {
	f := newFakeRegistry()
	a := id("public", defaultGroup, "a")
	f.add(a, nil, "10.0.0.1:80")
	_, rec := startFake(t, f, nil, nil)
	rec.WaitState(t, quick, "a", sdktest.HasEndpoints(a.String(), "10.0.0.1:80"))

	f.mu.Lock()
	f.listErr = errors.New("connection refused")
	f.mu.Unlock()
	rec.WaitState(t, quick, "unhealthy", func(s *sdktest.State) bool {
		return !s.Connected && strings.Contains(s.HealthMessage, "connection refused")
	})
	time.Sleep(100 * time.Millisecond) // several failed listings
	f.mu.Lock()
	f.listErr = nil
	f.mu.Unlock()
	rec.WaitState(t, quick, "healthy again", func(s *sdktest.State) bool { return s.Connected })
	if st := rec.State(); st.Deletes != 0 || !sdktest.HasEndpoints(a.String(), "10.0.0.1:80")(&st) {
		t.Errorf("deletes = %d, state = %v; want nothing removed", st.Deletes, st.Services)
	}
}

func TestWatcherRecoveryGrace(t *testing.T) {
	f := newFakeRegistry()
	a, b := id("public", defaultGroup, "a"), id("public", defaultGroup, "b")
	f.add(a, nil, "10.0.0.1:80", "10.0.0.2:80")
	f.add(b, nil, "10.0.1.1:80")
	_, rec := startFake(t, f, map[string]string{"recoveryGrace": "1s"}, nil)
	rec.WaitState(t, quick, "both", func(s *sdktest.State) bool { return len(s.Services) == 2 })

	// The server goes away: it comes back empty, and the applications register again late.
	f.mu.Lock()
	f.connected = false
	f.mu.Unlock()
	rec.WaitState(t, quick, "disconnected", func(s *sdktest.State) bool { return !s.Connected })
	f.set(a, nil)
	f.set(b, nil)
	f.remove(b)
	f.mu.Lock()
	f.connected = true
	f.mu.Unlock()
	rec.WaitState(t, quick, "reconnected", func(s *sdktest.State) bool { return s.Connected })
	f.set(a, nil, "10.0.0.1:80", "10.0.0.3:80") // one back, one new, one missing
	rec.WaitState(t, quick, "the new instance added, the missing one kept", sdktest.HasEndpoints(a.String(), "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	if deletes := rec.State().Deletes; deletes != 0 {
		t.Fatalf("%d deletes during the outage and the grace", deletes)
	}

	// After the grace, what is still missing goes.
	rec.WaitState(t, quick, "converged", func(s *sdktest.State) bool {
		return sdktest.HasEndpoints(a.String(), "10.0.0.1:80", "10.0.0.3:80")(s) && sdktest.Absent(b.String())(s)
	})
	if subscribers, _, _ := f.counts(); subscribers != 1 {
		t.Errorf("subscribers = %d after the grace, want 1", subscribers)
	}
}

func TestWatcherRefusesDuplicateHosts(t *testing.T) {
	f := newFakeRegistry()
	first, second := id("public", "g1", "orders"), id("public", "g2", "orders")
	f.add(first, nil, "10.0.0.1:80")
	f.add(second, nil, "10.0.0.2:80")
	_, rec := startFake(t, f, map[string]string{"groups": "g1,g2", "hostTemplate": "{{.Service}}.example", "recoveryGrace": "0"}, nil)
	rec.WaitState(t, quick, "first holds the host, second rejected", func(s *sdktest.State) bool {
		return sdktest.HasEndpoints(first.String(), "10.0.0.1:80")(s) && strings.Contains(s.Rejected[second.String()], "already the host of")
	})
	if _, ok := rec.Service(second.String()); ok {
		t.Fatal("two services with one host")
	}
	f.set(first, nil)
	rec.WaitState(t, quick, "second takes the host", func(s *sdktest.State) bool {
		return sdktest.Absent(first.String())(s) && sdktest.HasEndpoints(second.String(), "10.0.0.2:80")(s)
	})
}

func TestWatcherRejectsBadInstancesAndKeepsTheRest(t *testing.T) {
	f := newFakeRegistry()
	a := id("public", defaultGroup, "a")
	f.add(a, nil, "10.0.0.1:80", "not-an-ip:80", "10.0.0.2:0")
	_, rec := startFake(t, f, nil, nil)
	rec.WaitState(t, quick, "the good instance and two rejections", func(s *sdktest.State) bool {
		return sdktest.HasEndpoints(a.String(), "10.0.0.1:80")(s) && len(s.Rejected) == 2
	})
	for item, reason := range rec.State().Rejected {
		if !strings.HasPrefix(item, "public/DEFAULT_GROUP/a/") || reason == "" {
			t.Errorf("rejection %q: %q", item, reason)
		}
	}
}

func TestWatcherChecksEmptySubscriptionsAgain(t *testing.T) {
	f := newFakeRegistry()
	a := id("public", defaultGroup, "a")
	f.add(a, nil)
	_, rec := startFake(t, f, nil, nil)
	rec.WaitState(t, quick, "snapshot", func(s *sdktest.State) bool { return s.Snapshots == 1 })

	// A lost push: the registry has the instance, but the subscriber never heard of it.
	f.mu.Lock()
	f.instances[a] = []nacosmodel.Instance{{Ip: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Enable: true}}
	f.mu.Unlock()
	rec.WaitState(t, quick, "found by subscribing again", sdktest.HasEndpoints(a.String(), "10.0.0.1:80"))
	if _, subscribes, unsubscribes := f.counts(); subscribes < 2 || unsubscribes != subscribes-1 {
		t.Errorf("subscribes = %d, unsubscribes = %d: a check must replace the subscription", subscribes, unsubscribes)
	}
}
