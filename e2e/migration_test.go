package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	thriftv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/thrift_proxy/v3"
	dubbov1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
)

// TestHostGuardCutOverFromDubbo2istio is the documented cut-over from dubbo2istio: while its
// aeraki-<host> ServiceEntry defines a host, Meltemi does not write the host (it would be in
// two ServiceEntries, which Istio merges) and says so in its log and metrics; once that entry
// is deleted, Meltemi writes the host within seconds. Hosts nobody else defines are written
// meanwhile as usual.
func TestHostGuardCutOverFromDubbo2istio(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	ctx := context.Background()

	const iface, other = "org.apache.dubbo.samples.MigratedService", "org.apache.dubbo.samples.FreshService"
	host, otherHost := strings.ToLower(iface), strings.ToLower(other)
	legacy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
		"metadata": map[string]any{"name": "aeraki-" + host, "annotations": map[string]any{"interface": iface}},
		"spec": map[string]any{"hosts": []any{host}, "location": "MESH_INTERNAL", "resolution": "STATIC",
			"ports":     []any{map[string]any{"number": int64(20880), "name": "tcp-dubbo", "protocol": "TCP"}},
			"endpoints": []any{map[string]any{"address": "10.3.0.1", "ports": map[string]any{"tcp-dubbo": int64(20880)}}}},
	}}
	c.create(t, serviceEntries, legacy)
	for _, p := range []dubbo.Provider{{IP: "10.3.0.1", Port: 20880, Interface: iface, Application: "migrated"},
		{IP: "10.3.0.2", Port: 20880, Interface: other, Application: "fresh"}} {
		if _, err := dubbo.Register(conn, root, p); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk", c.namespace, env.ZKAddr, root))
	b := startBridge(t, c, "--config", cfg)
	b.waitReady(t, env)

	get := func(name string) error {
		_, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).Get(ctx, name, metav1.GetOptions{})
		return err
	}
	env.Eventually(t, 20*time.Second, func() error { return get(otherHost) })
	env.Eventually(t, 10*time.Second, func() error {
		if m := b.metrics(t); !strings.Contains(m, "meltemi_hosts_withheld 1\n") {
			return fmt.Errorf("meltemi_hosts_withheld is not 1")
		}
		return nil
	})
	if err := get(host); !apierrors.IsNotFound(err) {
		t.Fatalf("Meltemi wrote %s while dubbo2istio's entry defines it (%v)", host, err)
	}
	if !strings.Contains(b.logs.String(), "host not written: ServiceEntries Meltemi does not own define it") {
		t.Error("the withheld host is not in the log")
	}

	// The migration check names the legacy entry and fails.
	check := exec.Command(filepath.Join(binDir, "meltemi"), "migrate", "check", "--kubeconfig", env.Kubeconfig)
	report, err := check.CombinedOutput()
	if err == nil {
		t.Errorf("meltemi migrate check succeeded with a dubbo2istio entry in place:\n%s", report)
	}
	if want := "dubbo2istio entry  " + c.namespace + "/aeraki-" + host; !strings.Contains(string(report), want) {
		t.Errorf("meltemi migrate check does not report %q:\n%s", want, report)
	}

	// Cut-over: the legacy entry goes, Meltemi's comes.
	if err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).Delete(ctx, "aeraki-"+host, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	env.Eventually(t, 10*time.Second, func() error { return get(host) })
	t.Logf("host handed over %s after the legacy entry was deleted", time.Since(deleted).Round(time.Millisecond))
	if m := b.metrics(t); !strings.Contains(m, "meltemi_hosts_withheld 0\n") {
		t.Error("meltemi_hosts_withheld is not back to 0")
	}
}

// TestAerakiManifestsApplyUnchanged applies manifests written the way Aeraki's documentation
// shows them (MetaRouters, an ApplicationProtocol, VirtualServices for native Dubbo and Thrift,
// a DubboAuthorizationPolicy; v1alpha3 Istio APIs, ServiceEntries without addresses) to the
// real API server with Meltemi's CRDs, unchanged, and checks the routes Meltemi makes of them:
// RDS decisions request by request, native route tables, the listeners of the addresses istiod
// allocates.
func TestAerakiManifestsApplyUnchanged(t *testing.T) {
	env := harness.Load(t)
	env.RequireComponent(t, harness.Istiod) // allocates the ServiceEntries' addresses
	c := newCluster(t, env)
	ctx := context.Background()
	ns := c.namespace
	gvrs := map[string]schema.GroupVersionResource{
		"ServiceEntry": serviceEntries, "DestinationRule": destinationRules, "VirtualService": virtualServicesGVR,
		"MetaRouter": mpv1.MetaRouterResource, "ApplicationProtocol": mpv1.ApplicationProtocolResource,
		"DubboAuthorizationPolicy": dubbov1.DubboAuthorizationPolicyResource,
	}
	for _, f := range []string{"testdata/aeraki/metaprotocol.yaml", "testdata/aeraki/native.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := traffic.ParseObjects([]byte(strings.ReplaceAll(string(data), "NAMESPACE", ns)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			gvr, ok := gvrs[o.GetKind()]
			if !ok {
				t.Fatalf("%s: unexpected kind %s", f, o.GetKind())
			}
			// As written: the API version of the manifest, not the one Meltemi reads.
			gvr.Version = o.GroupVersionKind().Version
			if _, err := c.dyn.Resource(gvr).Namespace(ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: %s %s does not apply unchanged: %v", f, o.GetKind(), o.GetName(), err)
			}
		}
	}

	xdsAddr := freeAddr(t)
	b := startBridge(t, c, "--registry-namespace", ns, "--traffic=true", "--xds-listen", xdsAddr,
		"--traffic-watch-namespace", ns, "--envoyfilter-namespace", ns,
		"--proxy", "metaprotocol-1.4.2") // every proxy runs the MetaProtocol image, as in Aeraki
	b.waitReady(t, env)

	for _, name := range []string{"test-metaprotocol-dubbo-route", "test-metaprotocol-dubbo-global-ratelimit", "test-metaprotocol-videopacket-route"} {
		env.Eventually(t, 20*time.Second, func() error {
			mr, err := c.dyn.Resource(mpv1.MetaRouterResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if conds := conditionStatuses(mr.Object); conds[mpv1.ConditionAccepted] != "True" {
				return fmt.Errorf("MetaRouter %s: conditions %v", name, conds)
			}
			return nil
		})
	}

	demo, second := "org.apache.dubbo.samples.basic.api.demoservice", "org.apache.dubbo.samples.basic.api.secondservice"
	video := "videopacket-sample-server." + ns + ".svc.cluster.local"
	decide := func(host string, port uint32, attrs map[string]string) traffic.Decision {
		t.Helper()
		rc, _ := subscribeRoutes(t, xdsAddr, traffic.RouteConfigName(host, port)).next(20 * time.Second)
		d, err := traffic.Evaluate(rc, attrs)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := decide(demo, 20880, map[string]string{"interface": "org.apache.dubbo.samples.basic.api.DemoService", "method": "sayHello"}); len(d.Clusters) != 1 ||
		d.Clusters[0].Name != "outbound|20880|v1|"+demo {
		t.Errorf("sayHello on %s goes to %+v, want v1", demo, d.Clusters)
	}
	d := decide(demo, 20880, map[string]string{"method": "other"})
	if len(d.Clusters) != 2 || d.Clusters[0].Percent != 20 || d.Clusters[1].Percent != 80 || len(d.Mirrors) != 1 || d.Mirrors[0].Percent != 50 ||
		len(d.Route.GetRequestHeadersToAdd()) != 1 {
		t.Errorf("other methods on %s: %+v, want the 20/80 split with a 50%% mirror and a mutation", demo, d)
	}
	if d := decide(second, 20880, nil); len(d.Clusters) != 1 || d.Clusters[0].Name != "outbound|20880||"+second {
		t.Errorf("%s (MetaRouter without routes) goes to %+v, want the host itself", second, d.Clusters)
	}
	if d := decide(video, 8000, map[string]string{"cmd": "1"}); len(d.Clusters) != 1 || d.Clusters[0].Name != "outbound|8000|v2|"+video {
		t.Errorf("cmd=1 on %s goes to %+v, want v2", video, d.Clusters)
	}
	if d := decide(video, 8000, map[string]string{"cmd": "2"}); d.Route != nil {
		t.Errorf("cmd=2 on %s matched route %s; Aeraki's MetaRouter has no catch-all", video, d.Route.GetName())
	}

	// istiod allocates the addresses; the outbound filters take their listeners, with the
	// custom protocol's codec.
	env.Eventually(t, 30*time.Second, func() error {
		for host, port := range map[string]uint32{demo: 20880, video: 8000, "org.apache.dubbo.samples.basic.api.testservice": 20880} {
			se := c.getServiceEntryByHost(t, host)
			status, _, _ := unstructured.NestedSlice(se.Object, "status", "addresses")
			if len(status) == 0 {
				return fmt.Errorf("istiod allocated no address to %s yet", host)
			}
			addr, _, _ := unstructured.NestedString(status[0].(map[string]any), "value")
			ef, err := c.dyn.Resource(envoyFiltersGVR).Namespace(ns).Get(ctx, "meltemi-"+host+fmt.Sprintf("-%d-outbound", port), metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := traffic.PatchedListeners(ef); !slices.Equal(got, []string{fmt.Sprintf("%s_%d", addr, port)}) {
				return fmt.Errorf("%s: patches %v, want the allocated address's listener", ef.GetName(), got)
			}
			if err := traffictest.CheckEnvoyFilter(ef); err != nil {
				return fmt.Errorf("%s: %v", ef.GetName(), err)
			}
		}
		return nil
	})
	vef, err := c.dyn.Resource(envoyFiltersGVR).Namespace(ns).Get(ctx, "meltemi-"+video+"-8000-outbound", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if js, _ := vef.MarshalJSON(); !strings.Contains(string(js), `"aeraki.meta_protocol.codec.videopacket"`) {
		t.Errorf("the videopacket filter lacks the ApplicationProtocol's codec")
	}

	// Native Dubbo: the VirtualService's routes for the annotated interface, the policy inbound.
	testservice := "org.apache.dubbo.samples.basic.api.testservice"
	out := nativeFilter[*dubbov3.DubboProxy](t, c, "meltemi-"+testservice+"-20880-outbound")
	var routes []string
	for _, rcfg := range out.GetMultipleRouteConfig().GetRouteConfig() {
		if rcfg.GetInterface() != "org.apache.dubbo.samples.basic.api.TestService" {
			t.Errorf("route configuration for interface %q", rcfg.GetInterface())
		}
		for _, r := range rcfg.GetRoutes() {
			routes = append(routes, strings.Join(actionClusters(r.GetRoute().GetCluster(), r.GetRoute().GetWeightedClusters()), "+"))
		}
	}
	v1, v2 := "outbound|20880|v1|"+testservice, "outbound|20880|v2|"+testservice
	if want := []string{v1, v1 + "+" + v2}; !slices.Equal(routes, want) {
		t.Errorf("Dubbo routes %v, want %v", routes, want)
	}
	// Aeraki's DubboAuthorizationPolicy needs Aeraki's Dubbo RBAC filter, which no supported
	// proxy has: the inbound Dubbo filter that would carry it is never written (a proxy would
	// reject the pod's whole virtualInbound).
	if _, err := c.dyn.Resource(envoyFiltersGVR).Namespace(c.namespace).Get(context.Background(),
		"meltemi-"+testservice+"-20880-inbound", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("inbound Dubbo EnvoyFilter with %s: %v, want none written", traffic.DubboRBACFilterName, err)
	}
	thrift := nativeFilter[*thriftv3.ThriftProxy](t, c, "meltemi-thrift-sample-server."+ns+".svc.cluster.local-9090-outbound")
	if rs := thrift.GetRouteConfig().GetRoutes(); len(rs) != 1 || len(rs[0].GetRoute().GetWeightedClusters().GetClusters()) != 2 {
		t.Errorf("Thrift routes %v, want the 30/70 split", rs)
	}
}

func (c *cluster) getServiceEntryByHost(t *testing.T, host string) *unstructured.Unstructured {
	t.Helper()
	list, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if hosts, _, _ := unstructured.NestedStringSlice(list.Items[i].Object, "spec", "hosts"); slices.Contains(hosts, host) {
			return &list.Items[i]
		}
	}
	t.Fatalf("no ServiceEntry for %s", host)
	return nil
}

// nativeFilter reads an EnvoyFilter of Meltemi's (waiting for it) and decodes its one patch's
// filter config.
func nativeFilter[T interface {
	proto.Message
	*P
}, P any](t *testing.T, c *cluster, name string) T {
	t.Helper()
	var ef *unstructured.Unstructured
	c.env.Eventually(t, 20*time.Second, func() error {
		var err error
		ef, err = c.dyn.Resource(envoyFiltersGVR).Namespace(c.namespace).Get(context.Background(), name, metav1.GetOptions{})
		return err
	})
	if err := traffictest.CheckEnvoyFilter(ef); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
	value, _, _ := unstructured.NestedMap(patches[0].(map[string]any), "patch", "value")
	raw, _ := json.Marshal(value)
	f := &listenerv3.Filter{}
	if err := protojson.Unmarshal(raw, f); err != nil {
		t.Fatal(err)
	}
	out := T(new(P))
	if err := f.GetTypedConfig().UnmarshalTo(out); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}
