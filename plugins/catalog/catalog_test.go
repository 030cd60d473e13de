package catalog

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := Instance{Address: "10.0.0.1", Port: 20880, Protocol: "dubbo", Labels: map[string]string{"version": "1.0.0"}}
	tests := []struct {
		name       string
		svc        Service
		ok         bool
		instances  int
		rejections int
		reason     string
	}{
		{"valid", Service{Registry: "r", Key: "k", Host: "a.example", Instances: []Instance{good}}, true, 1, 0, ""},
		{"empty key", Service{Registry: "r", Host: "a.example"}, false, 0, 1, "key is empty"},
		{"empty host", Service{Registry: "r", Key: "k"}, false, 0, 1, "empty"},
		{"upper-case host", Service{Registry: "r", Key: "k", Host: "A.example"}, false, 0, 1, "not a DNS name"},
		{"host with colon", Service{Registry: "r", Key: "k", Host: "providers:a:b"}, false, 0, 1, "not a DNS name"},
		{"long host", Service{Registry: "r", Key: "k", Host: strings.Repeat("a", 254)}, false, 0, 1, "longer than"},
		{"bad address", Service{Registry: "r", Key: "k", Host: "a.example", Instances: []Instance{good, {Address: "not-an-ip", Port: 1}}}, true, 1, 1, "not an IP"},
		{"port zero", Service{Registry: "r", Key: "k", Host: "a.example", Instances: []Instance{{Address: "10.0.0.2", Port: 0}}}, true, 0, 1, "out of range"},
		{"port too big", Service{Registry: "r", Key: "k", Host: "a.example", Instances: []Instance{{Address: "10.0.0.2", Port: 70000}}}, true, 0, 1, "out of range"},
		{"unspecified address", Service{Registry: "r", Key: "k", Host: "a.example", Instances: []Instance{{Address: "0.0.0.0", Port: 1}}}, true, 0, 1, "cannot be an endpoint"},
		{"bad protocol", Service{Registry: "r", Key: "k", Host: "a.example", Instances: []Instance{{Address: "10.0.0.2", Port: 1, Protocol: "Dub bo"}}}, true, 0, 1, "protocol"},
		{"ipv6", Service{Registry: "r", Key: "k", Host: "a.example", Instances: []Instance{{Address: "fd00::1", Port: 1}}}, true, 1, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, rej, ok := Validate(tc.svc)
			if ok != tc.ok || len(got.Instances) != tc.instances || len(rej) != tc.rejections {
				t.Fatalf("ok=%v instances=%d rejections=%v; want ok=%v instances=%d rejections=%d", ok, len(got.Instances), rej, tc.ok, tc.instances, tc.rejections)
			}
			if tc.reason != "" && !strings.Contains(rej[0].Reason, tc.reason) {
				t.Errorf("reason %q does not mention %q", rej[0].Reason, tc.reason)
			}
		})
	}
}

func TestFilterLabels(t *testing.T) {
	in := map[string]string{
		"version": "1.0.0", "group": "", "bad key!": "x", "long": strings.Repeat("v", 64),
		"methods": "a,b", "example.com/ok": "yes",
	}
	kept, dropped := FilterLabels(in)
	want := map[string]string{"version": "1.0.0", "group": "", "example.com/ok": "yes"}
	if len(kept) != len(want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
	for k, v := range want {
		if kept[k] != v {
			t.Errorf("kept[%q] = %q, want %q", k, kept[k], v)
		}
	}
	slices.Sort(dropped)
	if !slices.Equal(dropped, []string{"bad key!", "long", "methods"}) {
		t.Errorf("dropped %v", dropped)
	}
}

// Nearly every label set is valid: those pass as they are, without a copy or an allocation.
func TestFilterLabelsKeepsValidSetsAsTheyAre(t *testing.T) {
	in := map[string]string{"version": "1.0.0", "app.kubernetes.io/name": "x", "empty": ""}
	kept, dropped := FilterLabels(in)
	if len(dropped) != 0 || len(kept) != 3 {
		t.Fatalf("kept %v, dropped %v", kept, dropped)
	}
	kept["probe"] = "1"
	if in["probe"] != "1" {
		t.Errorf("a valid set was copied")
	}
	delete(in, "probe")
	if allocs := testing.AllocsPerRun(100, func() { FilterLabels(in) }); allocs != 0 {
		t.Errorf("%v allocations for a valid set", allocs)
	}
	// Past the bound, a deterministic subset is kept, in a copy.
	many := map[string]string{}
	for i := range maxLabels + 2 {
		many[fmt.Sprintf("l%03d", i)] = "v"
	}
	kept, dropped = FilterLabels(many)
	slices.Sort(dropped)
	if len(kept) != maxLabels || len(many) != maxLabels+2 || !slices.Equal(dropped, []string{"l064", "l065"}) {
		t.Errorf("kept %d, dropped %v", len(kept), dropped)
	}
}

func TestValidateAllRejectsDroppedLabels(t *testing.T) {
	svc := Service{Registry: "r", Key: "k", Host: "k.example", Labels: map[string]string{"ok": "1", "bad key": "v"},
		Instances: []Instance{{Address: "10.0.0.1", Port: 1, Labels: map[string]string{"long": strings.Repeat("v", 64), "fine": "x"}}}}
	valid, rej, ok := ValidateAll(svc)
	if !ok || len(valid.Labels) != 1 || len(valid.Instances[0].Labels) != 1 {
		t.Fatalf("ok %v, labels %v %v", ok, valid.Labels, valid.Instances[0].Labels)
	}
	if len(rej) != 2 || rej[0].Item != "k label bad key" || !strings.HasPrefix(rej[0].Reason, "key: name part must consist of") ||
		rej[1].Item != "k/10.0.0.1:1 label long" || rej[1].Reason != "value of 64 bytes: must be no more than 63 bytes; label dropped" ||
		!strings.HasSuffix(rej[0].Reason, "; label dropped") {
		t.Errorf("rejections %+v", rej)
	}
	// Validate drops the same labels without a word.
	if _, rej, _ := Validate(svc); len(rej) != 0 {
		t.Errorf("Validate rejected %v", rej)
	}
}

func TestNormalizeIsOrderIndependent(t *testing.T) {
	a := Service{Instances: []Instance{{Address: "10.0.0.2", Port: 1}, {Address: "10.0.0.1", Port: 2, Labels: map[string]string{"v": "1"}}, {Address: "10.0.0.1", Port: 2, Labels: map[string]string{"v": "1"}}}}
	b := Service{Instances: []Instance{{Address: "10.0.0.1", Port: 2, Labels: map[string]string{"v": "1"}}, {Address: "10.0.0.2", Port: 1}}}
	a.Normalize()
	b.Normalize()
	if !a.Equal(b) {
		t.Fatalf("normalized services differ:\n%v\n%v", a, b)
	}
}

func TestIsProtocol(t *testing.T) {
	for p, want := range map[string]bool{"dubbo": true, "tri": true, "grpc_web-2": true, "": false, "Dubbo": false, "a b": false, "ü": false, strings.Repeat("a", 33): false} {
		if got := IsProtocol(p); got != want {
			t.Errorf("IsProtocol(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestNormalizedCopiesOnlyWhenItMust(t *testing.T) {
	sorted := Service{Instances: []Instance{{Address: "10.0.0.1", Port: 1}, {Address: "10.0.0.2", Port: 1}}}
	if got := sorted.Normalized(); &got.Instances[0] != &sorted.Instances[0] {
		t.Error("a service in canonical order was copied")
	}
	unsorted := Service{Instances: []Instance{{Address: "10.0.0.2", Port: 1}, {Address: "10.0.0.1", Port: 1}, {Address: "10.0.0.1", Port: 1}}}
	got := unsorted.Normalized()
	if len(got.Instances) != 2 || got.Instances[0].Address != "10.0.0.1" {
		t.Errorf("normalized %v", got.Instances)
	}
	if unsorted.Instances[0].Address != "10.0.0.2" || len(unsorted.Instances) != 3 {
		t.Errorf("the original changed: %v", unsorted.Instances)
	}
}

func TestLabelsEqual(t *testing.T) {
	m := map[string]string{"version": "1", "rev": "2"}
	for _, tc := range []struct {
		a, b map[string]string
		want bool
	}{
		{m, m, true},
		{m, map[string]string{"rev": "2", "version": "1"}, true},
		{m, map[string]string{"rev": "3", "version": "1"}, false},
		{m, map[string]string{"version": "1"}, false},
		{nil, map[string]string{}, true},
		{nil, m, false},
	} {
		if got := labelsEqual(tc.a, tc.b); got != tc.want {
			t.Errorf("labelsEqual(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
