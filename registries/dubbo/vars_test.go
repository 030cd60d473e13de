package dubbo

import (
	"testing"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

func TestInterfaceVars(t *testing.T) {
	inst := func(proto, app, version, group string) catalog.Instance {
		labels := map[string]string{}
		for k, v := range map[string]string{"application": app, "version": version, "group": group} {
			if v != "" {
				labels[k] = v
			}
		}
		return catalog.Instance{Address: "10.0.0.1", Port: 20880, Protocol: proto, Labels: labels}
	}
	for _, tc := range []struct {
		name  string
		insts []catalog.Instance
		want  HostVars
	}{
		{"none", nil, HostVars{Interface: "a.B"}},
		{"one", []catalog.Instance{inst("dubbo", "app", "1.0.0", "blue")},
			HostVars{Interface: "a.B", Group: "blue", Version: "1.0.0", Application: "app", Protocol: "dubbo"}},
		{"shared values only", []catalog.Instance{inst("dubbo", "app", "1.0.0", "blue"), inst("tri", "app", "2.0.0", "blue")},
			HostVars{Interface: "a.B", Group: "blue", Application: "app"}},
		{"a missing label differs", []catalog.Instance{inst("dubbo", "app", "1.0.0", ""), inst("dubbo", "app", "1.0.0", "blue")},
			HostVars{Interface: "a.B", Version: "1.0.0", Application: "app", Protocol: "dubbo"}},
	} {
		if got := InterfaceVars("a.B", tc.insts); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
