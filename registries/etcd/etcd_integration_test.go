package etcd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

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
func (e *etcdEnv) start(t *testing.T) *sdktest.Recorder {
	t.Helper()
	return sdktest.Run(t, New(), sdk.Config{Registry: "it", Address: e.env.EtcdRegistryAddr,
		Options: map[string]string{"root": e.root, "dialTimeout": "1s"}})
}

func (e *etcdEnv) provider(iface, ip string, port int) string {
	return providerKeyFor(e.root, iface, fmt.Sprintf("dubbo://%s:%d/%s?application=app&version=1.0.0&timestamp=%d", ip, port, iface, time.Now().UnixNano()))
}

const wait = 20 * time.Second

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
	rec.WaitState(t, wait, "the snapshot", func(s *sdktest.State) bool {
		return len(s.Services) == 2 && sdktest.HasEndpoints(keyA, "10.0.0.1:20880", "10.0.0.2:20880")(s) &&
			sdktest.HasEndpoints(keyB, "10.0.1.1:20881")(s)
	})
	st := rec.State()
	if st.Snapshots != 1 || len(st.Rejected) != 1 || !strings.Contains(fmt.Sprint(st.Rejected), "not an IP address") {
		t.Errorf("snapshots %d, rejections %q", st.Snapshots, st.Rejected)
	}
	// The labels and host the ZooKeeper and Nacos plugins give the same provider.
	if svc := st.Services[keyA]; svc.Host != "com.example.a" ||
		!maps.Equal(svc.Instances[0].Labels, map[string]string{"application": "app", "version": "1.0.0"}) {
		t.Errorf("service %+v", svc)
	}

	// Changes: a provider joins B; A loses both, so A is deleted.
	m := rec.Mark()
	e.put(t, e.provider(b, "10.0.1.2", 20881))
	e.del(t, a1)
	e.del(t, a2)
	rec.WaitState(t, wait, "the changes", func(s *sdktest.State) bool {
		return len(s.Services) == 1 && sdktest.HasEndpoints(keyB, "10.0.1.1:20881", "10.0.1.2:20881")(s)
	})
	if ev := rec.WaitFor(t, m, wait, "a delete", func(ev sdktest.Event) bool { return ev.Kind == sdktest.Delete }); ev.Key != keyA {
		t.Errorf("deleted %s, want %s", ev.Key, keyA)
	}

	// A provider bound to a lease goes when the lease does (a Dubbo provider that died).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease, err := e.cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, e.provider(a, "10.0.0.3", 20880), clientv3.WithLease(lease.ID))
	rec.WaitState(t, wait, "the leased provider", sdktest.HasEndpoints(keyA, "10.0.0.3:20880"))
	if _, err := e.cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	rec.WaitState(t, wait, "the lease's end", sdktest.Absent(keyA))
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
	w, err := newWatcher(p.cfg, sdktest.NewRecorder(false))
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
	rec.WaitState(t, wait, "the snapshot", func(s *sdktest.State) bool {
		return len(s.Services) == 1 && sdktest.HasEndpoints(key, "10.0.3.1:1")(s)
	})
	m := rec.Mark()

	e.env.Stop(t, harness.EtcdRegistry)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			e.env.Start(t, harness.EtcdRegistry)
		}
	})
	rec.WaitState(t, wait, "the outage to be reported", func(s *sdktest.State) bool { return !s.Connected })
	e.env.Start(t, harness.EtcdRegistry)
	restarted = true
	rec.WaitState(t, wait, "the recovery to be reported", func(s *sdktest.State) bool { return s.Connected })
	e.put(t, e.provider(d, "10.0.3.2", 1))
	rec.WaitState(t, wait, "a change after the outage", func(s *sdktest.State) bool {
		return len(s.Services) == 1 && sdktest.HasEndpoints(key, "10.0.3.1:1", "10.0.3.2:1")(s)
	})
	if n := rec.Count(m, sdktest.Delete); n > 0 {
		t.Errorf("deletes during the outage:\n%s", rec.Dump(m))
	}
}
