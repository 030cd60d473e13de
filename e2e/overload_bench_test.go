package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/internal/procstat"
)

// BenchmarkOverload drives the host past what the API server accepts: the synthetic plugin
// changes one instance every 2 ms (500 changes/s, round robin over MELTEMI_BENCH_OVERLOAD_SERVICES
// services, default 1,000) for MELTEMI_BENCH_OVERLOAD_SECONDS (default 300). In the same run,
// before and after, a plain client-go server-side-apply loop (as many writers as the host has
// workers, every apply changing its object, the same options as the host's applies) measures the
// API server's floor over the same ServiceEntries in a namespace of its own. Reports:
//   - floor-before-writes/s, floor-after-writes/s, and the host's sustained ServiceEntry
//     writes/s over the churn (its first 10 s left out); ratio-vs-floor against the higher floor;
//   - writes, and distinct-changes: the (host, 100 ms window) pairs the schedule changed; the
//     host's writes must not exceed them;
//   - p50-ms / p99-ms / max-ms from each change to the watch seeing it, and fairness: max-ms
//     over the round-robin bound, services ÷ floor (how long a host waits when every host is
//     written once in turn at the API server's rate);
//   - rss-before-MiB (idle, initial state written), rss-max-MiB (sampled every second) and
//     rss-after-MiB (the churn just ended), and the deepest write queue seen;
//   - where the machine's CPU went: the API server's cores (during the higher floor's run and
//     during the churn) and its CPU per write (in either floor run and under the churn), and the
//     cores of the host and of its plugin during the churn, with the host's CPU per write. The machine's cores are shared,
//     so whatever the host and its plugin use the API server does not have.
//
// The host runs with the client-side write limit lifted (benchHostArgs), like the floor loop.
// With MELTEMI_BENCH_APISERVER_PROFILE_DIR set (and the API server started with
// MELTEMI_E2E_KUBE_PROFILING=true), it also writes CPU profiles of the API server during the
// first floor run and the churn there.
func BenchmarkOverload(b *testing.B) {
	env := harness.Load(b)
	services := benchEnvInt(b, "MELTEMI_BENCH_OVERLOAD_SERVICES", 1000)
	seconds := benchEnvInt(b, "MELTEMI_BENCH_OVERLOAD_SECONDS", 300)
	floorFor := time.Duration(benchEnvInt(b, "MELTEMI_BENCH_FLOOR_SECONDS", 30)) * time.Second
	const perSecond, window, warmup = 500, 100 * time.Millisecond, 10 * time.Second
	changes := perSecond * seconds
	for range b.N {
		c := benchCluster(b, env)
		name := uniqueName("syn-over")
		start := filepath.Join(b.TempDir(), "churn")
		opts := syntheticOptions(name, services, map[string]string{"churnEvents": strconv.Itoa(changes),
			"churnPerSecond": strconv.Itoa(perSecond), "churnStartFile": start, "stampChanges": "true"})
		stamps := watchStamps(b, c)
		br := startSyntheticHost(b, c, map[string]map[string]string{name: opts})
		waitMetric(b, env, br, 10*time.Minute, func(m string) error {
			if w := seWrites(m); w < float64(services) {
				return fmt.Errorf("%v of %d ServiceEntries written", w, services)
			}
			return nil
		})
		waitIdle(b, env, br, time.Second)

		floorNS := benchCluster(b, env)
		objs := floorObjects(listServiceEntries(b, c))
		if err := createLoop(context.Background(), floorNS, floorNS.namespace, objs, benchWorkers); err != nil {
			b.Fatal(err)
		}
		apiserver := env.PID(harness.KubeAPIServer)
		plugins := pluginChildren(b, br.cmd.Process.Pid)
		if apiserver == 0 || len(plugins) != 1 {
			b.Fatalf("API server pid %d, plugin pids %v: want both", apiserver, plugins)
		}
		var floorBefore, floorAfter float64
		floorCPU := [2]cpuUse{}
		profiled := profileAPIServer(b, c, "floor", floorFor-5*time.Second)
		floorCPU[0] = measureCPU(b, []int{apiserver}, func() { floorBefore = applyLoop(b, floorNS, objs, benchWorkers, floorFor) })
		profiled()

		rssBefore := rssOf(b, br)
		writesBefore := seWrites(br.metrics(b))
		touch(b, start)
		began := time.Now()
		rssMax, queueMax, writesAtWarmup := rssBefore, 0.0, -1.0
		pids := []int{apiserver, br.cmd.Process.Pid, plugins[0]}
		var churnCPU []time.Duration
		for time.Since(began) < time.Duration(seconds)*time.Second {
			time.Sleep(time.Second)
			m := br.metrics(b)
			rssMax = max(rssMax, rssOf(b, br))
			queueMax = max(queueMax, metricSum(m, "meltemi_sync_queue_depth"))
			if writesAtWarmup < 0 && time.Since(began) >= warmup {
				writesAtWarmup = seWrites(m)
				churnCPU = cpuTimes(b, pids)
				profiled = profileAPIServer(b, c, "churn", floorFor-5*time.Second)
			}
		}
		profiled()
		churnEnd := time.Since(began)
		churn := cpuUse{wall: churnEnd - warmup, cpu: subtract(cpuTimes(b, pids), churnCPU)}
		rssAfter := rssOf(b, br)
		sustained := (seWrites(br.metrics(b)) - writesAtWarmup) / (churnEnd - warmup).Seconds()

		// Every change is eventually written, and the last state of each instance wins.
		awaitRevisions(b, c, syntheticRevisions(b, name, opts, changes), 5*time.Minute)
		writes := waitIdle(b, env, br, time.Second) - writesBefore
		lat := stamps.settle(b, env, name+".bench", 2*time.Second)
		floorCPU[1] = measureCPU(b, []int{apiserver}, func() { floorAfter = applyLoop(b, floorNS, objs, benchWorkers, floorFor) })
		br.stop(b)

		floor, atFloor := floorBefore, floorCPU[0]
		if floorAfter > floorBefore {
			floor, atFloor = floorAfter, floorCPU[1]
		}
		distinct := distinctWindowChanges(services, perSecond, changes, window)
		if writes > float64(distinct) {
			b.Errorf("%v writes for %d distinct (host, %v window) changes", writes, distinct, window)
		}
		if len(lat) == 0 {
			b.Fatal("the watch saw no change")
		}
		bound := float64(services) / floor
		b.ReportMetric(floorBefore, "floor-before-writes/s")
		b.ReportMetric(floorAfter, "floor-after-writes/s")
		b.ReportMetric(sustained, "writes/s")
		b.ReportMetric(sustained/floor, "ratio-vs-floor")
		b.ReportMetric(writes, "writes")
		b.ReportMetric(float64(distinct), "distinct-changes")
		b.ReportMetric(writes/float64(distinct), "writes-per-distinct-change")
		b.ReportMetric(float64(len(lat)), "changes-seen")
		b.ReportMetric(benchstat.QuantileMs(lat, 0.5), "p50-ms")
		b.ReportMetric(benchstat.QuantileMs(lat, 0.99), "p99-ms")
		b.ReportMetric(benchstat.Ms(benchstat.Max(lat)), "max-ms")
		b.ReportMetric(benchstat.Ms(benchstat.Max(lat))/1000/bound, "max-wait-over-round-robin-bound")
		b.ReportMetric(rssBefore, "rss-before-MiB")
		b.ReportMetric(rssMax, "rss-max-MiB")
		b.ReportMetric(rssAfter, "rss-after-MiB")
		b.ReportMetric(queueMax, "max-queue-depth")
		b.ReportMetric(atFloor.cores(0), "apiserver-cores-floor")
		b.ReportMetric(floorCPU[0].msPer(0, floorBefore), "apiserver-cpu-ms/floor-before-write")
		b.ReportMetric(floorCPU[1].msPer(0, floorAfter), "apiserver-cpu-ms/floor-after-write")
		b.ReportMetric(churn.cores(0), "apiserver-cores-churn")
		b.ReportMetric(churn.msPer(0, sustained), "apiserver-cpu-ms/write")
		b.ReportMetric(churn.cores(1), "host-cores")
		b.ReportMetric(churn.msPer(1, sustained), "host-cpu-ms/write")
		b.ReportMetric(churn.cores(2), "plugin-cores")
	}
	b.ReportMetric(0, "ns/op")
}

// profileAPIServer takes a CPU profile of the API server for d, when
// MELTEMI_BENCH_APISERVER_PROFILE_DIR names a directory, into <dir>/apiserver-<phase>.pprof;
// the returned function waits for it. It shows where the API server's CPU per write goes in
// the floor loop and under the churn.
func profileAPIServer(b *testing.B, c *cluster, phase string, d time.Duration) (wait func()) {
	b.Helper()
	dir := os.Getenv("MELTEMI_BENCH_APISERVER_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	done := make(chan error, 1)
	go func() {
		raw, err := c.kube.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", strconv.Itoa(int(d.Seconds()))).DoRaw(context.Background())
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "apiserver-"+phase+".pprof"), raw, 0o644)
		}
		done <- err
	}()
	return sync.OnceFunc(func() {
		if err := <-done; err != nil {
			b.Errorf("profiling the API server (%s): %v", phase, err)
		}
	})
}

// distinctWindowChanges counts the (service, window) pairs the synthetic plugin's churn
// schedule touches: change k goes to service k mod services at k/perSecond seconds.
func distinctWindowChanges(services, perSecond, changes int, window time.Duration) int {
	type pair struct{ service, window int }
	seen := map[pair]bool{}
	for k := range changes {
		at := time.Duration(float64(k) / float64(perSecond) * float64(time.Second))
		seen[pair{k % services, int(at / window)}] = true
	}
	return len(seen)
}

// floorObjects are ServiceEntries with the spec the host wrote and none of its metadata: the
// host must not take them for its own.
func floorObjects(items []unstructured.Unstructured) []*unstructured.Unstructured {
	objs := make([]*unstructured.Unstructured, len(items))
	for i := range items {
		objs[i] = &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": items[i].GetAPIVersion(), "kind": items[i].GetKind(), "spec": items[i].Object["spec"]}}
		objs[i].SetName(items[i].GetName())
	}
	return objs
}

// applyLoop server-side applies objs round robin from workers goroutines for d, each apply
// with a label value of its own so that every one changes its object, and returns the
// applies per second.
func applyLoop(b *testing.B, c *cluster, objs []*unstructured.Unstructured, workers int, d time.Duration) float64 {
	b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(d)
	res := c.dyn.Resource(serviceEntries).Namespace(c.namespace)
	var next, done atomic.Int64
	var failed atomic.Value
	force := true
	var wg sync.WaitGroup
	began := time.Now()
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				n := next.Add(1)
				o := objs[int(n)%len(objs)].DeepCopy()
				o.SetLabels(map[string]string{"floor-rev": strconv.FormatInt(n, 10)})
				body, err := json.Marshal(o.Object)
				if err != nil {
					failed.Store(err)
					return
				}
				_, err = res.Patch(ctx, o.GetName(), types.ApplyPatchType, body,
					metav1.PatchOptions{FieldManager: "floor", Force: &force, FieldValidation: metav1.FieldValidationIgnore})
				if err != nil {
					failed.Store(fmt.Errorf("applying %s: %w", o.GetName(), err))
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return float64(done.Load()) / time.Since(began).Seconds()
}

func byName(items []unstructured.Unstructured) map[string]*unstructured.Unstructured {
	out := make(map[string]*unstructured.Unstructured, len(items))
	for i := range items {
		out[items[i].GetName()] = &items[i]
	}
	return out
}

// cpuUse is the CPU time processes used over a stretch of wall-clock time.
type cpuUse struct {
	wall time.Duration
	cpu  []time.Duration // per process, in the order measured
}

func (u cpuUse) cores(i int) float64 { return u.cpu[i].Seconds() / u.wall.Seconds() }

// msPer is process i's CPU milliseconds per event at rate events per second.
func (u cpuUse) msPer(i int, rate float64) float64 { return u.cores(i) * 1000 / rate }

func measureCPU(b *testing.B, pids []int, run func()) cpuUse {
	b.Helper()
	before, start := cpuTimes(b, pids), time.Now()
	run()
	return cpuUse{wall: time.Since(start), cpu: subtract(cpuTimes(b, pids), before)}
}

func cpuTimes(b *testing.B, pids []int) []time.Duration {
	b.Helper()
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		d, err := procstat.CPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = d
	}
	return out
}

func subtract(after, before []time.Duration) []time.Duration {
	out := make([]time.Duration, len(after))
	for i := range after {
		out[i] = after[i] - before[i]
	}
	return out
}

func rssOf(b *testing.B, br *bridge) float64 {
	b.Helper()
	rss, err := procstat.RSSMiB(br.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return rss
}
