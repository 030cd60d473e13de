package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// cpuMeter reads the CPU time used by the API server, its etcd and this process, so that the
// benchmark can report costs that do not depend on what else the machine is running.
type cpuMeter struct{ pids []string }

func newCPUMeter(ke *kubeEnv) *cpuMeter {
	m := &cpuMeter{pids: []string{"self"}}
	for _, c := range []string{"kube-apiserver", "etcd"} {
		b, err := os.ReadFile(filepath.Join(ke.env.State, "pids", c+".pid"))
		if err != nil {
			return nil
		}
		m.pids = append(m.pids, strings.TrimSpace(string(b)))
	}
	return m
}

// seconds returns the CPU seconds (user+system) of the metered processes.
func (m *cpuMeter) seconds() float64 {
	if m == nil {
		return 0
	}
	var total float64
	for _, pid := range m.pids {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return 0
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			return 0
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (u + st) / 100 // USER_HZ
	}
	return total
}

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
//   - cpu-ratio: the same ratio for the CPU time used by kube-apiserver, etcd and the test
//     process (the cost that bounds throughput on a saturated machine; unlike wall time it
//     hardly depends on what else runs on the machine);
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
	meter := newCPUMeter(ke)
	objects := func(ns string) []*unstructured.Unstructured {
		out := make([]*unstructured.Unstructured, n)
		for i := range out {
			out[i] = serviceEntry(ns, fmt.Sprintf("svc-%05d", i), 10, "1.0.0")
		}
		return out
	}

	var base, rec phase
	var writes int
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		var pb, pr phase
		var w int
		if i%2 == 0 {
			pb = benchCreateLoop(b, ke, meter, plain, objects, workers)
			pr, w = benchReconciler(b, ke, meter, cfg, objects, workers)
		} else {
			pr, w = benchReconciler(b, ke, meter, cfg, objects, workers)
			pb = benchCreateLoop(b, ke, meter, plain, objects, workers)
		}
		b.Logf("iteration %d: %d services, %d workers: create loop %v (%.0f/s, cpu %.2fs), reconciler %v (%.0f/s, cpu %.2fs), ratio %.2f, cpu ratio %.2f, restart writes %d",
			i, n, workers, pb.wall.Round(time.Millisecond), float64(n)/pb.wall.Seconds(), pb.cpu,
			pr.wall.Round(time.Millisecond), float64(n)/pr.wall.Seconds(), pr.cpu,
			pr.wall.Seconds()/pb.wall.Seconds(), pr.cpu/pb.cpu, w)
		base.add(pb)
		rec.add(pr)
		writes += w
	}
	b.ReportMetric(base.wall.Seconds()/float64(b.N), "baseline-s")
	b.ReportMetric(rec.wall.Seconds()/float64(b.N), "reconciler-s")
	b.ReportMetric(rec.wall.Seconds()/base.wall.Seconds(), "ratio")
	if meter != nil && base.cpu > 0 {
		b.ReportMetric(base.cpu/float64(b.N), "baseline-cpu-s")
		b.ReportMetric(rec.cpu/float64(b.N), "reconciler-cpu-s")
		b.ReportMetric(rec.cpu/base.cpu, "cpu-ratio")
	}
	b.ReportMetric(float64(writes)/float64(b.N), "restart-writes")
	b.ReportMetric(0, "ns/op")
	if writes != 0 {
		b.Errorf("restart with unchanged desired state made %d writes", writes)
	}
}

type phase struct {
	wall time.Duration
	cpu  float64
}

func (p *phase) add(q phase) { p.wall += q.wall; p.cpu += q.cpu }

// benchCreateLoop creates the objects with a plain create loop and returns its duration.
func benchCreateLoop(b *testing.B, ke *kubeEnv, meter *cpuMeter, client dynamic.Interface, objects func(string) []*unstructured.Unstructured, workers int) phase {
	ns := ke.namespace(b)
	defer ke.deleteNamespace(b, ns)
	objs := objects(ns)
	work := make(chan *unstructured.Unstructured)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	cpu := meter.seconds()
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
	p := phase{wall: time.Since(start), cpu: meter.seconds() - cpu}
	if firstErr != nil {
		b.Fatalf("create loop: %v", firstErr)
	}
	return p
}

// benchReconciler syncs the objects through a Reconciler, then restarts it with the same
// desired set and counts the writes of the second one.
func benchReconciler(b *testing.B, ke *kubeEnv, meter *cpuMeter, cfg *rest.Config, objects func(string) []*unstructured.Unstructured, workers int) (phase, int) {
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
	cpu := meter.seconds()
	start := time.Now()
	for _, u := range objs {
		if err := rr.Set(u); err != nil {
			b.Fatal(err)
		}
	}
	rr.waitIdle(b)
	p := phase{wall: time.Since(start), cpu: meter.seconds() - cpu}
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
	return p, wc.total()
}
