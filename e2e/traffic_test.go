package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/sync/xds"
	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
)

var destinationRules = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}

// rdsClient is a real xDS client: one aggregated discovery stream subscribed to one route
// configuration, acknowledging what it accepts.
type rdsClient struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	name   string
	node   *corev3.Node
	got    chan *discoveryv3.DiscoveryResponse
}

func subscribeRoutes(t *testing.T, addr, name string) *rdsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatalf("opening the discovery stream: %v", err)
	}
	c := &rdsClient{t: t, stream: stream, name: name, node: &corev3.Node{Id: "sidecar~10.0.0.9~e2e~default.svc.cluster.local"},
		got: make(chan *discoveryv3.DiscoveryResponse, 16)}
	go func() {
		defer close(c.got)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			c.got <- resp
		}
	}()
	c.send("", "")
	return c
}

func (c *rdsClient) send(version, nonce string) {
	c.t.Helper()
	if err := c.stream.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: xds.RouteType, ResourceNames: []string{c.name},
		VersionInfo: version, ResponseNonce: nonce}); err != nil {
		c.t.Fatalf("sending discovery request: %v", err)
	}
}

// next waits for the next response, checks and ACKs it, and returns its route configuration.
func (c *rdsClient) next(timeout time.Duration) (*routev3.RouteConfiguration, string) {
	c.t.Helper()
	select {
	case resp, ok := <-c.got:
		if !ok {
			c.t.Fatal("discovery stream closed")
		}
		if resp.GetTypeUrl() != xds.RouteType || len(resp.GetResources()) != 1 {
			c.t.Fatalf("response of type %s with %d resources, want one %s", resp.GetTypeUrl(), len(resp.GetResources()), xds.RouteType)
		}
		rc := &routev3.RouteConfiguration{}
		if err := resp.GetResources()[0].UnmarshalTo(rc); err != nil {
			c.t.Fatalf("decoding route configuration: %v", err)
		}
		if rc.GetName() != c.name {
			c.t.Fatalf("got route configuration %s, subscribed to %s", rc.GetName(), c.name)
		}
		if err := traffictest.CheckRouteConfig(rc); err != nil {
			c.t.Fatalf("invalid route configuration: %v", err)
		}
		c.send(resp.GetVersionInfo(), resp.GetNonce()) // ACK
		return rc, resp.GetVersionInfo()
	case <-time.After(timeout):
		c.t.Fatalf("no route configuration %s within %s", c.name, timeout)
	}
	return nil, ""
}

func clusterFor(t *testing.T, rc *routev3.RouteConfiguration, attrs map[string]string) string {
	t.Helper()
	d, err := traffic.Evaluate(rc, attrs)
	if err != nil || len(d.Clusters) != 1 {
		t.Fatalf("evaluating %v: %+v, %v", attrs, d, err)
	}
	return d.Clusters[0].Name
}

func TestMetaRouterBecomesEnvoyFiltersAndLiveRoutes(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	ctx := context.Background()
	host := c.namespace + ".greeter.example.com"

	tmpl, err := os.ReadFile("../traffic/testdata/live-service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := traffic.ParseObjects(fmt.Appendf(nil, string(tmpl), host))
	if err != nil {
		t.Fatal(err)
	}
	gvrs := map[string]schema.GroupVersionResource{"ServiceEntry": serviceEntries, "DestinationRule": destinationRules,
		"MetaRouter": mpv1.MetaRouterResource, "ApplicationProtocol": mpv1.ApplicationProtocolResource}
	for _, o := range objs {
		c.create(t, gvrs[o.GetKind()], o)
	}

	xdsAddr := freeAddr(t)
	b := startBridge(t, c, "--registry-namespace", c.namespace, "--traffic=true", "--xds-listen", xdsAddr,
		"--traffic-watch-namespace", c.namespace, "--envoyfilter-namespace", c.namespace,
		"--proxy", "metaprotocol-1.4.2") // every proxy runs the MetaProtocol image, as in Aeraki
	b.waitReady(t, env)

	// EnvoyFilters, stored by the API server under Istio's schema and still valid configs.
	var names []string
	env.Eventually(t, 20*time.Second, func() error {
		list, err := c.dyn.Resource(envoyFilters).Namespace(c.namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		names = names[:0]
		for i := range list.Items {
			if err := traffictest.CheckEnvoyFilter(&list.Items[i]); err != nil {
				return fmt.Errorf("%s: %w", list.Items[i].GetName(), err)
			}
			if l := list.Items[i].GetLabels(); l["app.kubernetes.io/managed-by"] != "meltemi" || l[traffic.LabelComponent] != "traffic" {
				t.Fatalf("EnvoyFilter %s lacks its ownership labels: %v", list.Items[i].GetName(), l)
			}
			names = append(names, list.Items[i].GetName())
		}
		if len(names) != 2 {
			return fmt.Errorf("EnvoyFilters %v, want outbound and inbound", names)
		}
		return nil
	})
	for _, want := range []string{"meltemi-" + host + "-20880-outbound", "meltemi-" + host + "-20880-inbound"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("EnvoyFilters %v lack %s", names, want)
		}
	}
	env.Eventually(t, 20*time.Second, func() error {
		mr, err := c.dyn.Resource(mpv1.MetaRouterResource).Namespace(c.namespace).Get(ctx, "greeter", metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds := conditionStatuses(mr.Object)
		if conds[mpv1.ConditionAccepted] != "True" {
			return fmt.Errorf("conditions %v", conds)
		}
		return nil
	})

	// A real discovery stream receives the route and ACKs it.
	rds := subscribeRoutes(t, xdsAddr, traffic.RouteConfigName(host, 20880))
	rc, v1 := rds.next(20 * time.Second)
	hello := map[string]string{"method": "sayHello"}
	if got := clusterFor(t, rc, hello); got != "outbound|20880|v1|"+host {
		t.Fatalf("sayHello goes to %s", got)
	}

	// A MetaRouter edit reaches the subscriber as a new version.
	edited := time.Now()
	patch := fmt.Sprintf(`{"spec":{"routes":[{"name":"hello","match":{"attributes":{"method":{"exact":"sayHello"}}},"route":[{"destination":{"host":%q,"subset":"v2"}}]}]}}`, host)
	if _, err := c.dyn.Resource(mpv1.MetaRouterResource).Namespace(c.namespace).Patch(ctx, "greeter", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, v2 := rds.next(10 * time.Second)
	t.Logf("MetaRouter edit to new route version on the stream: %s", time.Since(edited).Round(time.Millisecond))
	if v2 == v1 {
		t.Errorf("version %s did not change", v2)
	}
	if got := clusterFor(t, rc, hello); got != "outbound|20880|v2|"+host {
		t.Fatalf("after the edit sayHello goes to %s", got)
	}

	// Deleting the MetaRouter falls back to the default route.
	if err := c.dyn.Resource(mpv1.MetaRouterResource).Namespace(c.namespace).Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, _ = rds.next(10 * time.Second)
	if got := clusterFor(t, rc, hello); got != "outbound|20880||"+host {
		t.Fatalf("after deleting the MetaRouter sayHello goes to %s", got)
	}
	if n := len(rc.GetVirtualHosts()[0].GetRoutes()); n != 1 {
		t.Errorf("%d routes after deleting the MetaRouter, want only the default route", n)
	}
}

// conditionStatuses maps the condition types of an object's status to their statuses.
func conditionStatuses(obj map[string]any) map[string]string {
	out := map[string]string{}
	status, _ := obj["status"].(map[string]any)
	conds, _ := status["conditions"].([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		typ, _ := m["type"].(string)
		st, _ := m["status"].(string)
		out[typ] = st
	}
	return out
}

// TestMetaRouterSchema sends MetaRouters to the real API server (dry run): Aeraki's examples are
// accepted unchanged, and the schema's rules reject what the translator could not apply.
func TestMetaRouterSchema(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	const valid = `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: attribute-based-route}
spec:
  hosts:
  - org.apache.dubbo.samples.basic.api.demoservice
  gateways:
  - istio-system/ingress-gateway
  routes:
  - name: v1
    match:
      attributes:
        interface:
          exact: org.apache.dubbo.samples.basic.api.DemoService
        method:
          exact: sayHello
        user: {}
    route:
    - destination:
        host: org.apache.dubbo.samples.basic.api.demoservice
        subset: v1
  - name: traffic-split
    route:
    - destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}
      weight: 20
    - destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}
      weight: 80
    mirror: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}
    mirrorPercentage: {value: 50}
  localRateLimit:
    tokenBucket: {fillInterval: 60s, maxTokens: 10, tokensPerFill: 10}
    conditions:
    - match: {attributes: {method: {exact: sayHello}}}
      tokenBucket: {fillInterval: 60s, maxTokens: 2, tokensPerFill: 2}
  globalRateLimit:
    domain: production
    match: {attributes: {method: {exact: sayHello}}}
    rateLimitService: outbound|8081||rate-limit-server.meta-dubbo.svc.cluster.local
    requestTimeout: 100ms
    denyOnFail: true
    descriptors:
    - {property: method, descriptorKey: method}
`
	dryRun := func(doc string) error {
		var u unstructured.Unstructured
		if err := yamlToObject(doc, &u); err != nil {
			t.Fatal(err)
		}
		_, err := c.dyn.Resource(mpv1.MetaRouterResource).Namespace(c.namespace).Create(context.Background(), &u,
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	if err := dryRun(valid); err != nil {
		t.Fatalf("Aeraki's example is refused: %v", err)
	}
	// Aeraki's CRD takes any weights (the proxy splits in proportion): so does Meltemi's.
	if err := dryRun(strings.Replace(strings.Replace(valid, "weight: 20", "weight: 30", 1), "weight: 80", "weight: 300", 1)); err != nil {
		t.Errorf("weights not summing to 100 are refused: %v", err)
	}
	for doc, want := range map[string]string{
		"{protocol: dubbo, codec: aeraki.meta_protocol.codec.dubbo}": "",
		"{protocol: dubbo}":                         "codec: Required value",
		"{protocol: Dubbo-2, codec: example.codec}": "spec.protocol",
	} {
		var ap unstructured.Unstructured
		if err := yamlToObject("{apiVersion: metaprotocol.aeraki.io/v1alpha1, kind: ApplicationProtocol, metadata: {name: p}, spec: "+doc+"}", &ap); err != nil {
			t.Fatal(err)
		}
		_, err := c.dyn.Resource(mpv1.ApplicationProtocolResource).Namespace(c.namespace).Create(context.Background(), &ap,
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if (want == "" && err != nil) || (want != "" && (err == nil || !strings.Contains(err.Error(), want))) {
			t.Errorf("ApplicationProtocol spec %s: error %v, want %q", doc, err, want)
		}
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"no positive weight", "weight: 20\n    - destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}\n      weight: 80",
			"weight: 0\n    - destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}\n      weight: 0", "several destinations need a positive weight"},
		{"negative weight", "weight: 80", "weight: -1", "spec.routes[1].route[1].weight"},
		{"duplicate route names", "name: traffic-split", "name: v1", "route names must be unique"},
		{"two kinds of match", "exact: sayHello\n", "exact: sayHello\n          prefix: say\n", "at most one of exact, prefix and regex"},
		{"mirror percentage without mirror", "    mirror: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}\n", "", "mirrorPercentage needs mirror"},
		{"mirror percentage over 100", "value: 50", "value: 150", "mirrorPercentage.value"},
		{"no destination", "    route:\n    - destination:\n        host: org.apache.dubbo.samples.basic.api.demoservice\n        subset: v1\n", "    route: []\n", "spec.routes[0].route"},
		{"destination without host", "host: org.apache.dubbo.samples.basic.api.demoservice\n        subset: v1", "subset: v1", "host: Required value"},
		{"not a duration", "fillInterval: 60s, maxTokens: 10", "fillInterval: 1 minute, maxTokens: 10", "fillInterval"},
		{"zero duration", "fillInterval: 60s, maxTokens: 2", "fillInterval: 0s, maxTokens: 2", "positive duration"},
		{"empty bucket", "maxTokens: 10, tokensPerFill: 10", "maxTokens: 0", "maxTokens"},
		{"global limit without descriptors", "    descriptors:\n    - {property: method, descriptorKey: method}\n", "", "descriptors: Required value"},
		{"no hosts", "  hosts:\n  - org.apache.dubbo.samples.basic.api.demoservice\n", "", "hosts: Required value"},
		{"bad exportTo", "  gateways:", "  exportTo: [Not_A_Namespace]\n  gateways:", "spec.exportTo[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(valid, tc.from) {
				t.Fatalf("%q not in the example", tc.from)
			}
			err := dryRun(strings.Replace(valid, tc.from, tc.to, 1))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
