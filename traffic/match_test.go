package traffic

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
)

func TestEvaluateTranslatedRoutes(t *testing.T) {
	in, opts, _ := loadCase(t, "testdata/dubbo-routes")
	out := Translate(in, opts)
	rc := out.Routes["org.apache.dubbo.samples.demoservice_20880"]
	if rc == nil {
		t.Fatal("no route configuration")
	}
	const (
		v1 = "outbound|20880|v1|org.apache.dubbo.samples.demoservice"
		v2 = "outbound|20880|v2|org.apache.dubbo.samples.demoservice"
	)
	for _, tc := range []struct {
		name     string
		attrs    map[string]string
		route    string
		clusters []WeightedCluster
		mirrors  []WeightedCluster
	}{
		{"exact interface and method", map[string]string{"interface": "org.apache.dubbo.samples.DemoService", "method": "sayHello"},
			"say-hello-v1", []WeightedCluster{{v1, 100}}, nil},
		{"method must match too", map[string]string{"interface": "org.apache.dubbo.samples.DemoService", "method": "sayBye"},
			"route-2", []WeightedCluster{{v2, 100}}, nil},
		{"prefix, regex and presence", map[string]string{"method": "getUser", "user": "alice", "x-canary": ""},
			"canary", []WeightedCluster{{v1, 20}, {v2, 80}}, []WeightedCluster{{v2, 12.5}}},
		{"regex matches the whole value", map[string]string{"method": "getUser", "user": "alice2", "x-canary": "1"},
			"route-2", []WeightedCluster{{v2, 100}}, nil},
		{"missing attribute", map[string]string{"method": "getUser", "user": "bob"},
			"route-2", []WeightedCluster{{v2, 100}}, nil},
		{"no attributes", nil, "route-2", []WeightedCluster{{v2, 100}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Evaluate(rc, tc.attrs)
			if err != nil {
				t.Fatal(err)
			}
			if d.Route.GetName() != tc.route {
				t.Errorf("route %q, want %q", d.Route.GetName(), tc.route)
			}
			if diff := cmp.Diff(tc.clusters, d.Clusters); diff != "" {
				t.Errorf("clusters (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.mirrors, d.Mirrors); diff != "" {
				t.Errorf("mirrors (-want +got):\n%s", diff)
			}
		})
	}

	// Without a MetaRouter, only the default route is left.
	in.MetaRouters = nil
	d, err := Evaluate(Translate(in, opts).Routes["org.apache.dubbo.samples.demoservice_20880"], map[string]string{"method": "sayHello"})
	if err != nil || d.Route.GetName() != defaultRouteName || d.Clusters[0].Name != "outbound|20880||org.apache.dubbo.samples.demoservice" {
		t.Errorf("without a MetaRouter: %+v, %v; want the default route", d, err)
	}
}

func TestHeadersMatch(t *testing.T) {
	str := func(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
	}
	exact := func(v string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
	}
	regex := func(v string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}}
	}
	attrs := map[string]string{"method": "SayHello", "empty": ""}
	for _, tc := range []struct {
		name    string
		hm      *routev3.HeaderMatcher
		want    bool
		wantErr bool
	}{
		{"exact", str("method", exact("SayHello")), true, false},
		{"exact is case sensitive", str("method", exact("sayhello")), false, false},
		{"ignore case", str("method", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "sayhello"}, IgnoreCase: true}), true, false},
		{"suffix", str("method", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "Hello"}}), true, false},
		{"contains", str("method", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "yHe"}}), true, false},
		{"regex anchored", str("method", regex("Say")), false, false},
		{"regex whole", str("method", regex("Say.*")), true, false},
		{"bad regex", str("method", regex("(")), false, true},
		{"missing attribute", str("other", exact("")), false, false},
		{"missing treated as empty", &routev3.HeaderMatcher{Name: "other", TreatMissingHeaderAsEmpty: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("")}}, true, false},
		{"present", &routev3.HeaderMatcher{Name: "empty", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, true, false},
		{"absent", &routev3.HeaderMatcher{Name: "other", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, true, false},
		{"inverted", &routev3.HeaderMatcher{Name: "method", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("SayHello")}}, false, false},
		{"inverted missing", &routev3.HeaderMatcher{Name: "other", InvertMatch: true,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("x")}}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := HeadersMatch([]*routev3.HeaderMatcher{tc.hm}, attrs)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("HeadersMatch = %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
