package nacos

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/meltemi-mesh/meltemi/internal/golden"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// TestConvertGolden converts realistic instance lists (testdata/convert.json) and compares
// the result with testdata/convert.golden.json; go test -run TestConvertGolden -update
// rewrites it.
func TestConvertGolden(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "convert.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name     string                `json:"name"`
		Service  string                `json:"service"`
		Clusters []string              `json:"clusters"`
		Hosts    []nacosmodel.Instance `json:"hosts"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	type result struct {
		Name       string             `json:"name"`
		Instances  []catalog.Instance `json:"instances"`
		Rejections []string           `json:"rejections,omitempty"`
	}
	var results []result
	for _, c := range cases {
		conv := converter{defaultProtocol: defaultProtocol}
		if c.Clusters != nil {
			conv.clusters = set(c.Clusters...)
		}
		var dubbo *dubboName
		if d, ok, err := parseDubboName(c.Service); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		} else if ok {
			dubbo = &d
		}
		insts, rejected := conv.convert(serviceID{"public", defaultGroup, c.Service}, dubbo, c.Hosts)
		svc := catalog.Service{Instances: insts}
		svc.Normalize()
		r := result{Name: c.Name, Instances: svc.Instances}
		for _, rej := range rejected {
			r.Rejections = append(r.Rejections, rej.item+": "+rej.reason)
		}
		// What the converter keeps passes the host's validation unchanged.
		if valid, rej, ok := catalog.Validate(catalog.Service{Key: "k", Host: "h.example", Instances: insts}); !ok || len(rej) > 0 || !valid.Equal(catalog.Service{Key: "k", Host: "h.example", Instances: svc.Instances}) {
			t.Errorf("%s: converted instances do not validate unchanged: %v", c.Name, rej)
		}
		results = append(results, r)
	}
	got, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden.Check(t, filepath.Join("testdata", "convert.golden.json"), got)
}

func TestScaleWeight(t *testing.T) {
	for w, want := range map[float64]uint32{1: 100, 0.5: 50, 2.5: 250, 0.001: 1, 0.004: 1, 0.015: 2, 10000: 1000000, 1e9: 1000000} {
		if got := scaleWeight(w); got != want {
			t.Errorf("scaleWeight(%v) = %d, want %d", w, got, want)
		}
	}
}

func TestLocality(t *testing.T) {
	for _, tt := range []struct {
		md   map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"region": "eu", "zone": "eu-1a", "subzone": "rack7"}, "eu/eu-1a/rack7"},
		{map[string]string{"region": "eu", "subzone": "rack7"}, "eu"},
		{map[string]string{"zone": "eu-1a"}, ""},
		{map[string]string{"region": "eu/west"}, ""},
	} {
		if got := locality(tt.md); got != tt.want {
			t.Errorf("locality(%v) = %q, want %q", tt.md, got, tt.want)
		}
	}
}
