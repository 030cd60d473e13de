package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/benchstat"
)

// consulApps registers services with the shared Consul agent as applications do, under a
// prefix of the test's own, and removes them at the end.
type consulApps struct {
	c      *api.Client
	prefix string
	dc     string
}

func newConsulApps(t testing.TB, env *harness.Env) *consulApps {
	t.Helper()
	env.RequireComponent(t, harness.Consul)
	c, err := api.NewClient(&api.Config{Address: env.ConsulAddr})
	if err != nil {
		t.Fatal(err)
	}
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatalf("asking Consul for its datacenter: %v", err)
	}
	a := &consulApps{c: c, prefix: fmt.Sprintf("e2e%06x", rand.Uint32()>>8), dc: self["Config"]["Datacenter"].(string)}
	t.Cleanup(func() {
		services, _ := c.Agent().Services()
		for id, s := range services {
			if strings.HasPrefix(s.Service, a.prefix) {
				_ = c.Agent().ServiceDeregister(id)
			}
		}
	})
	return a
}

func (a *consulApps) name(s string) string { return a.prefix + "-" + s }

// register adds an instance; ttl gives it a TTL check (id "ttl-<id>") that starts passing.
func (a *consulApps) register(t testing.TB, reg api.AgentServiceRegistration, ttl bool) {
	t.Helper()
	if ttl {
		reg.Check = &api.AgentServiceCheck{CheckID: "ttl-" + reg.ID, TTL: "10m", Status: api.HealthPassing}
	}
	if err := a.c.Agent().ServiceRegister(&reg); err != nil {
		t.Fatalf("registering %s: %v", reg.ID, err)
	}
}

func (a *consulApps) check(t testing.TB, id, status string) {
	t.Helper()
	if err := a.c.Agent().UpdateTTL("ttl-"+id, "", status); err != nil {
		t.Fatalf("setting the check of %s: %v", id, err)
	}
}

func (a *consulApps) deregister(t testing.TB, id string) {
	t.Helper()
	if err := a.c.Agent().ServiceDeregister(id); err != nil {
		t.Fatalf("deregistering %s: %v", id, err)
	}
}

func consulRegistryYAML(name, namespace, addr string, options map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: meltemi.io/v1alpha1\nkind: ServiceRegistry\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  kind: consul\n  address: %s\n  options:\n", name, namespace, addr)
	for _, k := range slices.Sorted(maps.Keys(options)) {
		fmt.Fprintf(&b, "    %s: %q\n", k, options[k])
	}
	return b.String()
}

// awaitAddresses waits until the ServiceEntry named host has exactly the given endpoints.
func awaitAddresses(t *testing.T, env *harness.Env, c *cluster, host string, want ...string) *unstructured.Unstructured {
	t.Helper()
	slices.Sort(want)
	var se *unstructured.Unstructured
	env.Eventually(t, 20*time.Second, func() error {
		var err error
		if se, err = c.getServiceEntry(host); err != nil {
			return err
		}
		if got := addresses(se); !slices.Equal(got, want) {
			return fmt.Errorf("%s endpoints %v, want %v", host, got, want)
		}
		return nil
	})
	return se
}

func portNames(se *unstructured.Unstructured) []string {
	ports, _, _ := unstructured.NestedSlice(se.Object, "spec", "ports")
	var out []string
	for _, p := range ports {
		name, _ := p.(map[string]any)["name"].(string)
		out = append(out, name)
	}
	return out
}

func TestConsulServicesBecomeServiceEntries(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	apps := newConsulApps(t, env)
	web, orders, plain := apps.name("web"), apps.name("orders"), apps.name("plain")
	apps.register(t, api.AgentServiceRegistration{ID: web + "-1", Name: web, Address: "10.50.0.1", Port: 8080,
		Tags: []string{"protocol=http", "version=v1"}, Meta: map[string]string{"team": "storefront", "zone": "az-1"}}, true)
	apps.register(t, api.AgentServiceRegistration{ID: orders + "-1", Name: orders, Address: "10.50.1.1", Port: 20880,
		Meta: map[string]string{"protocol": "dubbo", "version": "2.0.0"}}, true)
	// No protocol anywhere: the configured default applies, not opaque TCP.
	apps.register(t, api.AgentServiceRegistration{ID: plain + "-1", Name: plain, Address: "10.50.2.1", Port: 9000}, true)

	cfg := writeFile(t, "registries.yaml", consulRegistryYAML("consul-e2e", c.namespace, env.ConsulAddr,
		map[string]string{"services": apps.prefix + "-*", "defaultProtocol": "grpc"}))
	b := startBridge(t, c, "--config", cfg, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)

	webHost, ordersHost, plainHost := web+".service.consul", orders+".service.consul", plain+".service.consul"
	se := awaitAddresses(t, env, c, webHost, "10.50.0.1")
	if got := se.GetLabels(); got["app.kubernetes.io/managed-by"] != "meltemi" || got["meltemi.io/registry"] != "consul-e2e" {
		t.Errorf("ownership labels: %v", got)
	}
	if got := portNames(se); !slices.Equal(got, []string{"http-8080"}) {
		t.Errorf("web ports %v, want [http-8080]", got)
	}
	ep := endpointsOf(se)[0]
	for k, want := range map[string]string{"version": "v1", "team": "storefront", "meltemi.io/registry": "consul-e2e"} {
		if ep.Labels[k] != want {
			t.Errorf("endpoint label %s = %q, want %q (labels %v)", k, ep.Labels[k], want, ep.Labels)
		}
	}
	for _, consumed := range []string{"protocol", "zone"} {
		if _, ok := ep.Labels[consumed]; ok {
			t.Errorf("meta %s became a label", consumed)
		}
	}
	rawEndpoints, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints")
	if loc := rawEndpoints[0].(map[string]any)["locality"]; loc != apps.dc+"/az-1" {
		t.Errorf("locality %v, want %s/az-1", loc, apps.dc)
	}
	if got := portNames(awaitAddresses(t, env, c, ordersHost, "10.50.1.1")); !slices.Equal(got, []string{"tcp-metaprotocol-dubbo-20880"}) {
		t.Errorf("orders ports %v", got)
	}
	if got := portNames(awaitAddresses(t, env, c, plainHost, "10.50.2.1")); !slices.Equal(got, []string{"grpc-9000"}) {
		t.Errorf("plain ports %v, want the default protocol's grpc-9000", got)
	}

	// Instances come and go; health decides which are endpoints.
	apps.register(t, api.AgentServiceRegistration{ID: web + "-2", Name: web, Address: "10.50.0.2", Port: 8080, Tags: []string{"protocol=http"}}, true)
	awaitAddresses(t, env, c, webHost, "10.50.0.1", "10.50.0.2")
	apps.check(t, web+"-1", api.HealthCritical)
	awaitAddresses(t, env, c, webHost, "10.50.0.2")
	apps.check(t, web+"-1", api.HealthPassing)
	awaitAddresses(t, env, c, webHost, "10.50.0.1", "10.50.0.2")
	apps.deregister(t, web+"-2")
	awaitAddresses(t, env, c, webHost, "10.50.0.1")
	apps.deregister(t, web+"-1")
	env.Eventually(t, 20*time.Second, func() error {
		if _, err := c.getServiceEntry(webHost); !isNotFound(err) {
			return fmt.Errorf("ServiceEntry %s still there (err %v)", webHost, err)
		}
		return nil
	})
	// Its neighbours are untouched.
	awaitAddresses(t, env, c, ordersHost, "10.50.1.1")
}

func TestConsulAgentRestart(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	apps := newConsulApps(t, env)
	svc := apps.name("svc")
	host := svc + ".service.consul"
	for i := range 2 {
		apps.register(t, api.AgentServiceRegistration{ID: fmt.Sprint(svc, "-", i), Name: svc, Address: fmt.Sprint("10.60.0.", i+1), Port: 80}, false)
	}
	cfg := writeFile(t, "registries.yaml", consulRegistryYAML("consul-restart", c.namespace, env.ConsulAddr,
		map[string]string{"services": apps.prefix + "-*"}))
	b := startBridge(t, c, "--config", cfg, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)
	awaitAddresses(t, env, c, host, "10.60.0.1", "10.60.0.2")

	// Watch the ServiceEntry through the restart: it must never lose an endpoint.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + host})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	lost := make(chan string, 16)
	go func() {
		for ev := range w.ResultChan() {
			se, ok := ev.Object.(*unstructured.Unstructured)
			if ev.Type == watch.Deleted || ok && len(addresses(se)) < 2 {
				lost <- fmt.Sprintf("%s: endpoints %v", ev.Type, addresses(se))
			}
		}
	}()

	env.Restart(t, harness.Consul)
	// Registered after the restart: the plugin converges.
	apps.register(t, api.AgentServiceRegistration{ID: svc + "-2", Name: svc, Address: "10.60.0.3", Port: 80}, false)
	awaitAddresses(t, env, c, host, "10.60.0.1", "10.60.0.2", "10.60.0.3")
	select {
	case what := <-lost:
		t.Fatalf("the ServiceEntry lost endpoints across the restart: %s", what)
	default:
	}
}

// TestConsulTokenFromSecret: a ServiceRegistry in the cluster takes its ACL token from a
// Secret; the token reaches the plugin and never shows in logs or status. (The shared Consul
// does not enforce ACLs; registries/consul tests the token against an agent that does.)
func TestConsulTokenFromSecret(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	apps := newConsulApps(t, env)
	svc := apps.name("secured")
	apps.register(t, api.AgentServiceRegistration{ID: svc, Name: svc, Address: "10.65.0.1", Port: 80}, false)
	token := fmt.Sprintf("tok-%016x", rand.Uint64())
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "consul-acl"}, StringData: map[string]string{"token": token}}
	if _, err := c.kube.CoreV1().Secrets(c.namespace).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var sr unstructured.Unstructured
	doc := consulRegistryYAML("consul-secret", c.namespace, env.ConsulAddr, map[string]string{"services": apps.prefix + "-*"}) +
		"  credentialsSecretRef:\n    name: consul-acl\n"
	if err := yamlToObject(doc, &sr); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &sr)

	b := startBridge(t, c, "--registry-namespace", c.namespace, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)
	awaitAddresses(t, env, c, svc+".service.consul", "10.65.0.1")
	env.Eventually(t, 20*time.Second, func() error {
		obj, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).Get(context.Background(), "consul-secret", metav1.GetOptions{})
		if err != nil {
			return err
		}
		st, _, _ := unstructured.NestedMap(obj.Object, "status")
		if st["connected"] != true || st["synced"] != true {
			return fmt.Errorf("status %v", st)
		}
		if strings.Contains(fmt.Sprint(obj.Object), token) {
			t.Fatalf("the token shows in the ServiceRegistry")
		}
		return nil
	})
	if strings.Contains(b.logs.String(), token) {
		t.Fatal("the token shows in the host's log")
	}
}

// BenchmarkConsulToServiceEntry measures, with the whole host and the Consul plugin as
// processes against the real Consul agent and kube-apiserver, the time from a change in
// Consul to the ServiceEntry written (seen by a watch on the apiserver):
//   - register-p50-ms / register-p99-ms: an instance registered, or deregistered;
//   - health-p50-ms / health-p99-ms: an instance's TTL check turned critical, or passing.
//
// Each iteration makes four changes, 200 ms apart (not timed). The host's default debounce
// (50 ms) is included.
func BenchmarkConsulToServiceEntry(b *testing.B) {
	env := harness.Load(b)
	env.RequireComponent(b, harness.KubeAPIServer)
	apps := newConsulApps(b, env)
	cfg := env.RestConfig(b)
	kube, dyn := kubernetes.NewForConfigOrDie(cfg), dynamic.NewForConfigOrDie(cfg)
	ns := "bench-" + apps.prefix
	ctx := context.Background()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	svc := apps.name("bench")
	host := svc + ".service.consul"
	apps.register(b, api.AgentServiceRegistration{ID: svc + "-base", Name: svc, Address: "10.70.0.1", Port: 8080}, false)
	regFile := filepath.Join(b.TempDir(), "registries.yaml")
	if err := os.WriteFile(regFile, []byte(consulRegistryYAML("consul-bench", ns, env.ConsulAddr, map[string]string{"services": apps.prefix + "-*"})), 0o600); err != nil {
		b.Fatal(err)
	}
	meltemi := exec.Command(filepath.Join(binDir, "meltemi"), "run", "--kubeconfig", env.Kubeconfig, "--namespace", ns,
		"--plugin-dir", binDir, "--listen", "", "--xds-listen", "127.0.0.1:0", "--config", regFile, "--log-level", "warn")
	if err := meltemi.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = meltemi.Process.Signal(syscall.SIGTERM); _ = meltemi.Wait() })

	// Every version of the ServiceEntry, with the time it was seen.
	type seen struct {
		at    time.Time
		addrs []string
	}
	versions := make(chan seen, 1024)
	w, err := dyn.Resource(serviceEntries).Namespace(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + host})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Stop)
	go func() {
		for ev := range w.ResultChan() {
			if se, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Deleted {
				versions <- seen{time.Now(), addresses(se)}
			}
		}
	}()
	await := func(want ...string) time.Time {
		slices.Sort(want)
		timeout := time.After(30 * time.Second)
		for {
			select {
			case v := <-versions:
				if slices.Equal(v.addrs, want) {
					return v.at
				}
			case <-timeout:
				b.Fatalf("ServiceEntry %s never had endpoints %v", host, want)
			}
		}
	}
	await("10.70.0.1")

	var register, health []time.Duration
	// change makes one change to Consul and returns how long the ServiceEntry took to show
	// want. Changes are spaced out so each is measured alone, not queued behind the last.
	change := func(do func(), want ...string) time.Duration {
		b.StopTimer()
		time.Sleep(200 * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		do()
		return await(want...).Sub(start)
	}
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("%s-%d", svc, i)
		addr := fmt.Sprintf("10.70.%d.%d", 1+i/250, 1+i%250)
		register = append(register, change(func() {
			apps.register(b, api.AgentServiceRegistration{ID: id, Name: svc, Address: addr, Port: 8080}, true)
		}, "10.70.0.1", addr))
		health = append(health, change(func() { apps.check(b, id, api.HealthCritical) }, "10.70.0.1"))
		health = append(health, change(func() { apps.check(b, id, api.HealthPassing) }, "10.70.0.1", addr))
		register = append(register, change(func() { apps.deregister(b, id) }, "10.70.0.1"))
	}
	b.StopTimer()
	for name, d := range map[string][]time.Duration{"register": register, "health": health} {
		b.ReportMetric(benchstat.QuantileMs(d, 0.5), name+"-p50-ms")
		b.ReportMetric(benchstat.QuantileMs(d, 0.99), name+"-p99-ms")
	}
}
