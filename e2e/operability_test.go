package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

// readyCondition returns the status, reason and message of a ServiceRegistry's Ready
// condition, and its observedGeneration against the object's generation.
func (c *cluster) readyCondition(t testing.TB, name string) (status, reason, message string, current bool) {
	t.Helper()
	obj, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting ServiceRegistry %s: %v", name, err)
	}
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	observed, _, _ := unstructured.NestedInt64(obj.Object, "status", "observedGeneration")
	for _, item := range conds {
		m, _ := item.(map[string]any)
		if m["type"] == "Ready" {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"]), fmt.Sprint(m["message"]), observed == obj.GetGeneration()
		}
	}
	return "", "", "", false
}

// TestBadRegistriesAreReportedAndDoNotBlockTheOthers: a registry with a missing plugin, one
// with an invalid option and one whose credentials Secret is missing each get Ready=False with
// their reason and a Warning Event; the good registry is Ready and the host becomes ready
// after the first-sync timeout; creating the missing Secret clears its condition.
func TestBadRegistriesAreReportedAndDoNotBlockTheOthers(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.11.0.1", Port: 20880, Interface: "com.example.ops.Good", Application: "ops"}); err != nil {
		t.Fatal(err)
	}
	registries := map[string]string{
		"zk-good":        zkRegistryYAML("zk-good", c.namespace, env.ZKAddr, root),
		"no-plugin":      strings.Replace(zkRegistryYAML("no-plugin", c.namespace, env.ZKAddr, root), "kind: zookeeper", "kind: nosuchregistry", 1),
		"bad-option":     zkRegistryYAML("bad-option", c.namespace, env.ZKAddr, root) + "    noSuchOption: x\n",
		"missing-secret": zkRegistryYAML("missing-secret", c.namespace, env.ZKAddr, root) + "  credentialsSecretRef:\n    name: zk-creds\n",
	}
	for _, doc := range registries {
		var sr unstructured.Unstructured
		if err := yamlToObject(doc, &sr); err != nil {
			t.Fatal(err)
		}
		c.create(t, serviceRegistry, &sr)
	}
	// What the registry with the missing Secret wrote in an earlier run.
	leftover := foreignServiceEntry(c.namespace, "from-missing-secret.example", "from-missing-secret.example")
	leftover.SetLabels(map[string]string{"app.kubernetes.io/managed-by": "meltemi", "meltemi.io/registry": "missing-secret",
		"networking.istio.io/enable-autoallocate-ip": "false"})
	c.create(t, serviceEntries, leftover)
	b := startBridge(t, c, "--registry-namespace", c.namespace, "--first-sync-timeout", "3s")
	b.waitReady(t, env) // within the timeout, not blocked by the bad registries

	want := map[string]struct{ status, reason, message string }{
		"zk-good":        {"True", "Ready", "connected and synced"},
		"no-plugin":      {"False", "PluginStartFailed", "nosuchregistry"},
		"bad-option":     {"False", "InvalidOptions", "noSuchOption"},
		"missing-secret": {"False", "InvalidConfiguration", "zk-creds"},
	}
	env.Eventually(t, 30*time.Second, func() error {
		for name, w := range want {
			status, reason, message, current := c.readyCondition(t, name)
			if status != w.status || reason != w.reason || !strings.Contains(message, w.message) || !current {
				return fmt.Errorf("%s: Ready=%s %s %q (observedGeneration current: %v), want %s %s containing %q",
					name, status, reason, message, current, w.status, w.reason, w.message)
			}
			if w.status == "False" {
				if evs := c.registryEvents(t, name, w.reason); len(evs) == 0 {
					return fmt.Errorf("%s: no Warning Event %s", name, w.reason)
				}
			}
		}
		return nil
	})
	time.Sleep(2 * time.Second) // the good registry synced: give a wrong delete every chance
	if _, err := c.getServiceEntry("from-missing-secret.example"); err != nil {
		t.Errorf("the ServiceEntry of the registry whose Secret is missing was deleted: %v", err)
	}
	resp, err := http.Get("http://" + b.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz %d with bad registries after the first-sync timeout, want 200", resp.StatusCode)
	}

	// Fixing a registry clears its condition.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "zk-creds", Namespace: c.namespace}, StringData: map[string]string{"username": "u", "password": "p"}}
	if _, err := c.kube.CoreV1().Secrets(c.namespace).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 30*time.Second, func() error {
		if status, reason, message, _ := c.readyCondition(t, "missing-secret"); status != "True" {
			return fmt.Errorf("missing-secret after the Secret was created: Ready=%s %s %q", status, reason, message)
		}
		return nil
	})
	if strings.Contains(b.logs.String(), "password\":\"p") || strings.Contains(b.logs.String(), "password=p ") {
		t.Error("the registry password appears in the log")
	}
}

// TestReadmeServiceRegistryExampleIsAccepted: the ServiceRegistry the README shows passes the
// CRD's validation on the real API server (a server-side dry run).
func TestReadmeServiceRegistryExampleIsAccepted(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var doc string
	for _, block := range strings.Split(string(readme), "```yaml")[1:] {
		if body, _, _ := strings.Cut(block, "```"); strings.Contains(body, "kind: ServiceRegistry") {
			doc = body
			break
		}
	}
	if doc == "" {
		t.Fatal("no ServiceRegistry example in the README")
	}
	var sr unstructured.Unstructured
	if err := yamlToObject(doc, &sr); err != nil {
		t.Fatalf("README example: %v", err)
	}
	sr.SetNamespace(c.namespace)
	if _, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).Create(context.Background(), &sr, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the README's ServiceRegistry is refused: %v", err)
	}
}

// TestOnlyTheLeaderWritesStatusAndEvents: of two replicas reading the same ServiceRegistry,
// only the leader records its Events (one Synced Event, counted once) and meltemi_leader says
// which one leads.
func TestOnlyTheLeaderWritesStatusAndEvents(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.12.0.1", Port: 20880, Interface: "com.example.ops.Leader", Application: "ops"}); err != nil {
		t.Fatal(err)
	}
	const name = "zk-two-replicas"
	var sr unstructured.Unstructured
	if err := yamlToObject(zkRegistryYAML(name, c.namespace, env.ZKAddr, root), &sr); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &sr)
	args := []string{"--registry-namespace", c.namespace, "--leader-elect", "--leader-election-namespace", c.namespace, "--leader-election-lease-duration", "4s"}
	a := startBridge(t, c, args...)
	b := startBridge(t, c, args...)
	a.waitReady(t, env)
	b.waitReady(t, env)
	env.Eventually(t, 20*time.Second, func() error {
		if status, reason, _, _ := c.readyCondition(t, name); status != "True" {
			return fmt.Errorf("Ready=%s %s", status, reason)
		}
		la, lb := metricSum(a.metrics(t), "meltemi_leader"), metricSum(b.metrics(t), "meltemi_leader")
		if la+lb != 1 {
			return fmt.Errorf("meltemi_leader %v and %v, want one leader", la, lb)
		}
		return nil
	})
	time.Sleep(3 * time.Second) // status rounds of both replicas
	evs, err := c.kube.CoreV1().Events(c.namespace).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	synced := 0
	for _, e := range evs.Items {
		if e.Reason == "Synced" {
			synced += int(e.Count)
		}
	}
	if synced != 1 {
		t.Errorf("%d Synced Events for the registry, want 1 (the leader's)", synced)
	}
}
