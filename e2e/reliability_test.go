package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/testproxy"
)

// outageResult is what one API server outage did.
type outageResult struct {
	recovery time.Duration // from the API server ready again to every change in the cluster
	queued   float64       // meltemi_sync_queue_depth during the outage
	// wrongDeletions counts entries that should have stayed but were deleted (or re-created);
	// lostEndpoints, endpoints of the unchanged service that went missing.
	wrongDeletions, lostEndpoints int
}

// apiServerOutage runs the host on ZooKeeper, kills the real kube-apiserver for outage while
// the registry changes (an endpoint added, a service removed, a service added), starts it
// again, and reports how long after it was ready again every change was in the cluster.
func apiServerOutage(t testing.TB, outage time.Duration) outageResult {
	t.Helper()
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	const kept, removed, added = "com.example.outage.Kept", "com.example.outage.Removed", "com.example.outage.Added"
	register := func(iface, ip string) string {
		t.Helper()
		path, err := dubbo.Register(conn, root, dubbo.Provider{IP: ip, Port: 20880, Interface: iface, Application: "outage"})
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	register(kept, "10.6.0.1")
	removedPath := register(removed, "10.6.1.1")
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-apiserver-outage", c.namespace, env.ZKAddr, root))
	b := startBridge(t, c, "--config", cfg)
	b.waitReady(t, env)
	env.Eventually(t, 20*time.Second, func() error {
		for _, h := range []string{kept, removed} {
			if _, err := c.getServiceEntry(strings.ToLower(h)); err != nil {
				return err
			}
		}
		return nil
	})
	before, err := c.getServiceEntry(strings.ToLower(kept))
	if err != nil {
		t.Fatal(err)
	}
	var res outageResult

	env.Kill(t, harness.KubeAPIServer) // a crash: the outage starts at once
	stopped := true
	t.Cleanup(func() {
		if stopped {
			env.Start(t, harness.KubeAPIServer)
		}
	})
	start := time.Now()
	register(kept, "10.6.0.2")
	if err := conn.Delete(removedPath, -1); err != nil {
		t.Fatal(err)
	}
	register(added, "10.6.2.1")
	// The queue depth is read once the writes have had time to fail.
	time.Sleep(min(outage, 5*time.Second))
	res.queued = metricSum(b.metrics(t), "meltemi_sync_queue_depth")
	time.Sleep(outage - time.Since(start))
	env.Start(t, harness.KubeAPIServer) // returns once /readyz answers
	stopped = false
	ready := time.Now()

	check := func() error {
		se, err := c.getServiceEntry(strings.ToLower(kept))
		if err != nil {
			return err
		}
		if got := addresses(se); !slices.Contains(got, "10.6.0.2") {
			return fmt.Errorf("%s endpoints %v, want 10.6.0.2 among them", kept, got)
		}
		if _, err := c.getServiceEntry(strings.ToLower(removed)); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s not deleted yet (%v)", removed, err)
		}
		if _, err := c.getServiceEntry(strings.ToLower(added)); err != nil {
			return err
		}
		return nil
	}
	for {
		err := check()
		if err == nil {
			break
		}
		if time.Since(ready) > 2*time.Minute {
			t.Fatalf("changes made during the outage not in the cluster 2 min after the API server was ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.recovery = time.Since(ready)
	after, err := c.getServiceEntry(strings.ToLower(kept))
	if err != nil {
		t.Fatal(err)
	}
	if after.GetUID() != before.GetUID() {
		res.wrongDeletions++
	}
	if !slices.Contains(addresses(after), "10.6.0.1") {
		res.lostEndpoints++
	}
	return res
}

// TestAPIServerOutageRecovery: changes made while the API server is down are written within
// seconds of its return, whatever backoff the failed writes had reached, and the writes waiting
// are visible in the queue depth meanwhile.
func TestAPIServerOutageRecovery(t *testing.T) {
	outage := 20 * time.Second
	if s := os.Getenv("MELTEMI_E2E_OUTAGE"); s != "" {
		var err error
		if outage, err = time.ParseDuration(s); err != nil {
			t.Fatal(errors.New("MELTEMI_E2E_OUTAGE: " + err.Error()))
		}
	}
	res := apiServerOutage(t, outage)
	t.Logf("outage %v: every change in the cluster %v after the API server was ready", outage, res.recovery.Round(time.Millisecond))
	if res.recovery > 5*time.Second {
		t.Errorf("changes landed %v after the API server was ready, want within 5s", res.recovery)
	}
	if res.queued < 1 {
		t.Errorf("meltemi_sync_queue_depth = %v during the outage, want the writes waiting to be counted", res.queued)
	}
	if res.wrongDeletions+res.lostEndpoints > 0 {
		t.Errorf("the unchanged service was deleted (%d) or lost endpoints (%d)", res.wrongDeletions, res.lostEndpoints)
	}
}

// BenchmarkAPIServerOutageRecovery reports how long after a real kube-apiserver is ready again
// the changes made during its outage are all written, for a 30 s and a 3 min outage.
func BenchmarkAPIServerOutageRecovery(b *testing.B) {
	for _, outage := range []time.Duration{30 * time.Second, 3 * time.Minute} {
		b.Run("outage="+outage.String(), func(b *testing.B) {
			var worst outageResult
			for range b.N {
				res := apiServerOutage(b, outage)
				worst.recovery = max(worst.recovery, res.recovery)
				worst.wrongDeletions += res.wrongDeletions
				worst.lostEndpoints += res.lostEndpoints
			}
			b.ReportMetric(worst.recovery.Seconds(), "recovery-s")
			b.ReportMetric(float64(worst.wrongDeletions), "wrong-deletions")
			b.ReportMetric(float64(worst.lostEndpoints), "lost-endpoints")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// unsyncedRegistryGC restarts the host with one of two registries that cannot sync (its
// address no longer answers) and returns how long after the start the healthy registry's
// removed service was deleted; it fails t if the other registry's objects were touched.
func unsyncedRegistryGC(t testing.TB) time.Duration {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	good, other := zkRoot(t, conn), zkRoot(t, conn)
	const (
		kept    = "com.example.gc.Kept"
		removed = "com.example.gc.Removed"
		theirs  = "com.example.gc.Theirs"
		merged  = "com.example.gc.Merged"
	)
	register := func(root, iface, ip string) string {
		t.Helper()
		path, err := dubbo.Register(conn, root, dubbo.Provider{IP: ip, Port: 20880, Interface: iface, Application: "gc"})
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	register(good, kept, "10.7.0.1")
	removedPath := register(good, removed, "10.7.0.2")
	register(good, merged, "10.7.0.3")
	register(other, theirs, "10.7.1.1")
	register(other, merged, "10.7.1.3")
	config := func(otherAddr string) string {
		return zkRegistryYAML("zk-good", c.namespace, env.ZKAddr, good) + "---\n" +
			zkRegistryYAML("zk-other", c.namespace, otherAddr, other)
	}
	cfg := writeFile(t, "registries.yaml", config(env.ZKAddr))
	first := startBridge(t, c, "--config", cfg)
	first.waitReady(t, env)
	env.Eventually(t, 20*time.Second, func() error {
		for _, h := range []string{kept, removed, theirs} {
			if _, err := c.getServiceEntry(strings.ToLower(h)); err != nil {
				return err
			}
		}
		se, err := c.getServiceEntry(strings.ToLower(merged))
		if err != nil {
			return err
		}
		if got := addresses(se); len(got) != 2 {
			return fmt.Errorf("merged host endpoints %v, want both registries'", got)
		}
		return nil
	})
	first.stop(t)

	// While the host is down, the healthy registry loses a service and the other registry
	// becomes unreachable.
	if err := conn.Delete(removedPath, -1); err != nil {
		t.Fatal(err)
	}
	cfg = writeFile(t, "registries.yaml", config(freeAddr(t)))
	second := startBridge(t, c, "--config", cfg)
	started := time.Now()
	env.Eventually(t, 30*time.Second, func() error {
		if _, err := c.getServiceEntry(strings.ToLower(removed)); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s not deleted (%v)", removed, err)
		}
		return nil
	})
	took := time.Since(started)
	synced := metricSum(second.metrics(t), `meltemi_registry_synced{registry="zk-other"}`)
	if synced != 0 {
		t.Fatalf("zk-other reported synced (%v): the test needs it unsynced", synced)
	}
	time.Sleep(2 * time.Second) // give a wrong delete or rewrite every chance to happen
	if _, err := c.getServiceEntry(strings.ToLower(theirs)); err != nil {
		t.Errorf("the unsynced registry's ServiceEntry: %v", err)
	}
	if _, err := c.getServiceEntry(strings.ToLower(kept)); err != nil {
		t.Errorf("the healthy registry's ServiceEntry: %v", err)
	}
	se, err := c.getServiceEntry(strings.ToLower(merged))
	if err != nil {
		t.Fatalf("merged host: %v", err)
	}
	if got := addresses(se); !slices.Contains(got, "10.7.1.3") {
		t.Errorf("merged host lost the unsynced registry's endpoint: %v", got)
	}
	if p := metricSum(second.metrics(t), "meltemi_sync_pending_deletes"); p < 1 {
		t.Errorf("meltemi_sync_pending_deletes = %v, want the unsynced registry's objects held", p)
	}
	return took
}

// TestUnsyncedRegistryHoldsBackOnlyItsOwnDeletes: after a restart with one registry that
// cannot sync, the healthy registry's removed service is deleted within seconds; the other
// registry's service stays, and a host both registries provide keeps the unsynced registry's
// endpoint.
func TestUnsyncedRegistryHoldsBackOnlyItsOwnDeletes(t *testing.T) {
	took := unsyncedRegistryGC(t)
	t.Logf("removed service deleted %v after the host started, with zk-other unsynced", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("removed service deleted %v after the host started, want within 5s", took)
	}
}

// registryEvents returns the messages of a ServiceRegistry's Events with reason.
func (c *cluster) registryEvents(t testing.TB, registry, reason string) []string {
	t.Helper()
	evs, err := c.kube.CoreV1().Events(c.namespace).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + registry})
	if err != nil {
		t.Fatalf("listing events: %v", err)
	}
	var out []string
	for _, e := range evs.Items {
		if e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	slices.Sort(out)
	return out
}

// TestRejectionsCountedOnceAcrossRestartsAndSessions: 250 malformed provider nodes are 250
// rejections in status, metric and Event; a plugin restart and a ZooKeeper session expiry,
// which send them all again, add none; 6 more bad nodes make 256 and a new Event.
func TestRejectionsCountedOnceAcrossRestartsAndSessions(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	const iface, name = "com.example.bad.BadService", "zk-rejections"
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.8.0.1", Port: 20880, Interface: iface, Application: "bad"}); err != nil {
		t.Fatal(err)
	}
	addBad := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := dubbo.Raw(conn, root, iface, fmt.Sprintf("dubbo%%3A%%2F%%2Fnot-an-ip-%d%%3Aport%%2Fx", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	addBad(0, 250)
	proxy := testproxy.NewZooKeeper(t, env.ZKAddr)
	var sr unstructured.Unstructured
	if err := yamlToObject(zkRegistryYAML(name, c.namespace, proxy.Addr(), root)+"    sessionTimeout: 4s\n", &sr); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &sr)
	b := startBridge(t, c, "--registry-namespace", c.namespace)
	b.waitReady(t, env)

	expect := func(total int, events []string) {
		t.Helper()
		env.Eventually(t, 20*time.Second, func() error {
			st := c.registryStatus(t, name)
			items, _ := st["rejectedItems"].([]any)
			if st["rejectedTotal"] != int64(total) || len(items) != 20 {
				return fmt.Errorf("status rejectedTotal %v with %d examples, want %d with 20", st["rejectedTotal"], len(items), total)
			}
			if got := metricSum(b.metrics(t), `meltemi_registry_rejected_items_total{registry="`+name+`"}`); got != float64(total) {
				return fmt.Errorf("meltemi_registry_rejected_items_total = %v, want %d", got, total)
			}
			if got := c.registryEvents(t, name, "ItemRejected"); !slices.EqualFunc(got, events, strings.HasPrefix) {
				return fmt.Errorf("ItemRejected events %q, want %q", got, events)
			}
			return nil
		})
	}
	first := "250 new registry item(s) rejected, 250 in total"
	expect(250, []string{first})

	// A plugin restart: a new process sends everything again.
	pids := waitPlugins(t, env, b, 1)
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 30*time.Second, func() error {
		if st := c.registryStatus(t, name); st["restarts"] != int64(1) || st["synced"] != true {
			return fmt.Errorf("plugin not restarted and synced yet: %v", st)
		}
		return nil
	})
	// A new session: the plugin lists everything again.
	session := proxy.Session()
	if err := proxy.ExpireSession(); err != nil {
		t.Fatalf("expiring the plugin's session: %v", err)
	}
	env.Eventually(t, 30*time.Second, func() error {
		if s := proxy.Session(); s == session || s == 0 {
			return fmt.Errorf("no new session yet")
		}
		if n := strings.Count(b.logs.String(), "new ZooKeeper session; listing everything again"); n < 1 {
			return fmt.Errorf("the plugin has not listed again")
		}
		return nil
	})
	time.Sleep(3 * time.Second) // a status round after the new listing
	expect(250, []string{first})

	addBad(250, 256)
	expect(256, []string{first, "6 new registry item(s) rejected, 256 in total"})
}

// foreignServiceEntry is a ServiceEntry Meltemi does not own, defining host.
func foreignServiceEntry(namespace, name, host string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec": map[string]any{
			"hosts": []any{host}, "location": "MESH_INTERNAL", "resolution": "STATIC",
			"ports":     []any{map[string]any{"number": int64(20880), "name": "tcp-dubbo", "protocol": "TCP"}},
			"endpoints": []any{map[string]any{"address": "10.9.9.9"}},
		},
	}}
}

// conflictsReported starts the host next to a foreign ServiceEntry holding the name of a
// registry's entry and one (with another name) defining another of its hosts, and returns how
// long after the host was ready both were reported on the ServiceRegistry — status and
// Warning Events — and in metrics.
func conflictsReported(t testing.TB) time.Duration {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	const named, hosted, name = "com.example.conflict.Named", "com.example.conflict.Hosted", "zk-conflicts"
	for i, iface := range []string{named, hosted} {
		if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: fmt.Sprintf("10.9.0.%d", i+1), Port: 20880, Interface: iface, Application: "conflict"}); err != nil {
			t.Fatal(err)
		}
	}
	c.create(t, serviceEntries, foreignServiceEntry(c.namespace, strings.ToLower(named), "elsewhere.example"))
	c.create(t, serviceEntries, foreignServiceEntry(c.namespace, "legacy-entry", strings.ToLower(hosted)))
	var sr unstructured.Unstructured
	if err := yamlToObject(zkRegistryYAML(name, c.namespace, env.ZKAddr, root), &sr); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &sr)
	b := startBridge(t, c, "--registry-namespace", c.namespace)
	b.waitReady(t, env)
	started := time.Now()

	wantObjects := []string{"ServiceEntry " + c.namespace + "/" + strings.ToLower(named), "host " + strings.ToLower(hosted)}
	env.Eventually(t, 10*time.Second, func() error {
		st := c.registryStatus(t, name)
		list, _ := st["conflicts"].([]any)
		var objects []string
		for _, item := range list {
			m, _ := item.(map[string]any)
			objects = append(objects, fmt.Sprint(m["object"]))
		}
		if !slices.Equal(objects, wantObjects) {
			return fmt.Errorf("status conflicts %v, want %v", objects, wantObjects)
		}
		events := c.registryEvents(t, name, "Conflict")
		if len(events) != 2 || !strings.Contains(strings.Join(events, "\n"), "delete that object") || !strings.Contains(strings.Join(events, "\n"), "legacy-entry") {
			return fmt.Errorf("Conflict events %q, want one per conflict saying what to do", events)
		}
		m := b.metrics(t)
		if metricSum(m, "meltemi_sync_name_conflicts") != 1 || metricSum(m, "meltemi_hosts_withheld") != 1 {
			return fmt.Errorf("meltemi_sync_name_conflicts %v, meltemi_hosts_withheld %v, want 1 and 1",
				metricSum(m, "meltemi_sync_name_conflicts"), metricSum(m, "meltemi_hosts_withheld"))
		}
		return nil
	})
	took := time.Since(started)
	// The foreign object itself carries the reconciler's Event.
	env.Eventually(t, 10*time.Second, func() error {
		evs, err := c.kube.CoreV1().Events(c.namespace).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + strings.ToLower(named)})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "NameTakenByForeignObject" && e.InvolvedObject.Kind == "ServiceEntry" {
				return nil
			}
		}
		return fmt.Errorf("no NameTakenByForeignObject Event on the foreign ServiceEntry")
	})
	return took
}

// TestConflictsWithForeignObjectsAreReported: both conflicts are reported within 5 s.
func TestConflictsWithForeignObjectsAreReported(t *testing.T) {
	took := conflictsReported(t)
	t.Logf("both conflicts reported %v after the host was ready", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("conflicts reported after %v, want within 5s", took)
	}
}

// BenchmarkReliability reports, from the same scenarios as the tests: how long after a restart
// with one registry unable to sync the healthy registry's removed service is deleted, and how
// long after the host is ready conflicts with foreign objects are reported.
func BenchmarkReliability(b *testing.B) {
	b.Run("scenario=unsynced-registry-gc", func(b *testing.B) {
		var worst time.Duration
		for range b.N {
			worst = max(worst, unsyncedRegistryGC(b))
		}
		b.ReportMetric(worst.Seconds(), "delete-after-start-s")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("scenario=foreign-conflicts", func(b *testing.B) {
		var worst time.Duration
		for range b.N {
			worst = max(worst, conflictsReported(b))
		}
		b.ReportMetric(worst.Seconds(), "reported-after-s")
		b.ReportMetric(0, "ns/op")
	})
}

// TestFrozenPluginReportedAndRestarted: a plugin process stopped with SIGSTOP is reported not
// connected within seconds and restarted; its services stay throughout.
func TestFrozenPluginReportedAndRestarted(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	const iface, name = "com.example.frozen.FrozenService", "zk-frozen"
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.10.0.1", Port: 20880, Interface: iface, Application: "frozen"}); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML(name, c.namespace, env.ZKAddr, root))
	b := startBridge(t, c, "--config", cfg)
	b.waitReady(t, env)
	var se *unstructured.Unstructured
	env.Eventually(t, 20*time.Second, func() (err error) { se, err = c.getServiceEntry(strings.ToLower(iface)); return err })
	pid := waitPlugins(t, env, b, 1)[0]
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	frozen := time.Now()
	connected := `meltemi_registry_connected{registry="` + name + `"}`
	env.Eventually(t, 15*time.Second, func() error {
		if v := metricSum(b.metrics(t), connected); v != 0 {
			return fmt.Errorf("%s = %v", connected, v)
		}
		return nil
	})
	reported := time.Since(frozen)
	env.Eventually(t, 30*time.Second, func() error {
		if v := metricSum(b.metrics(t), `meltemi_plugin_restarts_total{reason="hung",registry="`+name+`"}`); v < 1 {
			return fmt.Errorf("no restart for the hang yet")
		}
		if v := metricSum(b.metrics(t), connected); v != 1 {
			return fmt.Errorf("restarted plugin not connected yet")
		}
		return nil
	})
	t.Logf("frozen plugin: not connected after %v, restarted and connected again after %v",
		reported.Round(time.Millisecond), time.Since(frozen).Round(time.Millisecond))
	// 7.5 s at most (a health call every 5 s, each given 2.5 s), plus the metric polling.
	if reported > 9*time.Second {
		t.Errorf("frozen plugin reported not connected after %v, want within 7.5s", reported)
	}
	after, err := c.getServiceEntry(strings.ToLower(iface))
	if err != nil {
		t.Fatalf("ServiceEntry gone: %v", err)
	}
	if after.GetUID() != se.GetUID() || !slices.Equal(addresses(after), addresses(se)) {
		t.Errorf("ServiceEntry changed through the freeze: %v -> %v", addresses(se), addresses(after))
	}
}
