package store

import (
	"slices"
	"testing"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

func TestStoreReportsOnlyRealChanges(t *testing.T) {
	s := New()
	a := catalog.Service{Registry: "zk", Key: "a", Host: "a.example", Instances: []catalog.Instance{{Address: "10.0.0.1", Port: 1}}}
	if got := s.Upsert(a); !slices.Equal(got, []string{"a.example"}) {
		t.Fatalf("first upsert changed %v", got)
	}
	if got := s.Upsert(a); got != nil {
		t.Fatalf("identical upsert changed %v", got)
	}
	moved := a
	moved.Host = "b.example"
	if got := s.Upsert(moved); !slices.Equal(got, []string{"a.example", "b.example"}) {
		t.Fatalf("host move changed %v", got)
	}
	if got := s.ForHost("a.example"); len(got) != 0 {
		t.Fatalf("old host still has %v", got)
	}
	other := catalog.Service{Registry: "nacos", Key: "x", Host: "b.example"}
	s.Upsert(other)
	if got := s.ForHost("b.example"); len(got) != 2 || got[0].Registry != "nacos" || got[1].Registry != "zk" {
		t.Fatalf("ForHost order: %v", got)
	}
	if got := s.Replace("zk", []catalog.Service{moved}, nil); len(got) != 0 {
		t.Fatalf("identical snapshot changed %v", got)
	}
	if got := s.Replace("zk", nil, []string{"a"}); len(got) != 0 {
		t.Fatalf("kept key was deleted: %v", got)
	}
	if got := s.Replace("zk", nil, nil); !slices.Equal(got, []string{"b.example"}) {
		t.Fatalf("empty snapshot changed %v", got)
	}
	if svc, n := s.Counts("nacos"); svc != 1 || n != 0 {
		t.Fatalf("counts = %d, %d", svc, n)
	}
}

func TestStoreSharesEqualLabelsWithoutChangingContent(t *testing.T) {
	s := New()
	insts := []catalog.Instance{
		{Address: "10.0.0.1", Port: 1, Labels: map[string]string{"version": "1"}},
		{Address: "10.0.0.2", Port: 1, Labels: map[string]string{"version": "1"}},
		{Address: "10.0.0.3", Port: 1, Labels: map[string]string{"version": "2"}},
		{Address: "10.0.0.4", Port: 1},
	}
	in := catalog.Service{Registry: "zk", Key: "a", Host: "a.example", Instances: insts}
	s.Upsert(in)
	got, _ := s.Get("zk", "a")
	if !got.Equal(in) {
		t.Fatalf("stored %+v, want %+v", got, in)
	}
	first, second := got.Instances[0].Labels, got.Instances[1].Labels
	first["probe"] = "x"
	if second["probe"] != "x" {
		t.Error("equal labels of one service are held as two maps")
	}
	if _, ok := got.Instances[2].Labels["probe"]; ok {
		t.Error("different labels share a map")
	}
	delete(first, "probe")
	for i := range insts {
		if &insts[i] == &got.Instances[i] {
			t.Fatal("the store kept the caller's instance slice")
		}
	}
}
