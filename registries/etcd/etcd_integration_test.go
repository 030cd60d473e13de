package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// recorder is an Emitter that keeps the state the events describe.
type recorder struct {
	mu        sync.Mutex
	services  map[string]sdk.Service
	snapshots int
	deletes   []string
	rejects   []string
	health    []bool
}

func newRecorder() *recorder { return &recorder{services: map[string]sdk.Service{}} }

func (r *recorder) Snapshot(services []sdk.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snapshots++
	r.services = map[string]sdk.Service{}
	for _, s := range services {
		r.services[s.Key] = s
	}
}

func (r *recorder) Upsert(svc sdk.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.services[svc.Key] = svc
}

func (r *recorder) Delete(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deletes = append(r.deletes, key)
	delete(r.services, key)
}

func (r *recorder) Health(connected bool, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.health = append(r.health, connected)
}

func (r *recorder) Reject(item, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejects = append(r.rejects, item+": "+reason)
}

// endpoints renders the recorded services as "key=addr:port,...", sorted.
func (r *recorder) endpoints() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for key, s := range r.services {
		var eps []string
		for _, in := range s.Instances {
			eps = append(eps, fmt.Sprintf("%s:%d", in.Address, in.Port))
		}
		out = append(out, key+"="+strings.Join(eps, ","))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

type etcdEnv struct {
	env  *harness.Env
	cli  *clientv3.Client
	root string
}

func connect(t *testing.T) *etcdEnv {
	t.Helper()
	env := harness.Load(t)
	env.RequireComponent(t, harness.EtcdRegistry)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{env.EtcdRegistryAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	e := &etcdEnv{env: env, cli: cli, root: fmt.Sprintf("dubbo-it-%08x", rand.Uint32())}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = cli.Delete(ctx, "/"+e.root+"/", clientv3.WithPrefix())
		cli.Close()
	})
	return e
}

func (e *etcdEnv) put(t *testing.T, key string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.Put(ctx, key, "v", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func (e *etcdEnv) del(t *testing.T, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
}

// start runs the plugin's Watch against the real etcd until the test ends.
func (e *etcdEnv) start(t *testing.T) *recorder {
	t.Helper()
	p := New()
	if err := p.Configure(context.Background(), sdk.Config{Registry: "it", Address: e.env.EtcdRegistryAddr,
		Options: map[string]string{"root": e.root, "dialTimeout": "1s"}}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, rec) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("watch ended with %v", err)
		}
	})
	return rec
}

func (e *etcdEnv) provider(iface, ip string, port int) string {
	return providerKeyFor(e.root, iface, fmt.Sprintf("dubbo://%s:%d/%s?application=app&version=1.0.0&timestamp=%d", ip, port, iface, time.Now().UnixNano()))
}

func eventually(t *testing.T, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatchFollowsEtcd(t *testing.T) {
	e := connect(t)
	const a, b = "com.example.A", "com.example.B"
	a1, a2 := e.provider(a, "10.0.0.1", 20880), e.provider(a, "10.0.0.2", 20880)
	e.put(t, a1)
	e.put(t, a2)
	e.put(t, e.provider(b, "10.0.1.1", 20881))
	e.put(t, "/"+e.root+"/"+b+"/providers/dubbo%3A%2F%2Fnot-an-ip%3A1%2F"+b) // garbage
	e.put(t, "/"+e.root+"/"+b+"/consumers/consumer%3A%2F%2F10.9.9.9%2F"+b)   // not a provider
	page := listPage
	t.Cleanup(func() { listPage = page }) // after the watch has stopped
	listPage = 2                          // the listing takes several pages
	rec := e.start(t)

	keyA, keyB := e.root+":"+a, e.root+":"+b
	want := keyA + "=10.0.0.1:20880,10.0.0.2:20880 " + keyB + "=10.0.1.1:20881"
	eventually(t, "the snapshot", func() bool { return rec.endpoints() == want })
	rec.mu.Lock()
	if rec.snapshots != 1 || len(rec.rejects) != 1 || !strings.Contains(rec.rejects[0], "not an IP address") {
		t.Errorf("snapshots %d, rejections %q", rec.snapshots, rec.rejects)
	}
	if svc := rec.services[keyA]; svc.Host != "com.example.a" || svc.Instances[0].Labels["application"] != "app" || svc.Instances[0].Labels["timestamp"] != "" {
		t.Errorf("service %+v", svc)
	}
	rec.mu.Unlock()

	// Changes: a provider joins B; A loses both, so A is deleted.
	e.put(t, e.provider(b, "10.0.1.2", 20881))
	e.del(t, a1)
	e.del(t, a2)
	eventually(t, "the changes", func() bool { return rec.endpoints() == keyB+"=10.0.1.1:20881,10.0.1.2:20881" })
	if rec.deletes[0] != keyA {
		t.Errorf("deletes %v", rec.deletes)
	}

	// A provider bound to a lease goes when the lease does (a Dubbo provider that died).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease, err := e.cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, e.provider(a, "10.0.0.3", 20880), clientv3.WithLease(lease.ID))
	eventually(t, "the leased provider", func() bool { return strings.Contains(rec.endpoints(), keyA+"=10.0.0.3:20880") })
	if _, err := e.cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lease's end", func() bool { return !strings.Contains(rec.endpoints(), keyA) })
}

func TestCompactedRevisionMeansRelist(t *testing.T) {
	e := connect(t)
	first := e.put(t, e.provider("com.example.C", "10.0.2.1", 1))
	last := e.put(t, e.provider("com.example.C", "10.0.2.2", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	p := New().(*Plugin)
	if err := p.Configure(ctx, sdk.Config{Address: e.env.EtcdRegistryAddr, Options: map[string]string{"root": e.root}}); err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher(p.cfg, newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if _, err := w.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.watch(ctx, first); !errors.Is(err, errCompacted) {
		t.Errorf("watching a compacted revision: %v, want errCompacted", err)
	}
}

// An etcd outage is reported, deletes nothing, and the watch carries on afterwards.
func TestOutageKeepsState(t *testing.T) {
	e := connect(t)
	const d = "com.example.D"
	e.put(t, e.provider(d, "10.0.3.1", 1))
	rec := e.start(t)
	key := e.root + ":" + d
	eventually(t, "the snapshot", func() bool { return rec.endpoints() == key+"=10.0.3.1:1" })

	e.env.Stop(t, harness.EtcdRegistry)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			e.env.Start(t, harness.EtcdRegistry)
		}
	})
	eventually(t, "the outage to be reported", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.health) > 0 && !rec.health[len(rec.health)-1]
	})
	e.env.Start(t, harness.EtcdRegistry)
	restarted = true
	eventually(t, "the recovery to be reported", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.health[len(rec.health)-1]
	})
	e.put(t, e.provider(d, "10.0.3.2", 1))
	eventually(t, "a change after the outage", func() bool { return rec.endpoints() == key+"=10.0.3.1:1,10.0.3.2:1" })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.deletes) > 0 {
		t.Errorf("deletes during the outage: %v", rec.deletes)
	}
}
