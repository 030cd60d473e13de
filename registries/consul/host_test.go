package consul

import (
	"strings"
	"testing"
)

func TestHostTemplate(t *testing.T) {
	for _, tc := range []struct {
		template, service, dc, want string
	}{
		{defaultHostTemplate, "web", "dc1", "web.service.consul"},
		{defaultHostTemplate, "Orders_API", "dc1", "orders-api.service.consul"},
		{defaultHostTemplate, "-edge-", "dc1", "edge.service.consul"},
		{"{{.Service}}.service.{{.Datacenter}}.consul", "web", "EU_West", "web.service.eu-west.consul"},
		{"{{.Service}}.mesh.example.com.", "web", "dc1", "web.mesh.example.com"},
		{"{{.Service}}.service.consul", "a.b", "dc1", "a.b.service.consul"},
	} {
		h, err := parseHostTemplate(tc.template)
		if err != nil {
			t.Fatalf("%q: %v", tc.template, err)
		}
		got, err := h.render(HostVars{Service: tc.service, Datacenter: tc.dc})
		if err != nil || got != tc.want {
			t.Errorf("%q with %s/%s = %q, %v; want %q", tc.template, tc.dc, tc.service, got, err, tc.want)
		}
	}
}

func TestHostTemplateErrors(t *testing.T) {
	h, err := parseHostTemplate(defaultHostTemplate)
	if err != nil {
		t.Fatal(err)
	}
	for _, service := range []string{"a..b", "-", strings.Repeat("x", 64), strings.Repeat("x.", 130) + "y", "日本"} {
		if got, err := h.render(HostVars{Service: service, Datacenter: "dc1"}); err == nil {
			t.Errorf("service %q gave host %q", service, got)
		}
	}
	if _, err := parseHostTemplate(`{{range $i := .Service}}x{{end}}`); err == nil {
		t.Error("a template that fails on the sample is accepted")
	}
	big, err := parseHostTemplate(`{{.Service}}{{if eq .Service "big"}}` + strings.Repeat("y", 2000) + `{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := big.render(HostVars{Service: "big"}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("huge output: %v", err)
	}
}
