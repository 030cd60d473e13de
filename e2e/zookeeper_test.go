package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

func connectZK(t testing.TB, env *harness.Env) *zk.Conn {
	t.Helper()
	env.RequireComponent(t, harness.ZooKeeper)
	conn, _, err := zk.Connect([]string{env.ZKAddr}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatalf("connecting to ZooKeeper: %v", err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// zkRoot returns a Dubbo root of the test's own, removed at the end.
func zkRoot(t testing.TB, conn *zk.Conn) string {
	root := fmt.Sprintf("dubbo-e2e-%08x", rand.Uint32())
	t.Cleanup(func() { _ = dubbo.DeleteTree(conn, "/"+root) })
	return root
}

func zkRegistryYAML(name, namespace, addr, root string) string {
	return fmt.Sprintf(`apiVersion: meltemi.io/v1alpha1
kind: ServiceRegistry
metadata:
  name: %s
  namespace: %s
spec:
  kind: zookeeper
  address: %s
  options:
    roots: %s
`, name, namespace, addr, root)
}

type endpoint struct {
	Address string
	Labels  map[string]string
	Ports   map[string]any
}

func endpointsOf(se *unstructured.Unstructured) []endpoint {
	raw, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints")
	var out []endpoint
	for _, r := range raw {
		m, _ := r.(map[string]any)
		ep := endpoint{Labels: map[string]string{}}
		ep.Address, _ = m["address"].(string)
		if l, ok := m["labels"].(map[string]any); ok {
			for k, v := range l {
				ep.Labels[k], _ = v.(string)
			}
		}
		ep.Ports, _ = m["ports"].(map[string]any)
		out = append(out, ep)
	}
	return out
}

func addresses(se *unstructured.Unstructured) []string {
	var out []string
	for _, ep := range endpointsOf(se) {
		out = append(out, ep.Address)
	}
	slices.Sort(out)
	return out
}

func TestZooKeeperProvidersBecomeServiceEntries(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)

	const iface = "org.apache.dubbo.samples.GreetingService"
	host := strings.ToLower(iface)

	// Objects Meltemi does not own: one elsewhere, one with the very name Meltemi would use.
	foreignSpec := map[string]any{
		"hosts": []any{"legacy.example.com"}, "location": "MESH_EXTERNAL", "resolution": "DNS",
		"ports": []any{map[string]any{"number": int64(80), "name": "http", "protocol": "HTTP"}},
	}
	newSE := func(name string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"spec": foreignSpec}}
		u.SetAPIVersion("networking.istio.io/v1")
		u.SetKind("ServiceEntry")
		u.SetName(name)
		return u
	}
	foreign := c.create(t, serviceEntries, newSE("legacy"))
	const takenHost = "com.example.taken.takenservice"
	taken := c.create(t, serviceEntries, newSE(takenHost))

	p1 := dubbo.Provider{IP: "10.1.0.1", Port: 20880, Interface: iface, Application: "greeter", Version: "1.0.0", Group: "blue", Methods: []string{"greet"}}
	node1, err := dubbo.Register(conn, root, p1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.9.0.1", Port: 20880, Interface: "com.example.taken.TakenService", Application: "taken"}); err != nil {
		t.Fatal(err)
	}

	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-e2e", c.namespace, env.ZKAddr, root))
	b := startBridge(t, c, "--config", cfg)
	b.waitReady(t, env)

	// First provider: one ServiceEntry with one endpoint.
	var se *unstructured.Unstructured
	env.Eventually(t, 20*time.Second, func() error {
		se, err = c.getServiceEntry(host)
		return err
	})
	if got := se.GetLabels(); got["app.kubernetes.io/managed-by"] != "meltemi" || got["meltemi.io/registry"] != "zk-e2e" {
		t.Errorf("ownership labels: %v", got)
	}
	hosts, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts")
	if !slices.Equal(hosts, []string{host}) {
		t.Errorf("hosts = %v, want [%s]", hosts, host)
	}
	if loc, _, _ := unstructured.NestedString(se.Object, "spec", "location"); loc != "MESH_INTERNAL" {
		t.Errorf("location = %q", loc)
	}
	if res, _, _ := unstructured.NestedString(se.Object, "spec", "resolution"); res != "STATIC" {
		t.Errorf("resolution = %q", res)
	}
	ports, _, _ := unstructured.NestedSlice(se.Object, "spec", "ports")
	if len(ports) != 1 || ports[0].(map[string]any)["name"] != "tcp-metaprotocol-dubbo-20880" || ports[0].(map[string]any)["number"] != int64(20880) {
		t.Errorf("ports = %v, want one tcp-metaprotocol-dubbo-20880", ports)
	}
	eps := endpointsOf(se)
	if len(eps) != 1 || eps[0].Address != "10.1.0.1" {
		t.Fatalf("endpoints = %+v, want 10.1.0.1", eps)
	}
	for k, want := range map[string]string{"version": "1.0.0", "group": "blue", "application": "greeter", "meltemi.io/registry": "zk-e2e"} {
		if eps[0].Labels[k] != want {
			t.Errorf("endpoint label %s = %q, want %q (labels %v)", k, eps[0].Labels[k], want, eps[0].Labels)
		}
	}
	for _, volatile := range []string{"timestamp", "pid"} {
		if _, ok := eps[0].Labels[volatile]; ok {
			t.Errorf("volatile parameter %s became a label", volatile)
		}
	}

	// A second provider adds an endpoint.
	p2 := p1
	p2.IP, p2.Version, p2.Group = "10.1.0.2", "2.0.0", ""
	node2, err := dubbo.Register(conn, root, p2)
	if err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 10*time.Second, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		if got := addresses(se); !slices.Equal(got, []string{"10.1.0.1", "10.1.0.2"}) {
			return fmt.Errorf("endpoints %v", got)
		}
		return nil
	})

	// Removing a provider removes its endpoint.
	if err := conn.Delete(node1, -1); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 10*time.Second, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		if got := addresses(se); !slices.Equal(got, []string{"10.1.0.2"}) {
			return fmt.Errorf("endpoints %v", got)
		}
		return nil
	})

	// The last provider gone deletes the ServiceEntry.
	if err := conn.Delete(node2, -1); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 10*time.Second, func() error {
		if _, err := c.getServiceEntry(host); !isNotFound(err) {
			return fmt.Errorf("ServiceEntry still there (err %v)", err)
		}
		return nil
	})

	// Foreign objects are untouched, even the one whose name Meltemi wanted.
	for _, before := range []*unstructured.Unstructured{foreign, taken} {
		after, err := c.getServiceEntry(before.GetName())
		if err != nil {
			t.Fatalf("foreign ServiceEntry %s: %v", before.GetName(), err)
		}
		// istiod may write status into it (address allocation): only its spec, labels and
		// annotations, and who manages them, must be as they were.
		if after.GetGeneration() != before.GetGeneration() || !maps.Equal(after.GetLabels(), before.GetLabels()) ||
			!maps.Equal(after.GetAnnotations(), before.GetAnnotations()) {
			t.Errorf("foreign ServiceEntry %s was modified (generation %d -> %d, labels %v -> %v)", before.GetName(),
				before.GetGeneration(), after.GetGeneration(), before.GetLabels(), after.GetLabels())
		}
		for _, mf := range after.GetManagedFields() {
			if mf.Manager == "meltemi" {
				t.Errorf("foreign ServiceEntry %s has fields managed by meltemi", before.GetName())
			}
		}
		if _, owned := after.GetLabels()["app.kubernetes.io/managed-by"]; owned {
			t.Errorf("foreign ServiceEntry %s got Meltemi's labels", before.GetName())
		}
	}
}

func TestServiceRegistryFromCluster(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	ctx := context.Background()

	const iface = "com.example.order.OrderService"
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.2.0.1", Port: 20881, Interface: iface, Application: "orders", Version: "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	// A malformed registration next to the good one is skipped and reported.
	if _, err := dubbo.Raw(conn, root, iface, "dubbo%3A%2F%2Fnot-an-ip%3Aport%2Fx"); err != nil {
		t.Fatal(err)
	}
	var sr unstructured.Unstructured
	if err := yamlToObject(zkRegistryYAML("zk-cluster", c.namespace, env.ZKAddr, root), &sr); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &sr)

	b := startBridge(t, c, "--registry-namespace", c.namespace)
	b.waitReady(t, env)
	env.Eventually(t, 20*time.Second, func() error {
		se, err := c.getServiceEntry(strings.ToLower(iface))
		if err != nil {
			return err
		}
		if got := addresses(se); !slices.Equal(got, []string{"10.2.0.1"}) {
			return fmt.Errorf("endpoints %v", got)
		}
		return nil
	})
	env.Eventually(t, 20*time.Second, func() error {
		obj, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).Get(ctx, "zk-cluster", metav1.GetOptions{})
		if err != nil {
			return err
		}
		st, _, _ := unstructured.NestedMap(obj.Object, "status")
		if st["connected"] != true || st["synced"] != true || st["services"] != int64(1) || st["instances"] != int64(1) {
			return fmt.Errorf("status %v", st)
		}
		rejected, _, _ := unstructured.NestedSlice(obj.Object, "status", "rejectedItems")
		if len(rejected) == 0 {
			return fmt.Errorf("malformed provider not reported in status: %v", st)
		}
		return nil
	})
	if m := b.metrics(t); !strings.Contains(m, `meltemi_registry_rejected_items_total{registry="zk-cluster"}`) {
		t.Errorf("rejection metric missing from /metrics")
	}
}
