package traffic

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic/proxies"
)

// benchInput has n services, each with a VIP, a MetaProtocol port, a DestinationRule with two
// subsets and a MetaRouter of three routes (exact match, weighted split with mirror, catch-all).
func benchInput(n int) Input {
	var in Input
	for i := range n {
		host := fmt.Sprintf("svc%04d.bench.example.com", i)
		meta := metav1.ObjectMeta{Name: fmt.Sprintf("svc%04d", i), Namespace: "bench"}
		in.ServiceEntries = append(in.ServiceEntries, &istio.ServiceEntry{ObjectMeta: meta, Spec: istio.ServiceEntrySpec{
			Hosts: []string{host}, Addresses: []string{fmt.Sprintf("240.240.%d.%d", i/250, i%250+1)},
			Ports:    []istio.ServicePort{{Number: 20880, Name: "tcp-metaprotocol-dubbo-20880", Protocol: "TCP"}},
			Location: istio.MeshInternal, Resolution: istio.ResolutionStatic,
		}})
		in.DestinationRules = append(in.DestinationRules, &DestinationRule{ObjectMeta: meta, Spec: DestinationRuleSpec{
			Host: host, Subsets: []Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
		}})
		dest := func(subset string) mpv1.Destination { return mpv1.Destination{Host: host, Subset: subset} }
		in.MetaRouters = append(in.MetaRouters, &mpv1.MetaRouter{ObjectMeta: meta, Spec: mpv1.MetaRouterSpec{
			Hosts: []string{host},
			Routes: []mpv1.MetaRoute{
				{Name: "hello", Match: &mpv1.MetaRouteMatch{Attributes: map[string]mpv1.StringMatch{
					"interface": {Exact: "com.example.Svc"}, "method": {Exact: "sayHello"}}},
					Route: []mpv1.MetaRouteDestination{{Destination: dest("v1")}}},
				{Name: "split", Match: &mpv1.MetaRouteMatch{Attributes: map[string]mpv1.StringMatch{"user": {Regex: "a.*"}}},
					Route:  []mpv1.MetaRouteDestination{{Destination: dest("v1"), Weight: 90}, {Destination: dest("v2"), Weight: 10}},
					Mirror: &mpv1.Destination{Host: host, Subset: "v2"}, MirrorPercentage: &mpv1.Percent{Value: 5}},
				{Name: "rest", Route: []mpv1.MetaRouteDestination{{Destination: dest("v2")}}},
			},
		}})
	}
	return in
}

// BenchmarkTranslate1000MetaRouters measures a full translation of 1,000 MetaRouters (with
// their ServiceEntries and DestinationRules): what every debounced change costs.
func BenchmarkTranslate1000MetaRouters(b *testing.B) {
	in := benchInput(1000)
	var out *Output
	start, cpu := time.Now(), cpuTime()
	for b.Loop() {
		out = Translate(in, Options{Proxy: proxies.DefaultMetaProtocol})
	}
	reportPerTranslation(b, start, cpu)
	if len(out.Routes) != 1000 || len(out.EnvoyFilters) != 1000 || len(out.Problems) != 0 {
		b.Fatalf("%d routes, %d EnvoyFilters, problems %v", len(out.Routes), len(out.EnvoyFilters), out.Problems)
	}
	b.ReportMetric(float64(len(out.Routes)), "routes")
	b.ReportMetric(float64(len(out.EnvoyFilters)), "envoyfilters")
}

// BenchmarkDecodeAndTranslate1000MetaRouters adds what the controller does before translating:
// decoding the cached objects.
func BenchmarkDecodeAndTranslate1000MetaRouters(b *testing.B) {
	in := benchInput(1000)
	var objs []*unstructured.Unstructured
	add := func(gvk schema.GroupVersionKind, obj any) {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			b.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(gvk)
		objs = append(objs, u)
	}
	for i := range in.MetaRouters {
		add(mpv1.MetaRouterKind, in.MetaRouters[i])
		add(istio.ServiceEntryKind, in.ServiceEntries[i])
		add(istio.ServiceEntryKind.GroupVersion().WithKind("DestinationRule"), in.DestinationRules[i])
	}
	var out *Output
	start, cpu := time.Now(), cpuTime()
	for b.Loop() {
		decoded, problems := Decode(objs)
		if len(problems) > 0 {
			b.Fatal(problems)
		}
		out = Translate(decoded, Options{Proxy: proxies.DefaultMetaProtocol})
	}
	reportPerTranslation(b, start, cpu)
	if len(out.Routes) != 1000 {
		b.Fatalf("%d routes", len(out.Routes))
	}
}

// reportPerTranslation reports wall and CPU milliseconds per iteration; the CPU time (of the
// whole process, GC included) does not depend on what else the machine is running.
func reportPerTranslation(b *testing.B, start time.Time, cpu time.Duration) {
	n := float64(b.N)
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/n, "ms/translation")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/n, "cpu-ms/translation")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
