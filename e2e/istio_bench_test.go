package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/internal/procstat"
)

// BenchmarkRegistryToSidecar measures what users feel: a Dubbo provider registered in real
// ZooKeeper until a sidecar's EDS (from real istiod) has its endpoint. 200 providers are
// registered one every 300 ms (istiod's debounce waits for 100 ms without changes, so changes
// closer together than that are pushed together, later), round robin over 20 interfaces; each
// is timed from just before its ZooKeeper create. Reported, p50 and p99 (nearest rank: the
// 198th of 200) in milliseconds:
//   - p50-ms / p99-ms / max-ms: the whole chain, registry → plugin → host → API server →
//     istiod → sidecar;
//   - meltemi-*: registry change → its ServiceEntry seen by a watch on the API server;
//   - istiod-*: that watch event → the sidecar's EDS update (istiod's debounce and push).
//
// The benchmark's name carries istiod's debounce (PILOT_DEBOUNCE_AFTER) it ran with.
func BenchmarkRegistryToSidecar(b *testing.B) {
	env := harness.Load(b)
	env.RequireComponent(b, harness.Istiod)
	b.Run("istiod-debounce="+env.IstiodDebounce+"ms", func(b *testing.B) {
		const interfaces, changes = 20, 200
		conn := connectZK(b, env)
		for range b.N {
			c := benchCluster(b, env)
			root := zkRoot(b, conn)
			tag := uniqueName("s2s")
			iface := func(i int) string { return fmt.Sprintf("org.meltemi.%s.Service%02d", tag, i) }
			cluster := func(i int) string { return "outbound|20880||" + strings.ToLower(iface(i)) }
			for i := range interfaces {
				if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: fmt.Sprintf("10.220.0.%d", i+1), Port: 20880, Interface: iface(i), Application: "bench"}); err != nil {
					b.Fatal(err)
				}
			}
			var mu sync.Mutex
			seSeen, edsSeen := map[string]time.Time{}, map[string]time.Time{}
			w := watchServiceEntries(b, c)
			go func() {
				for ev := range w.ResultChan() {
					now := time.Now()
					if se, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Deleted {
						mu.Lock()
						for _, a := range addresses(se) {
							if _, ok := seSeen[a]; !ok {
								seSeen[a] = now
							}
						}
						mu.Unlock()
					}
				}
			}()
			sc := env.JoinSidecar(b, c.kube, harness.SidecarOptions{Name: "bench-consumer", Namespace: c.namespace})
			sc.OnUpdate(func(v *harness.View) {
				mu.Lock()
				defer mu.Unlock()
				for i := range interfaces {
					eps, _ := v.EndpointsOf(cluster(i))
					for _, e := range eps {
						if _, ok := edsSeen[e.Address]; !ok {
							edsSeen[e.Address] = v.Received
						}
					}
				}
			})
			cfg := writeFile(b, "registries-"+root+".yaml", zkRegistryYAML(uniqueName("zk-s2s"), c.namespace, env.ZKAddr, root))
			br := startBenchHost(b, c, append([]string{"--config", cfg}, benchHostArgs...)...)
			seen := func(m map[string]time.Time, addrs []string) error {
				mu.Lock()
				defer mu.Unlock()
				for _, a := range addrs {
					if _, ok := m[a]; !ok {
						return fmt.Errorf("%s not seen yet", a)
					}
				}
				return nil
			}
			var base []string
			for i := range interfaces {
				base = append(base, fmt.Sprintf("10.220.0.%d", i+1))
			}
			env.Eventually(b, 60*time.Second, func() error { time.Sleep(50 * time.Millisecond); return seen(edsSeen, base) })
			waitIdle(b, env, br, time.Second)
			time.Sleep(time.Second) // istiod's pushes of the initial state are over

			registered := map[string]time.Time{}
			var addrs []string
			tick := time.NewTicker(300 * time.Millisecond)
			for k := range changes {
				<-tick.C
				addr := fmt.Sprintf("10.221.%d.%d", k/250, 1+k%250)
				t0 := time.Now()
				if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: addr, Port: 20880, Interface: iface(k % interfaces), Application: "bench"}); err != nil {
					b.Fatal(err)
				}
				registered[addr] = t0
				addrs = append(addrs, addr)
			}
			tick.Stop()
			env.Eventually(b, 60*time.Second, func() error { time.Sleep(50 * time.Millisecond); return seen(edsSeen, addrs) })
			w.Stop()
			sc.RequireNoProblems(b)
			mu.Lock()
			var total, meltemi, istiod []time.Duration
			for _, a := range addrs {
				t0, t1, t2 := registered[a], seSeen[a], edsSeen[a]
				total = append(total, t2.Sub(t0))
				meltemi = append(meltemi, t1.Sub(t0))
				istiod = append(istiod, t2.Sub(t1))
			}
			mu.Unlock()
			b.ReportMetric(benchstat.QuantileMs(total, 0.5), "p50-ms")
			b.ReportMetric(benchstat.QuantileMs(total, 0.99), "p99-ms")
			b.ReportMetric(benchstat.Ms(benchstat.Max(total)), "max-ms")
			b.ReportMetric(benchstat.QuantileMs(meltemi, 0.5), "meltemi-p50-ms")
			b.ReportMetric(benchstat.QuantileMs(meltemi, 0.99), "meltemi-p99-ms")
			b.ReportMetric(benchstat.QuantileMs(istiod, 0.5), "istiod-p50-ms")
			b.ReportMetric(benchstat.QuantileMs(istiod, 0.99), "istiod-p99-ms")
			br.stop(b)
		}
		b.ReportMetric(0, "ns/op")
	})
}

// istiodCPUSeconds is the CPU time (user and system) istiod has used.
func istiodCPUSeconds(b *testing.B, env *harness.Env) float64 {
	b.Helper()
	cpu, err := procstat.CPU(env.PID(harness.Istiod))
	if err != nil {
		b.Fatalf("reading istiod's CPU time: %v", err)
	}
	return cpu.Seconds()
}

func istiodPushes(b *testing.B, env *harness.Env) float64 {
	b.Helper()
	m, err := env.IstiodMetrics()
	if err != nil {
		b.Fatalf("istiod metrics: %v", err)
	}
	return harness.MetricSum(m, "pilot_xds_pushes")
}

// istiodSettle waits until istiod has made no push for quiet, and returns its push count.
func istiodSettle(b *testing.B, env *harness.Env, quiet time.Duration) float64 {
	b.Helper()
	last, since := -1.0, time.Now()
	var out float64
	env.Eventually(b, 10*time.Minute, func() error {
		p := istiodPushes(b, env)
		if p != last {
			last, since = p, time.Now()
		}
		if time.Since(since) < quiet {
			time.Sleep(200 * time.Millisecond)
			return fmt.Errorf("istiod pushed within the last %v", quiet)
		}
		out = p
		return nil
	})
	return out
}

// istiodLoad is what one way of writing n ServiceEntries cost istiod.
type istiodLoad struct {
	cpu, rss   float64 // CPU seconds from the first write until istiod settled; RSS after
	syncPushes float64 // pushes from the first write until istiod settled
	idlePushes float64 // pushes in a quiet 30 s wait after that: churn
	// syncSeconds is from the first write until the sidecar had every cluster: the pace
	// istiod saw the objects arrive at, which decides how many pushes it makes.
	syncSeconds float64
	// coldCPU is what a freshly started istiod spends until it has pushed the objects, already
	// all present, to a new sidecar: the cost of the objects themselves.
	coldCPU float64
}

// BenchmarkIstiodCost compares what istiod spends on Meltemi's ServiceEntries with what it
// spends on the very same ServiceEntries written by a plain client: MELTEMI_BENCH_ISTIOD_SIZES
// (default 1000,10000) services of 10 endpoints, each size run on a freshly started istiod with
// one connected sidecar. Reported per writer: istiod's CPU seconds from the first write until
// it has pushed everything (cpu-s), its RSS then (rss-MiB), and the pushes it makes in the
// 30 s after that while nothing changes (idle-pushes, goal 0); plus cpu-ratio = Meltemi /
// plain client. How many pushes istiod makes follows how long the writes take (sync-s: a
// push is made whenever writes pause for its debounce), so the objects' own cost is measured
// apart: cold-cpu-s is a fresh istiod's CPU until it has pushed them, all present at its
// start, to a new sidecar, and cold-cpu-ratio compares the two writers' objects.
func BenchmarkIstiodCost(b *testing.B) {
	env := harness.Load(b)
	env.RequireComponent(b, harness.Istiod)
	sizes := os.Getenv("MELTEMI_BENCH_ISTIOD_SIZES")
	if sizes == "" {
		sizes = "1000,10000"
	}
	for _, field := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || n <= 0 {
			b.Fatalf("MELTEMI_BENCH_ISTIOD_SIZES=%q: want positive integers", sizes)
		}
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for range b.N {
				var objs []*unstructured.Unstructured
				name := uniqueName("syn-istiod")
				meltemi := measureIstiod(b, env, n, name+".bench", func(c *cluster) {
					br := startSyntheticHost(b, c, map[string]map[string]string{name: syntheticOptions(name, n, nil)})
					waitMetric(b, env, br, 30*time.Minute, func(m string) error {
						if w := seWrites(m); w < float64(n) {
							return fmt.Errorf("%v of %d ServiceEntries written", w, n)
						}
						return nil
					})
					waitIdle(b, env, br, time.Second)
					br.stop(b)
					for _, it := range listServiceEntries(b, c) {
						o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": it.GetAPIVersion(), "kind": it.GetKind(), "spec": it.Object["spec"]}}
						o.SetName(it.GetName())
						objs = append(objs, o)
					}
				})
				plain := measureIstiod(b, env, n, name+".bench", func(c *cluster) {
					if err := createLoop(context.Background(), c, c.namespace, objs, benchWorkers); err != nil {
						b.Fatal(err)
					}
				})
				b.ReportMetric(meltemi.cpu, "meltemi-cpu-s")
				b.ReportMetric(plain.cpu, "plain-cpu-s")
				b.ReportMetric(meltemi.cpu/plain.cpu, "cpu-ratio")
				b.ReportMetric(meltemi.syncSeconds, "meltemi-sync-s")
				b.ReportMetric(plain.syncSeconds, "plain-sync-s")
				b.ReportMetric(meltemi.coldCPU/plain.coldCPU, "cold-cpu-ratio")
				b.ReportMetric(meltemi.coldCPU, "meltemi-cold-cpu-s")
				b.ReportMetric(plain.coldCPU, "plain-cold-cpu-s")
				b.ReportMetric(meltemi.rss, "meltemi-rss-MiB")
				b.ReportMetric(plain.rss, "plain-rss-MiB")
				// Pushes while writing: how the writes' pacing, not the objects, shows in the CPU.
				b.ReportMetric(meltemi.syncPushes, "meltemi-sync-pushes")
				b.ReportMetric(plain.syncPushes, "plain-sync-pushes")
				b.ReportMetric(meltemi.idlePushes, "meltemi-idle-pushes")
				b.ReportMetric(plain.idlePushes, "plain-idle-pushes")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// measureIstiod restarts istiod, joins a sidecar, has write put n ServiceEntries of hosts in
// domain into a namespace of their own, and measures istiod until it has pushed them and then
// while idle. The ServiceEntries are deleted afterwards.
func measureIstiod(b *testing.B, env *harness.Env, n int, domain string, write func(c *cluster)) istiodLoad {
	b.Helper()
	env.Restart(b, harness.Istiod)
	c := benchCluster(b, env)
	sc := env.JoinSidecar(b, c.kube, harness.SidecarOptions{Name: "cost-probe", Namespace: c.namespace})
	istiodSettle(b, env, 2*time.Second)
	cpu0, pushes0 := istiodCPUSeconds(b, env), istiodPushes(b, env)
	began := time.Now()
	write(c)
	awaitClusters(sc, n, domain)
	load := istiodLoad{syncSeconds: time.Since(began).Seconds()}
	settled := istiodSettle(b, env, 3*time.Second)
	load.cpu, load.syncPushes = istiodCPUSeconds(b, env)-cpu0, settled-pushes0
	if rss, err := procstat.RSSMiB(env.PID(harness.Istiod)); err == nil {
		load.rss = rss
	}
	time.Sleep(30 * time.Second)
	load.idlePushes = istiodPushes(b, env) - settled
	sc.RequireNoProblems(b)
	// The objects alone, without the pace they were written at: a fresh istiod loads them
	// all at once and pushes them to a new sidecar.
	env.Restart(b, harness.Istiod)
	cold := env.JoinSidecar(b, c.kube, harness.SidecarOptions{Name: "cost-probe-cold", Namespace: c.namespace})
	awaitClusters(cold, n, domain)
	istiodSettle(b, env, 3*time.Second)
	load.coldCPU = istiodCPUSeconds(b, env)
	cold.RequireNoProblems(b)
	if err := deleteAllServiceEntries(c); err != nil {
		b.Fatalf("deleting the ServiceEntries: %v", err)
	}
	return load
}

// awaitClusters waits until every one of n ServiceEntries of hosts in domain is a cluster
// of the sidecar's, with its endpoints.
func awaitClusters(sc *harness.Sidecar, n int, domain string) {
	sc.WaitFor(10*time.Minute, fmt.Sprintf("%d clusters of hosts in %s", n, domain), func(v *harness.View) error {
		got, assignments, clusters := 0, 0, 0
		for name, cla := range v.Endpoints {
			if strings.HasSuffix(name, "."+domain) {
				assignments++
				if len(cla.GetEndpoints()) > 0 {
					got++
				}
			}
		}
		if got < n {
			for name := range v.Clusters {
				if strings.HasSuffix(name, "."+domain) {
					clusters++
				}
			}
			return fmt.Errorf("%d of %d clusters with endpoints (%d clusters, %d load assignments of the domain)", got, n, clusters, assignments)
		}
		return nil
	})
}
