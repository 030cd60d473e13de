package etcd

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

func providerKeyFor(root, iface, rawURL string) string {
	return "/" + root + "/" + iface + "/providers/" + url.QueryEscape(rawURL)
}

func TestParseKey(t *testing.T) {
	const iface = "org.apache.dubbo.samples.GreetingService"
	for _, tc := range []struct {
		name, key string
		relevant  bool
		want      string // instance as address:port/protocol labels weight, or the error
	}{
		{"dubbo provider", providerKeyFor("dubbo", iface, "dubbo://10.1.0.1:20880/"+iface+"?application=greeter&version=1.0.0&group=blue&timestamp=1700000000&pid=42&weight=50&methods=greet"),
			true, "10.1.0.1:20880/dubbo map[application:greeter group:blue version:1.0.0] 50"},
		{"tri provider, IPv6", providerKeyFor("dubbo", iface, "tri://[fd00::1]:50051/"+iface+"?application=greeter&serialization=protobuf"),
			true, "fd00::1:50051/tri map[application:greeter serialization:protobuf] 0"},
		{"label values Kubernetes refuses are dropped", providerKeyFor("dubbo", iface, "dubbo://10.1.0.1:20880/"+iface+"?version=not valid!"),
			true, "10.1.0.1:20880/dubbo map[] 0"},
		{"consumer key", "/dubbo/" + iface + "/consumers/" + url.QueryEscape("consumer://10.0.0.9/"+iface), false, ""},
		{"configurators", "/dubbo/" + iface + "/configurators/x", false, ""},
		{"other root", providerKeyFor("other", iface, "dubbo://10.1.0.1:20880/"+iface), false, ""},
		{"interface node itself", "/dubbo/" + iface, false, ""},
		{"bad port", providerKeyFor("dubbo", iface, "dubbo://10.1.0.1:99999/"+iface), true, "error: port"},
		{"host name instead of an IP", providerKeyFor("dubbo", iface, "dubbo://provider.local:20880/"+iface), true, "error: is not an IP address"},
		{"URL for another interface", providerKeyFor("dubbo", iface, "dubbo://10.1.0.1:20880/com.example.Other"), true, `error: URL is for interface "com.example.Other"`},
		{"not URL-encoded", "/dubbo/" + iface + "/providers/dubbo%ZZ", true, "error: not URL-encoded"},
		{"bad interface segment", "/dubbo/%ZZ/providers/x", true, "error: interface"},
		{"consumer URL among providers", providerKeyFor("dubbo", iface, "dubbo://10.1.0.1:20880/"+iface+"?side=consumer"), true, "error: not a provider"},
		{"empty placeholder", providerKeyFor("dubbo", iface, "empty://10.1.0.1:20880/"+iface), true, "error: not a provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, relevant, err := parseKey("/dubbo/", tc.key)
			if relevant != tc.relevant {
				t.Fatalf("relevant = %v, want %v", relevant, tc.relevant)
			}
			var got string
			switch {
			case err != nil:
				got = "error: " + err.Error()
			case relevant:
				got = fmt.Sprintf("%s:%d/%s %v %d", p.inst.Address, p.inst.Port, p.inst.Protocol, p.inst.Labels, p.inst.Weight)
				if p.iface != iface {
					t.Errorf("interface %q", p.iface)
				}
			}
			if got == "" && tc.want != "" || !strings.Contains(got, strings.TrimPrefix(tc.want, "error: ")) || strings.HasPrefix(tc.want, "error") != strings.HasPrefix(got, "error") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSharedDubboRules: a provider gets the instance the ZooKeeper and Nacos plugins give it.
func TestSharedDubboRules(t *testing.T) {
	const iface = "org.apache.dubbo.samples.GreetingService"
	for _, raw := range []string{
		"dubbo://10.1.0.1:20880/" + iface + "?application=greeter&version=1.0.0&group=blue&timestamp=1700000000&pid=42&weight=50&methods=greet",
		"tri://10.1.0.2:50051/" + iface + "?application=greeter&serialization=protobuf&release=3.2.0&side=provider&token=s3cret&loadbalance=roundrobin",
		"rest://10.1.0.3:8080/ctx/" + iface + "?interface=" + iface + "&dubbo=2.0.2&anyhost=true&cluster=failover",
	} {
		p, _, err := parseKey("/dubbo/", providerKeyFor("dubbo", iface, raw))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		u, err := dubbo.ParseDecodedURL(raw)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := dubbo.ProviderInstance(u)
		if !reflect.DeepEqual(p.inst, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", raw, p.inst, want)
		}
	}
}

func TestServiceHost(t *testing.T) {
	inst := func(version string) catalog.Instance {
		return catalog.Instance{Address: "10.0.0.1", Port: 20880, Protocol: "dubbo", Labels: map[string]string{"version": version}}
	}
	for _, tc := range []struct {
		template, iface string
		insts           []catalog.Instance
		want            string // or the rejection
	}{
		{"", "org.apache.dubbo.samples.GreetingService", []catalog.Instance{inst("1")}, "org.apache.dubbo.samples.greetingservice"},
		{"", "com.example.Outer$Inner", []catalog.Instance{inst("1")}, "com.example.outer-inner"},
		{"", "_private.Svc_", []catalog.Instance{inst("1")}, "private.svc"},
		{"{{.Interface}}.dubbo", "a.B", []catalog.Instance{inst("1")}, "a.b.dubbo"},
		{"{{.Interface}}{{with .Version}}.v{{.}}{{end}}", "a.B", []catalog.Instance{inst("2"), inst("2")}, "a.b.v2"},
		{"{{.Interface}}{{with .Version}}.v{{.}}{{end}}", "a.B", []catalog.Instance{inst("1"), inst("2")}, "a.b"},
		{"", "a..b", []catalog.Instance{inst("1")}, "reject: empty DNS label"},
		{"", strings.Repeat("x", 70), []catalog.Instance{inst("1")}, "reject: longer than 63"},
	} {
		opts := map[string]string{}
		if tc.template != "" {
			opts["hostTemplate"] = tc.template
		}
		p := New().(*Plugin)
		if err := p.Configure(context.Background(), sdk.Config{Address: "a:1", Options: opts}); err != nil {
			t.Fatal(err)
		}
		rec := sdktest.NewRecorder(false)
		w := &watcher{cfg: p.cfg, e: rec, providers: map[string]map[string]catalog.Instance{tc.iface: {}}}
		for i, in := range tc.insts {
			w.providers[tc.iface][fmt.Sprint(i)] = in
		}
		got := ""
		if svc, ok := w.service(tc.iface); ok {
			got = svc.Host
		} else if evs := rec.Events(0); len(evs) == 1 && evs[0].Kind == sdktest.Reject && evs[0].Key == "dubbo:"+tc.iface {
			got = "reject: " + evs[0].Message
		}
		if tc.want != got && !(strings.HasPrefix(tc.want, "reject: ") && strings.HasPrefix(got, "reject: ") && strings.Contains(got, tc.want[8:])) {
			t.Errorf("host of %s with %q = %q, want %q", tc.iface, tc.template, got, tc.want)
		}
	}
}

func TestConfigure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     sdk.Config
		wantErr string
	}{
		{"minimal", sdk.Config{Address: "127.0.0.1:2379"}, ""},
		{"urls and options", sdk.Config{Address: "http://a:2379, https://b:2379", Options: map[string]string{"root": "/prod/dubbo/", "hostTemplate": "{{.Interface}}.svc", "dialTimeout": "2s"},
			Secrets: map[string]string{"username": "u", "password": "p"}}, ""},
		{"no address", sdk.Config{}, "address: is required"},
		{"no port", sdk.Config{Address: "etcd"}, `address: endpoint "etcd" has no port`},
		{"bad scheme", sdk.Config{Address: "unix://x:1"}, "is not host:port or an http(s) URL"},
		{"empty root", sdk.Config{Address: "a:1", Options: map[string]string{"root": "/"}}, "root:"},
		{"bad host template", sdk.Config{Address: "a:1", Options: map[string]string{"hostTemplate": "{{.Nope}}"}}, "hostTemplate: gives no valid host"},
		{"host template giving no host", sdk.Config{Address: "a:1", Options: map[string]string{"hostTemplate": "{{.Interface}}.."}}, "hostTemplate: gives no valid host"},
		{"the old hostSuffix option", sdk.Config{Address: "a:1", Options: map[string]string{"hostSuffix": ".svc"}}, "hostSuffix: unknown option"},
		{"half credentials", sdk.Config{Address: "a:1", Secrets: map[string]string{"username": "u"}}, "username: username and password go together"},
		{"password as plain option", sdk.Config{Address: "a:1", Options: map[string]string{"password": "p"}}, "password: is a secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := New().Configure(context.Background(), tc.cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
