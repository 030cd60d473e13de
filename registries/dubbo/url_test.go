package dubbo

import (
	"maps"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/meltemi-mesh/meltemi/registries/dubbo/dubbotest"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// sampleURL is a provider URL exactly as Dubbo 3.2 registers it (before encoding).
const sampleURL = "dubbo://192.168.1.10:20880/org.apache.dubbo.demo.DemoService?anyhost=true&application=demo-provider&deprecated=false&dubbo=2.0.2&dynamic=true&generic=false&interface=org.apache.dubbo.demo.DemoService&methods=sayHello,sayHelloAsync&pid=12345&release=3.2.0&side=provider&timestamp=1700000000000&version=1.0.0&group=g1"

// sampleEncoded is sampleURL as the node name Dubbo writes.
const sampleEncoded = "dubbo%3A%2F%2F192.168.1.10%3A20880%2Forg.apache.dubbo.demo.DemoService%3Fanyhost%3Dtrue%26application%3Ddemo-provider%26deprecated%3Dfalse%26dubbo%3D2.0.2%26dynamic%3Dtrue%26generic%3Dfalse%26interface%3Dorg.apache.dubbo.demo.DemoService%26methods%3DsayHello%2CsayHelloAsync%26pid%3D12345%26release%3D3.2.0%26side%3Dprovider%26timestamp%3D1700000000000%26version%3D1.0.0%26group%3Dg1"

func TestEncodeURLMatchesDubbo(t *testing.T) {
	if got := dubbotest.EncodeURL(sampleURL); got != sampleEncoded {
		t.Fatalf("dubbotest.EncodeURL(sample) =\n%s\nwant\n%s", got, sampleEncoded)
	}
}

func TestParseProviderURL(t *testing.T) {
	tests := []struct {
		name    string
		encoded string // when empty, dubbotest.EncodeURL(raw)
		raw     string
		want    ProviderURL
		wantErr string
	}{
		{
			name: "dubbo 3 sample", encoded: sampleEncoded,
			want: ProviderURL{Protocol: "dubbo", Address: "192.168.1.10", Port: 20880, Interface: "org.apache.dubbo.demo.DemoService"},
		},
		{
			name: "triple", raw: "tri://10.0.0.7:50051/com.example.Greeter?interface=com.example.Greeter&application=greeter",
			want: ProviderURL{Protocol: "tri", Address: "10.0.0.7", Port: 50051, Interface: "com.example.Greeter"},
		},
		{
			name: "IPv6 in brackets", raw: "dubbo://[2001:db8::1]:20880/com.example.Svc?interface=com.example.Svc",
			want: ProviderURL{Protocol: "dubbo", Address: "2001:db8::1", Port: 20880, Interface: "com.example.Svc"},
		},
		{
			name: "IPv4-mapped IPv6 is unmapped", raw: "dubbo://[::ffff:10.1.2.3]:20880/com.example.Svc",
			want: ProviderURL{Protocol: "dubbo", Address: "10.1.2.3", Port: 20880, Interface: "com.example.Svc"},
		},
		{
			name: "scheme is lower-cased", raw: "DUBBO://10.0.0.1:1/a.B",
			want: ProviderURL{Protocol: "dubbo", Address: "10.0.0.1", Port: 1, Interface: "a.B"},
		},
		{
			name: "interface from path when parameter missing", raw: "dubbo://10.0.0.1:20880/com.example.Svc?version=1",
			want: ProviderURL{Protocol: "dubbo", Address: "10.0.0.1", Port: 20880, Interface: "com.example.Svc"},
		},
		{
			name: "interface parameter wins over a REST context path", raw: "rest://10.0.0.1:8080/ctx/com.example.Svc?interface=com.example.Svc",
			want: ProviderURL{Protocol: "rest", Address: "10.0.0.1", Port: 8080, Interface: "com.example.Svc"},
		},
		{
			name: "user info is ignored", raw: "dubbo://admin:secret@10.0.0.1:20880/com.example.Svc",
			want: ProviderURL{Protocol: "dubbo", Address: "10.0.0.1", Port: 20880, Interface: "com.example.Svc"},
		},
		{
			name: "inner class name", raw: "dubbo://10.0.0.1:20880/com.example.Outer$Inner",
			want: ProviderURL{Protocol: "dubbo", Address: "10.0.0.1", Port: 20880, Interface: "com.example.Outer$Inner"},
		},
		{name: "not encoded", encoded: "dubbo%3A%2F%2F10.0.0.1%3A20880%2Fa%ZZ", wantErr: "not URL-encoded"},
		{name: "not a URL", raw: "hello world", wantErr: "not a URL"},
		{name: "empty", encoded: "", wantErr: "not a URL"},
		{name: "bad scheme", raw: "dub bo://10.0.0.1:20880/a.B", wantErr: "protocol"},
		{name: "empty scheme", raw: "://10.0.0.1:20880/a.B", wantErr: "protocol"},
		{name: "no host", raw: "dubbo:///a.B", wantErr: "no host"},
		{name: "no port", raw: "dubbo://10.0.0.1/a.B", wantErr: "missing port"},
		{name: "port zero", raw: "dubbo://10.0.0.1:0/a.B", wantErr: "port"},
		{name: "port too large", raw: "dubbo://10.0.0.1:70000/a.B", wantErr: "port"},
		{name: "port not a number", raw: "dubbo://10.0.0.1:http/a.B", wantErr: "port"},
		{name: "negative port", raw: "dubbo://10.0.0.1:-1/a.B", wantErr: "port"},
		{name: "host name", raw: "dubbo://provider.example.com:20880/a.B", wantErr: "not an IP address"},
		{name: "bad IPv4", raw: "dubbo://192.168.1.300:20880/a.B", wantErr: "not an IP address"},
		{name: "IPv6 without brackets", raw: "dubbo://2001:db8::1:20880/a.B", wantErr: "too many colons"},
		{name: "IPv6 zone", raw: "dubbo://[fe80::1%eth0]:20880/a.B", wantErr: "zone"},
		{name: "unspecified", raw: "dubbo://0.0.0.0:20880/a.B", wantErr: "unspecified"},
		{name: "multicast", raw: "dubbo://224.0.0.1:20880/a.B", wantErr: "multicast"},
		{name: "missing interface", raw: "dubbo://10.0.0.1:20880?version=1", wantErr: "no interface"},
		{name: "missing interface, empty path", raw: "dubbo://10.0.0.1:20880/?version=1", wantErr: "no interface"},
		{name: "invalid UTF-8", encoded: "dubbo%3A%2F%2F10.0.0.1%3A1%2Fa%FF", wantErr: "UTF-8"},
		{name: "huge", encoded: "dubbo%3A%2F%2F10.0.0.1%3A1%2Fa.B%3Fx%3D" + strings.Repeat("y", MaxItemBytes), wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := tt.encoded
			if enc == "" && tt.raw != "" {
				enc = dubbotest.EncodeURL(tt.raw)
			}
			got, err := ParseProviderURL(enc)
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
			got.Params = nil
			if got.Protocol != tt.want.Protocol || got.Address != tt.want.Address || got.Port != tt.want.Port || got.Interface != tt.want.Interface {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseProviderURLParams(t *testing.T) {
	u, err := ParseProviderURL(dubbotest.EncodeURL("dubbo://10.0.0.1:20880/a.B?k=1&k=2&flag&e=&sp=a b&eq=x=y&&=v"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"k": "2", "flag": "", "e": "", "sp": "a b", "eq": "x=y"}
	if !maps.Equal(u.Params, want) {
		t.Fatalf("params = %v, want %v", u.Params, want)
	}
	// A '+' that Java wrote for a space decodes to a space.
	u, err = ParseProviderURL("dubbo%3A%2F%2F10.0.0.1%3A1%2Fa.B%3Fowner%3Dteam+a")
	if err != nil || u.Params["owner"] != "team a" {
		t.Fatalf("params = %v, %v; want owner=team a", u.Params, err)
	}
}

func TestProviderInstance(t *testing.T) {
	tests := []struct {
		name       string
		raw        string
		wantSkip   string
		wantLabels map[string]string
		wantWeight uint32
	}{
		{
			name:       "dubbo 3 sample keeps version, group, application only",
			raw:        sampleURL,
			wantLabels: map[string]string{"application": "demo-provider", "version": "1.0.0", "group": "g1"},
		},
		{
			name: "stable parameters kept, volatile and invalid ones dropped",
			raw: "dubbo://10.0.0.1:20880/a.B?application=app&version=&group=&serialization=hessian2&timeout=3000" +
				"&prefer.serialization=fastjson2,hessian2&token=3f2a9c&weight=50&revision=abc&release=3.2.0&owner=" + strings.Repeat("x", 64) +
				"&bind.ip=10.0.0.1&bind.port=20880&methods=a,b&timestamp=1&pid=2&anyhost=true&dynamic=true&generic=false&deprecated=false&dubbo=2.0.2&side=provider" +
				"&bad key=v&loadbalance=roundrobin",
			wantLabels: map[string]string{"application": "app", "serialization": "hessian2", "timeout": "3000", "loadbalance": "roundrobin"},
			wantWeight: 50,
		},
		{name: "bad weight ignored", raw: "dubbo://10.0.0.1:20880/a.B?weight=heavy", wantLabels: nil},
		{name: "consumer", raw: "consumer://10.0.0.1/a.B?side=consumer", wantSkip: "consumer"},
		{name: "consumer without a port", raw: "dubbo://10.0.0.1/a.B?side=consumer&category=consumers", wantSkip: "consumer"},
		{name: "configurator without an address", raw: "override://0.0.0.0/a.B?category=configurators", wantSkip: "category"},
		{name: "consumer side", raw: "dubbo://10.0.0.1:20880/a.B?side=consumer", wantSkip: "consumer"},
		{name: "configurator category", raw: "override://10.0.0.1:20880/a.B?category=configurators", wantSkip: "category"},
		{name: "empty protocol", raw: "empty://10.0.0.1:20880/a.B?category=providers", wantSkip: "empty"},
		{name: "providers category kept", raw: "dubbo://10.0.0.1:20880/a.B?category=providers&version=2", wantLabels: map[string]string{"version": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseDecodedURL(tt.raw)
			if err != nil {
				t.Fatal(err) // skipped URLs are not rejected either
			}
			inst, skip := ProviderInstance(u)
			if tt.wantSkip != "" {
				if !strings.Contains(skip, tt.wantSkip) {
					t.Fatalf("skip = %q, want %q", skip, tt.wantSkip)
				}
				return
			}
			if skip != "" {
				t.Fatalf("skipped: %s", skip)
			}
			if !maps.Equal(inst.Labels, tt.wantLabels) {
				t.Fatalf("labels = %v, want %v", inst.Labels, tt.wantLabels)
			}
			if inst.Weight != tt.wantWeight {
				t.Fatalf("weight = %d, want %d", inst.Weight, tt.wantWeight)
			}
			mustValidate(t, inst)
		})
	}
}

// TestProviderLabelsStable checks that equal registry content yields equal labels whatever the
// parameter order and volatile values.
func TestProviderLabelsStable(t *testing.T) {
	a, _ := ParseDecodedURL("dubbo://10.0.0.1:20880/a.B?version=1&group=g&timestamp=1&pid=10&application=x")
	b, _ := ParseDecodedURL("dubbo://10.0.0.1:20880/a.B?pid=99&application=x&timestamp=2&group=g&version=1")
	ia, _ := ProviderInstance(a)
	ib, _ := ProviderInstance(b)
	if !ia.Equal(ib) {
		t.Fatalf("instances differ: %+v vs %+v", ia, ib)
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
