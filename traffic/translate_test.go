package traffic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/internal/golden"
	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
)

// TestTranslateGolden translates testdata/<case>/input.yaml (with options.yaml, if present) and
// compares EnvoyFilters, routes and problems with the golden files next to it. Every generated
// config must also pass go-control-plane's validation and decode like a proxy would decode it,
// and the result must not depend on the order of the input.
func TestTranslateGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no test cases: %v", err)
	}
	for _, input := range inputs {
		dir := filepath.Dir(input)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in, opts, decodeProblems := loadCase(t, dir)
			out := Translate(in, opts)

			for _, ef := range out.EnvoyFilters {
				if err := traffictest.CheckEnvoyFilter(ef); err != nil {
					t.Errorf("EnvoyFilter %s: %v", ef.GetName(), err)
				}
				for _, l := range PatchedListeners(ef) {
					if strings.HasPrefix(l, "0.0.0.0_") || strings.HasPrefix(l, "[::]_") || strings.HasPrefix(l, "::_") {
						t.Errorf("EnvoyFilter %s patches the wildcard listener %s, capturing every TCP service on its port", ef.GetName(), l)
					}
				}
			}
			for name, rc := range out.Routes {
				if err := traffictest.CheckRouteConfig(rc); err != nil {
					t.Errorf("route configuration %s: %v", name, err)
				}
				if name != rc.GetName() {
					t.Errorf("route configuration %s is keyed %s", rc.GetName(), name)
				}
			}

			efs, routes, problems := render(t, out)
			var decoded strings.Builder
			for _, p := range decodeProblems {
				decoded.WriteString(p.String() + "\n")
			}
			golden.Check(t, filepath.Join(dir, "envoyfilters.golden.yaml"), []byte(efs))
			golden.Check(t, filepath.Join(dir, "routes.golden.json"), []byte(routes))
			golden.Check(t, filepath.Join(dir, "problems.golden.txt"), []byte(decoded.String()+problems))

			for i := range 3 {
				shuffled := in
				shuffled.MetaRouters = shuffle(in.MetaRouters)
				shuffled.ServiceEntries = shuffle(in.ServiceEntries)
				shuffled.DestinationRules = shuffle(in.DestinationRules)
				shuffled.ApplicationProtocols = shuffle(in.ApplicationProtocols)
				shuffled.Services = shuffle(in.Services)
				shuffled.RedisServices = shuffle(in.RedisServices)
				shuffled.RedisDestinations = shuffle(in.RedisDestinations)
				e2, r2, p2 := render(t, Translate(shuffled, opts))
				if e2 != efs || r2 != routes || p2 != problems {
					t.Fatalf("shuffle %d: output depends on input order", i)
				}
			}
		})
	}
}

func shuffle[T any](s []T) []T {
	s = slices.Clone(s)
	rand.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

func loadCase(t *testing.T, dir string) (Input, Options, []Problem) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "input.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ParseObjects(data)
	if err != nil {
		t.Fatalf("parsing input: %v", err)
	}
	in, problems := Decode(objs)
	if data, err := os.ReadFile(filepath.Join(dir, "mesh.yaml")); err == nil {
		if in.Mesh, err = ParseMeshConfig(string(data)); err != nil {
			t.Fatalf("mesh.yaml: %v", err)
		}
	}
	var opts Options
	if data, err := os.ReadFile(filepath.Join(dir, "options.yaml")); err == nil {
		if err := yaml.UnmarshalStrict(data, &opts); err != nil {
			t.Fatalf("options.yaml: %v", err)
		}
	}
	return in, opts, problems
}

// render turns an output into the text of the golden files.
func render(t *testing.T, out *Output) (efs, routes, problems string) {
	t.Helper()
	var b bytes.Buffer
	for i, ef := range out.EnvoyFilters {
		y, err := yaml.Marshal(ef.Object)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	efs = b.String()

	all := map[string]any{}
	for name, rc := range out.Routes {
		raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rc)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		all[name] = v
	}
	js, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	routes = string(js) + "\n"

	b.Reset()
	for _, p := range out.Problems {
		fmt.Fprintln(&b, p.String())
	}
	for _, h := range out.Held {
		fmt.Fprintf(&b, "held: EnvoyFilter %s\n", h)
	}
	return efs, routes, b.String()
}

// TestAerakiSemantics evaluates the routes of testdata/aeraki-semantics the way the proxy
// matches them.
func TestAerakiSemantics(t *testing.T) {
	in, opts, _ := loadCase(t, filepath.Join("testdata", "aeraki-semantics"))
	out := Translate(in, opts)
	orders := out.Routes[RouteConfigName("orders.shop.svc.cluster.local", 20880)]
	d, err := Evaluate(orders, map[string]string{"method": "placeOrder"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Clusters) != 2 || d.Clusters[0].Percent != 50 || d.Clusters[1].Percent != 50 {
		t.Errorf("weights 30/30 split %+v, want 50/50", d.Clusters)
	}
	if len(d.Mirrors) != 1 || d.Mirrors[0].Percent != 100 {
		t.Errorf("mirror without mirrorPercentage: %+v, want 100%%", d.Mirrors)
	}
	if d, err := Evaluate(orders, map[string]string{"method": "cancel"}); err != nil || d.Index != -1 {
		t.Errorf("a request no route matches went to route %d (%v), want none", d.Index, err)
	}
	stock := out.Routes[RouteConfigName("stock.shop.svc.cluster.local", 20880)]
	if d, err := Evaluate(stock, map[string]string{"method": "any"}); err != nil || len(d.Clusters) != 1 ||
		d.Clusters[0].Name != "outbound|20880||stock.shop.svc.cluster.local" {
		t.Errorf("MetaRouter without routes: %+v (%v), want the default route", d, err)
	}
}

// TestTranslateUsesGivenValidation: a caller that validated MetaRouters already (the
// controller, to keep the last valid version of an invalid one) hands its findings over in
// Input.RouterErrors, and Translate takes them instead of validating again.
func TestTranslateUsesGivenValidation(t *testing.T) {
	in, opts, _ := loadCase(t, filepath.Join("testdata", "invalid-metarouter"))
	fine := types.NamespacedName{Namespace: "apps", Name: "fine"}
	broken := types.NamespacedName{Namespace: "apps", Name: "broken"}
	if out := Translate(in, opts); !out.Routers[fine].Accepted() || len(out.Routers[broken].Errors) == 0 {
		t.Fatalf("without RouterErrors: fine accepted %v, broken's errors %v; the case no longer fits this test",
			out.Routers[fine].Accepted(), out.Routers[broken].Errors)
	}
	in.RouterErrors = map[types.NamespacedName][]string{fine: {"found by the caller"}}
	out := Translate(in, opts)
	if got := out.Routers[fine]; got.Accepted() || !slices.Equal(got.Errors, []string{"found by the caller"}) {
		t.Errorf("fine: accepted %v, errors %v; want the caller's finding and not applied", got.Accepted(), got.Errors)
	}
	if len(out.Routers[broken].Errors) == 0 {
		t.Errorf("broken, absent from RouterErrors, was not validated by Translate")
	}
}
