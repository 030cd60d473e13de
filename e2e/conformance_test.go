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

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/hashicorp/consul/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/registries/nacos/nacostest"
)

// The conformance suite holds what Meltemi writes to what Istio makes of it: services registered
// in real ZooKeeper, Nacos and Consul go through one Meltemi host into the API server, real
// istiod turns them into xDS, and a sidecar (a real ADS client backed by a Pod) receives it. Every
// check compares the sidecar's decoded xDS with what the registries hold.

// xdsWait bounds how long a change may take to reach the sidecar (Nacos pushes about once a
// second; istiod debounces 100 ms).
const xdsWait = 45 * time.Second

// conformance is one test's chain: a Meltemi host on three registries, istiod and a sidecar.
type conformance struct {
	t       *testing.T
	env     *harness.Env
	c       *cluster
	sidecar *harness.Sidecar
}

// expectCluster waits until the sidecar has cluster name with exactly the endpoints want, and
// fails naming the object the cluster comes from, the expected and the actual endpoints.
func (cf *conformance) expectCluster(t *testing.T, object, name string, want []harness.Endpoint) *harness.View {
	t.Helper()
	want = harness.SortEndpoints(want)
	v, err := cf.sidecar.Await(xdsWait, func(v *harness.View) error {
		if _, err := v.Cluster(name); err != nil {
			return err
		}
		got, ok := v.EndpointsOf(name)
		if !ok {
			return fmt.Errorf("EDS has no endpoints for cluster %s", name)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("cluster %s EDS endpoints\n   got  %v\n   want %v", name, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", object, err)
	}
	return v
}

// expectNoCluster waits until the sidecar has no cluster name, or one without endpoints.
func (cf *conformance) expectNoCluster(t *testing.T, object, name string) {
	t.Helper()
	if _, err := cf.sidecar.Await(xdsWait, func(v *harness.View) error {
		if _, err := v.Cluster(name); err != nil {
			return nil
		}
		if eps, _ := v.EndpointsOf(name); len(eps) > 0 {
			return fmt.Errorf("cluster %s still has endpoints %v", name, eps)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: %v", object, err)
	}
}

// serviceEntry waits for Meltemi's ServiceEntry of host.
func (cf *conformance) serviceEntry(t *testing.T, host string) *unstructured.Unstructured {
	t.Helper()
	var se *unstructured.Unstructured
	cf.env.Eventually(t, xdsWait, func() (err error) {
		se, err = cf.c.getServiceEntry(host)
		return err
	})
	return se
}

// vip returns the one address of a ServiceEntry.
func vip(t *testing.T, se *unstructured.Unstructured) string {
	t.Helper()
	addrs, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "addresses")
	if len(addrs) != 1 {
		t.Fatalf("ServiceEntry %s: addresses %v, want one virtual IP", se.GetName(), addrs)
	}
	return addrs[0]
}

func ep(addr string, port, weight uint32, locality string) harness.Endpoint {
	return harness.Endpoint{Address: addr, Port: port, Weight: weight, Locality: locality}
}

func (cf *conformance) applyDestinationRule(t *testing.T, host string, subsets map[string]map[string]string) {
	t.Helper()
	var list []any
	for _, name := range slices.Sorted(maps.Keys(subsets)) {
		labels := map[string]any{}
		for k, v := range subsets[name] {
			labels[k] = v
		}
		list = append(list, map[string]any{"name": name, "labels": labels})
	}
	dr := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
		"metadata": map[string]any{"name": sanitize(host) + "-subsets"},
		"spec":     map[string]any{"host": host, "subsets": list},
	}}
	cf.c.create(t, destinationRules, dr)
}

// TestConformance runs the suite over one Meltemi host reading ZooKeeper (interface and
// application level), Nacos and Consul.
func TestConformance(t *testing.T) {
	env := harness.Load(t)
	env.RequireComponent(t, harness.Istiod)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	nacosNS := nacosNamespace(t, env)
	nacos := nacostest.NewApp(t, env.NacosAddr, nacosNS)
	consul := newConsulApps(t, env)
	t.Logf("istiod %s", env.IstiodVersion)

	// Hosts of this run only: istiod serves every namespace's ServiceEntries to the sidecar.
	tag := fmt.Sprintf("c%06x", rand.Uint32()>>8)
	greet := "org.conformance." + tag + ".GreetService"   // two versions, weights, subsets
	multi := "org.conformance." + tag + ".MultiService"   // dubbo and Triple on one instance
	big := "org.conformance." + tag + ".BigService"       // above the inline-endpoint threshold
	merged := "org.conformance." + tag + ".MergedService" // in ZooKeeper and in Nacos
	host := strings.ToLower

	for _, p := range []dubbo.Provider{
		{IP: "10.60.0.1", Port: 20880, Interface: greet, Application: "greeter", Version: "1.0.0", Group: "blue", Weight: 50},
		{IP: "10.60.0.2", Port: 20880, Interface: greet, Application: "greeter", Version: "2.0.0", Group: "blue"},
		{IP: "10.60.0.3", Port: 20880, Interface: greet, Application: "greeter-canary", Version: "2.0.0", Group: "green", Weight: 200},
		{IP: "10.60.1.1", Port: 20880, Interface: multi, Application: "multi", Version: "1.0.0"},
		{IP: "10.60.1.1", Port: 50051, Interface: multi, Application: "multi", Version: "1.0.0", Protocol: "tri"},
		{IP: "10.60.3.1", Port: 20880, Interface: merged, Application: "merged-zk", Version: "1.0.0"},
	} {
		if _, err := dubbo.Register(conn, root, p); err != nil {
			t.Fatal(err)
		}
	}
	var bigWant []harness.Endpoint
	for i := range 6 {
		ip := fmt.Sprintf("10.60.2.%d", i+1)
		if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: ip, Port: 20880, Interface: big, Application: "big"}); err != nil {
			t.Fatal(err)
		}
		bigWant = append(bigWant, ep(ip, 20880, 1, ""))
	}
	// A Dubbo 3 application registered at application level, in two revisions.
	app := dubboApp(t, conn, "conf_inventory")
	registerInstance(t, conn, dubbo.Instance{Application: app, IP: "10.60.4.1", Port: 20880, Revision: "r1"})
	registerInstance(t, conn, dubbo.Instance{Application: app, IP: "10.60.4.2", Port: 20880, Revision: "r2"})

	// Nacos: a plain service with decimal weights and a locality; the merged interface.
	orders := "orders-" + tag
	nacos.Register(nacostest.Instance(orders, "", "10.61.0.1", 8080,
		map[string]string{"protocol": "http", "region": "eu", "zone": "eu-west-1", "subzone": "a"}))
	heavy := nacostest.Instance(orders, "", "10.61.0.2", 8080, map[string]string{"protocol": "http"})
	heavy.Weight = 3 // Polaris keeps integer weights only (Nacos takes decimals)
	nacos.Register(heavy)
	nacos.Register(nacostest.Instance(nacostest.DubboProviders(merged, "1.0.0", ""), "", "10.61.3.1", 20880,
		nacostest.DubboMetadata(merged, "merged-nacos", "1.0.0", "")))

	// Consul: weights and a zone.
	web := consul.name("web")
	consul.register(t, api.AgentServiceRegistration{ID: web + "-1", Name: web, Address: "10.62.0.1", Port: 8080,
		Tags: []string{"protocol=http"}, Meta: map[string]string{"zone": "az-1"}, Weights: &api.AgentWeights{Passing: 3, Warning: 1}}, true)
	consul.register(t, api.AgentServiceRegistration{ID: web + "-2", Name: web, Address: "10.62.0.2", Port: 8080,
		Tags: []string{"protocol=http"}, Meta: map[string]string{"zone": "az-2"}}, true)

	regs := []map[string]any{
		{"apiVersion": "meltemi.io/v1alpha1", "kind": "ServiceRegistry",
			"metadata": map[string]any{"name": "zk", "namespace": c.namespace},
			"spec": map[string]any{"kind": "zookeeper", "address": env.ZKAddr,
				"options": map[string]any{"roots": root, "mode": "both"}}},
		nacosRegistry("nacos", c.namespace, env.NacosAddr, "", map[string]string{"namespaces": nacosNS, "listInterval": "1s"}),
		{"apiVersion": "meltemi.io/v1alpha1", "kind": "ServiceRegistry",
			"metadata": map[string]any{"name": "consul", "namespace": c.namespace},
			"spec": map[string]any{"kind": "consul", "address": env.ConsulAddr,
				"options": map[string]any{"services": consul.prefix + "-*"}}},
	}
	var docs []string
	for _, r := range regs {
		out, err := yaml.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(out))
	}
	cfg := writeFile(t, "registries.yaml", strings.Join(docs, "---\n"))
	b := startBridge(t, c, "--config", cfg, "--max-inline-endpoints", "4")
	b.waitReady(t, env)

	cf := &conformance{t: t, env: env, c: c}
	cf.sidecar = env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "consumer", Namespace: c.namespace,
		Labels: map[string]string{"app": "consumer"}})

	greetHost := host(greet)
	t.Run("ZooKeeperClusterAndEndpoints", func(t *testing.T) {
		se := cf.serviceEntry(t, greetHost)
		obj := "ServiceEntry " + c.namespace + "/" + se.GetName()
		// Dubbo's default weight is 100: providers without one weigh 100 next to those with one.
		v := cf.expectCluster(t, obj, "outbound|20880||"+greetHost, []harness.Endpoint{
			ep("10.60.0.1", 20880, 50, ""), ep("10.60.0.2", 20880, 100, ""), ep("10.60.0.3", 20880, 200, ""),
		})
		// The virtual IP gives the service a listener of its own, with the TCP proxy to the cluster.
		listener := vip(t, se) + "_20880"
		f, err := v.Filter(listener, 0, "envoy.filters.network.tcp_proxy")
		if err != nil {
			t.Fatalf("%s: %v", obj, err)
		}
		tp := &tcpproxyv3.TcpProxy{}
		if err := f.GetTypedConfig().UnmarshalTo(tp); err != nil {
			t.Fatal(err)
		}
		if got := tp.GetCluster(); got != "outbound|20880||"+greetHost {
			t.Errorf("%s: listener %s proxies to %q, want outbound|20880||%s", obj, listener, got, greetHost)
		}
	})

	t.Run("SubsetsOnEndpointLabels", func(t *testing.T) {
		cf.applyDestinationRule(t, greetHost, map[string]map[string]string{
			"v1": {"version": "1.0.0"}, "v2": {"version": "2.0.0"}, "blue": {"group": "blue"},
			"canary": {"application": "greeter-canary"}, "v2-green": {"version": "2.0.0", "group": "green"},
		})
		obj := "DestinationRule for " + greetHost
		cf.expectCluster(t, obj, "outbound|20880|v1|"+greetHost, []harness.Endpoint{ep("10.60.0.1", 20880, 50, "")})
		cf.expectCluster(t, obj, "outbound|20880|v2|"+greetHost, []harness.Endpoint{ep("10.60.0.2", 20880, 100, ""), ep("10.60.0.3", 20880, 200, "")})
		cf.expectCluster(t, obj, "outbound|20880|blue|"+greetHost, []harness.Endpoint{ep("10.60.0.1", 20880, 50, ""), ep("10.60.0.2", 20880, 100, "")})
		cf.expectCluster(t, obj, "outbound|20880|canary|"+greetHost, []harness.Endpoint{ep("10.60.0.3", 20880, 200, "")})
		cf.expectCluster(t, obj, "outbound|20880|v2-green|"+greetHost, []harness.Endpoint{ep("10.60.0.3", 20880, 200, "")})
	})

	t.Run("ApplicationLevelRevisions", func(t *testing.T) {
		appHostName := appHost(app)
		se := cf.serviceEntry(t, appHostName)
		obj := "ServiceEntry " + c.namespace + "/" + se.GetName()
		cf.expectCluster(t, obj, "outbound|20880||"+appHostName, []harness.Endpoint{ep("10.60.4.1", 20880, 1, ""), ep("10.60.4.2", 20880, 1, "")})
		cf.applyDestinationRule(t, appHostName, map[string]map[string]string{"r1": {"revision": "r1"}, "r2": {"revision": "r2"}})
		cf.expectCluster(t, obj, "outbound|20880|r1|"+appHostName, []harness.Endpoint{ep("10.60.4.1", 20880, 1, "")})
		cf.expectCluster(t, obj, "outbound|20880|r2|"+appHostName, []harness.Endpoint{ep("10.60.4.2", 20880, 1, "")})
	})

	t.Run("MultiPortProtocols", func(t *testing.T) {
		multiHost := host(multi)
		se := cf.serviceEntry(t, multiHost)
		obj := "ServiceEntry " + c.namespace + "/" + se.GetName()
		cf.expectCluster(t, obj, "outbound|20880||"+multiHost, []harness.Endpoint{ep("10.60.1.1", 20880, 1, "")})
		v := cf.expectCluster(t, obj, "outbound|50051||"+multiHost, []harness.Endpoint{ep("10.60.1.1", 50051, 1, "")})
		// Triple is gRPC: Istio must speak HTTP/2 to it; dubbo stays opaque TCP.
		if !http2Upstream(t, v, "outbound|50051||"+multiHost) {
			t.Errorf("%s: cluster outbound|50051||%s does not use HTTP/2 upstream", obj, multiHost)
		}
		if http2Upstream(t, v, "outbound|20880||"+multiHost) {
			t.Errorf("%s: cluster outbound|20880||%s uses HTTP/2, want opaque TCP", obj, multiHost)
		}
		if _, err := v.Filter(vip(t, se)+"_20880", 0, "envoy.filters.network.tcp_proxy"); err != nil {
			t.Errorf("%s: %v", obj, err)
		}
	})

	t.Run("WorkloadEntriesAboveThreshold", func(t *testing.T) {
		bigHost := host(big)
		se := cf.serviceEntry(t, bigHost)
		obj := "ServiceEntry " + c.namespace + "/" + se.GetName()
		if eps, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints"); len(eps) != 0 {
			t.Fatalf("%s: %d inline endpoints, want WorkloadEntries above --max-inline-endpoints", obj, len(eps))
		}
		wes, err := c.dyn.Resource(workloadEntries).Namespace(c.namespace).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, we := range wes.Items {
			if addr, _, _ := unstructured.NestedString(we.Object, "spec", "address"); strings.HasPrefix(addr, "10.60.2.") {
				n++
			}
		}
		if n != len(bigWant) {
			t.Fatalf("%d WorkloadEntries for %s, want %d", n, bigHost, len(bigWant))
		}
		cf.expectCluster(t, obj+" (WorkloadEntries)", "outbound|20880||"+bigHost, bigWant)
	})

	t.Run("MergedHostFromTwoRegistries", func(t *testing.T) {
		mergedHost := host(merged)
		obj := "ServiceEntry " + c.namespace + "/" + mergedHost + " (registries zk and nacos)"
		// Both providers have their registry's default weight: they share the traffic evenly.
		cf.expectCluster(t, obj, "outbound|20880||"+mergedHost, []harness.Endpoint{ep("10.60.3.1", 20880, 1, ""), ep("10.61.3.1", 20880, 1, "")})
	})

	t.Run("NacosWeightsAndLocality", func(t *testing.T) {
		ordersHost := orders + "." + nacosNS + ".nacos"
		obj := "ServiceEntry " + c.namespace + "/" + ordersHost
		// Nacos weights are decimals, scaled by 100 (1 -> 100, 3 -> 300).
		cf.expectCluster(t, obj, "outbound|8080||"+ordersHost, []harness.Endpoint{
			ep("10.61.0.1", 8080, 100, "eu/eu-west-1/a"), ep("10.61.0.2", 8080, 300, ""),
		})
	})

	t.Run("ConsulWeightsAndLocality", func(t *testing.T) {
		webHost := web + ".service.consul"
		obj := "ServiceEntry " + c.namespace + "/" + webHost
		// Consul's weights are relative to 1, the mesh's to 100.
		cf.expectCluster(t, obj, "outbound|8080||"+webHost, []harness.Endpoint{
			ep("10.62.0.1", 8080, 300, consul.dc+"/az-1/"), ep("10.62.0.2", 8080, 100, consul.dc+"/az-2/"),
		})
	})

	t.Run("OutageChangesNothing", func(t *testing.T) {
		greetCluster := "outbound|20880||" + greetHost
		before := cf.sidecar.Snapshot()
		want, _ := before.EndpointsOf(greetCluster)
		env.Stop(t, harness.ZooKeeper)
		stopped := true
		t.Cleanup(func() {
			if stopped {
				env.Start(t, harness.ZooKeeper)
			}
		})
		// Meltemi keeps the last known state: for the whole outage, the sidecar keeps every endpoint.
		deadline := time.Now().Add(8 * time.Second)
		for time.Now().Before(deadline) {
			v := cf.sidecar.Snapshot()
			if got, _ := v.EndpointsOf(greetCluster); !slices.Equal(got, want) {
				t.Fatalf("during a ZooKeeper outage cluster %s changed:\n   got  %v\n   want %v", greetCluster, got, want)
			}
			time.Sleep(250 * time.Millisecond)
		}
		env.Start(t, harness.ZooKeeper)
		stopped = false
		// The plugin's new session snapshot brings nothing new: still the same endpoints.
		cf.expectCluster(t, "ServiceEntry "+greetHost+" after the outage", greetCluster, want)
	})

	t.Run("RemovalOfLastInstance", func(t *testing.T) {
		multiHost := host(multi)
		providers, _, err := conn.Children(dubbo.ProvidersPath(root, multi))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range providers {
			if err := conn.Delete(dubbo.ProvidersPath(root, multi)+"/"+p, -1); err != nil {
				t.Fatal(err)
			}
		}
		obj := "ServiceEntry " + c.namespace + "/" + multiHost + " (providers removed)"
		cf.expectNoCluster(t, obj, "outbound|20880||"+multiHost)
		cf.expectNoCluster(t, obj, "outbound|50051||"+multiHost)
		// Its neighbours are untouched.
		cf.expectCluster(t, "ServiceEntry "+greetHost, "outbound|20880||"+greetHost, []harness.Endpoint{
			ep("10.60.0.1", 20880, 50, ""), ep("10.60.0.2", 20880, 100, ""), ep("10.60.0.3", 20880, 200, ""),
		})
	})

	cf.sidecar.RequireNoProblems(t)
}

// http2Upstream reports whether a cluster is configured to speak HTTP/2 to its endpoints.
func http2Upstream(t *testing.T, v *harness.View, name string) bool {
	t.Helper()
	c, err := v.Cluster(name)
	if err != nil {
		t.Fatal(err)
	}
	return usesHTTP2(t, c)
}

func usesHTTP2(t *testing.T, c *clusterv3.Cluster) bool {
	t.Helper()
	raw, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	opts := &httpv3.HttpProtocolOptions{}
	if err := raw.UnmarshalTo(opts); err != nil {
		t.Fatalf("cluster %s: HttpProtocolOptions: %v", c.GetName(), err)
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil || opts.GetUseDownstreamProtocolConfig().GetHttp2ProtocolOptions() != nil
}

var envoyFiltersGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1alpha3", Resource: "envoyfilters"}

// TestConformanceHarnessSeesRejections proves the harness's checks can fail: an EnvoyFilter
// whose value istiod cannot build, and one whose patch matches no listener, are both reported.
func TestConformanceHarnessSeesRejections(t *testing.T) {
	env := harness.Load(t)
	env.RequireComponent(t, harness.Istiod)
	c := newCluster(t, env)
	labels := map[string]string{"app": "probe-" + sanitize(c.namespace)}
	sc := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "probe", Namespace: c.namespace, Labels: labels})

	filter := func(name, listener, typeURL string) *unstructured.Unstructured {
		sel := map[string]any{}
		for k, v := range labels {
			sel[k] = v
		}
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
			"metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"workloadSelector": map[string]any{"labels": sel},
				"configPatches": []any{map[string]any{
					"applyTo": "NETWORK_FILTER",
					"match": map[string]any{"context": "SIDECAR_OUTBOUND", "listener": map[string]any{
						"name": listener, "filterChain": map[string]any{"filter": map[string]any{"name": "envoy.filters.network.tcp_proxy"}}}},
					"patch": map[string]any{"operation": "REPLACE", "value": map[string]any{
						"name": "probe.filter", "typed_config": map[string]any{"@type": typeURL}}},
				}},
			},
		}}
	}
	unbuildable := c.create(t, envoyFiltersGVR, filter("unbuildable", "240.240.255.1_9999", "type.googleapis.com/meltemi.invalid.NoSuchType"))
	env.Eventually(t, 30*time.Second, func() error {
		for _, p := range sc.Problems() {
			if strings.Contains(p, "failed to build envoy filter value") && strings.Contains(p, unbuildable.GetName()) {
				return nil
			}
		}
		return fmt.Errorf("istiod's report of %s not among the problems: %v", unbuildable.GetName(), sc.Problems())
	})

	unmatched := c.create(t, envoyFiltersGVR, filter("unmatched", "240.240.255.2_9999", "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"))
	got := sc.UnappliedPatches(sc.Snapshot(), "istio-system", []*unstructured.Unstructured{unmatched})
	if len(got) != 1 || !strings.Contains(got[0], "matched nothing") {
		t.Fatalf("unapplied patches %v, want the one of %s", got, unmatched.GetName())
	}
}

// TestConformanceIstiodAllocatedAddresses: with Meltemi's own VIPs off, istiod gives its
// ServiceEntries addresses (written into their status) and, to proxies that capture DNS,
// listeners on them; Meltemi leaves istiod's writes alone instead of fighting them. A proxy
// without DNS capture only has the port's wildcard listener.
func TestConformanceIstiodAllocatedAddresses(t *testing.T) {
	env := harness.Load(t)
	env.RequireComponent(t, harness.Istiod)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	iface := fmt.Sprintf("org.conformance.c%06x.AllocatedService", rand.Uint32()>>8)
	host := strings.ToLower(iface)
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.63.0.1", Port: 20880, Interface: iface, Application: "alloc"}); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk", c.namespace, env.ZKAddr, root))
	b := startBridge(t, c, "--config", cfg, "--vip-cidr=")
	b.waitReady(t, env)

	var addr string
	env.Eventually(t, xdsWait, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		if spec, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "addresses"); len(spec) != 0 {
			t.Fatalf("ServiceEntry %s has addresses %v with --vip-cidr=", host, spec)
		}
		status, _, _ := unstructured.NestedSlice(se.Object, "status", "addresses")
		if len(status) == 0 {
			return fmt.Errorf("istiod has not allocated an address to %s yet", host)
		}
		addr, _, _ = unstructured.NestedString(status[0].(map[string]any), "value")
		return nil
	})
	writes := metricSum(b.metrics(t), "meltemi_sync_writes_total")
	sc := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "consumer", Namespace: c.namespace,
		Metadata: map[string]string{"DNS_CAPTURE": "true"}})
	listener := addr + "_20880"
	sc.WaitFor(xdsWait, "listener "+listener, func(v *harness.View) error {
		_, err := v.Filter(listener, 0, "envoy.filters.network.tcp_proxy")
		return err
	})
	plain := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "no-dns-capture", Namespace: c.namespace})
	plain.WaitFor(xdsWait, "the wildcard listener 0.0.0.0_20880", func(v *harness.View) error {
		if _, ok := v.Listeners[listener]; ok {
			return fmt.Errorf("a proxy without DNS capture has listener %s", listener)
		}
		_, err := v.Filter("0.0.0.0_20880", 0, "envoy.filters.network.tcp_proxy")
		return err
	})
	time.Sleep(3 * time.Second)
	if after := metricSum(b.metrics(t), "meltemi_sync_writes_total"); after != writes {
		t.Errorf("Meltemi wrote %v more times after istiod allocated %s an address", after-writes, host)
	}
	sc.RequireNoProblems(t)
}
