package plan

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// world is a View from maps.
type world struct {
	foreign map[string][]string
	owned   map[string]bool
	live    map[string][]string
	pending []string
}

func (w world) Definitions(host string) ([]string, bool) { return w.foreign[host], w.owned[host] }
func (w world) LiveRegistries(host string) []string      { return w.live[host] }
func (w world) Pending(registry string) bool             { return slices.Contains(w.pending, registry) }

func TestDecide(t *testing.T) {
	const h = "com.example.greeter"
	tests := []struct {
		name  string
		host  Host
		world world
		want  Decision
	}{
		{
			name: "a new host is written",
			host: Host{Name: h, Desired: true, Registries: []string{"zk"}},
			want: Decision{Action: Write},
		},
		{
			name:  "a host without instances is removed, even where foreign entries define it",
			host:  Host{Name: h},
			world: world{foreign: map[string][]string{h: {"ns/legacy"}}, live: map[string][]string{h: {"zk"}}, pending: []string{"zk"}},
			want:  Decision{Action: Remove},
		},
		{
			name:  "only a foreign entry defines the host: withheld",
			host:  Host{Name: h, Desired: true, Registries: []string{"zk"}},
			world: world{foreign: map[string][]string{h: {"ns/legacy"}}},
			want:  Decision{Action: Withhold, Foreign: []string{"ns/legacy"}},
		},
		{
			name:  "Meltemi's entry and a foreign one: written, the duplicate named",
			host:  Host{Name: h, Desired: true, Registries: []string{"zk"}},
			world: world{foreign: map[string][]string{h: {"ns/legacy"}}, owned: map[string]bool{h: true}},
			want:  Decision{Action: Write, Foreign: []string{"ns/legacy"}},
		},
		{
			name:  "withholding comes before waiting",
			host:  Host{Name: h, Desired: true, Registries: []string{"zk"}},
			world: world{foreign: map[string][]string{h: {"ns/legacy"}}, live: map[string][]string{h: {"nacos"}}, pending: []string{"nacos"}},
			want:  Decision{Action: Withhold, Foreign: []string{"ns/legacy"}},
		},
		{
			name:  "the live entry merges a pending registry the store has nothing from: wait",
			host:  Host{Name: h, Desired: true, Registries: []string{"zk"}},
			world: world{owned: map[string]bool{h: true}, live: map[string][]string{h: {"nacos", "zk"}}, pending: []string{"nacos"}},
			want:  Decision{Action: Wait, WaitFor: "nacos"},
		},
		{
			name:  "a pending registry that already reported the host does not hold it",
			host:  Host{Name: h, Desired: true, Registries: []string{"nacos", "zk"}},
			world: world{owned: map[string]bool{h: true}, live: map[string][]string{h: {"nacos", "zk"}}, pending: []string{"nacos"}},
			want:  Decision{Action: Write},
		},
		{
			name:  "a synced registry missing from the store does not hold the host",
			host:  Host{Name: h, Desired: true, Registries: []string{"zk"}},
			world: world{owned: map[string]bool{h: true}, live: map[string][]string{h: {"nacos", "zk"}}},
			want:  Decision{Action: Write},
		},
		{
			name:  "waiting keeps the duplicate in view",
			host:  Host{Name: h, Desired: true, Registries: []string{"zk"}},
			world: world{foreign: map[string][]string{h: {"ns/legacy"}}, owned: map[string]bool{h: true}, live: map[string][]string{h: {"nacos"}}, pending: []string{"nacos"}},
			want:  Decision{Action: Wait, Foreign: []string{"ns/legacy"}, WaitFor: "nacos"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.host, tt.world)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{Write: "write", Remove: "remove", Withhold: "withhold", Wait: "wait", Action(9): "unknown"} {
		if got := a.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", a, got, want)
		}
	}
}
