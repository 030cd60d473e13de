package traffic

import (
	"encoding/json"
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
	for dir, efs := range goldenEnvoyFilters(t) {
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

// TestExtensionsInJSONAgreesWithTheDecodedWalk: the translator reads extension names from the
// JSON text (proxies.ExtensionsInJSON); on every golden EnvoyFilter, compact and indented, it
// finds what a walk of the decoded document finds.
func TestExtensionsInJSONAgreesWithTheDecodedWalk(t *testing.T) {
	compared := 0
	for golden, efs := range goldenEnvoyFilters(t) {
		for _, ef := range efs {
			patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
			for _, p := range patches {
				value := p.(map[string]any)["patch"].(map[string]any)["value"]
				want := proxies.Extensions(value)
				compact, _ := json.Marshal(value)
				indented, _ := json.MarshalIndent(value, "", "  ")
				for _, doc := range [][]byte{compact, indented} {
					if got := proxies.ExtensionsInJSON(doc); !slices.Equal(got, want) {
						t.Errorf("%s %s: ExtensionsInJSON %v, decoded walk %v", golden, ef.GetName(), got, want)
					}
				}
				compared++
			}
		}
	}
	if compared == 0 {
		t.Fatal("no patch compared")
	}
}

// goldenEnvoyFilters returns the golden EnvoyFilters of every translation case, by case folder.
func goldenEnvoyFilters(t *testing.T) map[string][]*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*", "envoyfilters.golden.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden EnvoyFilters: %v", err)
	}
	out := map[string][]*unstructured.Unstructured{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		efs, err := ParseObjects(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Dir(f)] = efs
	}
	return out
}
