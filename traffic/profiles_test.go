package traffic

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meltemi-mesh/meltemi/traffic/proxies"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestGoldenEnvoyFiltersLoadOnTheirProxies reads every golden EnvoyFilter as a proxy would be
// sent it: each extension it names must exist in the profile of the proxies it reaches (those
// selected as MetaProtocol proxies, or the case's Options.Proxy), codecs that the case's
// ApplicationProtocols declare aside.
func TestGoldenEnvoyFiltersLoadOnTheirProxies(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "*", "envoyfilters.golden.yaml"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden EnvoyFilters: %v", err)
	}
	for _, golden := range dirs {
		dir := filepath.Dir(golden)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in, opts, _ := loadCase(t, dir)
			opts = opts.WithDefaults()
			stock, err := proxies.Get(opts.Proxy)
			if err != nil {
				t.Fatal(err)
			}
			meta, err := proxies.Get(opts.MetaProtocolProxy)
			if err != nil {
				t.Fatal(err)
			}
			var declared []string
			for _, ap := range in.ApplicationProtocols {
				declared = append(declared, ap.Spec.Codec)
			}
			data, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			efs, err := ParseObjects(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, ef := range efs {
				target := stock
				selector, _, _ := unstructured.NestedStringMap(ef.Object, "spec", "workloadSelector", "labels")
				if len(opts.ProxySelector) > 0 && containsLabels(selector, opts.ProxySelector) {
					target = meta
				}
				patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
				for _, m := range target.Missing(patches) {
					if target.MetaProtocol && slices.Contains(declared, m) {
						continue
					}
					t.Errorf("EnvoyFilter %s/%s names %s, which %s lacks", ef.GetNamespace(), ef.GetName(), m, target)
				}
			}
		})
	}
}
