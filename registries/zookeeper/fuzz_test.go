package zookeeper

import (
	"testing"
	"unicode/utf8"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// The seed corpora live in testdata/fuzz/<FuzzName>; the f.Add seeds below cover the shapes
// the table tests use.

func FuzzParseInstanceJSON(f *testing.F) {
	for _, s := range []string{
		dubbo3Instance,
		instanceJSON("10.0.0.1", 20880, map[string]string{"dubbo.metadata.revision": "r1"}),
		instanceJSON("2001:db8::7", nil, map[string]string{"dubbo.endpoints": `[{"port":"50051","protocol":"TRI"}]`}),
		`{"address":"10.0.0.1","port":1,"payload":{"metadata":{"dubbo.metadata.revision":7}}}`,
		`[1,2]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ai, err := ParseInstanceJSON(data)
		if err != nil {
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error is not valid UTF-8: %q", err.Error())
			}
			return
		}
		if len(ai.Endpoints) == 0 {
			t.Fatal("parsed instance has no endpoints")
		}
		insts := appInstances("app", ai)
		for _, in := range insts {
			if !utf8.ValidString(in.Protocol) {
				t.Fatalf("protocol %q", in.Protocol)
			}
			for k, v := range in.Labels {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					t.Fatalf("label %q=%q", k, v)
				}
			}
		}
		valid, rej, ok := catalog.Validate(catalog.Service{Key: "k", Host: "h", Instances: insts})
		if !ok || len(rej) > 0 || len(valid.Instances) != len(insts) {
			t.Fatalf("instances %+v do not validate: %v", insts, rej)
		}
	})
}

func FuzzParseMetadataJSON(f *testing.F) {
	for _, s := range []string{
		dubbo3Metadata,
		`{"services":{"k":{"name":"I","protocol":"TRI","port":"50051"}}}`,
		`{"services":{"k":{"name":"","protocol":"dubbo"}}}`,
		`{"services":null}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		services, err := ParseMetadataJSON(data)
		if err != nil {
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error is not valid UTF-8: %q", err.Error())
			}
			return
		}
		for i, s := range services {
			if s.Interface == "" || !utf8.ValidString(s.Interface) || !catalog.IsProtocol(s.Protocol) {
				t.Fatalf("service %+v accepted", s)
			}
			if i > 0 && services[i-1].Interface > s.Interface {
				t.Fatalf("services not sorted by interface: %+v", services)
			}
		}
	})
}
