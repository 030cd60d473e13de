package nacos

import "testing"

func TestParseDubboName(t *testing.T) {
	tests := []struct {
		name    string
		want    dubboName
		isDubbo bool
		bad     bool
	}{
		{name: "providers:org.example.Greeter:1.0.0:blue", want: dubboName{"providers", "org.example.Greeter", "1.0.0", "blue"}, isDubbo: true},
		{name: "providers:org.example.Greeter::", want: dubboName{"providers", "org.example.Greeter", "", ""}, isDubbo: true},
		{name: "providers:org.example.Greeter", want: dubboName{"providers", "org.example.Greeter", "", ""}, isDubbo: true},
		{name: "providers:org.example.Greeter:1.0.0:a:b", want: dubboName{"providers", "org.example.Greeter", "1.0.0", "a:b"}, isDubbo: true},
		{name: "consumers:org.example.Greeter:1.0.0:", want: dubboName{"consumers", "org.example.Greeter", "1.0.0", ""}, isDubbo: true},
		{name: "providers::1.0.0:", isDubbo: true, bad: true},
		{name: "providers:a b::", isDubbo: true, bad: true},
		{name: "providers:a/b::", isDubbo: true, bad: true},
		{name: "orders"},
		{name: "providers"},
		{name: "other:org.example.Greeter:1.0.0:"},
		{name: "Providers:org.example.Greeter::"},
	}
	for _, tt := range tests {
		got, isDubbo, err := parseDubboName(tt.name)
		if isDubbo != tt.isDubbo || (err != nil) != tt.bad || (!tt.bad && got != tt.want) {
			t.Errorf("parseDubboName(%q) = %+v, %v, %v; want %+v, %v, bad=%v", tt.name, got, isDubbo, err, tt.want, tt.isDubbo, tt.bad)
		}
	}
	if k := (dubboName{iface: "org.example.Greeter"}).key(); k != "dubbo:org.example.Greeter" {
		t.Errorf("key = %q", k)
	}
}
