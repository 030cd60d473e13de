package zookeeper

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// dubbo3Instance is application instance data as Dubbo 3.2 writes it through Curator.
const dubbo3Instance = `{"name":"demo-provider","id":"192.168.1.10:20880","address":"192.168.1.10","port":20880,"sslPort":null,` +
	`"payload":{"@class":"org.apache.dubbo.registry.zookeeper.ZookeeperInstance","id":null,"name":"demo-provider",` +
	`"metadata":{"anyhost":"true","application":"demo-provider","dubbo.endpoints":"[{\"port\":20880,\"protocol\":\"dubbo\"},{\"port\":50051,\"protocol\":\"tri\"}]",` +
	`"dubbo.metadata-service.url-params":"{\"prefer.serialization\":\"fastjson2,hessian2\",\"version\":\"1.0.0\",\"dubbo\":\"2.0.2\",\"release\":\"3.2.0\",\"side\":\"provider\",\"port\":\"20880\",\"protocol\":\"dubbo\"}",` +
	`"dubbo.metadata.revision":"a1b2c3d4e5f6","dubbo.metadata.storage-type":"local","timestamp":"1700000000000"}},` +
	`"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}`

func instanceJSON(address string, port any, metadata map[string]string) string {
	meta := "{"
	for i, k := range slices.Sorted(maps.Keys(metadata)) {
		if i > 0 {
			meta += ","
		}
		meta += fmt.Sprintf("%q:%q", k, metadata[k])
	}
	meta += "}"
	p := "null"
	if port != nil {
		p = fmt.Sprint(port)
	}
	return fmt.Sprintf(`{"name":"app","id":"%s:%v","address":%q,"port":%s,"payload":{"@class":"org.apache.dubbo.registry.zookeeper.ZookeeperInstance","metadata":%s}}`,
		address, port, address, p, meta)
}

func TestParseInstanceJSON(t *testing.T) {
	tests := []struct {
		name     string
		data     string
		wantAddr string
		wantRev  string
		wantEPs  []Endpoint
		wantErr  string
	}{
		{
			name: "dubbo 3 instance with two protocols", data: dubbo3Instance,
			wantAddr: "192.168.1.10", wantRev: "a1b2c3d4e5f6",
			wantEPs: []Endpoint{{"dubbo", 20880}, {"tri", 50051}},
		},
		{
			name: "no endpoints metadata: instance port, dubbo", data: instanceJSON("10.0.0.1", 20880, map[string]string{"dubbo.metadata.revision": "r1"}),
			wantAddr: "10.0.0.1", wantRev: "r1", wantEPs: []Endpoint{{"dubbo", 20880}},
		},
		{
			name: "endpoints without instance port", data: instanceJSON("10.0.0.1", nil, map[string]string{"dubbo.endpoints": `[{"port":"50051","protocol":"TRI"}]`}),
			wantAddr: "10.0.0.1", wantEPs: []Endpoint{{"tri", 50051}},
		},
		{
			name: "duplicate endpoints collapse, missing protocol is dubbo", data: instanceJSON("10.0.0.1", 1, map[string]string{"dubbo.endpoints": `[{"port":20880},{"port":20880,"protocol":"dubbo"}]`}),
			wantAddr: "10.0.0.1", wantEPs: []Endpoint{{"dubbo", 20880}},
		},
		{
			name: "IPv6 address", data: instanceJSON("2001:db8::7", 20880, nil),
			wantAddr: "2001:db8::7", wantEPs: []Endpoint{{"dubbo", 20880}},
		},
		{
			name: "no payload", data: `{"name":"app","id":"10.0.0.1:20880","address":"10.0.0.1","port":20880}`,
			wantAddr: "10.0.0.1", wantEPs: []Endpoint{{"dubbo", 20880}},
		},
		{
			name: "non-string metadata values are ignored", data: `{"address":"10.0.0.1","port":1,"payload":{"metadata":{"dubbo.metadata.revision":7,"x":{"y":1}}}}`,
			wantAddr: "10.0.0.1", wantEPs: []Endpoint{{"dubbo", 1}},
		},
		{name: "empty", data: "", wantErr: "no data"},
		{name: "not JSON", data: "192.168.1.10:20880", wantErr: "not instance JSON"},
		{name: "JSON array", data: "[1,2]", wantErr: "not instance JSON"},
		{name: "truncated", data: dubbo3Instance[:100], wantErr: "not instance JSON"},
		{name: "address missing", data: `{"port":20880}`, wantErr: "no address"},
		{name: "address not a string", data: `{"address":17,"port":20880}`, wantErr: "address is not a string"},
		{name: "host name", data: instanceJSON("provider.local", 20880, nil), wantErr: "not an IP address"},
		{name: "unspecified address", data: instanceJSON("0.0.0.0", 20880, nil), wantErr: "cannot be an endpoint"},
		{name: "zone", data: instanceJSON("fe80::1%eth0", 20880, nil), wantErr: "zone"},
		{name: "bad port", data: instanceJSON("10.0.0.1", 70000, nil), wantErr: "port"},
		{name: "fractional port", data: instanceJSON("10.0.0.1", 1.5, nil), wantErr: "port"},
		{name: "no port, no endpoints", data: instanceJSON("10.0.0.1", nil, nil), wantErr: "neither a port"},
		{name: "endpoints not JSON", data: instanceJSON("10.0.0.1", 1, map[string]string{"dubbo.endpoints": "dubbo:20880"}), wantErr: "dubbo.endpoints"},
		{name: "endpoint port zero", data: instanceJSON("10.0.0.1", 1, map[string]string{"dubbo.endpoints": `[{"port":0,"protocol":"dubbo"}]`}), wantErr: "port"},
		{name: "endpoint protocol invalid", data: instanceJSON("10.0.0.1", 1, map[string]string{"dubbo.endpoints": `[{"port":1,"protocol":"du bbo"}]`}), wantErr: "protocol"},
		{name: "huge", data: `{"address":"10.0.0.1","port":1,"x":"` + strings.Repeat("a", dubbo.MaxItemBytes) + `"}`, wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInstanceJSON([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if !utf8.ValidString(err.Error()) {
					t.Fatalf("error is not valid UTF-8: %q", err.Error())
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got.Address != tt.wantAddr || got.Revision != tt.wantRev || !slices.Equal(got.Endpoints, tt.wantEPs) {
				t.Fatalf("got address %q revision %q endpoints %v; want %q %q %v", got.Address, got.Revision, got.Endpoints, tt.wantAddr, tt.wantRev, tt.wantEPs)
			}
			mustValidate(t, appInstances("app", got)...)
		})
	}
}

func TestAppInstancesLabels(t *testing.T) {
	ai, err := ParseInstanceJSON([]byte(dubbo3Instance))
	if err != nil {
		t.Fatal(err)
	}
	insts := appInstances("demo-provider", ai)
	if len(insts) != 2 {
		t.Fatalf("got %d instances, want 2", len(insts))
	}
	want := map[string]string{"application": "demo-provider", "revision": "a1b2c3d4e5f6"}
	for _, in := range insts {
		if !maps.Equal(in.Labels, want) {
			t.Fatalf("labels = %v, want %v", in.Labels, want)
		}
	}
	if insts[0].Protocol != "dubbo" || insts[0].Port != 20880 || insts[1].Protocol != "tri" || insts[1].Port != 50051 {
		t.Fatalf("endpoints = %+v", insts)
	}
	// A revision that cannot be a label value is left out, not the endpoint.
	ai.Revision = strings.Repeat("r", 80)
	if got := appInstances("demo-provider", ai)[0].Labels; got["revision"] != "" {
		t.Fatalf("over-long revision kept: %v", got)
	}
}

// mustValidate fails unless the instance passes the host's validation unchanged.
func mustValidate(t testing.TB, insts ...catalog.Instance) {
	t.Helper()
	svc := catalog.Service{Key: "k", Host: "h.example", Instances: insts}
	valid, rej, ok := catalog.Validate(svc)
	if !ok || len(rej) > 0 {
		t.Fatalf("catalog.Validate rejected %+v: %v", insts, rej)
	}
	for i := range valid.Instances {
		found := false
		for _, in := range insts {
			found = found || in.Equal(valid.Instances[i])
		}
		if !found {
			t.Fatalf("validation changed instance %+v", valid.Instances[i])
		}
	}
}
