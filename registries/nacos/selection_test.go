package nacos

import (
	"strings"
	"testing"
)

func TestParseSelection(t *testing.T) {
	tests := []struct {
		namespaces string
		groups     string
		// want maps namespaces to their groups; "-" means not selected. An "*" entry is the
		// groups of namespaces not named.
		want    map[string]string
		console bool
		err     string // a substring of the error
		field   string
	}{
		{namespaces: "public", groups: "DEFAULT_GROUP", want: map[string]string{"public": "DEFAULT_GROUP", "dev": "-"}},
		{namespaces: "public, dev ,,", groups: "b,a,a", want: map[string]string{"public": "a,b", "dev": "a,b", "prod": "-"}},
		{namespaces: "public:g1,g2;dev", groups: "DEFAULT_GROUP", want: map[string]string{"public": "g1,g2", "dev": "DEFAULT_GROUP"}},
		{namespaces: "dev:*", groups: "DEFAULT_GROUP", want: map[string]string{"dev": "*"}, console: true},
		{namespaces: "*", groups: "DEFAULT_GROUP", want: map[string]string{"anything": "DEFAULT_GROUP"}, console: true},
		{namespaces: "*:g1;dev", groups: "DEFAULT_GROUP", want: map[string]string{"other": "g1", "dev": "DEFAULT_GROUP"}, console: true},
		{namespaces: "dev;*:g1", groups: "DEFAULT_GROUP", want: map[string]string{"other": "g1", "dev": "DEFAULT_GROUP"}, console: true},
		{namespaces: "public", groups: "*,g1", want: map[string]string{"public": "*"}, console: true},
		{namespaces: "e2b1c4a5-6f7d-4c1e-9a8b-000000000000:group.with:colons", groups: "x",
			want: map[string]string{"e2b1c4a5-6f7d-4c1e-9a8b-000000000000": "group.with:colons"}},
		{namespaces: "", groups: "DEFAULT_GROUP", err: "selects no namespace", field: optNamespaces},
		{namespaces: "public,public", groups: "DEFAULT_GROUP", err: "given twice", field: optNamespaces},
		{namespaces: "*;*", groups: "DEFAULT_GROUP", err: "given twice", field: optNamespaces},
		{namespaces: "pub lic", groups: "DEFAULT_GROUP", err: "does not allow", field: optNamespaces},
		{namespaces: "a.b", groups: "DEFAULT_GROUP", err: "does not allow", field: optNamespaces},
		{namespaces: "public:", groups: "DEFAULT_GROUP", err: "no group", field: optNamespaces},
		{namespaces: "public:g 1", groups: "DEFAULT_GROUP", err: "does not allow", field: optNamespaces},
		{namespaces: "public", groups: "", err: "no group", field: optGroups},
		{namespaces: "public", groups: strings.Repeat("g", 129), err: "longer than 128", field: optGroups},
	}
	for _, tt := range tests {
		t.Run(tt.namespaces+"|"+tt.groups, func(t *testing.T) {
			var groups []string
			for g := range strings.SplitSeq(tt.groups, ",") {
				if g = strings.TrimSpace(g); g != "" {
					groups = append(groups, g)
				}
			}
			sel, err := parseSelection(tt.namespaces, groups)
			if tt.err != "" {
				se, ok := err.(selectionError)
				if !ok || !strings.Contains(err.Error(), tt.err) || se.field != tt.field {
					t.Fatalf("error %v (%T), want %q on %s", err, err, tt.err, tt.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for ns, want := range tt.want {
				g, ok := sel.groupsFor(ns)
				got := g.String()
				if !ok {
					got = "-"
				}
				if got != want {
					t.Errorf("groups of %s = %s, want %s", ns, got, want)
				}
			}
			if sel.needsConsole() != tt.console {
				t.Errorf("needsConsole = %v, want %v", sel.needsConsole(), tt.console)
			}
		})
	}
}
