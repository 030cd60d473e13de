package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/registries/dubbo/dubbotest"

	"github.com/go-zookeeper/zk"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

func BenchmarkParseInstanceJSON(b *testing.B) {
	b.ReportAllocs()
	data := []byte(dubbo3Instance)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseInstanceJSON(data); err != nil {
			b.Fatal(err)
		}
	}
}

// countingEmitter is the SDK's plan without a stream: it signals snapshots and counts
// upserts, and keeps what the SDK keeps of what it sent, so memory measurements see what a
// plugin process holds.
type countingEmitter struct {
	mu        sync.Mutex
	plan      *sdk.Plan
	snapshots chan []catalog.Service
	upserts   atomic.Int64
}

func newCountingEmitter() *countingEmitter {
	return &countingEmitter{plan: sdk.NewPlan(false), snapshots: make(chan []catalog.Service, 1)}
}

func (c *countingEmitter) decide(step func(*sdk.Plan) []sdk.Change) bool {
	c.mu.Lock()
	changes := step(c.plan)
	c.mu.Unlock()
	for _, ch := range changes {
		switch ch.Kind {
		case sdk.ChangeSnapshot:
			c.snapshots <- ch.Services
		case sdk.ChangeUpsert:
			c.upserts.Add(1)
		}
	}
	return len(changes) > 0
}

func (c *countingEmitter) Snapshot(s []catalog.Service) {
	c.decide(func(p *sdk.Plan) []sdk.Change { return p.Snapshot(s) })
}
func (c *countingEmitter) Set(svc catalog.Service) bool {
	return c.decide(func(p *sdk.Plan) []sdk.Change { return p.Set(svc) })
}
func (c *countingEmitter) Remove(key string) bool {
	return c.decide(func(p *sdk.Plan) []sdk.Change { return p.Remove(key) })
}
func (c *countingEmitter) Sent(key string) (catalog.Service, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plan.Sent(key)
}
func (c *countingEmitter) SentKeys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plan.SentKeys()
}
func (c *countingEmitter) Health(bool, string)   {}
func (c *countingEmitter) Reject(string, string) {}

// BenchmarkInitialListing measures connecting and listing N interfaces with 10 providers each
// (N from MELTEMI_BENCH_ZK_INTERFACES, default 1000) until the snapshot is emitted.
func BenchmarkInitialListing(b *testing.B) {
	addr := zkAddr(b)
	n := benchInterfaces(b)
	const perIface = 10
	chroot := fmt.Sprintf("/meltemi-bench-%08x", rand.Uint32())
	start := time.Now()
	populate(b, addr, chroot, n, perIface)
	b.Logf("populated %d interfaces × %d providers in %s", n, perIface, time.Since(start).Round(time.Millisecond))

	var retained, listed float64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p := New().(*Plugin)
		if err := p.Configure(context.Background(), sdk.Config{Registry: "bench", Address: addr + chroot}); err != nil {
			b.Fatal(err)
		}
		e := newCountingEmitter()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()

		go func() { done <- p.Watch(ctx, e) }()
		var snap []catalog.Service
		select {
		case snap = <-e.snapshots:
		case <-time.After(10 * time.Minute):
			b.Fatal("no snapshot within 10 minutes")
		}

		b.StopTimer()
		instances := 0
		for _, s := range snap {
			instances += len(s.Instances)
		}
		if len(snap) != n || instances != n*perIface {
			b.Fatalf("snapshot has %d services and %d instances, want %d and %d", len(snap), instances, n, n*perIface)
		}
		// What the running plugin holds: the heap while it runs minus the heap once it stopped.
		snap = nil
		listed = float64(p.stats.reads.Load())
		running := heapAfterGC()
		cancel()
		<-done
		p = nil
		stopped := heapAfterGC()
		b.Logf("heap running %d MiB, stopped %d MiB", running>>20, stopped>>20)
		retained = float64(running-stopped) / (1 << 20)
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "interfaces")
	b.ReportMetric(float64(n*perIface), "instances")
	b.ReportMetric(retained, "retained-MiB")
	b.ReportMetric(listed, "reads")
}

// benchInterfaces is the number of interfaces to list: MELTEMI_BENCH_ZK_INTERFACES, default 1000.
func benchInterfaces(b *testing.B) int {
	b.Helper()
	v := os.Getenv("MELTEMI_BENCH_ZK_INTERFACES")
	if v == "" {
		return 1000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("MELTEMI_BENCH_ZK_INTERFACES=%q is not a positive number", v)
	}
	return n
}

// BenchmarkResync measures one periodic resync of N interfaces with 10 providers each (N
// as for BenchmarkInitialListing) in a running session where nothing changed: what the
// default resyncInterval costs ZooKeeper and the plugin every 10 minutes.
func BenchmarkResync(b *testing.B) {
	addr := zkAddr(b)
	n := benchInterfaces(b)
	chroot := fmt.Sprintf("/meltemi-bench-%08x", rand.Uint32())
	populate(b, addr, chroot, n, 10)

	p := New().(*Plugin)
	p.inject = make(chan func(*watcher))
	if err := p.Configure(context.Background(), sdk.Config{Registry: "bench", Address: addr + chroot}); err != nil {
		b.Fatal(err)
	}
	e := newCountingEmitter()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, e) }()
	defer func() { cancel(); <-done }()
	select {
	case <-e.snapshots:
	case <-time.After(10 * time.Minute):
		b.Fatal("no snapshot within 10 minutes")
	}
	watches, reads := p.stats.watches.Load(), p.stats.reads.Load()

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.inject <- func(w *watcher) { w.resyncDue = true }
		p.inject <- func(*watcher) {} // taken once the resync is over
	}
	b.StopTimer()
	if r := p.stats.repaired.Load(); r != 0 || e.upserts.Load() != 0 {
		b.Fatalf("resyncs of an unchanged registry repaired %d services and sent %d upserts", r, e.upserts.Load())
	}
	if w := p.stats.watches.Load(); w != watches {
		b.Fatalf("watches %d after resyncs, %d before", w, watches)
	}
	b.ReportMetric(float64(n*10), "instances")
	b.ReportMetric(float64(p.stats.reads.Load()-reads)/float64(p.stats.resyncs.Load()), "reads/resync")
}

func heapAfterGC() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// populate writes n interfaces with perIface ephemeral providers each below chroot, in
// parallel multi-operations, and removes them when the benchmark ends.
func populate(b *testing.B, addr, chroot string, n, perIface int) {
	b.Helper()
	conn, _, err := zk.Connect(strings.Split(addr, ","), 30*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietLogger{}))
	if err != nil {
		b.Fatal(err)
	}
	acl := zk.WorldACL(zk.PermAll)
	for _, p := range []string{chroot, chroot + "/dubbo"} {
		if _, err := conn.Create(p, nil, 0, acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			b.Fatal(err)
		}
	}
	ifacePath := func(i int) string {
		return chroot + "/dubbo/" + dubbotest.EncodeURL(fmt.Sprintf("com.example.bench.Service%05d", i))
	}
	const batch = 20 // interfaces per multi-operation
	providers := make([][]string, n)
	parallel(b, n, batch, func(lo, hi int) error {
		var ops []any
		for i := lo; i < hi; i++ {
			iface := fmt.Sprintf("com.example.bench.Service%05d", i)
			p := ifacePath(i)
			ops = append(ops, &zk.CreateRequest{Path: p, Acl: acl}, &zk.CreateRequest{Path: p + "/providers", Acl: acl})
			for j := range perIface {
				u := providerURL("dubbo", fmt.Sprintf("10.%d.%d.%d", j, i/250%250, i%250+1), 20880, iface, "version=1.0.0&group=bench")
				providers[i] = append(providers[i], p+"/providers/"+dubbotest.EncodeURL(u))
				ops = append(ops, &zk.CreateRequest{Path: providers[i][j], Acl: acl, Flags: zk.FlagEphemeral})
			}
		}
		_, err := conn.Multi(ops...)
		return err
	})
	b.Cleanup(func() {
		// Delete the ephemeral providers explicitly rather than by closing the session: the
		// server logs a session's close together with every ephemeral path it removes, and a
		// transaction larger than its jute.maxbuffer (1 MiB) cannot be replayed at restart.
		defer conn.Close()
		parallel(b, n, batch, func(lo, hi int) error {
			var ops []any
			for i := lo; i < hi; i++ {
				for _, p := range providers[i] {
					ops = append(ops, &zk.DeleteRequest{Path: p, Version: -1})
				}
				ops = append(ops, &zk.DeleteRequest{Path: ifacePath(i) + "/providers", Version: -1}, &zk.DeleteRequest{Path: ifacePath(i), Version: -1})
			}
			_, err := conn.Multi(ops...)
			return err
		})
		for _, p := range []string{chroot + "/dubbo", chroot} {
			if err := conn.Delete(p, -1); err != nil {
				b.Logf("cleanup: delete %s: %v", p, err)
			}
		}
	})
}

// parallel runs f over [0,n) in chunks of size on a few goroutines.
func parallel(b *testing.B, n, size int, f func(lo, hi int) error) {
	var wg sync.WaitGroup
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	for range 8 {
		wg.Go(func() {
			for {
				lo := int(next.Add(int64(size))) - size
				if lo >= n {
					return
				}
				if err := f(lo, min(lo+size, n)); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

// BenchmarkWatchLatency measures the time from a registry change (the start of the
// ZooKeeper write) to the plugin's Upsert of the service, alternating an added and a removed
// provider. It reports the 50th and 99th percentiles.
func BenchmarkWatchLatency(b *testing.B) {
	addr := zkAddr(b)
	chroot := testChroot(b)
	w := newWriter(b, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, ""))
	for i := range 50 { // a little company, so the listing is not trivial
		iface := fmt.Sprintf("com.example.Other%d", i)
		w.register("dubbo", iface, providerURL("dubbo", "10.0.0.2", 20880, iface, ""))
	}
	rec := sdktest.Run(b, New(), sdk.Config{Registry: "test", Address: addr + chroot})
	rec.WaitFor(b, 0, wait, "snapshot", sdktest.IsSnapshot)

	latencies := make([]time.Duration, 0, b.N)
	writes := make([]time.Duration, 0, b.N)
	added := ""
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := rec.Mark()
		start := time.Now()
		want := 2
		if added == "" {
			added = w.register("dubbo", demoIface, providerURL("dubbo", "10.0.1.1", 20880+i%100, demoIface, ""))
		} else {
			w.delete(added)
			added, want = "", 1
		}
		writes = append(writes, time.Since(start))
		j := rec.WaitFor(b, m, wait, "upsert", sdktest.IsUpsert("dubbo:"+demoIface, want))
		latencies = append(latencies, j.At.Sub(start))
	}
	b.StopTimer()
	b.ReportMetric(benchstat.QuantileMs(latencies, 0.5), "p50-ms")
	b.ReportMetric(benchstat.QuantileMs(latencies, 0.99), "p99-ms")
	b.ReportMetric(benchstat.QuantileMs(writes, 0.5), "write-p50-ms")
}
