package traffic

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestEnvoyFilterName(t *testing.T) {
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60)
	for _, host := range []string{"a.example.com", long, long[:230] + ".e"} {
		name := envoyFilterName(host, 20880, "outbound")
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("envoyFilterName(%q) = %q: %v", host, name, errs)
		}
		if name == envoyFilterName(host+"x", 20880, "outbound") || name == envoyFilterName(host, 20880, "inbound") {
			t.Errorf("envoyFilterName(%q) is not distinct", host)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, ok := range []Options{{}, {ProxySelector: map[string]string{"meltemi.io/metaprotocol": "enabled"}}, {XDSCluster: "xds"}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []Options{
		{XDSCluster: "outbound|18010||meltemi.meltemi-system.svc.cluster.local"},
		{ProxySelector: map[string]string{"a": "b,c"}},
		{ProxySelector: map[string]string{"": "b"}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
}

func TestParseObjectsExpandsLists(t *testing.T) {
	objs, err := ParseObjects([]byte(`
apiVersion: v1
kind: List
items:
- {apiVersion: metaprotocol.aeraki.io/v1alpha1, kind: MetaRouter, metadata: {name: a}}
- {apiVersion: metaprotocol.aeraki.io/v1alpha1, kind: MetaRouter, metadata: {name: b}}
---
---
{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "c"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName())
	}
	if !cmp.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("names %v", names)
	}
	if _, err := ParseObjects([]byte("a: [")); err == nil {
		t.Error("broken YAML: no error")
	}
}

func TestListenerConflicts(t *testing.T) {
	ef := func(name string, owned bool, listeners ...string) *unstructured.Unstructured {
		var patches []any
		for _, l := range listeners {
			patches = append(patches, map[string]any{"match": map[string]any{"listener": map[string]any{"name": l}}})
		}
		u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"configPatches": patches}}}
		u.SetName(name)
		u.SetNamespace("istio-system")
		if owned {
			u.SetLabels(map[string]string{"app.kubernetes.io/managed-by": "meltemi"})
		}
		return u
	}
	ours := []*unstructured.Unstructured{ef("meltemi-a", true, "10.0.0.1_20880"), ef("meltemi-b", true, "10.0.0.2_20880")}
	others := []*unstructured.Unstructured{
		ef("aeraki-a", false, "10.0.0.1_20880", "10.0.0.2_20880"),
		ef("unrelated", false, "10.0.0.9_80"),
		ef("meltemi-a", true, "10.0.0.1_20880"), // ours, read back
	}
	got := ListenerConflicts(ours, others)
	if len(got) != 1 || got[0].Name != "aeraki-a" || !strings.Contains(got[0].Message, "patches listener 10.0.0.1_20880 (and 1 more), which Meltemi's EnvoyFilter istio-system/meltemi-a") {
		t.Errorf("conflicts %v", got)
	}
}
