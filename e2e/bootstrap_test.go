package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/proxies"
	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
)

// TestHelmBootstrapOverride renders the chart and holds its bootstrap override to Envoy's rules
// for the filters the translator generates with the chart's flags: it decodes strictly as an
// Envoy Bootstrap and validates; its cluster reaches the chart's xDS Service by DNS name on the
// Service's port over HTTP/2 (TLS when the chart enables it); every config source of every
// EnvoyFilter generated from the translator's golden inputs names a cluster it defines
// statically and not as EDS (Envoy refuses RDS through any other); and what the cluster
// itself relies on (the SDS cluster for TLS) is static in Istio's own proxy bootstrap.
func TestHelmBootstrapOverride(t *testing.T) {
	istioStatic := istioStaticClusters(t)
	for name, values := range helmCases(t) {
		t.Run(name, func(t *testing.T) {
			objs := renderedObjects(t, helmTemplate(t, values))
			dep := findRendered[appsv1.Deployment](t, objs, "Deployment", "")
			if dep == nil {
				t.Fatal("no Deployment")
			}
			args := dep.Spec.Template.Spec.Containers[0].Args
			if !slices.Contains(args, "--traffic=false") {
				if dep.Spec.Template.Labels["sidecar.istio.io/inject"] != "false" {
					t.Error("the host's pod must not get a sidecar: it would intercept the proxies' xDS connections")
				}
			}
			xdsCluster, ok := flagValue(args, "--xds-cluster")
			var overrides []*corev1.ConfigMap
			for _, u := range objs {
				if u.GetKind() == "ConfigMap" && u.GetLabels()["app.kubernetes.io/component"] == "bootstrap-override" {
					overrides = append(overrides, typed[corev1.ConfigMap](t, u))
				}
			}
			if !ok {
				if len(overrides) > 0 {
					t.Error("bootstrap override rendered with the traffic translator off")
				}
				return
			}
			if len(overrides) == 0 {
				t.Fatal("no bootstrap override ConfigMap")
			}
			wantNS := []string{goldenNS}
			if name == "custom" {
				wantNS = []string{goldenNS, "shop", "payments"}
			}
			var gotNS []string
			for _, cm := range overrides {
				gotNS = append(gotNS, cm.Namespace)
			}
			if !slices.Equal(slices.Sorted(slices.Values(gotNS)), slices.Sorted(slices.Values(wantNS))) {
				t.Errorf("overrides in namespaces %v, want %v", gotNS, wantNS)
			}

			svc := xdsService(t, objs)
			domain := "cluster.local"
			if name == "custom" {
				domain = "corp.internal"
			}
			wantAddr := fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, domain)
			for _, cm := range overrides {
				b := decodeBootstrap(t, cm)
				static := map[string]*clusterv3.Cluster{}
				for _, c := range b.GetStaticResources().GetClusters() {
					static[c.GetName()] = c
				}
				c := static[xdsCluster]
				if c == nil {
					t.Fatalf("%s/%s: no static cluster %q (the host's --xds-cluster)", cm.Namespace, cm.Name, xdsCluster)
				}
				if _, clash := istioStatic[xdsCluster]; clash {
					t.Errorf("cluster %q clashes with a static cluster of Istio's bootstrap", xdsCluster)
				}
				checkXDSCluster(t, c, wantAddr, uint32(svc.Spec.Ports[0].Port), name == "custom", istioStatic) // custom: mutual TLS

				// Every filter the translator writes with these flags must find its RDS cluster.
				opts := traffic.Options{XDSCluster: xdsCluster, Proxy: proxies.DefaultMetaProtocol} // every MetaProtocol filter too
				for _, ef := range translatedGoldenInputs(t, opts) {
					clusters, err := traffictest.ConfigSourceClusters(ef)
					if err != nil {
						t.Fatalf("%s: %v", ef.GetName(), err)
					}
					for _, name := range clusters {
						sc := static[name]
						if sc == nil {
							t.Errorf("EnvoyFilter %s: config source cluster %q is not defined statically by the override", ef.GetName(), name)
						} else if sc.GetType() == clusterv3.Cluster_EDS {
							t.Errorf("EnvoyFilter %s: config source cluster %q is an EDS cluster", ef.GetName(), name)
						}
					}
				}
			}
		})
	}
}

func checkXDSCluster(t *testing.T, c *clusterv3.Cluster, wantAddr string, wantPort uint32, wantTLS bool, istioStatic map[string]string) {
	t.Helper()
	if c.GetType() != clusterv3.Cluster_STRICT_DNS && c.GetType() != clusterv3.Cluster_LOGICAL_DNS {
		t.Errorf("cluster type %s: want a DNS cluster for the Service name", c.GetType())
	}
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("want one endpoint, got %v", eps)
	}
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != wantAddr || sa.GetPortValue() != wantPort {
		t.Errorf("endpoint %s:%d, want the xDS Service %s:%d", sa.GetAddress(), sa.GetPortValue(), wantAddr, wantPort)
	}
	opts := &httpv3.HttpProtocolOptions{}
	raw := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if raw == nil || raw.UnmarshalTo(opts) != nil || opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("the xDS cluster must speak HTTP/2 (gRPC)")
	}
	ts := c.GetTransportSocket()
	if !wantTLS {
		if ts != nil {
			t.Errorf("transport socket %s without TLS enabled", ts.GetName())
		}
		return
	}
	tlsCtx := &tlsv3.UpstreamTlsContext{}
	if ts == nil || ts.GetTypedConfig().UnmarshalTo(tlsCtx) != nil {
		t.Fatal("TLS enabled but the cluster has no UpstreamTlsContext")
	}
	if tlsCtx.GetSni() != wantAddr {
		t.Errorf("SNI %q, want %q", tlsCtx.GetSni(), wantAddr)
	}
	common := tlsCtx.GetCommonTlsContext()
	vc := common.GetValidationContextSdsSecretConfig()
	if vc.GetName() != "ROOTCA" {
		t.Errorf("server certificate validated with %q, want the mesh root (ROOTCA)", vc.GetName())
	}
	sources := []*corev3.ConfigSource{vc.GetSdsConfig()}
	for _, sc := range common.GetTlsCertificateSdsSecretConfigs() {
		sources = append(sources, sc.GetSdsConfig())
	}
	if len(sources) != 2 {
		t.Error("client certificates required but no workload certificate presented")
	}
	for _, cs := range sources {
		name, err := traffictest.ConfigSourceCluster(cs)
		if err != nil {
			t.Errorf("SDS config source: %v", err)
			continue
		}
		if typ, ok := istioStatic[name]; !ok || typ == "EDS" {
			t.Errorf("SDS config source cluster %q is not a static cluster of Istio's proxy bootstrap", name)
		}
	}
}

// decodeBootstrap decodes a bootstrap override strictly: a field Envoy does not know is an
// error here (Envoy rejects unknown fields in the bootstrap too).
func decodeBootstrap(t *testing.T, cm *corev1.ConfigMap) *bootstrapv3.Bootstrap {
	t.Helper()
	js, ok := cm.Data["custom_bootstrap.json"]
	if !ok {
		t.Fatalf("%s/%s: no custom_bootstrap.json (the key Istio's injector mounts)", cm.Namespace, cm.Name)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal([]byte(js), b); err != nil {
		t.Fatalf("%s/%s: not an Envoy Bootstrap: %v", cm.Namespace, cm.Name, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s/%s: %v", cm.Namespace, cm.Name, err)
	}
	return b
}

// istioStaticClusters reads the static clusters (name -> type) of the bootstrap istio-agent
// renders for its proxies, from the istiod version under test.
func istioStaticClusters(t *testing.T) map[string]string {
	t.Helper()
	tools := filepath.Join("infra", "tools.sh")
	if out, err := exec.Command(tools, "istio-bootstrap").CombinedOutput(); err != nil {
		t.Fatalf("istio bootstrap template: %v\n%s", err, out)
	}
	path, err := exec.Command(tools, "path", "istio-bootstrap").Output()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(strings.TrimSpace(string(path)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	re := regexp.MustCompile(`"name":\s*"([^"{}]+)",(?:\s*"alt_stat_name":\s*"[^"]*",)?\s*"type"\s*:\s*"([A-Z_]+)"`)
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		out[m[1]] = m[2]
	}
	if out["sds-grpc"] == "" || out["xds-grpc"] == "" {
		t.Fatalf("Istio's bootstrap template no longer has the clusters it used to (found %v)", out)
	}
	return out
}

// translatedGoldenInputs translates every input of the translator's golden tests with opts.
func translatedGoldenInputs(t *testing.T, opts traffic.Options) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob("../traffic/testdata/*/input.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no translator inputs: %v", err)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := traffic.ParseObjects(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		in, _ := traffic.Decode(objs)
		out = append(out, traffic.Translate(in, opts).EnvoyFilters...)
	}
	return out
}

func xdsService(t *testing.T, objs []*unstructured.Unstructured) *corev1.Service {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() != "Service" {
			continue
		}
		svc := typed[corev1.Service](t, u)
		if len(svc.Spec.Ports) == 1 && svc.Spec.Ports[0].Name == "grpc-xds" {
			return svc
		}
	}
	t.Fatal("no xDS Service")
	return nil
}

func findRendered[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind && (name == "" || u.GetName() == name) {
			return typed[T](t, u)
		}
	}
	return nil
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}
