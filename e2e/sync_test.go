package e2e

import (
	"bufio"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

var workloadEntries = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "workloadentries"}

// metricSum adds up every sample of a metric family in a Prometheus text exposition.
func metricSum(text, name string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ' {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func TestRestartWithUnchangedRegistryMakesNoWrites(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	for i := range 20 {
		p := dubbo.Provider{IP: fmt.Sprintf("10.3.%d.%d", i/10, i%10+1), Port: 20880, Interface: fmt.Sprintf("com.example.restart.Service%d", i%5), Application: "restart", Version: "1.0.0"}
		if _, err := dubbo.Register(conn, root, p); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-restart", c.namespace, env.ZKAddr, root))
	first := startBridge(t, c, "--config", cfg)
	first.waitReady(t, env)
	env.Eventually(t, 20*time.Second, func() error {
		if n := len(c.serviceEntries(t)); n != 5 {
			return fmt.Errorf("%d ServiceEntries, want 5", n)
		}
		return nil
	})
	before := c.serviceEntries(t)
	first.stop(t)

	second := startBridge(t, c, "--config", cfg)
	second.waitReady(t, env)
	time.Sleep(2 * time.Second) // room for any late write to show
	m := second.metrics(t)
	if w := metricSum(m, "meltemi_sync_writes_total"); w != 0 {
		t.Errorf("restart with unchanged registry made %v writes, want 0", w)
	}
	if n := metricSum(m, "meltemi_sync_noop_total"); n < 5 {
		t.Errorf("only %v no-op reconciliations counted, want at least 5", n)
	}
	after := c.serviceEntries(t)
	for name, se := range before {
		if after[name] == nil || after[name].GetResourceVersion() != se.GetResourceVersion() {
			t.Errorf("ServiceEntry %s changed across the restart", name)
		}
	}
}

func TestRegistryOutageDeletesNothing(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	const iface = "com.example.outage.OutageService"
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.4.0.1", Port: 20880, Interface: iface, Application: "outage"}); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-outage", c.namespace, env.ZKAddr, root))
	b := startBridge(t, c, "--config", cfg)
	b.waitReady(t, env)
	host := strings.ToLower(iface)
	var se *unstructured.Unstructured
	env.Eventually(t, 20*time.Second, func() (err error) { se, err = c.getServiceEntry(host); return err })

	env.Stop(t, harness.ZooKeeper)
	stopped := true
	t.Cleanup(func() {
		if stopped {
			env.Start(t, harness.ZooKeeper)
		}
	})
	env.Eventually(t, 30*time.Second, func() error {
		if v := metricSum(b.metrics(t), `meltemi_registry_connected{registry="zk-outage"}`); v != 0 {
			return fmt.Errorf("registry still reported connected")
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	during, err := c.getServiceEntry(host)
	if err != nil {
		t.Fatalf("ServiceEntry gone during the registry outage: %v", err)
	}
	if during.GetResourceVersion() != se.GetResourceVersion() {
		t.Errorf("ServiceEntry rewritten during the outage")
	}

	env.Start(t, harness.ZooKeeper)
	stopped = false
	// After recovery, changes flow again.
	conn2 := connectZK(t, env)
	if _, err := dubbo.Register(conn2, root, dubbo.Provider{IP: "10.4.0.2", Port: 20880, Interface: iface, Application: "outage"}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 60*time.Second, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		if got := addresses(se); !slices.Contains(got, "10.4.0.2") {
			return fmt.Errorf("endpoints %v", got)
		}
		return nil
	})
	if v := metricSum(b.metrics(t), `meltemi_registry_connected{registry="zk-outage"}`); v != 1 {
		t.Errorf("registry not reported connected after recovery")
	}
}

func TestLargeServiceBecomesWorkloadEntries(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	const iface = "com.example.big.BigService"
	for i := range 6 {
		if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: fmt.Sprintf("10.5.0.%d", i+1), Port: 20880, Interface: iface, Application: "big", Version: "v" + strconv.Itoa(i%2)}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-big", c.namespace, env.ZKAddr, root))
	b := startBridge(t, c, "--config", cfg, "--max-inline-endpoints", "4")
	b.waitReady(t, env)
	host := strings.ToLower(iface)
	env.Eventually(t, 20*time.Second, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		if sel, _, _ := unstructured.NestedStringMap(se.Object, "spec", "workloadSelector", "labels"); sel["meltemi.io/service"] != host {
			return fmt.Errorf("workloadSelector %v", sel)
		}
		if eps := endpointsOf(se); len(eps) != 0 {
			return fmt.Errorf("%d inline endpoints left", len(eps))
		}
		list, err := c.dyn.Resource(workloadEntries).Namespace(c.namespace).List(t.Context(), metav1.ListOptions{LabelSelector: "meltemi.io/service=" + host})
		if err != nil {
			return err
		}
		if len(list.Items) != 6 {
			return fmt.Errorf("%d WorkloadEntries, want 6", len(list.Items))
		}
		for _, we := range list.Items {
			if we.GetLabels()["app.kubernetes.io/managed-by"] != "meltemi" {
				t.Errorf("WorkloadEntry %s lacks ownership labels", we.GetName())
			}
		}
		return nil
	})
	if se, err := c.getServiceEntry(host); err == nil {
		if addrs, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "addresses"); len(addrs) != 1 || !strings.HasPrefix(addrs[0], "240.241.") {
			t.Errorf("virtual IP %v, want one address from 240.241.0.0/16", addrs)
		}
	}
}

func TestStandbyTakesOverWhenLeaderDies(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	const iface = "com.example.ha.HaService"
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.6.0.1", Port: 20880, Interface: iface, Application: "ha"}); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-ha", c.namespace, env.ZKAddr, root))
	args := []string{"--config", cfg, "--leader-elect", "--leader-election-namespace", c.namespace, "--leader-election-lease-duration", "4s"}
	a := startBridge(t, c, args...)
	a.waitReady(t, env)
	b := startBridge(t, c, args...)
	b.waitReady(t, env)
	host := strings.ToLower(iface)
	env.Eventually(t, 20*time.Second, func() error { _, err := c.getServiceEntry(host); return err })

	leader, standby := a, b
	env.Eventually(t, 20*time.Second, func() error {
		switch {
		case strings.Contains(a.logs.String(), "became leader"):
			leader, standby = a, b
		case strings.Contains(b.logs.String(), "became leader"):
			leader, standby = b, a
		default:
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	if strings.Contains(standby.logs.String(), "became leader") {
		t.Fatal("both replicas claim leadership")
	}
	if w := metricSum(standby.metrics(t), "meltemi_sync_writes_total"); w != 0 {
		t.Errorf("standby wrote %v objects", w)
	}
	// kill -9: the lease is not released, the standby must wait it out and take over.
	_ = leader.cmd.Process.Signal(syscall.SIGKILL)
	<-leader.stopped
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.6.0.2", Port: 20880, Interface: iface, Application: "ha"}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 30*time.Second, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		if got := addresses(se); !slices.Equal(got, []string{"10.6.0.1", "10.6.0.2"}) {
			return fmt.Errorf("endpoints %v", got)
		}
		return nil
	})
	if !strings.Contains(standby.logs.String(), "became leader") {
		t.Error("standby never logged taking over")
	}
}
