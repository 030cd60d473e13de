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

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
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

// sample returns the CPU seconds (user+system) of each metered process: this one, the API
// server, etcd.
func (m *cpuMeter) sample() cpuSample {
	var out cpuSample
	if m == nil {
		return out
	}
	for i, pid := range m.pids {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return cpuSample{}
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			return cpuSample{}
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		out[i] = (u + st) / 100 // USER_HZ
	}
	return out
}

// quiesce waits (up to 20 s) until the API server and etcd are nearly idle, so that one
// phase's leftovers (deleting the previous namespace's objects, garbage collection) are not
// charged to the next.
func (m *cpuMeter) quiesce() {
	if m == nil {
		return
	}
	prev := m.sample()
	for range 40 {
		time.Sleep(500 * time.Millisecond)
		cur := m.sample()
		d := cur.sub(prev)
		if d[1]+d[2] < 0.05 { // under 10% of one core
			return
		}
		prev = cur
	}
}

// cpuSample is CPU seconds of: this process, kube-apiserver, etcd.
type cpuSample [3]float64

func (a cpuSample) sub(b cpuSample) cpuSample {
	return cpuSample{a[0] - b[0], a[1] - b[1], a[2] - b[2]}
}
func (a cpuSample) total() float64 { return a[0] + a[1] + a[2] }
func (a cpuSample) String() string {
	return fmt.Sprintf("cpu %.2fs = client %.2fs + apiserver %.2fs + etcd %.2fs", a.total(), a[0], a[1], a[2])
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
//   - baseline-s: a plain client-go loop creating the objects (POST) with W concurrent writers;
//   - apply-loop-s: the same loop writing with server-side apply (the reconciler's request, no
//     informer, no queue): what server-side apply itself costs over a create;
//   - reconciler-s: the same objects through Set + WaitIdle with W workers (informer caches
//     synced beforehand, as in a running host);
//   - ratio: reconciler-s / baseline-s (goal <= 1.25); apply-ratio: reconciler-s / apply-loop-s;
//   - cpu-ratio: reconciler / baseline for the CPU time used by kube-apiserver, etcd and the
//     test process together (what bounds throughput when the machine is saturated);
//   - restart-writes: API writes made by a new Reconciler given the same desired set (must be 0).
//
// W = MELTEMI_BENCH_WORKERS, default 8. Client-side rate limits are off everywhere so the
// comparison measures the write path, not a token bucket. Each iteration runs the three in a
// rotated order, each into a fresh namespace, after waiting for the servers to go quiet.
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
	create := func(ctx context.Context, ns string, u *unstructured.Unstructured) error {
		_, err := plain.Resource(seGVR).Namespace(ns).Create(ctx, u, metav1.CreateOptions{FieldManager: "bench"})
		return err
	}
	apply := func(ctx context.Context, ns string, u *unstructured.Unstructured) error {
		// The request the reconciler makes for a create.
		d, err := normalize(u, nil, DefaultMaxObjectBytes)
		if err != nil {
			return err
		}
		body, _ := d.applyBody("")
		force := false
		_, err = plain.Resource(seGVR).Namespace(ns).Patch(ctx, u.GetName(), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "meltemi", Force: &force, FieldValidation: metav1.FieldValidationIgnore})
		return err
	}

	var base, appl, rec phase
	var writes int
	b.ResetTimer()
	// The timer runs through the arms: one iteration takes minutes at full size, so the
	// framework stops at b.N = 1 (a stopped timer would make it ask for ever more iterations).
	for i := range b.N {
		var pb, pa, pr phase
		var w int
		arms := []func(){
			func() { pb = benchLoop(b, ke, meter, create, objects, workers) },
			func() { pa = benchLoop(b, ke, meter, apply, objects, workers) },
			func() { pr, w = benchReconciler(b, ke, meter, cfg, objects, workers) },
		}
		for j := range arms {
			arms[(i+j)%len(arms)]()
		}
		b.Logf("iteration %d: %d services, %d workers: ratio %.2f, apply-ratio %.2f, cpu ratio %.2f, restart writes %d\n"+
			"  create loop %v (%.0f/s, %v)\n  apply loop  %v (%.0f/s, %v)\n  reconciler  %v (%.0f/s, %v)",
			i, n, workers, pr.wall.Seconds()/pb.wall.Seconds(), pr.wall.Seconds()/pa.wall.Seconds(), pr.cpu.total()/pb.cpu.total(), w,
			pb.wall.Round(time.Millisecond), float64(n)/pb.wall.Seconds(), pb.cpu,
			pa.wall.Round(time.Millisecond), float64(n)/pa.wall.Seconds(), pa.cpu,
			pr.wall.Round(time.Millisecond), float64(n)/pr.wall.Seconds(), pr.cpu)
		base.add(pb)
		appl.add(pa)
		rec.add(pr)
		writes += w
	}
	b.ReportMetric(base.wall.Seconds()/float64(b.N), "baseline-s")
	b.ReportMetric(appl.wall.Seconds()/float64(b.N), "apply-loop-s")
	b.ReportMetric(rec.wall.Seconds()/float64(b.N), "reconciler-s")
	b.ReportMetric(rec.wall.Seconds()/base.wall.Seconds(), "ratio")
	b.ReportMetric(rec.wall.Seconds()/appl.wall.Seconds(), "apply-ratio")
	if meter != nil && base.cpu.total() > 0 {
		b.ReportMetric(base.cpu.total()/float64(b.N), "baseline-cpu-s")
		b.ReportMetric(appl.cpu.total()/float64(b.N), "apply-loop-cpu-s")
		b.ReportMetric(rec.cpu.total()/float64(b.N), "reconciler-cpu-s")
		b.ReportMetric(rec.cpu.total()/base.cpu.total(), "cpu-ratio")
	}
	b.ReportMetric(float64(writes)/float64(b.N), "restart-writes")
	b.ReportMetric(0, "ns/op")
	if writes != 0 {
		b.Errorf("restart with unchanged desired state made %d writes", writes)
	}
}

type phase struct {
	wall time.Duration
	cpu  cpuSample
}

func (p *phase) add(q phase) {
	p.wall += q.wall
	p.cpu = cpuSample{p.cpu[0] + q.cpu[0], p.cpu[1] + q.cpu[1], p.cpu[2] + q.cpu[2]}
}

// benchLoop writes the objects with a plain loop of W workers and returns its cost.
func benchLoop(b *testing.B, ke *kubeEnv, meter *cpuMeter, write func(context.Context, string, *unstructured.Unstructured) error,
	objects func(string) []*unstructured.Unstructured, workers int) phase {
	ns := ke.namespace(b)
	defer harness.DeleteNamespace(b, ke.admin, ns)
	objs := objects(ns)
	work := make(chan *unstructured.Unstructured)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	meter.quiesce()
	cpu := meter.sample()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for u := range work {
				if err := write(context.Background(), ns, u); err != nil {
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
	p := phase{wall: time.Since(start), cpu: meter.sample().sub(cpu)}
	if firstErr != nil {
		b.Fatalf("write loop: %v", firstErr)
	}
	return p
}

// benchReconciler syncs the objects through a Reconciler, then restarts it with the same
// desired set and counts the writes of the second one.
func benchReconciler(b *testing.B, ke *kubeEnv, meter *cpuMeter, cfg *rest.Config, objects func(string) []*unstructured.Unstructured, workers int) (phase, int) {
	ns := ke.namespace(b)
	defer harness.DeleteNamespace(b, ke.admin, ns)
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
	meter.quiesce()
	cpu := meter.sample()
	start := time.Now()
	for _, u := range objs {
		if err := rr.Set(u); err != nil {
			b.Fatal(err)
		}
	}
	rr.waitIdle(b)
	p := phase{wall: time.Since(start), cpu: meter.sample().sub(cpu)}
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
