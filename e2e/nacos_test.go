package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/registries/nacos/nacostest"
)

// The Nacos-protocol server (Polaris) pushes changes about once a second.
const nacosWait = 30 * time.Second

// nacosRegistry is a ServiceRegistry of kind nacos; secret names its credentials Secret, if any.
func nacosRegistry(name, namespace, addr, secret string, options map[string]string) map[string]any {
	opts := map[string]any{}
	for k, v := range options {
		opts[k] = v
	}
	spec := map[string]any{"kind": "nacos", "address": addr, "options": opts}
	if secret != "" {
		spec["credentialsSecretRef"] = map[string]any{"name": secret}
	}
	return map[string]any{
		"apiVersion": "meltemi.io/v1alpha1", "kind": "ServiceRegistry",
		"metadata": map[string]any{"name": name, "namespace": namespace}, "spec": spec,
	}
}

func nacosRegistryYAML(t testing.TB, name, namespace, addr string, options map[string]string) string {
	t.Helper()
	out, err := yaml.Marshal(nacosRegistry(name, namespace, addr, "", options))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// nacosNamespace returns a Nacos namespace of the test's own.
func nacosNamespace(t testing.TB, env *harness.Env) string {
	t.Helper()
	env.RequireComponent(t, harness.Polaris)
	return fmt.Sprintf("e2e-%08x", rand.Uint32())
}

// awaitEndpoints waits until the ServiceEntry named host has exactly the endpoints want.
func awaitEndpoints(t *testing.T, env *harness.Env, c *cluster, timeout time.Duration, host string, want ...string) *unstructured.Unstructured {
	t.Helper()
	slices.Sort(want)
	var se *unstructured.Unstructured
	env.Eventually(t, timeout, func() error {
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

func endpointField(se *unstructured.Unstructured, address, field string) any {
	raw, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints")
	for _, r := range raw {
		if m, _ := r.(map[string]any); m["address"] == address {
			return m[field]
		}
	}
	return nil
}

func TestNacosServicesBecomeServiceEntries(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	ns := nacosNamespace(t, env)
	app := nacostest.NewApp(t, env.NacosAddr, ns)

	orders := "orders"
	o1 := nacostest.Instance(orders, "", "10.80.0.1", 8080, map[string]string{"protocol": "http", "version": "v1"})
	o2 := nacostest.Instance(orders, "", "10.80.0.2", 9090, map[string]string{"protocol": "http", "version": "v2"})
	app.Register(o1)
	app.Register(o2)
	iface := "org.apache.dubbo.samples.GreetingService"
	app.Register(nacostest.Instance(nacostest.DubboProviders(iface, "1.0.0", "blue"), "", "10.81.0.1", 20880, nacostest.DubboMetadata(iface, "greeter", "1.0.0", "blue")))
	app.Register(nacostest.Instance(nacostest.DubboProviders(iface, "2.0.0", ""), "", "10.81.0.2", 20880, nacostest.DubboMetadata(iface, "greeter", "2.0.0", "")))

	cfg := writeFile(t, "registries.yaml", nacosRegistryYAML(t, "nacos-e2e", c.namespace, env.NacosAddr,
		map[string]string{"namespaces": ns, "listInterval": "1s"}))
	b := startBridge(t, c, "--config", cfg, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)

	// A plain service: host <service>.<namespace>.nacos, instances on different ports.
	ordersHost := orders + "." + ns + ".nacos"
	se := awaitEndpoints(t, env, c, nacosWait, ordersHost, "10.80.0.1", "10.80.0.2")
	if got := se.GetLabels(); got["app.kubernetes.io/managed-by"] != "meltemi" || got["meltemi.io/registry"] != "nacos-e2e" {
		t.Errorf("ownership labels: %v", got)
	}
	ports, _, _ := unstructured.NestedSlice(se.Object, "spec", "ports")
	if len(ports) != 1 || !strings.HasPrefix(portNames(se)[0], "http-") {
		t.Errorf("ports %v, want one http port", ports)
	}
	eps := map[string]endpoint{}
	for _, ep := range endpointsOf(se) {
		eps[ep.Address] = ep
	}
	if eps["10.80.0.1"].Labels["version"] != "v1" || eps["10.80.0.2"].Labels["version"] != "v2" {
		t.Errorf("endpoint labels %v", eps)
	}
	if len(eps["10.80.0.1"].Ports)+len(eps["10.80.0.2"].Ports) != 1 {
		t.Errorf("endpoint ports %v: the instance on the other port needs its own port mapping", eps)
	}
	for _, ep := range eps {
		for k := range ep.Labels {
			if strings.HasPrefix(k, "internal-") || k == "protocol" {
				t.Errorf("metadata %s became a label", k)
			}
		}
	}

	// Dubbo providers of two versions: one ServiceEntry named after the interface.
	dubboHost := strings.ToLower(iface)
	dse := awaitEndpoints(t, env, c, nacosWait, dubboHost, "10.81.0.1", "10.81.0.2")
	if got := portNames(dse); !slices.Equal(got, []string{"tcp-metaprotocol-dubbo-20880"}) {
		t.Errorf("Dubbo ports %v", got)
	}
	for _, ep := range endpointsOf(dse) {
		if ep.Labels["application"] != "greeter" || ep.Labels["version"] == "" {
			t.Errorf("Dubbo endpoint %s labels %v", ep.Address, ep.Labels)
		}
		if _, ok := ep.Labels["timestamp"]; ok {
			t.Errorf("volatile parameter timestamp became a label")
		}
	}

	// A new service is found by the listing; instances come and go by push.
	app.Register(nacostest.Instance("billing", "", "10.82.0.1", 8080, nil))
	awaitEndpoints(t, env, c, nacosWait, "billing."+ns+".nacos", "10.82.0.1")
	app.Deregister(o2)
	awaitEndpoints(t, env, c, nacosWait, ordersHost, "10.80.0.1")

	// Weight and enabled. Weights are written when they differ: scaled by 100 (4 -> 400, the
	// default 1 -> 100).
	o1.Weight = 4
	app.Update(o1)
	app.Register(o2)
	env.Eventually(t, nacosWait, func() error {
		se, err := c.getServiceEntry(ordersHost)
		if err != nil {
			return err
		}
		w1, w2 := endpointField(se, "10.80.0.1", "weight"), endpointField(se, "10.80.0.2", "weight")
		if w1 != int64(400) || w2 != int64(100) {
			return fmt.Errorf("weights %v and %v, want 400 and 100", w1, w2)
		}
		return nil
	})
	o2.Enable = false
	app.Update(o2)
	awaitEndpoints(t, env, c, nacosWait, ordersHost, "10.80.0.1")

	// The last instance gone deletes the ServiceEntry; its neighbours stay.
	app.Deregister(o1)
	env.Eventually(t, nacosWait, func() error {
		if _, err := c.getServiceEntry(ordersHost); !isNotFound(err) {
			return fmt.Errorf("ServiceEntry %s still there (err %v)", ordersHost, err)
		}
		return nil
	})
	awaitEndpoints(t, env, c, nacosWait, dubboHost, "10.81.0.1", "10.81.0.2")
}

// TestNacosInstanceHealth: a persistent instance is checked by the server; while nothing vouches
// for it (no heartbeats) it is unhealthy and no endpoint, and with heartbeats it is one again.
func TestNacosInstanceHealth(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	ns := nacosNamespace(t, env)
	app := nacostest.NewApp(t, env.NacosAddr, ns)
	app.Register(nacostest.Instance("inventory", "", "10.83.0.1", 8080, nil))
	persistent := nacostest.Instance("inventory", "", "10.83.0.2", 8080, nil)
	persistent.Ephemeral = false
	app.Register(persistent)
	t.Cleanup(func() {
		_, _ = app.DeregisterInstance(vo.DeregisterInstanceParam{Ip: persistent.Ip, Port: persistent.Port, ServiceName: persistent.ServiceName})
	})

	cfg := writeFile(t, "registries.yaml", nacosRegistryYAML(t, "nacos-health", c.namespace, env.NacosAddr,
		map[string]string{"namespaces": ns, "listInterval": "1s"}))
	b := startBridge(t, c, "--config", cfg, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)

	host := "inventory." + ns + ".nacos"
	awaitEndpoints(t, env, c, nacosWait, host, "10.83.0.1", "10.83.0.2") // registered healthy
	awaitEndpoints(t, env, c, nacosWait, host, "10.83.0.1")              // no heartbeats: unhealthy
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	beats := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := app.Beat(persistent); err != nil {
				select {
				case beats <- err:
				default:
				}
			}
			time.Sleep(time.Second)
		}
	}()
	awaitEndpoints(t, env, c, nacosWait, host, "10.83.0.1", "10.83.0.2")
	select {
	case err := <-beats:
		t.Errorf("a heartbeat failed: %v", err)
	default:
	}
}

func TestNacosNamespaceAndGroupSelection(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	ns1, ns2 := nacosNamespace(t, env), nacosNamespace(t, env)
	a1, a2 := nacostest.NewApp(t, env.NacosAddr, ns1), nacostest.NewApp(t, env.NacosAddr, ns2)
	a1.Register(nacostest.Instance("catalog", "", "10.84.0.1", 80, nil))                                                         // ns1, default group: no
	a1.Register(nacostest.Instance("catalog", "search", "10.84.0.2", 80, nil))                                                   // ns1, search: yes
	a1.Register(nacostest.Instance("catalog", "other", "10.84.0.3", 80, nil))                                                    // ns1, other: no
	a2.Register(nacostest.Instance("catalog", "", "10.84.1.1", 80, nil))                                                         // ns2, default group: yes
	a2.Register(nacostest.Instance("catalog", "search", "10.84.1.2", 80, nil))                                                   // ns2, search: no
	nacostest.NewApp(t, env.NacosAddr, nacosNamespace(t, env)).Register(nacostest.Instance("catalog", "", "10.84.2.1", 80, nil)) // not selected

	cfg := writeFile(t, "registries.yaml", nacosRegistryYAML(t, "nacos-select", c.namespace, env.NacosAddr,
		map[string]string{"namespaces": ns1 + ":search;" + ns2, "listInterval": "1s"}))
	b := startBridge(t, c, "--config", cfg, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)

	want := map[string]string{"catalog.search." + ns1 + ".nacos": "10.84.0.2", "catalog." + ns2 + ".nacos": "10.84.1.1"}
	for host, addr := range want {
		awaitEndpoints(t, env, c, nacosWait, host, addr)
	}
	// Nothing else, even after a few more listings.
	time.Sleep(3 * time.Second)
	for name := range c.serviceEntries(t) {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected ServiceEntry %s", name)
		}
	}
}

func TestNacosServerRestart(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	ns := nacosNamespace(t, env)
	// One application process per instance, as in production: each client registers again
	// after the restart.
	i1 := nacostest.Instance("ledger", "", "10.85.0.1", 8080, nil)
	i2 := nacostest.Instance("ledger", "", "10.85.0.2", 8080, nil)
	app1, app2 := nacostest.NewApp(t, env.NacosAddr, ns), nacostest.NewApp(t, env.NacosAddr, ns)
	app1.Register(i1)
	app2.Register(i2)

	cfg := writeFile(t, "registries.yaml", nacosRegistryYAML(t, "nacos-restart", c.namespace, env.NacosAddr,
		map[string]string{"namespaces": ns, "listInterval": "1s", "recoveryGrace": "10s"}))
	b := startBridge(t, c, "--config", cfg, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)
	host := "ledger." + ns + ".nacos"
	awaitEndpoints(t, env, c, nacosWait, host, "10.85.0.1", "10.85.0.2")

	// Watch the ServiceEntry through the restart: it must not lose an endpoint.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + host})
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan string, 16)
	go func() {
		for ev := range w.ResultChan() {
			se, ok := ev.Object.(*unstructured.Unstructured)
			if ev.Type == watch.Deleted || ok && len(addresses(se)) < 2 {
				lost <- fmt.Sprintf("%s: endpoints %v", ev.Type, addresses(se))
			}
		}
	}()

	env.Restart(t, harness.Polaris)
	// Registered after the restart: the plugin converges.
	nacostest.NewApp(t, env.NacosAddr, ns).Register(nacostest.Instance("ledger", "", "10.85.0.3", 8080, nil))
	awaitEndpoints(t, env, c, nacosWait, host, "10.85.0.1", "10.85.0.2", "10.85.0.3")
	select {
	case what := <-lost:
		t.Fatalf("the ServiceEntry lost endpoints across the restart: %s", what)
	default:
	}
	w.Stop()

	// Removals apply again once the recovery grace is over.
	app2.Deregister(i2)
	awaitEndpoints(t, env, c, nacosWait, host, "10.85.0.1", "10.85.0.3")
}

// TestNacosCredentialsFromSecret: a ServiceRegistry in the cluster takes its Nacos user from a
// Secret; the password reaches the plugin (the client library tries to log in with it) and
// never shows in the host's log or the status. The shared server does not enforce
// authentication (its login answers 404, which the library logs).
func TestNacosCredentialsFromSecret(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	ns := nacosNamespace(t, env)
	nacostest.NewApp(t, env.NacosAddr, ns).Register(nacostest.Instance("vault", "", "10.86.0.1", 8200, nil))
	password := fmt.Sprintf("pw-%016x", rand.Uint64())
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "nacos-user"}, StringData: map[string]string{"username": "meltemi", "password": password}}
	if _, err := c.kube.CoreV1().Secrets(c.namespace).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &unstructured.Unstructured{Object: nacosRegistry("nacos-secret", c.namespace, env.NacosAddr, "nacos-user",
		map[string]string{"namespaces": ns, "listInterval": "1s"})})

	b := startBridge(t, c, "--registry-namespace", c.namespace, "--xds-listen", freeAddr(t))
	b.waitReady(t, env)
	awaitEndpoints(t, env, c, nacosWait, "vault."+ns+".nacos", "10.86.0.1")
	env.Eventually(t, nacosWait, func() error {
		obj, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).Get(context.Background(), "nacos-secret", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if strings.Contains(fmt.Sprint(obj.Object), password) {
			t.Fatalf("the password shows in the ServiceRegistry")
		}
		if st, _, _ := unstructured.NestedMap(obj.Object, "status"); st["connected"] != true || st["synced"] != true {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	logs := b.logs.String()
	if !strings.Contains(logs, "nacos client:") {
		t.Errorf("the client library's log did not reach the host's log")
	}
	if strings.Contains(logs, password) {
		t.Fatal("the password shows in the host's log")
	}
}

// BenchmarkNacosToServiceEntry measures, with the whole host and the Nacos plugin as
// processes against the real Nacos-protocol server (Polaris) and kube-apiserver, the time
// from a registration with nacos-sdk-go to the ServiceEntry written (seen by a watch):
//   - register-p50-ms / register-p99-ms: an instance added to a service the plugin watches
//     (pushed by the server, which batches pushes about once a second); against, for the same
//     changes, the server's push to a plain subscriber (nacos-push-floor-register-*) and the
//     first answer holding it to a plain client querying every 5 ms (nacos-query-floor-register-*);
//   - new-service-p50-ms / new-service-p99-ms: the first instance of a new service, found by
//     the plugin's listing (default interval, 500 ms) and then subscribed to.
//
// Each iteration registers one instance and one new service, each timed alone; the new
// service at a random point of the listing interval.
func BenchmarkNacosToServiceEntry(b *testing.B) {
	env := harness.Load(b)
	env.RequireComponent(b, harness.KubeAPIServer)
	nacosNS := nacosNamespace(b, env)
	app := nacostest.NewApp(b, env.NacosAddr, nacosNS)
	cfg := env.RestConfig(b)
	kube, dyn := kubernetes.NewForConfigOrDie(cfg), dynamic.NewForConfigOrDie(cfg)
	ns := "bench-" + nacosNS
	ctx := context.Background()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	app.Register(nacostest.Instance("bench", "", "10.90.0.1", 8080, nil))
	regFile := filepath.Join(b.TempDir(), "registries.yaml")
	if err := os.WriteFile(regFile, []byte(nacosRegistryYAML(b, "nacos-bench", ns, env.NacosAddr, map[string]string{"namespaces": nacosNS})), 0o600); err != nil {
		b.Fatal(err)
	}
	meltemi := exec.Command(filepath.Join(binDir, "meltemi"), "run", "--kubeconfig", env.Kubeconfig, "--namespace", ns,
		"--plugin-dir", binDir, "--listen", "", "--xds-listen", "127.0.0.1:0", "--config", regFile, "--log-level", "warn")
	logs := &syncBuffer{}
	meltemi.Stdout, meltemi.Stderr = logs, logs
	if err := meltemi.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = meltemi.Process.Signal(syscall.SIGTERM)
		_ = meltemi.Wait()
		if b.Failed() {
			b.Logf("meltemi log:\n%s", logs.String())
		}
	})

	// Every ServiceEntry version, with the time it was seen.
	type seen struct {
		at    time.Time
		name  string
		addrs []string
	}
	versions := make(chan seen, 4096)
	watchCtx, stopWatch := context.WithCancel(ctx)
	b.Cleanup(stopWatch)
	go func() {
		// A watch can end (e.g. the apiserver closes it); watch again until the benchmark ends.
		for watchCtx.Err() == nil {
			w, err := dyn.Resource(serviceEntries).Namespace(ns).Watch(watchCtx, metav1.ListOptions{})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				if se, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Deleted {
					versions <- seen{time.Now(), se.GetName(), addresses(se)}
				}
			}
		}
	}()
	await := func(name, addr string) time.Time {
		timeout := time.After(nacosWait)
		for {
			select {
			case v := <-versions:
				if v.name == name && slices.Contains(v.addrs, addr) {
					return v.at
				}
			case <-timeout:
				b.Fatalf("ServiceEntry %s never had endpoint %s", name, addr)
			}
		}
	}
	benchHost := "bench." + nacosNS + ".nacos"
	await(benchHost, "10.90.0.1")
	pushedAt := subscribeFloor(b, env.NacosAddr, nacosNS, "bench")

	var register, push, query, afterPush, newService []time.Duration
	b.ResetTimer()
	for i := range b.N {
		addr := fmt.Sprintf("10.90.%d.%d", 1+i/250, 1+i%250)
		start := time.Now()
		app.Register(nacostest.Instance("bench", "", addr, 8080, nil))
		queried := make(chan time.Time, 1)
		go func() { queried <- queryFloor(b, env.NacosAddr, nacosNS, "bench", addr) }()
		written, pushed := await(benchHost, addr), pushedAt(addr)
		register, push = append(register, written.Sub(start)), append(push, pushed.Sub(start))
		query = append(query, (<-queried).Sub(start))
		afterPush = append(afterPush, written.Sub(pushed))

		// New services wait for the next listing: start at a random point of its interval.
		b.StopTimer()
		time.Sleep(rand.N(3 * time.Second))
		b.StartTimer()
		svc := fmt.Sprintf("fresh-%d", i)
		start = time.Now()
		app.Register(nacostest.Instance(svc, "", "10.91.0.1", 8080, nil))
		newService = append(newService, await(svc+"."+nacosNS+".nacos", "10.91.0.1").Sub(start))
	}
	b.StopTimer()
	// The floor of an instance change: the server's push to a plain subscriber, same changes,
	// and the first answer to a plain client querying every 5 ms that has it: how soon any
	// client can learn of it. after-push is Meltemi's share of each change: from that push to
	// the ServiceEntry's update (negative when Meltemi's own subscription was pushed first).
	for name, d := range map[string][]time.Duration{"register": register, "nacos-push-floor-register": push,
		"nacos-query-floor-register": query, "after-push": afterPush, "new-service": newService} {
		b.ReportMetric(benchstat.QuantileMs(d, 0.5), name+"-p50-ms")
		b.ReportMetric(benchstat.QuantileMs(d, 0.99), name+"-p99-ms")
	}
}

// queryFloor asks the server for service's instances in namespace every 5 ms, through the
// Nacos open API (GET /nacos/v1/ns/instance/list, not the client library, whose answers come
// from its own cache of pushes), and returns when an answer first holds ip, waiting for it up
// to nacosWait.
func queryFloor(b *testing.B, addr, namespace, service, ip string) time.Time {
	q := url.Values{"serviceName": {service}, "namespaceId": {namespace}}
	list := "http://" + addr + "/nacos/v1/ns/instance/list?" + q.Encode()
	client := &http.Client{Timeout: 5 * time.Second}
	type host struct {
		IP string `json:"ip"`
	}
	deadline := time.Now().Add(nacosWait)
	for time.Now().Before(deadline) {
		var answer struct{ Hosts []host }
		resp, err := client.Get(list)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&answer)
			resp.Body.Close()
		}
		if err == nil && slices.ContainsFunc(answer.Hosts, func(h host) bool { return h.IP == ip }) {
			return time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Errorf("no answer of the server listed %s of %s", ip, service)
	return deadline
}

// subscribeFloor subscribes a plain nacos-sdk-go client, as an application would, to service
// in namespace and returns when it first saw each instance address pushed, waiting for it
// up to nacosWait: what the server's push alone costs, with no Meltemi in the path.
func subscribeFloor(b *testing.B, addr, namespace, service string) func(ip string) time.Time {
	var (
		mu   sync.Mutex
		seen = map[string]time.Time{}
		more = make(chan struct{}, 1)
	)
	subscriber := nacostest.NewApp(b, addr, namespace)
	err := subscriber.Subscribe(&vo.SubscribeParam{ServiceName: service, SubscribeCallback: func(hosts []nacosmodel.Instance, err error) {
		if err != nil {
			return
		}
		now := time.Now()
		mu.Lock()
		for _, h := range hosts {
			if _, ok := seen[h.Ip]; !ok {
				seen[h.Ip] = now
			}
		}
		mu.Unlock()
		select {
		case more <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		b.Fatalf("subscribing the floor client to %s: %v", service, err)
	}
	return func(ip string) time.Time {
		timeout := time.After(nacosWait)
		for {
			mu.Lock()
			at, ok := seen[ip]
			mu.Unlock()
			if ok {
				return at
			}
			select {
			case <-more:
			case <-timeout:
				b.Fatalf("the floor client was never pushed %s of %s", ip, service)
			}
		}
	}
}
