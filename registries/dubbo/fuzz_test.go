package dubbo

import (
	"net/netip"
	"testing"
	"unicode/utf8"

	"github.com/meltemi-mesh/meltemi/registries/dubbo/dubbotest"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// The seed corpus lives in testdata/fuzz/FuzzParseProviderURL.

func FuzzParseProviderURL(f *testing.F) {
	for _, s := range []string{
		sampleEncoded,
		dubbotest.EncodeURL("tri://[2001:db8::1]:50051/com.example.Greeter?interface=com.example.Greeter&version=1&group=g"),
		dubbotest.EncodeURL("dubbo://10.0.0.1:20880/a.B?side=consumer"),
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
		if !catalog.IsProtocol(u.Protocol) {
			t.Fatalf("protocol %q is not a token", u.Protocol)
		}
		inst, skip := ProviderInstance(u)
		if skip != "" {
			return // not a provider: it needs no address
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
		// What the plugin emits must pass the host's validation untouched.
		valid, rej, ok := catalog.Validate(catalog.Service{Key: "k", Host: "h", Instances: []catalog.Instance{inst}})
		if !ok || len(rej) > 0 || len(valid.Instances) != 1 || !valid.Instances[0].Equal(inst) {
			t.Fatalf("instance %+v does not validate unchanged: %v", inst, rej)
		}
	})
}
