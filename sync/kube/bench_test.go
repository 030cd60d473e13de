package kube

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkInitialSync measures, against the real kube-apiserver, the initial sync of N
// ServiceEntries with 10 endpoints each (N = MELTEMI_BENCH_SERVICES, default 1000):
//   - baseline-s: a plain client-go loop creating the objects with W concurrent writers;
//   - reconciler-s: the same objects through Set + WaitIdle with W workers (informer caches
//     synced beforehand, as in a running host);
//   - ratio: reconciler-s / baseline-s (goal <= 1.25);
//   - restart-writes: API writes made by a new Reconciler given the same desired set (must be 0).
//
// W = MELTEMI_BENCH_WORKERS, default 8. Client-side rate limits are off on both sides so the
// comparison measures the write path, not a token bucket. Iterations alternate which side
// runs first.
func BenchmarkInitialSync(b *testing.B) {
	ke := loadKube(b)
	n := envInt(b, "MELTEMI_BENCH_SERVICES", 1000)
	workers := envInt(b, "MELTEMI_BENCH_WORKERS", 8)
	cfg := rest.CopyConfig(ke.cfg)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limiter
	plain, err := dynamic.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	objects := func(ns string) []*unstructured.Unstructured {
		out := make([]*unstructured.Unstructured, n)
		for i := range out {
			out[i] = serviceEntry(ns, fmt.Sprintf("svc-%05d", i), 10, "1.0.0")
		}
		return out
	}

	var base, rec time.Duration
	var writes int
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		var dBase, dRec time.Duration
		var w int
		if i%2 == 0 {
			dBase = benchCreateLoop(b, ke, plain, objects, workers)
			dRec, w = benchReconciler(b, ke, cfg, objects, workers)
		} else {
			dRec, w = benchReconciler(b, ke, cfg, objects, workers)
			dBase = benchCreateLoop(b, ke, plain, objects, workers)
		}
		b.Logf("iteration %d: %d services, %d workers: create loop %v (%.0f/s), reconciler %v (%.0f/s), ratio %.2f, restart writes %d",
			i, n, workers, dBase.Round(time.Millisecond), float64(n)/dBase.Seconds(),
			dRec.Round(time.Millisecond), float64(n)/dRec.Seconds(), dRec.Seconds()/dBase.Seconds(), w)
		base += dBase
		rec += dRec
		writes += w
	}
	b.ReportMetric(base.Seconds()/float64(b.N), "baseline-s")
	b.ReportMetric(rec.Seconds()/float64(b.N), "reconciler-s")
	b.ReportMetric(rec.Seconds()/base.Seconds(), "ratio")
	b.ReportMetric(float64(writes)/float64(b.N), "restart-writes")
	b.ReportMetric(0, "ns/op")
	if writes != 0 {
		b.Errorf("restart with unchanged desired state made %d writes", writes)
	}
}

// benchCreateLoop creates the objects with a plain create loop and returns its duration.
func benchCreateLoop(b *testing.B, ke *kubeEnv, client dynamic.Interface, objects func(string) []*unstructured.Unstructured, workers int) time.Duration {
	ns := ke.namespace(b)
	defer ke.deleteNamespace(b, ns)
	objs := objects(ns)
	work := make(chan *unstructured.Unstructured)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for u := range work {
				if _, err := client.Resource(seGVR).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{FieldManager: "bench"}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, u := range objs {
		work <- u
	}
	close(work)
	wg.Wait()
	d := time.Since(start)
	if firstErr != nil {
		b.Fatalf("create loop: %v", firstErr)
	}
	return d
}

// benchReconciler syncs the objects through a Reconciler, then restarts it with the same
// desired set and counts the writes of the second one.
func benchReconciler(b *testing.B, ke *kubeEnv, cfg *rest.Config, objects func(string) []*unstructured.Unstructured, workers int) (time.Duration, int) {
	ns := ke.namespace(b)
	defer ke.deleteNamespace(b, ns)
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	tweak := func(c *Config) {
		c.Workers = workers
		c.QPS, c.Burst = 1e6, 1e6
		c.Registerer = prometheus.NewRegistry()
	}
	rr := newReconciler(b, client, ns, tweak).start(b)
	rr.waitIdle(b) // caches synced, nothing to do yet
	objs := objects(ns)
	start := time.Now()
	for _, u := range objs {
		if err := rr.Set(u); err != nil {
			b.Fatal(err)
		}
	}
	rr.waitIdle(b)
	d := time.Since(start)
	if s := rr.Stats(); s.Creates != int64(len(objs)) || s.Errors != 0 {
		b.Fatalf("reconciler stats %+v, want %d creates and no errors", s, len(objs))
	}
	rr.AllowDeletes()
	rr.settle(b)
	rr.stop(b)

	counted := rest.CopyConfig(cfg)
	wc := &writeCounter{}
	counted.WrapTransport = wc.wrap
	client2, err := dynamic.NewForConfig(counted)
	if err != nil {
		b.Fatal(err)
	}
	second := newReconciler(b, client2, ns, tweak)
	for _, u := range objects(ns) {
		if err := second.Set(u); err != nil {
			b.Fatal(err)
		}
	}
	second.start(b)
	second.AllowDeletes()
	second.settle(b)
	second.stop(b)
	return d, wc.total()
}
