package main

import (
	"maps"
	"testing"
)

func TestSelectorFlag(t *testing.T) {
	sel, err := parseSelector(" a=b, c=d ")
	if err != nil || !maps.Equal(sel, map[string]string{"a": "b", "c": "d"}) {
		t.Errorf("parseSelector: %v, %v", sel, err)
	}
	if sel, err := parseSelector(""); err != nil || sel == nil || len(sel) != 0 {
		t.Errorf("empty selector: %v, %v", sel, err)
	}
	for _, bad := range []string{"a", "=b", "a=b,,"} {
		if _, err := parseSelector(bad); err == nil {
			t.Errorf("parseSelector(%q): no error", bad)
		}
	}
}
