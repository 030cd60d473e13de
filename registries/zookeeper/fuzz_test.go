package zookeeper

import (
	"net/netip"
	"testing"
	"unicode/utf8"

	"github.com/meltemi-mesh/meltemi/bridge/model"
)

// The seed corpora live in testdata/fuzz/<FuzzName>; the f.Add seeds below cover the shapes
// the table tests use.

func FuzzParseProviderURL(f *testing.F) {
	for _, s := range []string{
		sampleEncoded,
		javaURLEncode("tri://[2001:db8::1]:50051/com.example.Greeter?interface=com.example.Greeter&version=1&group=g"),
		javaURLEncode("dubbo://10.0.0.1:20880/a.B?side=consumer"),
		"dubbo%3A%2F%2F10.0.0.1%3A20880%2Fa%ZZ",
		"dubbo://10.0.0.1:20880/a.B",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, encoded string) {
		u, err := ParseProviderURL(encoded)
		if err != nil {
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error is not valid UTF-8: %q", err.Error())
			}
			return
		}
		if !isProtocol(u.Protocol) {
			t.Fatalf("protocol %q is not a token", u.Protocol)
		}
		if ip, err := netip.ParseAddr(u.Address); err != nil || ip.String() != u.Address || ip.Zone() != "" {
			t.Fatalf("address %q is not a canonical IP", u.Address)
		}
		if u.Port == 0 || u.Port > 65535 {
			t.Fatalf("port %d", u.Port)
		}
		if u.Interface == "" || !utf8.ValidString(u.Interface) {
			t.Fatalf("interface %q", u.Interface)
		}
		inst, skip := providerInstance(u)
		if skip != "" {
			return
		}
		// What the plugin emits must pass the host's validation untouched.
		valid, rej, ok := model.Validate(model.Service{Key: "k", Host: "h", Instances: []model.Instance{inst}})
		if !ok || len(rej) > 0 || len(valid.Instances) != 1 || !valid.Instances[0].Equal(inst) {
			t.Fatalf("instance %+v does not validate unchanged: %v", inst, rej)
		}
	})
}

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
		valid, rej, ok := model.Validate(model.Service{Key: "k", Host: "h", Instances: insts})
		if !ok || len(rej) > 0 || len(valid.Instances) != len(insts) {
			t.Fatalf("instances %+v do not validate: %v", insts, rej)
		}
	})
}
