package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/sync/kube"
	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/proxies"
	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
)

// routeRecorder is a RouteSink keeping the last update.
type routeRecorder struct {
	mu     sync.Mutex
	routes map[string]*routev3.RouteConfiguration
}

func (r *routeRecorder) UpdateSince(_ time.Time, routes map[string]*routev3.RouteConfiguration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes = routes
}

// decide evaluates attributes against the last route configuration of a name.
func (r *routeRecorder) decide(name string, attrs map[string]string) (traffic.Decision, error) {
	r.mu.Lock()
	rc := r.routes[name]
	r.mu.Unlock()
	if rc == nil {
		return traffic.Decision{}, fmt.Errorf("no route configuration %s", name)
	}
	return traffic.Evaluate(rc, attrs)
}

type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (e *eventLog) record(obj runtime.Object, typ, reason, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, fmt.Sprintf("%s %s %s", typ, reason, msg))
}

func (e *eventLog) has(substr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.events {
		if strings.Contains(ev, substr) {
			return true
		}
	}
	return false
}

// TestControllerOnRealAPIServer runs the controller with the real reconciler against the real
// API server: rules in, EnvoyFilters and routes out, statuses and events back.
func TestControllerOnRealAPIServer(t *testing.T) {
	env := harness.Load(t)
	env.RequireComponent(t, harness.KubeAPIServer)
	dyn := dynamic.NewForConfigOrDie(env.RestConfig(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ns := fmt.Sprintf("traffic-ctrl-%04x", rand.IntN(1<<16))
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	if _, err := dyn.Resource(nsGVR).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dyn.Resource(nsGVR).Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	host := ns + ".greeter.example.com"
	tmpl, err := os.ReadFile("../testdata/live-service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := traffic.ParseObjects(fmt.Appendf(nil, string(tmpl), host))
	if err != nil {
		t.Fatal(err)
	}
	gvrs := map[string]schema.GroupVersionResource{"ServiceEntry": istio.ServiceEntryResource, "DestinationRule": istio.DestinationRuleResource,
		"MetaRouter": mpv1.MetaRouterResource, "ApplicationProtocol": mpv1.ApplicationProtocolResource}
	for _, o := range objs {
		if _, err := dyn.Resource(gvrs[o.GetKind()]).Namespace(ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", o.GetKind(), err)
		}
	}

	reg := prometheus.NewRegistry()
	rec, err := kube.New(kube.Config{Client: dyn, Kinds: []kube.Kind{kube.EnvoyFilterKind()}, Namespace: ns,
		OwnerLabels: traffic.OwnerLabels(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	routes := &routeRecorder{}
	events := &eventLog{}
	// Istio's mesh config turns on access logs.
	cmGVR := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	if _, err := dyn.Resource(cmGVR).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "istio"},
		"data": map[string]any{"mesh": "accessLogFile: /dev/stdout\nenableTracing: false\n"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctrl, err := New(Config{Client: dyn, Writer: rec, Routes: routes, WatchNamespace: ns, MeshConfig: types.NamespacedName{Namespace: ns, Name: "istio"},
		Options: traffic.Options{Namespace: ns, Proxy: proxies.DefaultMetaProtocol}, Recorder: events.record, Registerer: reg, Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = rec.Run(ctx) })
	wg.Go(func() { _ = ctrl.Run(ctx) })

	efGVR := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1alpha3", Resource: "envoyfilters"}
	efName := "meltemi-" + host + "-20880-outbound"
	routeName := traffic.RouteConfigName(host, 20880)
	hello := map[string]string{"method": "sayHello"}
	wantCluster := func(attrs map[string]string, cluster string) func() error {
		return func() error {
			d, err := routes.decide(routeName, attrs)
			if err != nil {
				return err
			}
			if len(d.Clusters) != 1 || d.Clusters[0].Name != cluster {
				return fmt.Errorf("request %v goes to %+v, want %s", attrs, d.Clusters, cluster)
			}
			return nil
		}
	}
	condition := func(typ, status string) func() error {
		return func() error {
			mr, err := dyn.Resource(mpv1.MetaRouterResource).Namespace(ns).Get(ctx, "greeter", metav1.GetOptions{})
			if err != nil {
				return err
			}
			st, _ := currentStatus(mr)
			for _, c := range st.Conditions {
				if c.Type == typ {
					if c.Status != status || st.ObservedGeneration != mr.GetGeneration() {
						return fmt.Errorf("%s is %s (%s), generation %d of %d", typ, c.Status, c.Message, st.ObservedGeneration, mr.GetGeneration())
					}
					return nil
				}
			}
			return fmt.Errorf("no %s condition in %+v", typ, st)
		}
	}

	// Applied: routes, an EnvoyFilter the API server accepted, status and an event.
	env.Eventually(t, 20*time.Second, wantCluster(hello, "outbound|20880|v1|"+host))
	env.Eventually(t, 20*time.Second, func() error {
		ef, err := dyn.Resource(efGVR).Namespace(ns).Get(ctx, efName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return traffictest.CheckEnvoyFilter(ef)
	})
	env.Eventually(t, 20*time.Second, condition(mpv1.ConditionAccepted, "True"))
	env.Eventually(t, 10*time.Second, condition(mpv1.ConditionResolvedRefs, "True"))
	telemetry := func(wantLog bool) func() error {
		return func() error {
			ef, err := dyn.Resource(efGVR).Namespace(ns).Get(ctx, efName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			js, _ := ef.MarshalJSON()
			if hasLog := strings.Contains(string(js), `"access_log"`); hasLog != wantLog {
				return fmt.Errorf("access log in the EnvoyFilter: %v, want %v", hasLog, wantLog)
			}
			if strings.Contains(string(js), `"tracing"`) == wantLog {
				return fmt.Errorf("tracing in the EnvoyFilter: %v, want %v", !wantLog, !wantLog)
			}
			return nil
		}
	}
	env.Eventually(t, 10*time.Second, telemetry(true))

	// A foreign EnvoyFilter on the same listener (a still running Aeraki) is reported on itself.
	aeraki := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
		"metadata": map[string]any{"name": "aeraki-outbound-greeter", "namespace": ns},
		"spec": map[string]any{"configPatches": []any{map[string]any{
			"applyTo": "NETWORK_FILTER",
			"match": map[string]any{"context": "SIDECAR_OUTBOUND", "listener": map[string]any{"name": "240.240.200.1_20880",
				"filterChain": map[string]any{"filter": map[string]any{"name": "envoy.filters.network.tcp_proxy"}}}},
			// A value istiod can build: a shared istiod (other packages' tests) must not log errors.
			"patch": map[string]any{"operation": "REPLACE", "value": map[string]any{"name": "envoy.filters.network.tcp_proxy",
				"typed_config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
					"stat_prefix": "aeraki", "cluster": "outbound|20880||" + host}}},
		}}},
	}}
	if _, err := dyn.Resource(efGVR).Namespace(ns).Create(ctx, aeraki, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 10*time.Second, func() error {
		if !events.has("Warning " + ReasonTrafficProblem + " Warning: patches listener 240.240.200.1_20880 (and 0 more), which Meltemi's EnvoyFilter") {
			return fmt.Errorf("no event about the foreign EnvoyFilter: %v", events.events)
		}
		return nil
	})
	if err := dyn.Resource(efGVR).Namespace(ns).Delete(ctx, "aeraki-outbound-greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dyn.Resource(cmGVR).Namespace(ns).Delete(ctx, "istio", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 10*time.Second, telemetry(false)) // Istio's defaults: no access log, tracing on
	if !ctrl.Synced() {
		t.Error("not synced after the first translation")
	}

	patch := func(spec string) {
		t.Helper()
		body, err := yaml.YAMLToJSON([]byte(spec))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(mpv1.MetaRouterResource).Namespace(ns).Patch(ctx, "greeter", types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
			t.Fatalf("patching MetaRouter: %v", err)
		}
	}

	// A regex the schema cannot check makes the new version invalid: the old routes stay.
	patch(`{spec: {routes: [{name: hello, match: {attributes: {method: {regex: "say(Hello"}}}, route: [{destination: {host: ` + host + `, subset: v2}}]}]}}`)
	env.Eventually(t, 20*time.Second, condition(mpv1.ConditionAccepted, "False"))
	env.Eventually(t, 5*time.Second, func() error {
		if !events.has("Invalid") || !events.has("generation 1 is still served") {
			return fmt.Errorf("no Invalid event yet: %v", events.events)
		}
		return nil
	})
	if err := wantCluster(hello, "outbound|20880|v1|"+host)(); err != nil {
		t.Errorf("after an invalid edit: %v", err)
	}

	// An unknown subset is applied and reported.
	patch(`{spec: {routes: [{name: hello, match: {attributes: {method: {exact: sayHello}}}, route: [{destination: {host: ` + host + `, subset: v9}}]}]}}`)
	env.Eventually(t, 20*time.Second, wantCluster(hello, "outbound|20880|v9|"+host))
	env.Eventually(t, 20*time.Second, condition(mpv1.ConditionResolvedRefs, "False"))
	env.Eventually(t, 5*time.Second, condition(mpv1.ConditionAccepted, "True"))
	env.Eventually(t, 5*time.Second, func() error {
		if n := gaugeValue(t, reg, "meltemi_traffic_unresolved_destinations"); n != 1 {
			return fmt.Errorf("meltemi_traffic_unresolved_destinations = %v, want 1 (the unknown subset's cluster)", n)
		}
		return nil
	})

	// A ServiceEntry without an address gets no outbound filter and a Warning event; given one,
	// its listener is patched. (Addresses istiod allocates into the status are followed too:
	// the conformance suite shows that with a real istiod, which owns that field.)
	novip := "novip." + host
	se := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
		"metadata": map[string]any{"name": "novip", "namespace": ns,
			"labels": map[string]any{"networking.istio.io/enable-autoallocate-ip": "false"}},
		"spec": map[string]any{"hosts": []any{novip}, "location": "MESH_INTERNAL", "resolution": "STATIC",
			"ports": []any{map[string]any{"name": "tcp-metaprotocol-dubbo", "number": int64(20880), "protocol": "TCP"}}},
	}}
	if _, err := dyn.Resource(istio.ServiceEntryResource).Namespace(ns).Create(ctx, se, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 20*time.Second, func() error {
		if !events.has("Warning " + ReasonTrafficProblem + " Warning: host " + novip + " port 20880 has no address") {
			return fmt.Errorf("no Warning event for the address-less ServiceEntry: %v", events.events)
		}
		return nil
	})
	novipEF := "meltemi-" + novip + "-20880-outbound"
	if _, err := dyn.Resource(efGVR).Namespace(ns).Get(ctx, novipEF, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("EnvoyFilter %s for a host without an address (%v)", novipEF, err)
	}
	if _, err := dyn.Resource(istio.ServiceEntryResource).Namespace(ns).Patch(ctx, "novip", types.MergePatchType,
		[]byte(`{"spec": {"addresses": ["10.99.0.9"]}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 20*time.Second, func() error {
		ef, err := dyn.Resource(efGVR).Namespace(ns).Get(ctx, novipEF, metav1.GetOptions{})
		if err != nil {
			return err
		}
		patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
		if len(patches) != 1 {
			return fmt.Errorf("%d patches", len(patches))
		}
		if l, _, _ := unstructured.NestedString(patches[0].(map[string]any), "match", "listener", "name"); l != "10.99.0.9_20880" {
			return fmt.Errorf("patches listener %q, want 10.99.0.9_20880", l)
		}
		return nil
	})

	// Deleting the MetaRouter leaves the default route.
	if err := dyn.Resource(mpv1.MetaRouterResource).Namespace(ns).Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 20*time.Second, wantCluster(hello, "outbound|20880||"+host))

	// Deleting the service withdraws its routes and deletes its EnvoyFilter.
	if err := dyn.Resource(istio.ServiceEntryResource).Namespace(ns).Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 20*time.Second, func() error {
		if _, err := routes.decide(routeName, nil); err == nil {
			return fmt.Errorf("route %s still served", routeName)
		}
		if _, err := dyn.Resource(efGVR).Namespace(ns).Get(ctx, efName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("EnvoyFilter still there (%v)", err)
		}
		return nil
	})
}

// gaugeValue reads an unlabelled gauge from reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
