package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	thriftv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/thrift_proxy/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	dubbov1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
)

// TestConformanceTraffic holds the traffic translator to what istiod makes of its output and
// what a proxy would accept: MetaRouters, VirtualServices (native Dubbo and Thrift) and Dubbo
// authorization policies in the cluster -> Meltemi -> EnvoyFilters -> istiod -> sidecars with
// and without the MetaProtocol proxy label. For each, the listener <vip>_<port> carries the
// expected filter (strictly decoded and checked with the proxy's rules), so does the
// provider's inbound chain, every cluster a route names (RDS or inline) is in that sidecar's
// CDS, istiod reports no EnvoyFilter it could not build or apply, and the RDS table Meltemi
// serves is the one the translator computes from the same objects.
func TestConformanceTraffic(t *testing.T) {
	env := harness.Load(t)
	env.RequireComponent(t, harness.Istiod)
	c := newCluster(t, env)
	ctx := context.Background()
	ns := c.namespace

	// Hosts and VIPs of this run only: istiod serves every namespace's ServiceEntries.
	tag := fmt.Sprintf("t%06x", rand.Uint32()>>8)
	vipBase := fmt.Sprintf("240.241.%d.", 100+rand.IntN(150))
	mpHost := "greeter." + tag + ".example.com"
	dubboHost := "org.apache.dubbo.samples." + tag + ".demoservice"
	thriftHost := "hello." + tag + ".example.com"
	mpVIP, dubboVIP, thriftVIP := vipBase+"1", vipBase+"2", vipBase+"3"

	manifest := fmt.Sprintf(traffIstioManifest, ns, mpHost, dubboHost, thriftHost, mpVIP, dubboVIP, thriftVIP)
	objs, err := traffic.ParseObjects([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	gvrs := map[string]schema.GroupVersionResource{
		"ServiceEntry": serviceEntries, "DestinationRule": destinationRules, "VirtualService": virtualServicesGVR,
		"MetaRouter": mpv1.MetaRouterResource, "ApplicationProtocol": mpv1.ApplicationProtocolResource,
		"DubboAuthorizationPolicy": dubbov1.DubboAuthorizationPolicyResource, "ConfigMap": {Version: "v1", Resource: "configmaps"},
	}
	for _, o := range objs {
		c.create(t, gvrs[o.GetKind()], o)
	}

	const proxyLabel = "meltemi.io/metaprotocol"
	xdsAddr := freeAddr(t)
	b := startBridge(t, c, "--registry-namespace", ns, "--traffic=true", "--xds-listen", xdsAddr,
		"--traffic-watch-namespace", ns, "--envoyfilter-namespace", ns, "--mesh-config", ns+"/istio",
		"--metaprotocol-proxy-selector", proxyLabel+"=enabled")
	b.waitReady(t, env)

	mpConsumer := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "mp-consumer", Namespace: ns,
		Labels: map[string]string{"app": "consumer", proxyLabel: "enabled"}})
	plain := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "plain-consumer", Namespace: ns,
		Labels: map[string]string{"app": "plain"}})
	provider := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "provider", Namespace: ns,
		Labels: map[string]string{"app": "provider", proxyLabel: "enabled", "version": "v1"}})

	// What Meltemi wrote, read back: every EnvoyFilter checked as a proxy would take it.
	var efs []*unstructured.Unstructured
	env.Eventually(t, 30*time.Second, func() error {
		list, err := c.dyn.Resource(envoyFiltersGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		efs = efs[:0]
		for i := range list.Items {
			efs = append(efs, &list.Items[i])
		}
		// outbound and inbound for each of the three hosts, but for the inbound Dubbo filter
		// with Aeraki's Dubbo RBAC, which no supported proxy has: it is never sent
		if len(efs) != 5 {
			return fmt.Errorf("%d EnvoyFilters, want 5", len(efs))
		}
		return nil
	})
	for _, ef := range efs {
		if err := traffictest.CheckEnvoyFilter(ef); err != nil {
			t.Errorf("EnvoyFilter %s: %v", ef.GetName(), err)
		}
		clusters, err := traffictest.ConfigSourceClusters(ef)
		if err != nil {
			t.Fatal(err)
		}
		for _, cl := range clusters {
			if cl != traffic.DefaultXDSCluster {
				t.Errorf("EnvoyFilter %s: RDS through %q, want the bootstrap override's static cluster %s", ef.GetName(), cl, traffic.DefaultXDSCluster)
			}
		}
	}

	mpListener := mpVIP + "_20880"
	// The MetaProtocol consumer: its listener runs the MetaProtocol proxy, routes over RDS.
	v := mpConsumer.WaitFor(30*time.Second, "MetaProtocol filter on "+mpListener, func(v *harness.View) error {
		_, err := metaProtocolOn(v, mpListener, 0)
		return err
	})
	mp, _ := metaProtocolOn(v, mpListener, 0)
	if rds := mp.GetRds(); rds.GetRouteConfigName() != traffic.RouteConfigName(mpHost, 20880) {
		t.Errorf("%s: RDS route %q, want %s", mpListener, rds.GetRouteConfigName(), traffic.RouteConfigName(mpHost, 20880))
	}
	if _, err := v.Cluster(traffic.DefaultXDSCluster); err == nil {
		t.Errorf("cluster %s comes from CDS; Envoy takes RDS only through a static one (the bootstrap override)", traffic.DefaultXDSCluster)
	}
	if len(mp.GetAccessLog()) != 1 {
		t.Errorf("%s: %d access logs, want the mesh config's one", mpListener, len(mp.GetAccessLog()))
	}

	// The plain consumer keeps TCP: it lacks the MetaProtocol filter and would reject the listener.
	pv := plain.WaitFor(30*time.Second, "TCP proxy on "+mpListener, func(v *harness.View) error {
		_, err := v.Filter(mpListener, 0, "envoy.filters.network.tcp_proxy")
		return err
	})
	if _, err := pv.Filter(mpListener, 0, traffic.MetaProtocolFilterName); err == nil {
		t.Errorf("the plain sidecar got the MetaProtocol filter on %s", mpListener)
	}

	// Meltemi's RDS table is the translator's, and its clusters exist in the consumer's CDS.
	rds := subscribeRoutes(t, xdsAddr, traffic.RouteConfigName(mpHost, 20880))
	rc, _ := rds.next(20 * time.Second)
	in, _ := traffic.Decode(readBack(t, c, gvrs))
	in.Mesh, _ = traffic.ParseMeshConfig(meshConfigYAML)
	want := traffic.Translate(in, traffic.Options{Namespace: ns, ProxySelector: map[string]string{proxyLabel: "enabled"}}).
		Routes[traffic.RouteConfigName(mpHost, 20880)]
	if diff := cmp.Diff(want, rc, protocmp.Transform()); diff != "" {
		t.Errorf("RDS %s differs from the translation of the cluster's objects (-want +got):\n%s", rc.GetName(), diff)
	}
	requireClusters(t, mpConsumer, "RDS "+rc.GetName(), routeClusters(rc))

	// Native Dubbo and Thrift: Envoy's own filters, for every sidecar, routes from the
	// VirtualServices; every cluster they name is in CDS.
	for _, sc := range []*harness.Sidecar{mpConsumer, plain} {
		dubboListener, thriftListener := dubboVIP+"_20881", thriftVIP+"_9090"
		v := sc.WaitFor(30*time.Second, "native filters", func(v *harness.View) error {
			if _, err := v.Filter(dubboListener, 0, traffic.DubboProxyFilterName); err != nil {
				return err
			}
			_, err := v.Filter(thriftListener, 0, traffic.ThriftProxyFilterName)
			return err
		})
		df, _ := v.Filter(dubboListener, 0, traffic.DubboProxyFilterName)
		if err := traffictest.CheckListenerFilter(df); err != nil {
			t.Errorf("%s %s: %v", sc.Name, dubboListener, err)
		}
		dp := &dubbov3.DubboProxy{}
		if err := df.GetTypedConfig().UnmarshalTo(dp); err != nil {
			t.Fatal(err)
		}
		var dubboClusters []string
		for _, rcfg := range dp.GetMultipleRouteConfig().GetRouteConfig() {
			if rcfg.GetInterface() != "org.apache.dubbo.samples.basic.api.DemoService" {
				t.Errorf("%s: Dubbo route configuration for interface %q, want the ServiceEntry's interface annotation", sc.Name, rcfg.GetInterface())
			}
			for _, r := range rcfg.GetRoutes() {
				dubboClusters = append(dubboClusters, actionClusters(r.GetRoute().GetCluster(), r.GetRoute().GetWeightedClusters())...)
			}
		}
		// One route per match of the first http route (sayHello, greet*), then the split.
		v1, v2 := "outbound|20881|v1|"+dubboHost, "outbound|20881|v2|"+dubboHost
		if want := []string{v1, v1, v1, v2}; !slices.Equal(dubboClusters, want) {
			t.Errorf("%s: Dubbo routes to %v, want %v (the VirtualService's)", sc.Name, dubboClusters, want)
		}
		requireClusters(t, sc, "Dubbo routes of "+dubboListener, dubboClusters)

		tf, _ := v.Filter(thriftListener, 0, traffic.ThriftProxyFilterName)
		if err := traffictest.CheckListenerFilter(tf); err != nil {
			t.Errorf("%s %s: %v", sc.Name, thriftListener, err)
		}
		tp := &thriftv3.ThriftProxy{}
		if err := tf.GetTypedConfig().UnmarshalTo(tp); err != nil {
			t.Fatal(err)
		}
		var thriftClusters []string
		for _, r := range tp.GetRouteConfig().GetRoutes() {
			thriftClusters = append(thriftClusters, r.GetRoute().GetCluster())
		}
		if want := []string{"outbound|9090|v2|" + thriftHost, "outbound|9090|v1|" + thriftHost}; !slices.Equal(thriftClusters, want) {
			t.Errorf("%s: Thrift routes to %v, want %v", sc.Name, thriftClusters, want)
		}
		requireClusters(t, sc, "Thrift routes of "+thriftListener, thriftClusters)
	}

	// The provider's inbound side: MetaProtocol with the rate limit and its own route table.
	// Its Dubbo port stays plain TCP: the namespace's authorization policy needs Aeraki's Dubbo
	// RBAC filter, which no supported proxy has, so that filter is never sent.
	pv = provider.WaitFor(30*time.Second, "inbound filters", func(v *harness.View) error {
		if _, err := metaProtocolOn(v, "virtualInbound", 20880); err != nil {
			return err
		}
		_, err := v.Filter("virtualInbound", 20881, "envoy.filters.network.tcp_proxy")
		return err
	})
	in20880, _ := metaProtocolOn(pv, "virtualInbound", 20880)
	routeTable := in20880.GetRouteConfig()
	if len(routeTable.GetRoutes()) != 1 || routeTable.GetRoutes()[0].GetRoute().GetCluster() != "inbound|20880||" {
		t.Errorf("inbound MetaProtocol routes %v, want one to inbound|20880||", routeTable.GetRoutes())
	}
	if names := filterNames(in20880); !slices.Contains(names, "aeraki.meta_protocol.filters.local_ratelimit") {
		t.Errorf("inbound MetaProtocol filters %v lack the MetaRouter's local rate limit", names)
	}
	requireClusters(t, provider, "inbound MetaProtocol route", []string{"inbound|20880||"})
	if _, err := pv.Filter("virtualInbound", 20881, traffic.DubboProxyFilterName); err == nil {
		t.Errorf("provider inbound 20881: a Dubbo filter carrying %s was sent", traffic.DubboRBACFilterName)
	}

	// Nothing istiod could not build or apply, for any of the sidecars.
	for _, sc := range []*harness.Sidecar{mpConsumer, plain, provider} {
		for _, p := range sc.UnappliedPatches(sc.Snapshot(), "istio-system", efs) {
			t.Errorf("%s: %s", sc.Name, p)
		}
		sc.RequireNoProblems(t)
	}
}

var virtualServicesGVR = istio.VirtualServiceResource

// metaProtocolOn decodes the MetaProtocol proxy of a listener strictly and checks it with the
// proxy's rules.
func metaProtocolOn(v *harness.View, listener string, port uint32) (*mpProxy, error) {
	f, err := v.Filter(listener, port, traffic.MetaProtocolFilterName)
	if err != nil {
		return nil, err
	}
	if err := traffictest.CheckListenerFilter(f); err != nil {
		return nil, fmt.Errorf("%s: %w", listener, err)
	}
	ts := &udpatypev1.TypedStruct{}
	if err := f.GetTypedConfig().UnmarshalTo(ts); err != nil {
		return nil, err
	}
	return traffictest.DecodeMetaProtocol(ts)
}

type mpProxy = traffictest.MetaProtocolProxy

func filterNames(mp *mpProxy) []string {
	var out []string
	for _, f := range mp.GetMetaProtocolFilters() {
		out = append(out, f.GetName())
	}
	return out
}

// routeClusters lists the clusters of an RDS table (the refusing route's excepted: it names a
// cluster that never exists on purpose).
func routeClusters(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			for _, m := range a.GetRequestMirrorPolicies() {
				out = append(out, m.GetCluster())
			}
			out = append(out, actionClusters(a.GetCluster(), a.GetWeightedClusters())...)
		}
	}
	return slices.DeleteFunc(out, func(c string) bool { return c == traffic.RefuseCluster })
}

func actionClusters(cluster string, wc *routev3.WeightedCluster) []string {
	if cluster != "" {
		return []string{cluster}
	}
	var out []string
	for _, c := range wc.GetClusters() {
		out = append(out, c.GetName())
	}
	return out
}

// requireClusters waits until every cluster is in the sidecar's CDS.
func requireClusters(t *testing.T, sc *harness.Sidecar, what string, clusters []string) {
	t.Helper()
	if _, err := sc.Await(20*time.Second, func(v *harness.View) error {
		var missing []string
		for _, c := range clusters {
			if _, err := v.Cluster(c); err != nil {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("clusters %v not in CDS", slices.Compact(missing))
		}
		return nil
	}); err != nil {
		t.Errorf("%s %s: %v", sc.Name, what, err)
	}
}

// readBack lists the objects of the test's namespace of the given kinds.
func readBack(t *testing.T, c *cluster, gvrs map[string]schema.GroupVersionResource) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, gvr := range gvrs {
		list, err := c.dyn.Resource(gvr).Namespace(c.namespace).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
	}
	return out
}

const meshConfigYAML = "accessLogFile: /dev/stdout\naccessLogEncoding: TEXT\n"

// traffIstioManifest: %[1]s namespace, %[2]s MetaProtocol host, %[3]s native Dubbo host, %[4]s
// Thrift host, %[5]s-%[7]s their VIPs.
const traffIstioManifest = `
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: %[1]s}
data:
  mesh: |
    accessLogFile: /dev/stdout
    accessLogEncoding: TEXT
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: %[1]s}
spec:
  hosts: [%[2]s]
  addresses: [%[5]s]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: provider}
  ports:
  - {name: tcp-metaprotocol-dubbo-20880, number: 20880, protocol: TCP}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: %[1]s}
spec:
  host: %[2]s
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter, namespace: %[1]s}
spec:
  hosts: [%[2]s]
  routes:
  - name: hello
    match:
      attributes:
        method: {exact: sayHello}
    route:
    - destination: {host: %[2]s, subset: v1}
  - name: split
    route:
    - {destination: {host: %[2]s, subset: v1}, weight: 20}
    - {destination: {host: %[2]s, subset: v2}, weight: 80}
    mirror: {host: %[2]s, subset: v2}
    mirrorPercentage: {value: 10}
  localRateLimit:
    tokenBucket: {maxTokens: 10, fillInterval: 1s}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: demo
  namespace: %[1]s
  annotations:
    interface: org.apache.dubbo.samples.basic.api.DemoService
spec:
  hosts: [%[3]s]
  addresses: [%[6]s]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: provider}
  ports:
  - {name: tcp-dubbo-20881, number: 20881, protocol: TCP}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: demo, namespace: %[1]s}
spec:
  host: %[3]s
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: demo, namespace: %[1]s}
spec:
  hosts: [%[3]s]
  http:
  - name: v1-for-hello
    match:
    - method: {exact: sayHello}
    - method: {prefix: greet}
    route:
    - destination: {host: %[3]s, subset: v1}
  - name: split
    route:
    - {destination: {host: %[3]s, subset: v1}, weight: 20}
    - {destination: {host: %[3]s, subset: v2}, weight: 80}
---
apiVersion: dubbo.aeraki.io/v1alpha1
kind: DubboAuthorizationPolicy
metadata: {name: demo, namespace: %[1]s}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {namespaces: [%[1]s]}
    to:
    - operation: {methods: [sayHello]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hello, namespace: %[1]s}
spec:
  hosts: [%[4]s]
  addresses: [%[7]s]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: provider}
  ports:
  - {name: tcp-thrift-9090, number: 9090, protocol: TCP}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hello, namespace: %[1]s}
spec:
  host: %[4]s
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: %[1]s}
spec:
  hosts: [%[4]s]
  http:
  - match:
    - method: {exact: sayHello}
    route:
    - destination: {host: %[4]s, subset: v2}
  - route:
    - destination: {host: %[4]s, subset: v1}
`
