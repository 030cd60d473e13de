package traffic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestCheckRejectsWhatTheProxyWouldNot takes generated EnvoyFilters that pass the check and
// breaks them the ways that matter: each broken config must fail, with the reason in the error.
func TestCheckRejectsWhatTheProxyWouldNot(t *testing.T) {
	in, opts, _ := loadCase(t, filepath.Join("testdata", "rate-limits"))
	out := Translate(in, opts)
	var inbound, outbound *unstructured.Unstructured
	for _, ef := range out.EnvoyFilters {
		switch {
		case strings.HasSuffix(ef.GetName(), "-inbound"):
			inbound = ef
		case strings.HasSuffix(ef.GetName(), "-outbound"):
			outbound = ef
		}
	}
	if inbound == nil || outbound == nil {
		t.Fatalf("want an inbound and an outbound EnvoyFilter, got %d filters", len(out.EnvoyFilters))
	}
	for _, ef := range []*unstructured.Unstructured{inbound, outbound} {
		if err := traffictest.CheckEnvoyFilter(ef); err != nil {
			t.Fatalf("unbroken %s: %v", ef.GetName(), err)
		}
	}

	cases := []struct {
		name    string
		ef      *unstructured.Unstructured
		breakIt func(mp map[string]any)
		want    string
	}{
		{"inbound routes as Envoy's RouteConfiguration", inbound, func(mp map[string]any) {
			mp["route_config"] = map[string]any{"name": "inbound|20880||", "virtual_hosts": []any{
				map[string]any{"name": "x", "domains": []any{"*"}, "routes": []any{}},
			}}
		}, `unknown field "virtual_hosts"`},
		{"route action field of Envoy's shape", inbound, func(mp map[string]any) {
			route := mp["route_config"].(map[string]any)["routes"].([]any)[0].(map[string]any)
			route["route"] = map[string]any{"cluster": "inbound|20880||", "timeout": "1s"}
		}, `unknown field "timeout"`},
		{"empty inbound route table", inbound, func(mp map[string]any) {
			mp["route_config"].(map[string]any)["routes"] = []any{}
		}, "has no routes"},
		{"unknown field in a filter's config", inbound, func(mp map[string]any) {
			f := mp["meta_protocol_filters"].([]any)[3].(map[string]any)
			f["config"].(map[string]any)["destination_svc"] = "x"
		}, "destination_svc"},
		{"fill interval under 50ms", inbound, func(mp map[string]any) {
			cfg := mp["meta_protocol_filters"].([]any)[0].(map[string]any)["config"].(map[string]any)
			cfg["token_bucket"].(map[string]any)["fill_interval"] = "0.020s"
		}, "shorter than 50ms"},
		{"no deprecated protocol fields", outbound, func(mp map[string]any) {
			delete(mp, "application_protocol")
			delete(mp, "codec")
		}, "before 1.3.1"},
		{"deprecated fields disagreeing", outbound, func(mp map[string]any) {
			mp["application_protocol"] = "thrift"
		}, "agree with protocol"},
		{"no current protocol field", outbound, func(mp map[string]any) {
			delete(mp, "protocol")
		}, "protocol name and codec name are required"},
		{"RDS through a cluster given by address", outbound, func(mp map[string]any) {
			api := mp["rds"].(map[string]any)["config_source"].(map[string]any)["api_config_source"].(map[string]any)
			api["grpc_services"] = []any{map[string]any{"google_grpc": map[string]any{"target_uri": "meltemi:18010", "stat_prefix": "x"}}}
		}, "must name an Envoy cluster"},
		{"router not last", outbound, func(mp map[string]any) {
			fs := mp["meta_protocol_filters"].([]any)
			mp["meta_protocol_filters"] = append(fs[len(fs)-1:], fs[:len(fs)-1]...)
		}, "must end with the router"},
		{"a field of no message", outbound, func(mp map[string]any) {
			mp["max_connections"] = int64(10)
		}, `unknown field "max_connections"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ef := tc.ef.DeepCopy()
			patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
			p := patches[0].(map[string]any)
			mp, ok, err := unstructured.NestedMap(p, "patch", "value", "typed_config", "value")
			if !ok || err != nil {
				t.Fatalf("no MetaProtocol config in %s: %v", ef.GetName(), err)
			}
			tc.breakIt(mp)
			if err := unstructured.SetNestedMap(p, mp, "patch", "value", "typed_config", "value"); err != nil {
				t.Fatal(err)
			}
			patches[0] = p
			if err := unstructured.SetNestedSlice(ef.Object, patches, "spec", "configPatches"); err != nil {
				t.Fatal(err)
			}
			err = traffictest.CheckEnvoyFilter(ef)
			if err == nil {
				t.Fatalf("broken config accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestCheckOnGoldenFiles holds the committed golden EnvoyFilters to the check too, so a golden
// file edited by hand cannot carry a config the proxy would not take.
func TestCheckOnGoldenFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*/envoyfilters.golden.yaml")
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := ParseObjects(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, ef := range objs {
			n++
			if err := traffictest.CheckEnvoyFilter(ef); err != nil {
				t.Errorf("%s: %s: %v", f, ef.GetName(), err)
			}
		}
	}
	if n == 0 {
		t.Fatal("no golden EnvoyFilters")
	}
}

// TestCheckRejectsBrokenRedis breaks the Redis proxy and its cluster the ways Envoy refuses.
func TestCheckRejectsBrokenRedis(t *testing.T) {
	in, opts, _ := loadCase(t, filepath.Join("testdata", "redis-kafka-zookeeper"))
	var outbound *unstructured.Unstructured
	for _, ef := range Translate(in, opts).EnvoyFilters {
		if ef.GetName() == "meltemi-redis-cluster.redis.svc.cluster.local-6379-outbound" {
			outbound = ef
		}
	}
	if outbound == nil {
		t.Fatal("no outbound Redis EnvoyFilter")
	}
	if err := traffictest.CheckEnvoyFilter(outbound); err != nil {
		t.Fatalf("unbroken: %v", err)
	}
	// Patches: 0 the redis_proxy, 1 the cluster REMOVE, 2 the cluster ADD.
	for _, tc := range []struct {
		name    string
		patch   int
		breakIt func(p map[string]any)
		want    string
	}{
		{"repeated prefix", 0, func(p map[string]any) {
			pr := p["patch"].(map[string]any)["value"].(map[string]any)["typed_config"].(map[string]any)["prefix_routes"].(map[string]any)
			routes := pr["routes"].([]any)
			pr["routes"] = append(routes, map[string]any{"prefix": "CLUSTER", "cluster": "outbound|6379||x"})
		}, `prefix "CLUSTER" appears twice`},
		{"no route at all", 0, func(p map[string]any) {
			delete(p["patch"].(map[string]any)["value"].(map[string]any)["typed_config"].(map[string]any), "prefix_routes")
		}, "every command would fail"},
		{"no operation timeout", 0, func(p map[string]any) {
			delete(p["patch"].(map[string]any)["value"].(map[string]any)["typed_config"].(map[string]any)["settings"].(map[string]any), "op_timeout")
		}, "OpTimeout"},
		{"unknown field", 0, func(p map[string]any) {
			p["patch"].(map[string]any)["value"].(map[string]any)["typed_config"].(map[string]any)["catch_all"] = "x"
		}, `unknown field "catch_all"`},
		{"cluster REMOVE without a name", 1, func(p map[string]any) {
			delete(p["match"].(map[string]any), "cluster")
		}, "removes every cluster"},
		{"Redis cluster balanced by Envoy", 2, func(p map[string]any) {
			p["patch"].(map[string]any)["value"].(map[string]any)["lb_policy"] = "ROUND_ROBIN"
		}, "CLUSTER_PROVIDED"},
		{"Redis cluster without discovery endpoints", 2, func(p map[string]any) {
			delete(p["patch"].(map[string]any)["value"].(map[string]any), "load_assignment")
		}, "discovery endpoints"},
		{"unknown cluster field", 2, func(p map[string]any) {
			p["patch"].(map[string]any)["value"].(map[string]any)["redis_mode"] = "CLUSTER"
		}, `unknown field "redis_mode"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ef := outbound.DeepCopy()
			patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
			tc.breakIt(patches[tc.patch].(map[string]any))
			if err := unstructured.SetNestedSlice(ef.Object, patches, "spec", "configPatches"); err != nil {
				t.Fatal(err)
			}
			err := traffictest.CheckEnvoyFilter(ef)
			if err == nil {
				t.Fatal("broken config accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}
