package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/testproxy"
)

// Port names the converter gives Dubbo's protocols (serviceentries/convert.DefaultProtocols).
const (
	dubboPort20880 = "tcp-metaprotocol-dubbo-20880"
	triPort50051   = "grpc-tri-50051"
)

// zkModeRegistryYAML is a ZooKeeper registry reading root in the given mode.
func zkModeRegistryYAML(name, namespace, addr, root, mode string) string {
	return zkRegistryYAML(name, namespace, addr, root) + fmt.Sprintf("    mode: %s\n", mode)
}

// startZKBridge runs the host with one ZooKeeper registry reading root in mode, until ready.
func startZKBridge(t *testing.T, env *harness.Env, c *cluster, registry, root, mode string) *bridge {
	t.Helper()
	cfg := writeFile(t, "registries.yaml", zkModeRegistryYAML(registry, c.namespace, env.ZKAddr, root, mode))
	b := startBridge(t, c, "--config", cfg)
	b.waitReady(t, env)
	return b
}

// checkHost fails unless the ServiceEntry is for host alone.
func checkHost(t *testing.T, se *unstructured.Unstructured, host string) {
	t.Helper()
	if got, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts"); !slices.Equal(got, []string{host}) {
		t.Errorf("hosts %v, want [%s]", got, host)
	}
}

// watchLoss reports every moment the ServiceEntry named host is deleted or has fewer than
// n endpoints, until ctx ends.
func watchLoss(ctx context.Context, t *testing.T, c *cluster, host string, n int) <-chan string {
	t.Helper()
	w, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + host})
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan string, 16)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			se, ok := ev.Object.(*unstructured.Unstructured)
			if ev.Type == watch.Deleted || ok && len(addresses(se)) < n {
				select {
				case lost <- fmt.Sprintf("%s: endpoints %v", ev.Type, addresses(se)):
				default: // the first ones are enough to fail on
				}
			}
			if ctx.Err() != nil {
				return
			}
		}
	}()
	return lost
}

// dubboApp returns an application name of the test's own (prefix plus a random suffix) and
// removes its instance directory under the shared /services at the end.
func dubboApp(t testing.TB, conn *zk.Conn, prefix string) string {
	app := fmt.Sprintf("%s_%06x", prefix, rand.Uint32()>>8)
	t.Cleanup(func() { _ = dubbo.DeleteTree(conn, path.Join(dubbo.ServicesRoot, app)) })
	return app
}

// appHost is the host the default template gives the applications these tests name (letters,
// digits, underscores): lower case, underscores become hyphens, and the suffix .dubbo.
func appHost(app string) string { return strings.ReplaceAll(strings.ToLower(app), "_", "-") + ".dubbo" }

func registerInstance(t testing.TB, conn *zk.Conn, in dubbo.Instance) string {
	t.Helper()
	node, err := dubbo.RegisterInstance(conn, in)
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// endpointAt returns the only endpoint of se at address.
func endpointAt(t *testing.T, se *unstructured.Unstructured, address string) endpoint {
	t.Helper()
	var found []endpoint
	for _, ep := range endpointsOf(se) {
		if ep.Address == address {
			found = append(found, ep)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d endpoints at %s, want 1: %+v", se.GetName(), len(found), address, endpointsOf(se))
	}
	return found[0]
}

// checkLabels fails unless the endpoint's labels are exactly want plus the registry label.
func checkLabels(t *testing.T, ep endpoint, registry string, want map[string]string) {
	t.Helper()
	want = maps.Clone(want)
	want["meltemi.io/registry"] = registry
	if !maps.Equal(ep.Labels, want) {
		t.Errorf("endpoint %s labels %v, want %v", ep.Address, ep.Labels, want)
	}
}

// checkPorts fails unless the ServiceEntry has exactly the named ports.
func checkPorts(t *testing.T, se *unstructured.Unstructured, want ...string) {
	t.Helper()
	got := portNames(se)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s ports %v, want %v", se.GetName(), got, want)
	}
}

// awaitGone waits until the ServiceEntry named host no longer exists.
func awaitGone(t *testing.T, env *harness.Env, c *cluster, host string) {
	t.Helper()
	env.Eventually(t, 20*time.Second, func() error {
		if _, err := c.getServiceEntry(host); !isNotFound(err) {
			return fmt.Errorf("ServiceEntry %s still there (err %v)", host, err)
		}
		return nil
	})
}

// awaitLabel waits until the endpoint at address of the ServiceEntry named host has the label.
func awaitLabel(t *testing.T, env *harness.Env, c *cluster, host, address, key, value string) {
	t.Helper()
	env.Eventually(t, 20*time.Second, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		for _, ep := range endpointsOf(se) {
			if ep.Address == address && ep.Labels[key] == value {
				return nil
			}
		}
		return fmt.Errorf("%s: no endpoint at %s with %s=%s: %+v", host, address, key, value, endpointsOf(se))
	})
}

// TestZooKeeperApplicationLevel: Dubbo 3 application instances under /services become one
// ServiceEntry per application, through the whole host and the plugin process.
func TestZooKeeperApplicationLevel(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	billing, stock := dubboApp(t, conn, "Billing_App"), dubboApp(t, conn, "stock")
	billingHost, stockHost := appHost(billing), appHost(stock)

	// Two protocols on one instance, as a Dubbo 3 application exporting dubbo and Triple.
	b1 := dubbo.Instance{Application: billing, IP: "10.91.0.1", Port: 20880, Revision: "rev1",
		Endpoints: []dubbo.Endpoint{{Protocol: "dubbo", Port: 20880}, {Protocol: "tri", Port: 50051}}}
	registerInstance(t, conn, b1)
	// Without dubbo.endpoints: the instance port speaks dubbo.
	registerInstance(t, conn, dubbo.Instance{Application: stock, IP: "10.91.1.1", Port: 20880, Revision: "s1"})
	// A malformed instance next to the good one is skipped and reported.
	bad, err := dubbo.RawInstance(conn, billing, "10.91.0.9:20880", []byte(`{"name":"`+billing+`","address":`))
	if err != nil {
		t.Fatal(err)
	}

	const registry = "zk-app"
	br := startZKBridge(t, env, c, registry, root, "application")

	se := awaitAddresses(t, env, c, billingHost, "10.91.0.1")
	checkHost(t, se, billingHost)
	if got := se.GetLabels(); got["app.kubernetes.io/managed-by"] != "meltemi" || got["meltemi.io/registry"] != registry {
		t.Errorf("ownership labels: %v", got)
	}
	checkPorts(t, se, dubboPort20880, triPort50051)
	ep := endpointAt(t, se, "10.91.0.1")
	checkLabels(t, ep, registry, map[string]string{"application": billing, "revision": "rev1"})
	if len(ep.Ports) != 0 {
		t.Errorf("endpoint on the service ports has a port map %v", ep.Ports)
	}
	stockSE := awaitAddresses(t, env, c, stockHost, "10.91.1.1")
	checkPorts(t, stockSE, dubboPort20880)
	checkLabels(t, endpointAt(t, stockSE, "10.91.1.1"), registry, map[string]string{"application": stock, "revision": "s1"})
	env.Eventually(t, 10*time.Second, func() error {
		if v := metricSum(br.metrics(t), `meltemi_registry_rejected_items_total{registry="`+registry+`"}`); v < 1 {
			return fmt.Errorf("malformed instance not counted as rejected (%v)", v)
		}
		return nil
	})

	// A second instance on another dubbo port keeps its port through the endpoint's port map.
	b2 := dubbo.Instance{Application: billing, IP: "10.91.0.2", Port: 20881, Revision: "rev1",
		Endpoints: []dubbo.Endpoint{{Protocol: "dubbo", Port: 20881}}}
	node2 := registerInstance(t, conn, b2)
	se = awaitAddresses(t, env, c, billingHost, "10.91.0.1", "10.91.0.2")
	checkPorts(t, se, dubboPort20880, triPort50051)
	if got := endpointAt(t, se, "10.91.0.2").Ports; !maps.Equal(got, map[string]any{dubboPort20880: int64(20881)}) {
		t.Errorf("10.91.0.2 port map %v, want %s: 20881", got, dubboPort20880)
	}

	// A new metadata revision rewrites the instance's data: the label follows.
	b1.Revision = "rev2"
	if err := dubbo.UpdateInstance(conn, b1); err != nil {
		t.Fatal(err)
	}
	awaitLabel(t, env, c, billingHost, "10.91.0.1", "revision", "rev2")

	// The malformed node, repaired, becomes an endpoint: its data is watched too.
	fixed := dubbo.Instance{Application: billing, IP: "10.91.0.9", Port: 20880, Revision: "rev2"}
	if err := dubbo.UpdateInstance(conn, fixed); err != nil {
		t.Fatal(err)
	}
	awaitAddresses(t, env, c, billingHost, "10.91.0.1", "10.91.0.2", "10.91.0.9")

	// Instances leave; the last one gone deletes the ServiceEntry, not its neighbour's.
	for _, node := range []string{node2, bad} {
		if err := conn.Delete(node, -1); err != nil {
			t.Fatal(err)
		}
	}
	awaitAddresses(t, env, c, billingHost, "10.91.0.1")
	if err := conn.Delete(b1.Path(), -1); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, env, c, billingHost)
	awaitAddresses(t, env, c, stockHost, "10.91.1.1")
}

// TestZooKeeperInterfaceMapping: in application mode, /<root>/mapping/<interface> turns the
// listed applications' instances into a ServiceEntry for the interface, restricted by each
// revision's published metadata. The plugin's interfaceMapping option is left at its default
// (on), which is what this test relies on.
func TestZooKeeperInterfaceMapping(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	pay, ledger := dubboApp(t, conn, "payments"), dubboApp(t, conn, "ledger")
	iface := fmt.Sprintf("com.example.mapping%s.PaymentService", strings.TrimPrefix(pay, "payments_"))
	ifaceHost := strings.ToLower(iface)

	registerInstance(t, conn, dubbo.Instance{Application: pay, IP: "10.92.0.1", Port: 20880, Revision: "p1",
		Endpoints: []dubbo.Endpoint{{Protocol: "dubbo", Port: 20880}, {Protocol: "tri", Port: 50051}}})
	if err := dubbo.PublishMapping(conn, root, iface, pay); err != nil {
		t.Fatal(err)
	}

	const registry = "zk-mapping"
	startZKBridge(t, env, c, registry, root, "application")

	// No metadata for the revision: every endpoint of the instance, application labels only.
	se := awaitAddresses(t, env, c, ifaceHost, "10.92.0.1")
	checkHost(t, se, ifaceHost)
	checkPorts(t, se, dubboPort20880, triPort50051)
	checkLabels(t, endpointAt(t, se, "10.92.0.1"), registry, map[string]string{"application": pay, "revision": "p1"})
	// The application keeps its own ServiceEntry.
	awaitAddresses(t, env, c, appHost(pay), "10.92.0.1")

	// A second application, published as Dubbo does it: metadata first, then the instance,
	// then its name appended to the mapping. Its metadata lists the interface over Triple
	// only (and another interface over dubbo), so only its Triple endpoint serves it.
	const ledgerRev = "l1"
	if err := dubbo.PublishMetadata(conn, root, ledger, ledgerRev, []dubbo.MetadataService{
		{Interface: iface, Group: "g1", Version: "1.0.0", Protocol: "tri", Port: 50052, Methods: []string{"pay"}},
		{Interface: "com.example.mapping.Other", Protocol: "dubbo", Port: 20890, Methods: []string{"other"}},
	}); err != nil {
		t.Fatal(err)
	}
	registerInstance(t, conn, dubbo.Instance{Application: ledger, IP: "10.92.1.1", Port: 20890, Revision: ledgerRev, StorageType: "remote",
		Endpoints: []dubbo.Endpoint{{Protocol: "dubbo", Port: 20890}, {Protocol: "tri", Port: 50052}}})
	if err := dubbo.PublishMapping(conn, root, iface, ledger); err != nil {
		t.Fatal(err)
	}
	se = awaitAddresses(t, env, c, ifaceHost, "10.92.0.1", "10.92.1.1")
	checkPorts(t, se, dubboPort20880, triPort50051)
	ep := endpointAt(t, se, "10.92.1.1")
	// Its dubbo port (20890) would show in the port map if it had been kept.
	if !maps.Equal(ep.Ports, map[string]any{triPort50051: int64(50052)}) {
		t.Errorf("10.92.1.1 port map %v, want only %s: 50052 (the metadata lists Triple only)", ep.Ports, triPort50051)
	}
	checkLabels(t, ep, registry, map[string]string{"application": ledger, "revision": ledgerRev, "version": "1.0.0", "group": "g1"})
	checkLabels(t, endpointAt(t, se, "10.92.0.1"), registry, map[string]string{"application": pay, "revision": "p1"})
	// The application's own ServiceEntry still has every protocol.
	ledgerSE := awaitAddresses(t, env, c, appHost(ledger), "10.92.1.1")
	checkPorts(t, ledgerSE, "tcp-metaprotocol-dubbo-20890", "grpc-tri-50052")
}

// TestZooKeeperInterfaceMappingBothMode: Dubbo 3 registers both ways by default; in both
// mode an interface with interface-level providers keeps only those, and a mapped interface
// without them gets the applications' instances.
func TestZooKeeperInterfaceMappingBothMode(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	orders, audit := dubboApp(t, conn, "orders"), dubboApp(t, conn, "audit")
	suffix := strings.TrimPrefix(orders, "orders_")
	both := fmt.Sprintf("com.example.both%s.OrderService", suffix)      // registered both ways
	appOnly := fmt.Sprintf("com.example.both%s.HistoryService", suffix) // only through the mapping
	bothHost, appOnlyHost := strings.ToLower(both), strings.ToLower(appOnly)

	registerInstance(t, conn, dubbo.Instance{Application: orders, IP: "10.93.0.1", Port: 20880, Revision: "o1",
		Endpoints: []dubbo.Endpoint{{Protocol: "dubbo", Port: 20880}}})
	registerInstance(t, conn, dubbo.Instance{Application: audit, IP: "10.93.1.1", Port: 20880, Revision: "a1",
		Endpoints: []dubbo.Endpoint{{Protocol: "dubbo", Port: 20880}}})
	provider, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.93.0.1", Port: 20880, Interface: both,
		Application: orders, Version: "1.0.0", Methods: []string{"order"}})
	if err != nil {
		t.Fatal(err)
	}
	for iface, apps := range map[string][]string{both: {orders, audit}, appOnly: {orders}} {
		if err := dubbo.PublishMapping(conn, root, iface, apps...); err != nil {
			t.Fatal(err)
		}
	}

	const registry = "zk-both"
	startZKBridge(t, env, c, registry, root, "both")

	awaitAddresses(t, env, c, appOnlyHost, "10.93.0.1")
	se := awaitAddresses(t, env, c, bothHost, "10.93.0.1")
	// One endpoint, the interface-level one: no application-level double, nor the mapped
	// application that did not register the interface itself.
	if n := len(endpointsOf(se)); n != 1 {
		t.Fatalf("%s has %d endpoints, want the interface-level one: %+v", bothHost, n, endpointsOf(se))
	}
	checkLabels(t, endpointAt(t, se, "10.93.0.1"), registry, map[string]string{"application": orders, "version": "1.0.0"})
	// Stays so: give the mapping's watches time to act.
	time.Sleep(2 * time.Second)
	if se, err = c.getServiceEntry(bothHost); err != nil {
		t.Fatal(err)
	}
	if got := addresses(se); len(got) != 1 || endpointsOf(se)[0].Labels["revision"] != "" {
		t.Fatalf("%s endpoints %+v, want only the interface-level one", bothHost, endpointsOf(se))
	}

	// Without interface-level providers the mapping applies again.
	if err := conn.Delete(provider, -1); err != nil {
		t.Fatal(err)
	}
	se = awaitAddresses(t, env, c, bothHost, "10.93.0.1", "10.93.1.1")
	checkLabels(t, endpointAt(t, se, "10.93.1.1"), registry, map[string]string{"application": audit, "revision": "a1"})
}

// TestZooKeeperRestart: ZooKeeper restarts under a synced host. The ServiceEntry is never
// deleted nor loses an endpoint, the outage is reported, and changes flow again after it.
func TestZooKeeperRestart(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	env.RequireComponent(t, harness.ZooKeeper)
	// The writer stands for the providers' Dubbo processes: its session must outlive the
	// restart, as a real provider's does, or ZooKeeper rightly removes their ephemeral nodes.
	// It goes through a proxy held shut while the server restarts: a ZooKeeper server that
	// accepts a connection while starting may never answer its handshake, and the test client
	// then waits out a read deadline of ten times its receive timeout (over three minutes).
	writerProxy := testproxy.New(t, env.ZKAddr)
	conn, _, err := zk.Connect([]string{writerProxy.Addr()}, 30*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	root := zkRoot(t, conn)
	iface := fmt.Sprintf("com.example.restart%s.RestartService", strings.TrimPrefix(root, "dubbo-e2e-"))
	host := strings.ToLower(iface)
	for _, ip := range []string{"10.94.0.1", "10.94.0.2"} {
		if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: ip, Port: 20880, Interface: iface, Application: "restart"}); err != nil {
			t.Fatal(err)
		}
	}

	const registry = "zk-restart"
	connected := `meltemi_registry_connected{registry="` + registry + `"}`
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML(registry, c.namespace, env.ZKAddr, root))
	br := startBridge(t, c, "--config", cfg)
	br.waitReady(t, env)
	awaitAddresses(t, env, c, host, "10.94.0.1", "10.94.0.2")
	env.Eventually(t, 10*time.Second, func() error {
		if v := metricSum(br.metrics(t), connected); v != 1 {
			return fmt.Errorf("registry not reported connected (%v)", v)
		}
		return nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Watch the ServiceEntry through the restart: it must never lose an endpoint.
	lost := watchLoss(ctx, t, c, host, 2)
	// Poll the host's connection gauge through the restart: the outage lasts at least the
	// server's start-up (about a second), far longer than the poll interval.
	var sawOutage atomic.Bool
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for ctx.Err() == nil {
			if text, err := scrape(ctx, br.addr); err == nil && strings.Contains(text, connected) && metricSum(text, connected) == 0 {
				sawOutage.Store(true)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	writerProxy.Block()
	env.Restart(t, harness.ZooKeeper)
	writerProxy.Unblock()
	// Registered after the restart (the writer reconnects within its session): the plugin
	// converges.
	env.Eventually(t, 30*time.Second, func() error {
		_, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.94.0.3", Port: 20880, Interface: iface, Application: "restart"})
		return err
	})
	awaitAddresses(t, env, c, host, "10.94.0.1", "10.94.0.2", "10.94.0.3")
	env.Eventually(t, 20*time.Second, func() error {
		if v := metricSum(br.metrics(t), connected); v != 1 {
			return fmt.Errorf("registry not reported connected again (%v)", v)
		}
		return nil
	})
	cancel()
	<-polled
	select {
	case what := <-lost:
		t.Fatalf("the ServiceEntry lost endpoints across the restart: %s", what)
	default:
	}
	if !sawOutage.Load() {
		t.Errorf("%s never went to 0 while ZooKeeper restarted", connected)
	}
}

// scrape reads the host's /metrics without failing the test, for use off the test goroutine.
func scrape(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestZooKeeperSessionExpiry: the plugin's ZooKeeper session is expired (forced, through a
// proxy) while a provider registers; the plugin lists everything again in a new session and
// the host applies the new snapshot without ever deleting the ServiceEntry or an endpoint.
func TestZooKeeperSessionExpiry(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	iface := fmt.Sprintf("com.example.expiry%s.ExpiryService", strings.TrimPrefix(root, "dubbo-e2e-"))
	host := strings.ToLower(iface)
	for _, ip := range []string{"10.95.0.1", "10.95.0.2"} {
		if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: ip, Port: 20880, Interface: iface, Application: "expiry"}); err != nil {
			t.Fatal(err)
		}
	}
	proxy := testproxy.NewZooKeeper(t, env.ZKAddr)
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-expiry", c.namespace, proxy.Addr(), root)+"    sessionTimeout: 4s\n")
	br := startBridge(t, c, "--config", cfg)
	br.waitReady(t, env)
	awaitAddresses(t, env, c, host, "10.95.0.1", "10.95.0.2")
	first := proxy.Session()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lost := watchLoss(ctx, t, c, host, 2)
	if err := proxy.ExpireSession(); err != nil {
		t.Fatalf("expiring the plugin's session: %v", err)
	}
	// Registered while the plugin has no session: it comes with the new session's snapshot.
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.95.0.3", Port: 20880, Interface: iface, Application: "expiry"}); err != nil {
		t.Fatal(err)
	}
	awaitAddresses(t, env, c, host, "10.95.0.1", "10.95.0.2", "10.95.0.3")
	if s := proxy.Session(); s == first || s == 0 {
		t.Fatalf("the plugin did not get a new session (%#x, first %#x)", s, first)
	}
	env.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(br.logs.String(), "new ZooKeeper session; listing everything again") {
			return fmt.Errorf("the host log does not show the plugin's new listing")
		}
		return nil
	})
	// The new session's watches work.
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.95.0.4", Port: 20880, Interface: iface, Application: "expiry"}); err != nil {
		t.Fatal(err)
	}
	awaitAddresses(t, env, c, host, "10.95.0.1", "10.95.0.2", "10.95.0.3", "10.95.0.4")
	cancel()
	select {
	case what := <-lost:
		t.Fatalf("the ServiceEntry lost endpoints across the session expiry: %s", what)
	default:
	}
}
