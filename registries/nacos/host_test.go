package nacos

import (
	"testing"
)

func TestDefaultHostTemplates(t *testing.T) {
	h, err := newHostTemplates(defaultHostTemplate, defaultDubboHostTemplate)
	if err != nil {
		t.Fatal(err)
	}
	services := []struct {
		vars ServiceVars
		want string
	}{
		{ServiceVars{"orders", "DEFAULT_GROUP", "public"}, "orders.nacos"},
		{ServiceVars{"orders", "payments", "public"}, "orders.payments.nacos"},
		{ServiceVars{"orders", "DEFAULT_GROUP", "dev"}, "orders.dev.nacos"},
		{ServiceVars{"order_service", "Blue_Group", "e2b1c4a5-6f7d"}, "order-service.blue-group.e2b1c4a5-6f7d.nacos"},
		{ServiceVars{"com.example.Orders", "DEFAULT_GROUP", "public"}, "com.example.orders.nacos"},
		{ServiceVars{"-edge-", "DEFAULT_GROUP", "public"}, "edge.nacos"},
	}
	for _, s := range services {
		if got, err := h.serviceHost(s.vars); err != nil || got != s.want {
			t.Errorf("host of %+v = %q, %v; want %q", s.vars, got, err, s.want)
		}
	}
	// The ZooKeeper plugin's interface-level hosts for the same interfaces.
	for iface, want := range map[string]string{
		"org.apache.dubbo.samples.GreetingService": "org.apache.dubbo.samples.greetingservice",
		"com.example.Outer$Inner":                  "com.example.outer-inner",
		"com.example_app.Api":                      "com.example-app.api",
	} {
		if got, err := h.dubboHost(DubboVars{Interface: iface}); err != nil || got != want {
			t.Errorf("host of %s = %q, %v; want %q", iface, got, err, want)
		}
	}
}

func TestHostTemplateErrors(t *testing.T) {
	for _, tc := range []struct{ service, dubbo, field string }{
		{"", defaultDubboHostTemplate, optHostTemplate},
		{"{{.Service", defaultDubboHostTemplate, optHostTemplate},
		{"{{.Interface}}", defaultDubboHostTemplate, optHostTemplate},
		{"{{.Service}}..x", defaultDubboHostTemplate, optHostTemplate},
		{defaultHostTemplate, "{{.Service}}", optDubboHostTemplate},
	} {
		_, err := newHostTemplates(tc.service, tc.dubbo)
		if te, ok := err.(templateError); !ok || te.field != tc.field {
			t.Errorf("templates %q, %q: error %v, want one on %s", tc.service, tc.dubbo, err, tc.field)
		}
	}
}
