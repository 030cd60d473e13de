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

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
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
func startFake(t *testing.T, f *fakeRegistry, options map[string]string, tune func(*config)) *running {
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
	r := &running{p: p, rec: newRecorder(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- p.Watch(ctx, r.rec) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("watch: %v", err)
		}
	})
	return r
}

const quick = 5 * time.Second

func id(ns, group, name string) serviceID { return serviceID{ns, group, name} }

func TestWatcherSnapshotThenChanges(t *testing.T) {
	f := newFakeRegistry()
	orders := id("public", defaultGroup, "orders")
	f.add(orders, nil, "10.0.0.1:80", "10.0.0.2:81")
	r := startFake(t, f, nil, nil)

	r.rec.wait(t, quick, "snapshot", func(r *recorder) bool { return r.snapshots == 1 })
	if s, ok := r.rec.service(orders.String()); !ok || s.Host != "orders.nacos" || strings.Join(addrs(s), ",") != "10.0.0.1:80,10.0.0.2:81" {
		t.Fatalf("snapshot state = %+v", s)
	}
	f.set(orders, nil, "10.0.0.2:81")
	r.rec.wait(t, quick, "one endpoint", hasEndpoints(orders.String(), "10.0.0.2:81"))
	f.set(orders, nil)
	r.rec.wait(t, quick, "deleted", absent(orders.String()))

	billing := id("public", defaultGroup, "billing")
	f.add(billing, nil, "10.0.1.1:80")
	r.rec.wait(t, quick, "new service", hasEndpoints(billing.String(), "10.0.1.1:80"))
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
	r := startFake(t, f, map[string]string{"dubboHostTemplate": "{{.Interface}}{{with .Version}}.v{{.}}{{end}}"}, nil)

	const key = "dubbo:org.example.Greeter"
	r.rec.wait(t, quick, "merged service", hasEndpoints(key, "10.0.0.1:20880", "10.0.0.2:20880"))
	if s, _ := r.rec.service(key); s.Host != "org.example.greeter" || s.Instances[0].Protocol != "dubbo" {
		t.Fatalf("service = %+v", s)
	}
	f.set(v2, nil)
	r.rec.wait(t, quick, "host with the remaining version", func(r *recorder) bool {
		return hasEndpoints(key, "10.0.0.1:20880")(r) && r.state[key].Host == "org.example.greeter.v1.0.0"
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
	r := startFake(t, f, map[string]string{"recoveryGrace": "0"}, nil)
	r.rec.wait(t, quick, "both", func(r *recorder) bool { return len(r.state) == 2 })

	f.remove(b)
	r.rec.wait(t, quick, "b deleted", absent(b.String()))
	if subscribers, _, _ := f.counts(); subscribers != 1 || r.p.stats.subscriptions.Load() != 1 {
		t.Errorf("subscribers = %d, subscriptions = %d; want 1 and 1", subscribers, r.p.stats.subscriptions.Load())
	}
	// Coming back, it is subscribed again.
	f.add(b, nil, "10.0.0.3:80")
	r.rec.wait(t, quick, "b back", hasEndpoints(b.String(), "10.0.0.3:80"))
}

func TestWatcherKeepsServicesWhenListingFails(t *testing.T) {
	f := newFakeRegistry()
	a := id("public", defaultGroup, "a")
	f.add(a, nil, "10.0.0.1:80")
	r := startFake(t, f, nil, nil)
	r.rec.wait(t, quick, "a", hasEndpoints(a.String(), "10.0.0.1:80"))

	f.mu.Lock()
	f.listErr = errors.New("connection refused")
	f.mu.Unlock()
	r.rec.wait(t, quick, "unhealthy", func(r *recorder) bool { return !r.healthy && strings.Contains(r.healthMsg, "connection refused") })
	time.Sleep(100 * time.Millisecond) // several failed listings
	f.mu.Lock()
	f.listErr = nil
	f.mu.Unlock()
	r.rec.wait(t, quick, "healthy again", func(r *recorder) bool { return r.healthy })
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	if r.rec.deletes != 0 || !hasEndpoints(a.String(), "10.0.0.1:80")(r.rec) {
		t.Errorf("deletes = %d, state = %v; want nothing removed", r.rec.deletes, r.rec.state)
	}
}

func TestWatcherRecoveryGrace(t *testing.T) {
	f := newFakeRegistry()
	a, b := id("public", defaultGroup, "a"), id("public", defaultGroup, "b")
	f.add(a, nil, "10.0.0.1:80", "10.0.0.2:80")
	f.add(b, nil, "10.0.1.1:80")
	r := startFake(t, f, map[string]string{"recoveryGrace": "1s"}, nil)
	r.rec.wait(t, quick, "both", func(r *recorder) bool { return len(r.state) == 2 })

	// The server goes away: it comes back empty, and the applications register again late.
	f.mu.Lock()
	f.connected = false
	f.mu.Unlock()
	r.rec.wait(t, quick, "disconnected", func(r *recorder) bool { return !r.healthy })
	f.set(a, nil)
	f.set(b, nil)
	f.remove(b)
	f.mu.Lock()
	f.connected = true
	f.mu.Unlock()
	r.rec.wait(t, quick, "reconnected", func(r *recorder) bool { return r.healthy })
	f.set(a, nil, "10.0.0.1:80", "10.0.0.3:80") // one back, one new, one missing
	r.rec.wait(t, quick, "the new instance added, the missing one kept", hasEndpoints(a.String(), "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	r.rec.mu.Lock()
	deletes := r.rec.deletes
	r.rec.mu.Unlock()
	if deletes != 0 {
		t.Fatalf("%d deletes during the outage and the grace", deletes)
	}

	// After the grace, what is still missing goes.
	r.rec.wait(t, quick, "converged", func(r *recorder) bool {
		return hasEndpoints(a.String(), "10.0.0.1:80", "10.0.0.3:80")(r) && absent(b.String())(r)
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
	r := startFake(t, f, map[string]string{"groups": "g1,g2", "hostTemplate": "{{.Service}}.example", "recoveryGrace": "0"}, nil)
	r.rec.wait(t, quick, "first holds the host, second rejected", func(r *recorder) bool {
		return hasEndpoints(first.String(), "10.0.0.1:80")(r) && strings.Contains(r.rejected[second.String()], "already the host of")
	})
	if _, ok := r.rec.service(second.String()); ok {
		t.Fatal("two services with one host")
	}
	f.set(first, nil)
	r.rec.wait(t, quick, "second takes the host", func(r *recorder) bool {
		return absent(first.String())(r) && hasEndpoints(second.String(), "10.0.0.2:80")(r)
	})
}

func TestWatcherRejectsBadInstancesAndKeepsTheRest(t *testing.T) {
	f := newFakeRegistry()
	a := id("public", defaultGroup, "a")
	f.add(a, nil, "10.0.0.1:80", "not-an-ip:80", "10.0.0.2:0")
	r := startFake(t, f, nil, nil)
	r.rec.wait(t, quick, "the good instance and two rejections", func(r *recorder) bool {
		return hasEndpoints(a.String(), "10.0.0.1:80")(r) && len(r.rejected) == 2
	})
	for item, reason := range r.rec.rejected {
		if !strings.HasPrefix(item, "public/DEFAULT_GROUP/a/") || reason == "" {
			t.Errorf("rejection %q: %q", item, reason)
		}
	}
}

func TestWatcherChecksEmptySubscriptionsAgain(t *testing.T) {
	f := newFakeRegistry()
	a := id("public", defaultGroup, "a")
	f.add(a, nil)
	r := startFake(t, f, nil, nil)
	r.rec.wait(t, quick, "snapshot", func(r *recorder) bool { return r.snapshots == 1 })

	// A lost push: the registry has the instance, but the subscriber never heard of it.
	f.mu.Lock()
	f.instances[a] = []nacosmodel.Instance{{Ip: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Enable: true}}
	f.mu.Unlock()
	r.rec.wait(t, quick, "found by subscribing again", hasEndpoints(a.String(), "10.0.0.1:80"))
	if _, subscribes, unsubscribes := f.counts(); subscribes < 2 || unsubscribes != subscribes-1 {
		t.Errorf("subscribes = %d, unsubscribes = %d: a check must replace the subscription", subscribes, unsubscribes)
	}
}

var _ sdk.Emitter = (*recorder)(nil)
