package serviceentries

import (
	"strings"
	"testing"

	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

func TestConflictsOfARegistry(t *testing.T) {
	names := []synckube.NameConflict{
		{Kind: "ServiceEntry", Namespace: "mesh", Name: "a.example", Registries: []string{"zk"}},
		{Kind: "ServiceEntry", Namespace: "mesh", Name: "b.example", Registries: []string{"nacos"}},
		{Kind: "WorkloadEntry", Namespace: "mesh", Name: "m.example-0a1b", Registries: []string{"nacos", "zk"}},
	}
	hosts := []HostConflict{
		{Host: "legacy.example", Foreign: []string{"mesh/aeraki-legacy.example"}, Withheld: true, Registries: []string{"zk"}},
		{Host: "shared.example", Foreign: []string{"apps/mine", "apps/theirs"}, Registries: []string{"consul", "zk"}},
		{Host: "other.example", Foreign: []string{"apps/x"}, Registries: []string{"consul"}},
	}
	got := Conflicts("zk", names, hosts)
	want := []string{
		"ServiceEntry mesh/a.example",
		"WorkloadEntry mesh/m.example-0a1b",
		"host legacy.example",
		"host shared.example",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d conflicts %+v, want %v", len(got), got, want)
	}
	for i, c := range got {
		if c.Object != want[i] {
			t.Errorf("conflict %d is %q, want %q", i, c.Object, want[i])
		}
	}
	for i, must := range [][]string{
		{"not written", "delete that object", "label it"},
		{"WorkloadEntry is not written"},
		{"mesh/aeraki-legacy.example", "does not write it", "delete them"},
		{"apps/mine, apps/theirs", "Istio merges them", "delete them"},
	} {
		for _, m := range must {
			if !strings.Contains(got[i].Message, m) {
				t.Errorf("%s: message %q does not say %q", got[i].Object, got[i].Message, m)
			}
		}
	}
	if c := Conflicts("etcd", names, hosts); len(c) != 0 {
		t.Errorf("a registry without conflicts got %+v", c)
	}
}
