package traffic

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
