package e2e

// Benchmarks of the whole host: the meltemi binary with real plugin processes against the real
// API server. Load comes from the synthetic registry plugin (and, for one latency benchmark,
// from real ZooKeeper). Sizes come from the environment:
//   - MELTEMI_BENCH_SERVICES (default 1000; `make bench` sets 10000): services of 10 instances
//     for the initial sync and restart benchmarks;
//   - MELTEMI_BENCH_INSTANCES (default 100000): instances held for the memory benchmark.
// Each benchmark works in a namespace of its own, deleted at the end.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/internal/procstat"
	"github.com/meltemi-mesh/meltemi/registries/synthetic"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

const (
	benchInstancesPerService = 10
	// benchWorkers is the host's default --workers; the create loop uses as many writers.
	benchWorkers = synckube.DefaultWorkers
)

// benchHostArgs are the host flags of every benchmark: quiet logs (the test keeps them in
// memory), and the client-side write limit lifted so that the API server, not the default
// 200 writes/s token bucket, bounds the initial sync, as it bounds the create loop.
var benchHostArgs = []string{"--log-level", "warn", "--kube-write-qps", "100000", "--kube-write-burst", "100000"}

func benchEnvInt(b *testing.B, name string, def int) int {
	b.Helper()
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

// syntheticOptions returns the options of a synthetic registry of n services with hosts of
// its own (<key>.<name>.bench).
func syntheticOptions(name string, services int, extra map[string]string) map[string]string {
	opts := map[string]string{"services": strconv.Itoa(services), "instancesPerService": strconv.Itoa(benchInstancesPerService), "domain": name + ".bench"}
	maps.Copy(opts, extra)
	return opts
}

// startSyntheticHost starts meltemi with the given synthetic registries (name -> options).
func startSyntheticHost(b *testing.B, c *cluster, regs map[string]map[string]string, args ...string) *bridge {
	b.Helper()
	var docs []string
	for _, name := range slices.Sorted(maps.Keys(regs)) {
		docs = append(docs, syntheticRegistryYAML(name, c.namespace, "", regs[name]))
	}
	cfg := writeFile(b, "registries-"+uniqueName("h")+".yaml", strings.Join(docs, "---\n"))
	all := append([]string{"--config", cfg}, benchHostArgs...)
	return startBenchHost(b, c, append(all, args...)...)
}

// benchCluster is newCluster whose ServiceEntries are deleted at the end: without a
// namespace controller, deleting the namespace leaves them in place.
func benchCluster(b *testing.B, env *harness.Env) *cluster {
	b.Helper()
	c := newCluster(b, env)
	b.Cleanup(func() {
		if err := deleteAllServiceEntries(c); err != nil {
			b.Errorf("deleting the ServiceEntries of %s: %v", c.namespace, err)
		}
	})
	return c
}

// deleteAllServiceEntries deletes a namespace's ServiceEntries and waits until none is left.
// Deleting tens of thousands takes the API server longer than one request may last: a timed
// out request goes on deleting, so it is repeated until the namespace is empty.
func deleteAllServiceEntries(c *cluster) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res := c.dyn.Resource(serviceEntries).Namespace(c.namespace)
	for {
		err := res.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		list, lerr := res.List(ctx, metav1.ListOptions{Limit: 1})
		if lerr == nil && len(list.Items) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("still not empty after 10 minutes (last error: %v)", cmp.Or(err, lerr))
		}
		time.Sleep(2 * time.Second)
	}
}

// startBenchHost is startBridge that returns once the host's HTTP endpoint (metrics) answers,
// without waiting for readiness.
func startBenchHost(b *testing.B, c *cluster, args ...string) *bridge {
	b.Helper()
	br := startBridge(b, c, args...)
	c.env.Eventually(b, 30*time.Second, func() error {
		conn, err := net.Dial("tcp", br.addr)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			return err
		}
		return conn.Close()
	})
	return br
}

// linesWith keeps the lines of text that contain every one of subs (e.g. label pairs), for
// metricSum.
func linesWith(text string, subs ...string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		keep := true
		for _, sub := range subs {
			keep = keep && strings.Contains(line, sub)
		}
		if keep {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func seWrites(text string) float64 {
	return metricSum(linesWith(text, `kind="ServiceEntry"`), "meltemi_sync_writes_total")
}

// waitMetric polls the host's metrics every 100 ms until done accepts them, and returns when
// that happened.
func waitMetric(b *testing.B, env *harness.Env, br *bridge, timeout time.Duration, done func(metrics string) error) time.Time {
	b.Helper()
	var at time.Time
	env.Eventually(b, timeout, func() error {
		select {
		case <-br.stopped:
			b.Fatalf("meltemi exited: %v\n%s", br.cmd.ProcessState, br.logs.String())
		default:
		}
		if err := done(br.metrics(b)); err != nil {
			time.Sleep(100 * time.Millisecond)
			return err
		}
		at = time.Now()
		return nil
	})
	return at
}

// waitIdle waits until the host's write queue is empty and it has made no write for quiet
// (longer than the controller's maximum delay), and returns its total writes.
func waitIdle(b *testing.B, env *harness.Env, br *bridge, quiet time.Duration) float64 {
	b.Helper()
	last, since := -1.0, time.Now()
	var total float64
	waitMetric(b, env, br, 10*time.Minute, func(m string) error {
		w := metricSum(m, "meltemi_sync_writes_total")
		if w != last || metricSum(m, "meltemi_sync_queue_depth") != 0 {
			last, since = w, time.Now()
			return fmt.Errorf("still writing (%v writes)", w)
		}
		if time.Since(since) < quiet {
			return fmt.Errorf("quiet for %v", time.Since(since).Round(time.Millisecond))
		}
		total = w
		return nil
	})
	return total
}

// listServiceEntries returns the ServiceEntries of a namespace.
func listServiceEntries(b *testing.B, c *cluster) []unstructured.Unstructured {
	b.Helper()
	list, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		b.Fatalf("listing ServiceEntries: %v", err)
	}
	return list.Items
}

// createLoop creates objs in namespace ns with plain client-go POSTs from workers goroutines.
func createLoop(ctx context.Context, c *cluster, ns string, objs []*unstructured.Unstructured, workers int) error {
	work := make(chan *unstructured.Unstructured)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for o := range work {
				if _, err := c.dyn.Resource(serviceEntries).Namespace(ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating %s: %w", o.GetName(), err)
					return
				}
			}
		})
	}
	for _, o := range objs {
		work <- o
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkHostInitialSync times the host's initial sync of MELTEMI_BENCH_SERVICES services
// of 10 instances from a fresh start (process start to every ServiceEntry written), and a
// plain client-go create loop writing the very same ServiceEntries (as the host stored them)
// into another namespace with as many concurrent writers as the host has workers.
// Reports host-s, create-loop-s and ratio-vs-create-loop. The host writes with server-side
// apply, which costs the API server more than a POST create.
func BenchmarkHostInitialSync(b *testing.B) {
	env := harness.Load(b)
	n := benchEnvInt(b, "MELTEMI_BENCH_SERVICES", 1000)
	var host, loop time.Duration
	for range b.N {
		c := benchCluster(b, env)
		name := uniqueName("syn-init")
		start := time.Now()
		br := startSyntheticHost(b, c, map[string]map[string]string{name: syntheticOptions(name, n, nil)})
		done := waitMetric(b, env, br, 30*time.Minute, func(m string) error {
			if w := seWrites(m); w < float64(n) {
				return fmt.Errorf("%v of %d ServiceEntries written", w, n)
			}
			return nil
		})
		host += done.Sub(start)
		waitIdle(b, env, br, time.Second)
		br.stop(b)

		items := listServiceEntries(b, c)
		if len(items) != n {
			b.Fatalf("%d ServiceEntries, want %d", len(items), n)
		}
		other := benchCluster(b, env)
		objs := make([]*unstructured.Unstructured, len(items))
		for i := range items {
			objs[i] = &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": items[i].GetAPIVersion(), "kind": items[i].GetKind(), "spec": items[i].Object["spec"]}}
			objs[i].SetName(items[i].GetName())
			objs[i].SetLabels(items[i].GetLabels())
			objs[i].SetAnnotations(items[i].GetAnnotations())
		}
		start = time.Now()
		if err := createLoop(context.Background(), other, other.namespace, objs, benchWorkers); err != nil {
			b.Fatal(err)
		}
		loop += time.Since(start)
	}
	b.ReportMetric(host.Seconds()/float64(b.N), "host-s")
	b.ReportMetric(loop.Seconds()/float64(b.N), "create-loop-s")
	b.ReportMetric(host.Seconds()/loop.Seconds(), "ratio-vs-create-loop")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkHostRestartUnchanged restarts the host over MELTEMI_BENCH_SERVICES services it has
// written, with the registry unchanged, and reports the API writes the new process made
// (writes, goal 0): counted by the host's own meltemi_sync_writes_total and checked against
// the resourceVersions of the ServiceEntries.
func BenchmarkHostRestartUnchanged(b *testing.B) {
	env := harness.Load(b)
	n := benchEnvInt(b, "MELTEMI_BENCH_SERVICES", 1000)
	c := benchCluster(b, env)
	name := uniqueName("syn-restart")
	regs := map[string]map[string]string{name: syntheticOptions(name, n, nil)}
	br := startSyntheticHost(b, c, regs)
	waitMetric(b, env, br, 30*time.Minute, func(m string) error {
		if w := seWrites(m); w < float64(n) {
			return fmt.Errorf("%v of %d ServiceEntries written", w, n)
		}
		return nil
	})
	waitIdle(b, env, br, time.Second)
	br.stop(b)
	versions := func() map[string]string {
		out := map[string]string{}
		for _, se := range listServiceEntries(b, c) {
			out[se.GetName()] = se.GetResourceVersion()
		}
		return out
	}
	before := versions()
	if len(before) != n {
		b.Fatalf("%d ServiceEntries, want %d", len(before), n)
	}

	var writes float64
	b.ResetTimer()
	for range b.N {
		br := startSyntheticHost(b, c, regs)
		br.waitReady(b, env)
		// Every desired ServiceEntry looked at and found in sync, then nothing more to do.
		waitMetric(b, env, br, 10*time.Minute, func(m string) error {
			if noops := metricSum(linesWith(m, `kind="ServiceEntry"`), "meltemi_sync_noop_total"); noops < float64(n) {
				return fmt.Errorf("%v of %d ServiceEntries checked", noops, n)
			}
			return nil
		})
		writes += waitIdle(b, env, br, 2*time.Second)
		br.stop(b)
	}
	b.StopTimer()
	after := versions()
	changed := 0
	for k, rv := range before {
		if after[k] != rv {
			changed++
		}
	}
	if changed != 0 || len(after) != n {
		b.Errorf("%d ServiceEntries changed and %d exist after restarts with unchanged registries, want 0 and %d", changed, len(after), n)
	}
	if writes != 0 {
		b.Errorf("the host counted %v writes after restarts with unchanged registries, want 0", writes)
	}
	b.ReportMetric(writes/float64(b.N), "writes")
	b.ReportMetric(float64(changed), "changed-resourceVersions")
}

// watchServiceEntries watches the ServiceEntries of the cluster's namespace, from the watch
// cache: a watch from "now" (no resourceVersion) waits for the cache to reach etcd's current
// revision, which with this etcd only happens on the next event of the resource, and fails
// after 3 s on a quiet one.
func watchServiceEntries(b *testing.B, c *cluster) watch.Interface {
	b.Helper()
	w, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).Watch(context.Background(), metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Stop)
	return w
}

// stampWatch watches the ServiceEntries of a namespace and records, for every change stamp
// of the synthetic plugin (label synthetic.LabelChangedAt on an endpoint), how long after the
// change it was first seen, grouped by the registry domain of the ServiceEntry.
type stampWatch struct {
	mu   sync.Mutex
	seen map[string]bool
	lat  map[string][]time.Duration // domain -> latencies
}

func watchStamps(b *testing.B, c *cluster) *stampWatch {
	b.Helper()
	w := watchServiceEntries(b, c)
	s := &stampWatch{seen: map[string]bool{}, lat: map[string][]time.Duration{}}
	go func() {
		for ev := range w.ResultChan() {
			now := time.Now()
			se, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			_, domain, _ := strings.Cut(se.GetName(), ".")
			s.mu.Lock()
			for _, ep := range endpointsOf(se) {
				v := ep.Labels[synthetic.LabelChangedAt]
				if v == "" || s.seen[v] {
					continue
				}
				s.seen[v] = true
				if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
					s.lat[domain] = append(s.lat[domain], now.Sub(time.Unix(0, ns)))
				}
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// await waits until n changes of domain have been seen and returns their latencies.
func (s *stampWatch) await(b *testing.B, env *harness.Env, domain string, n int, timeout time.Duration) []time.Duration {
	b.Helper()
	var out []time.Duration
	env.Eventually(b, timeout, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if got := len(s.lat[domain]); got < n {
			time.Sleep(50 * time.Millisecond)
			return fmt.Errorf("%d of %d changes of %s seen", got, n, domain)
		}
		out = slices.Clone(s.lat[domain])
		return nil
	})
	return out
}

// snapshot returns the latencies of the changes of domain seen so far.
func (s *stampWatch) snapshot(domain string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lat[domain])
}

// settle returns the latencies of domain's changes once the watch has seen no new one for
// quiet: the watch can lag behind the writes the API server has already answered, and the
// changes it delivers last are the ones that waited longest.
func (s *stampWatch) settle(b *testing.B, env *harness.Env, domain string, quiet time.Duration) []time.Duration {
	b.Helper()
	last, since := -1, time.Now()
	var out []time.Duration
	env.Eventually(b, 2*time.Minute, func() error {
		out = s.snapshot(domain)
		if len(out) != last {
			last, since = len(out), time.Now()
		}
		if time.Since(since) < quiet {
			time.Sleep(100 * time.Millisecond)
			return fmt.Errorf("the watch saw a change of %s within the last %v", domain, quiet)
		}
		return nil
	})
	return out
}

// BenchmarkEventToWrite measures registry event → ServiceEntry written (as seen by a watch on
// the API server) with the host's default write window (100 ms):
//   - p50-ms / p99-ms: 200 single-instance changes, 10 per second, so that each is written
//     on its own;
//   - churn-p99-ms: 2,500 changes at 500 per second, every one to another instance.
//
// The synthetic plugin stamps each change with its time; the host holds
// min(MELTEMI_BENCH_SERVICES, 1000) services of 10 instances per registry.
func BenchmarkEventToWrite(b *testing.B) {
	env := harness.Load(b)
	services := min(benchEnvInt(b, "MELTEMI_BENCH_SERVICES", 1000), 1000)
	const singles, churned = 200, 2500
	for range b.N {
		c := benchCluster(b, env)
		dir := b.TempDir()
		single, churn := uniqueName("syn-single"), uniqueName("syn-churn")
		startSingle, startChurn := filepath.Join(dir, "single"), filepath.Join(dir, "churn")
		regs := map[string]map[string]string{
			single: syntheticOptions(single, services, map[string]string{"churnEvents": strconv.Itoa(singles), "churnPerSecond": "10",
				"churnStartFile": startSingle, "stampChanges": "true"}),
			churn: syntheticOptions(churn, services, map[string]string{"churnEvents": strconv.Itoa(churned), "churnPerSecond": "500",
				"churnStartFile": startChurn, "stampChanges": "true"}),
		}
		stamps := watchStamps(b, c)
		br := startSyntheticHost(b, c, regs)
		waitMetric(b, env, br, 30*time.Minute, func(m string) error {
			if w := seWrites(m); w < float64(2*services) {
				return fmt.Errorf("%v of %d ServiceEntries written", w, 2*services)
			}
			return nil
		})
		waitIdle(b, env, br, time.Second)
		before := metricSum(br.metrics(b), "meltemi_registry_event_to_write_seconds_count")

		touch(b, startSingle)
		lat := stamps.await(b, env, single+".bench", singles, 2*time.Minute)
		b.ReportMetric(benchstat.QuantileMs(lat, 0.5), "p50-ms")
		b.ReportMetric(benchstat.QuantileMs(lat, 0.99), "p99-ms")
		b.ReportMetric(benchstat.Ms(benchstat.Max(lat)), "max-ms")
		waitIdle(b, env, br, time.Second)

		touch(b, startChurn)
		lat = stamps.await(b, env, churn+".bench", churned, 2*time.Minute)
		b.ReportMetric(benchstat.QuantileMs(lat, 0.5), "churn-p50-ms")
		b.ReportMetric(benchstat.QuantileMs(lat, 0.99), "churn-p99-ms")

		// The host's own histogram saw the changes too (each write is one observation).
		waitIdle(b, env, br, time.Second)
		if after := metricSum(br.metrics(b), "meltemi_registry_event_to_write_seconds_count"); after-before < singles {
			b.Errorf("meltemi_registry_event_to_write_seconds observed %v writes for %d single changes and %d churned ones, want at least %d",
				after-before, singles, churned, singles)
		}
		br.stop(b)
	}
	b.ReportMetric(0, "ns/op")
}

func touch(b *testing.B, path string) {
	b.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		b.Fatal(err)
	}
}

// changeSource is a real registry the change-latency benchmarks register providers in.
type changeSource struct {
	name string
	// setup prepares the registry for one run and returns its ServiceRegistry YAML for the
	// namespace, and add, which registers one Dubbo provider of interface iface at ip.
	setup func(b *testing.B, env *harness.Env, namespace string) (registry string, add func(iface, ip string))
}

var changeSources = []changeSource{
	{"zookeeper", func(b *testing.B, env *harness.Env, ns string) (string, func(iface, ip string)) {
		conn := connectZK(b, env)
		root := zkRoot(b, conn)
		return zkRegistryYAML(uniqueName("zk-bench"), ns, env.ZKAddr, root), func(iface, ip string) {
			if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: ip, Port: 20880, Interface: iface, Application: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
	}},
	{"etcd", func(b *testing.B, env *harness.Env, ns string) (string, func(iface, ip string)) {
		env.RequireComponent(b, harness.EtcdRegistry)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{env.EtcdRegistryAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cli.Close() })
		root := fmt.Sprintf("dubbo-bench-%08x", rand.Uint32())
		b.Cleanup(func() { _, _ = cli.Delete(context.Background(), "/"+root+"/", clientv3.WithPrefix()) })
		reg := fmt.Sprintf("apiVersion: meltemi.io/v1alpha1\nkind: ServiceRegistry\nmetadata: {name: %s, namespace: %s}\nspec:\n  kind: etcd\n  address: %s\n  options: {root: %s}\n",
			uniqueName("etcd-bench"), ns, env.EtcdRegistryAddr, root)
		return reg, func(iface, ip string) {
			if _, err := cli.Put(context.Background(), etcdProvider(root, iface, ip, 20880, "application=bench"), ""); err != nil {
				b.Fatal(err)
			}
		}
	}},
	{"consul", func(b *testing.B, env *harness.Env, ns string) (string, func(iface, ip string)) {
		apps := newConsulApps(b, env)
		return consulRegistryYAML(uniqueName("consul-bench"), ns, env.ConsulAddr, map[string]string{"services": apps.prefix + "-*",
				"hostTemplate": "{{.Service}}"}), func(iface, ip string) {
				name := apps.prefix + "-" + strings.ToLower(strings.ReplaceAll(iface, ".", "-"))
				apps.register(b, api.AgentServiceRegistration{ID: name + "-" + ip, Name: name, Address: ip, Port: 20880,
					Meta: map[string]string{"protocol": "dubbo"}}, false)
			}
	}},
}

// coalescing variants: the default write window, and the earlier trailing debounce.
var coalescings = []struct {
	name string
	args []string
}{
	{"window=100ms", nil},
	{"trailing-debounce=50ms", []string{"--write-window=0"}},
}

// BenchmarkEventToWriteRegistry measures registry event → ServiceEntry written with a real
// registry as the source (ZooKeeper, etcd, Consul), with the default write window and with
// the earlier trailing debounce, in the same run: 200 Dubbo providers registered, 10 per
// second, round robin over 20 services; each is timed from just before its registration to
// its address appearing in the ServiceEntry (seen by a watch on the API server).
//
// The baseline, in the same run and namespace: the API server's floor (apiserver-floor-p50-ms,
// -p99-ms), a plain client server-side applying the same 200 changes, 10 per second, to
// ServiceEntries of its own shaped like the host's, timed the same way from just before the
// apply to the watch's first sight; and the disk waits every such write has in the API
// server's etcd over that loop (etcd-wal-fsync-mean-ms, etcd-commit-mean-ms). No path through
// Meltemi can be faster than the floor: the goal's share left to Meltemi is the difference.
func BenchmarkEventToWriteRegistry(b *testing.B) {
	env := harness.Load(b)
	for _, src := range changeSources {
		for _, co := range coalescings {
			b.Run("registry="+src.name+"/"+co.name, func(b *testing.B) { benchEventToWrite(b, env, src, co.args) })
		}
	}
}

func benchEventToWrite(b *testing.B, env *harness.Env, src changeSource, args []string) {
	const interfaces, changes = 20, 200
	for range b.N {
		c := benchCluster(b, env)
		registry, add := src.setup(b, env, c.namespace)
		tag := uniqueName("e2w")
		iface := func(i int) string { return fmt.Sprintf("org.meltemi.%s.Service%02d", tag, i) }
		for i := range interfaces {
			add(iface(i), fmt.Sprintf("10.210.0.%d", i+1))
		}
		// First sight of every endpoint address.
		var mu sync.Mutex
		firstSeen := map[string]time.Time{}
		w := watchServiceEntries(b, c)
		go func() {
			for ev := range w.ResultChan() {
				now := time.Now()
				if se, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Deleted {
					mu.Lock()
					for _, a := range addresses(se) {
						if _, ok := firstSeen[a]; !ok {
							firstSeen[a] = now
						}
					}
					mu.Unlock()
				}
			}
		}()
		cfg := writeFile(b, "registries-"+tag+".yaml", registry)
		br := startBenchHost(b, c, slices.Concat([]string{"--config", cfg}, benchHostArgs, args)...)
		seen := func(addrs []string) error {
			mu.Lock()
			defer mu.Unlock()
			for _, a := range addrs {
				if _, ok := firstSeen[a]; !ok {
					return fmt.Errorf("%s not in a ServiceEntry yet", a)
				}
			}
			return nil
		}
		var base []string
		for i := range interfaces {
			base = append(base, fmt.Sprintf("10.210.0.%d", i+1))
		}
		env.Eventually(b, 60*time.Second, func() error { time.Sleep(50 * time.Millisecond); return seen(base) })
		waitIdle(b, env, br, time.Second)
		before := br.metrics(b)

		registered := map[string]time.Time{}
		var acked time.Duration // the registry's own time to take the changes
		tick := time.NewTicker(100 * time.Millisecond)
		for k := range changes {
			<-tick.C
			addr := fmt.Sprintf("10.211.%d.%d", k/250, 1+k%250)
			t0 := time.Now()
			add(iface(k%interfaces), addr)
			acked += time.Since(t0)
			registered[addr] = t0
		}
		tick.Stop()
		env.Eventually(b, 60*time.Second, func() error {
			time.Sleep(50 * time.Millisecond)
			return seen(slices.Collect(maps.Keys(registered)))
		})
		waitIdle(b, env, br, 200*time.Millisecond)
		stages := hostStages(before, br.metrics(b))

		// The floor: the API server alone on the same pattern, in the same namespace, with the
		// same watches open and the host idle: a plain client applies the same changes to
		// ServiceEntries of its own shaped like the host's.
		floor := newFloorEntries(b, listServiceEntries(b, c))
		env.Eventually(b, 60*time.Second, func() error {
			time.Sleep(50 * time.Millisecond)
			return seen(floor.apply(b, c, -1))
		})
		floorApplied := map[string]time.Time{}
		etcdBefore := etcdMetrics(b, env)
		tick = time.NewTicker(100 * time.Millisecond)
		for k := range changes {
			<-tick.C
			t0 := time.Now()
			floorApplied[floor.apply(b, c, k)[0]] = t0
		}
		tick.Stop()
		env.Eventually(b, 60*time.Second, func() error {
			time.Sleep(50 * time.Millisecond)
			return seen(slices.Collect(maps.Keys(floorApplied)))
		})
		disk := etcdDisk(etcdBefore, etcdMetrics(b, env))
		w.Stop()
		mu.Lock()
		var lat, floorLat []time.Duration
		for a, t0 := range registered {
			lat = append(lat, firstSeen[a].Sub(t0))
		}
		for a, t0 := range floorApplied {
			floorLat = append(floorLat, firstSeen[a].Sub(t0))
		}
		mu.Unlock()
		b.ReportMetric(benchstat.QuantileMs(lat, 0.5), "p50-ms")
		b.ReportMetric(benchstat.QuantileMs(lat, 0.99), "p99-ms")
		b.ReportMetric(benchstat.QuantileMs(floorLat, 0.5), "apiserver-floor-p50-ms")
		b.ReportMetric(benchstat.QuantileMs(floorLat, 0.99), "apiserver-floor-p99-ms")
		b.ReportMetric(disk.walFsyncMs, "etcd-wal-fsync-mean-ms")
		b.ReportMetric(disk.commitMs, "etcd-commit-mean-ms")
		b.ReportMetric(float64(acked.Microseconds())/1000/changes, "registry-write-mean-ms")
		b.ReportMetric(stages.hostMs, "host-mean-ms")
		b.ReportMetric(stages.apiWriteMs, "api-write-mean-ms")
		br.stop(b)
	}
	b.ReportMetric(0, "ns/op")
}

// floorEntries are ServiceEntries of a plain client's, one per ServiceEntry of the host's,
// with its spec and first endpoint but their own names and hosts (and none of the host's
// metadata), so the host takes them for foreign objects that conflict with nothing.
type floorEntries struct{ objs []*unstructured.Unstructured }

func newFloorEntries(b *testing.B, items []unstructured.Unstructured) *floorEntries {
	f := &floorEntries{}
	for i := range items {
		spec := runtime.DeepCopyJSONValue(items[i].Object["spec"]).(map[string]any)
		hosts, _, _ := unstructured.NestedStringSlice(spec, "hosts")
		for j := range hosts {
			hosts[j] = "floor." + hosts[j]
		}
		if err := unstructured.SetNestedStringSlice(spec, hosts, "hosts"); err != nil {
			b.Fatalf("floor copy of %s: %v", items[i].GetName(), err)
		}
		eps, _, _ := unstructured.NestedSlice(spec, "endpoints")
		spec["endpoints"] = eps[:min(1, len(eps))]
		o := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": items[i].GetAPIVersion(), "kind": items[i].GetKind(), "spec": spec}}
		o.SetName("floor-" + items[i].GetName())
		f.objs = append(f.objs, o)
	}
	return f
}

// apply server-side applies change k (k ≥ 0): a new endpoint, a copy of the first one at
// an address of the change's own, on entry k mod n; it returns that address. k < 0 applies
// every entry as it is, each with its first endpoint at an address of its own, and returns
// those addresses.
func (f *floorEntries) apply(b *testing.B, c *cluster, k int) []string {
	b.Helper()
	if len(f.objs) == 0 {
		b.Fatal("no ServiceEntries to shape the floor's on")
	}
	targets, addrs, force := f.objs, []string{}, true
	if k >= 0 {
		targets = f.objs[k%len(f.objs) : k%len(f.objs)+1]
	}
	for i, o := range targets {
		eps := o.Object["spec"].(map[string]any)["endpoints"].([]any)
		if len(eps) == 0 {
			b.Fatalf("%s has no endpoint to copy", o.GetName())
		}
		if k < 0 {
			addr := fmt.Sprintf("10.213.%d.%d", i/250, 1+i%250)
			eps[0].(map[string]any)["address"] = addr
			addrs = append(addrs, addr)
		} else {
			addr := fmt.Sprintf("10.212.%d.%d", k/250, 1+k%250)
			ep := runtime.DeepCopyJSONValue(eps[0]).(map[string]any)
			ep["address"] = addr
			o.Object["spec"].(map[string]any)["endpoints"] = append(eps, ep)
			addrs = append(addrs, addr)
		}
		body, err := json.Marshal(o.Object)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).Patch(context.Background(), o.GetName(),
			types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "floor", Force: &force, FieldValidation: metav1.FieldValidationIgnore}); err != nil {
			b.Fatalf("applying %s: %v", o.GetName(), err)
		}
	}
	return addrs
}

// etcdMetrics scrapes the /metrics of the etcd behind the API server.
func etcdMetrics(b *testing.B, env *harness.Env) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	text, err := scrape(ctx, env.KubeEtcdAddr)
	if err != nil {
		b.Fatalf("scraping the API server's etcd: %v", err)
	}
	return text
}

// etcdDiskShares are the means, between two scrapes, of the disk operations every write of
// the API server's waits for: the WAL's fsync and the backend's commit.
type etcdDiskShares struct{ walFsyncMs, commitMs float64 }

func etcdDisk(before, after string) etcdDiskShares {
	return etcdDiskShares{
		walFsyncMs: histogramMeanMs(before, after, "etcd_disk_wal_fsync_duration_seconds"),
		commitMs:   histogramMeanMs(before, after, "etcd_disk_backend_commit_duration_seconds"),
	}
}

// histogramMeanMs is the mean in milliseconds of the observations a histogram gained between
// two scrapes (0 without any), over the lines that contain every filter.
func histogramMeanMs(before, after, name string, filter ...string) float64 {
	s0, c0 := metricSum(linesWith(before, filter...), name+"_sum"), metricSum(linesWith(before, filter...), name+"_count")
	s1, c1 := metricSum(linesWith(after, filter...), name+"_sum"), metricSum(linesWith(after, filter...), name+"_count")
	if c1 <= c0 {
		return 0
	}
	return (s1 - s0) / (c1 - c0) * 1000
}

// stages are the host's own shares of a change's latency, as means over the changes between
// two scrapes of its metrics: from the event reaching the host to the object written
// (meltemi_registry_event_to_write_seconds), and of that the API server's apply alone
// (meltemi_sync_write_seconds of ServiceEntries).
type stages struct{ hostMs, apiWriteMs float64 }

func hostStages(before, after string) stages {
	return stages{
		hostMs:     histogramMeanMs(before, after, "meltemi_registry_event_to_write_seconds"),
		apiWriteMs: histogramMeanMs(before, after, "meltemi_sync_write_seconds", `verb="apply"`, `kind="ServiceEntry"`),
	}
}

// BenchmarkHostMemory reports the RSS of the meltemi process (rss-MiB, goal ≤ 256 at the
// default 100,000; rss-B/instance) once it holds MELTEMI_BENCH_INSTANCES instances (services
// of 10) written as ServiceEntries and is idle, and the time from its start until every
// ServiceEntry was written (sync-s); plugin-rss-MiB is the synthetic plugin process, reported
// separately.
func BenchmarkHostMemory(b *testing.B) {
	env := harness.Load(b)
	instances := benchEnvInt(b, "MELTEMI_BENCH_INSTANCES", 100000)
	services := max(1, instances/benchInstancesPerService)
	for range b.N {
		c := benchCluster(b, env)
		name := uniqueName("syn-mem")
		start := time.Now()
		br := startSyntheticHost(b, c, map[string]map[string]string{name: syntheticOptions(name, services, nil)})
		waitMetric(b, env, br, 60*time.Minute, func(m string) error {
			if w := seWrites(m); w < float64(services) {
				return fmt.Errorf("%v of %d ServiceEntries written", w, services)
			}
			return nil
		})
		synced := time.Since(start)
		waitIdle(b, env, br, 5*time.Second)
		rss := rssOf(b, br)
		var plugins float64
		for _, pid := range pluginChildren(b, br.cmd.Process.Pid) {
			if r, err := procstat.RSSMiB(pid); err == nil {
				plugins += r
			}
		}
		b.ReportMetric(rss, "rss-MiB")
		b.ReportMetric(rss*(1<<20)/float64(services*benchInstancesPerService), "rss-B/instance")
		b.ReportMetric(synced.Seconds(), "sync-s")
		b.ReportMetric(plugins, "plugin-rss-MiB")
		b.ReportMetric(float64(services*benchInstancesPerService), "instances")
		br.stop(b)
	}
	b.ReportMetric(0, "ns/op")
}

// syntheticRevisions is what revisions should find once a synthetic registry configured with
// opts has made churned changes.
func syntheticRevisions(t testing.TB, registry string, opts map[string]string, churned int) map[string]string {
	t.Helper()
	final, err := synthetic.State(registry, opts, churned)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, s := range final {
		var revs []string
		for _, in := range s.Instances {
			revs = append(revs, in.Address+"="+in.Labels["rev"])
		}
		slices.Sort(revs)
		want[s.Host] = strings.Join(revs, ",")
	}
	return want
}

// awaitRevisions waits until the ServiceEntries of c hold the synthetic revisions want.
func awaitRevisions(b *testing.B, c *cluster, want map[string]string, timeout time.Duration) {
	b.Helper()
	c.env.Eventually(b, timeout, func() error {
		got := revisions(byName(listServiceEntries(b, c)))
		for h, w := range want {
			if got[h] != w {
				time.Sleep(100 * time.Millisecond)
				return fmt.Errorf("%s: endpoints %s, want %s", h, got[h], w)
			}
		}
		return nil
	})
}

// BenchmarkWritesPerBurst makes a burst of 3 changes to each of K services (K =
// MELTEMI_BENCH_BURST, default 100; different instances, as fast as the plugin emits) and
// reports the host's ServiceEntry writes per distinct ServiceEntry changed
// (writes-per-distinct-object; 1.0 when every burst is coalesced). The final ServiceEntries
// are checked against the registry's final state.
func BenchmarkWritesPerBurst(b *testing.B) {
	env := harness.Load(b)
	k := benchEnvInt(b, "MELTEMI_BENCH_BURST", 100)
	const perService = 3
	var ratio float64
	for range b.N {
		c := benchCluster(b, env)
		name := uniqueName("syn-burst")
		start := filepath.Join(b.TempDir(), "burst")
		opts := syntheticOptions(name, k, map[string]string{"churnEvents": strconv.Itoa(perService * k), "churnStartFile": start})
		br := startSyntheticHost(b, c, map[string]map[string]string{name: opts})
		waitMetric(b, env, br, 10*time.Minute, func(m string) error {
			if w := seWrites(m); w < float64(k) {
				return fmt.Errorf("%v of %d ServiceEntries written", w, k)
			}
			return nil
		})
		waitIdle(b, env, br, time.Second)
		before := seWrites(br.metrics(b))
		touch(b, start)

		awaitRevisions(b, c, syntheticRevisions(b, name, opts, perService*k), 2*time.Minute)
		waitIdle(b, env, br, 2*time.Second)
		ratio += (seWrites(br.metrics(b)) - before) / float64(k)
		br.stop(b)
	}
	b.ReportMetric(ratio/float64(b.N), "writes-per-distinct-object")
	b.ReportMetric(0, "ns/op")
}
