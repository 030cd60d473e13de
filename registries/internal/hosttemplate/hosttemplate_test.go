package hosttemplate

import (
	"strings"
	"testing"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "Orders.Nacos.", want: "orders.nacos"},
		{in: " a_b.c ", want: "a-b.c"},
		{in: "com.example.Outer$Inner", want: "com.example.outer-inner"},
		{in: "_a._b_", want: "a.b"},
		{in: "中文.svc", err: "empty DNS label"},
		{in: "a..b", err: "empty DNS label"},
		{in: "", err: "empty host"},
		{in: strings.Repeat("a", 64) + ".svc", err: "longer than 63"},
		{in: strings.Repeat("abcdefghi.", 26) + "x", err: "longer than 253"},
	}
	for _, tt := range tests {
		got, err := Sanitize(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("Sanitize(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("Sanitize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestHostTemplate(t *testing.T) {
	type vars struct{ Name string }
	h, err := Parse("host", "{{.Name}}.svc", vars{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := h.Render(vars{Name: "A_B"}); err != nil || got != "a-b.svc" {
		t.Errorf("Render = %q, %v; want a-b.svc", got, err)
	}
	if _, err := h.Render(vars{Name: strings.Repeat("y", 2000)}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("Render of an over-long host = %v, want an error", err)
	}
	for text, wantErr := range map[string]string{"": "is empty", "{{.Name": "does not parse", "{{.Nope}}": "gives no valid host", "{{.Name}}..": "empty DNS label"} {
		if _, err := Parse("host", text, vars{Name: "x"}); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("Parse(%q) = %v, want error containing %q", text, err, wantErr)
		}
	}
}
