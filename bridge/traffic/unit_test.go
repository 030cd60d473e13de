package traffic

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParsePortName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kind    portKind
		app     string
		wantErr bool
	}{
		{"tcp-metaprotocol-dubbo-20880", portMetaProtocol, "dubbo", false},
		{"tcp-metaprotocol-thrift-hello-server", portMetaProtocol, "thrift", false},
		{"tcp-metaprotocol-trpc", portMetaProtocol, "trpc", false},
		{"TCP-MetaProtocol-Dubbo-1", portMetaProtocol, "dubbo", false},
		{"tcp-metaprotocol", portOther, "", true},
		{"tcp-metaprotocol-", portOther, "", true},
		{"tcp-metaprotocol--x", portOther, "", true},
		{"tcp-metaprotocolx-dubbo", portOther, "", false},
		{"tcp-dubbo", portDubbo, "dubbo", false},
		{"tcp-dubbo-20880", portDubbo, "dubbo", false},
		{"tcp-dubbox", portOther, "", false},
		{"tcp-thrift-9090", portThrift, "thrift", false},
		{"grpc-tri-50051", portOther, "", false},
		{"", portOther, "", false},
		{"-", portOther, "", false},
	} {
		kind, app, err := parsePortName(tc.name)
		if kind != tc.kind || app != tc.app || (err != nil) != tc.wantErr {
			t.Errorf("parsePortName(%q) = %v, %q, %v; want %v, %q, error %v", tc.name, kind, app, err, tc.kind, tc.app, tc.wantErr)
		}
	}
}

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

func TestSelectorsAndOptions(t *testing.T) {
	sel, err := ParseSelector(" a=b, c=d ")
	if err != nil || !cmp.Equal(sel, map[string]string{"a": "b", "c": "d"}) || FormatSelector(sel) != "a=b,c=d" {
		t.Errorf("ParseSelector: %v, %v", sel, err)
	}
	if sel, err := ParseSelector(""); err != nil || sel == nil || len(sel) != 0 {
		t.Errorf("empty selector: %v, %v", sel, err)
	}
	for _, bad := range []string{"a", "=b", "a=b,,"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("ParseSelector(%q): no error", bad)
		}
	}
	if err := (Options{}).Validate(); err != nil {
		t.Errorf("default options: %v", err)
	}
	if err := (Options{ProxySelector: map[string]string{}}).Validate(); err == nil {
		t.Error("an empty selector in the root namespace must be refused")
	}
	if err := (Options{ProxySelector: map[string]string{}, Namespace: "apps"}).Validate(); err != nil {
		t.Errorf("namespace scoping: %v", err)
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
