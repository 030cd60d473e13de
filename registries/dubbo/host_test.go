package dubbo

import (
	"strings"
	"testing"
)

func TestHostTemplate(t *testing.T) {
	iface := HostVars{Interface: "org.apache.dubbo.demo.DemoService", Group: "g1", Version: "1.0.0", Application: "demo-provider", Protocol: "dubbo"}
	app := HostVars{Application: "Demo_Provider", Protocol: "tri"}
	tests := []struct {
		name     string
		template string
		vars     HostVars
		want     string
		wantErr  string
	}{
		{name: "default, interface level", template: DefaultHostTemplate, vars: iface, want: "org.apache.dubbo.demo.demoservice"},
		{name: "default, application level", template: DefaultHostTemplate, vars: app, want: "demo-provider.dubbo"},
		{name: "group and version", template: "{{.Version}}.{{.Group}}.{{.Interface}}", vars: iface, want: "1.0.0.g1.org.apache.dubbo.demo.demoservice"},
		{name: "suffix", template: "{{.Application}}.dubbo.svc", vars: iface, want: "demo-provider.dubbo.svc"},
		{name: "conditional", template: "{{.Interface}}{{if .Version}}.v{{.Version}}{{end}}", vars: HostVars{Interface: "a.B"}, want: "a.b"},
		{name: "functions", template: `{{printf "%s-%s" .Protocol .Application}}`, vars: iface, want: "dubbo-demo-provider"},
		{name: "inner class", template: "{{.Interface}}", vars: HostVars{Interface: "com.example.Outer$Inner"}, want: "com.example.outer-inner"},
		{name: "trailing dot", template: "{{.Interface}}.", vars: HostVars{Interface: "a.B"}, want: "a.b"},
		{name: "hyphens trimmed at label ends", template: "{{.Interface}}", vars: HostVars{Interface: "_a._b_"}, want: "a.b"},
		{name: "unicode replaced", template: "{{.Application}}", vars: HostVars{Application: "bücher"}, want: "b-cher"},
		{name: "empty result", template: "{{.Group}}", vars: HostVars{Interface: "a.B"}, wantErr: "empty host"},
		{name: "empty label", template: "{{.Group}}.svc", vars: HostVars{Interface: "a.B"}, wantErr: "empty DNS label"},
		{name: "only punctuation", template: "{{.Interface}}", vars: HostVars{Interface: "$$"}, wantErr: "empty DNS label"},
		{name: "label too long", template: "{{.Interface}}", vars: HostVars{Interface: strings.Repeat("a", 64)}, wantErr: "longer than 63"},
		{name: "host too long", template: "{{.Interface}}", vars: HostVars{Interface: strings.Repeat("abcdefghi.", 26)}, wantErr: "253"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHostTemplate("hostTemplate", tt.template)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := h.Render(tt.vars)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("render = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("render = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseHostTemplateErrors(t *testing.T) {
	for _, tt := range []struct{ template, wantErr string }{
		{"", "is empty"},
		{"{{.Interface", "does not parse"},
		{"{{.Namespace}}", "Namespace"},
		{"...", "empty DNS label"},
		{`{{printf "%02000d" 1}}`, "longer than"},
	} {
		if _, err := ParseHostTemplate("hostTemplate", tt.template); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseHostTemplate(%q) = %v, want error containing %q", tt.template, err, tt.wantErr)
		}
	}
}
