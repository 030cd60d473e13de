package vip

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestAssignIsDeterministicAndInRange(t *testing.T) {
	a, err := New("240.240.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New("240.240.0.0/16")
	prefix := netip.MustParsePrefix("240.240.0.0/16")
	for i := range 500 {
		host := fmt.Sprintf("svc-%d.example", i)
		x, err := a.Assign(host)
		if err != nil {
			t.Fatal(err)
		}
		y, _ := b.Assign(host)
		if x != y {
			t.Fatalf("%s: %s vs %s from a fresh allocator", host, x, y)
		}
		ip := netip.MustParseAddr(x)
		if !prefix.Contains(ip) || ip == prefix.Addr() || x == "240.240.255.255" {
			t.Fatalf("%s got %s, outside the usable range", host, x)
		}
		if again, _ := a.Assign(host); again != x {
			t.Fatalf("%s: second Assign gave %s, first %s", host, again, x)
		}
	}
}

func TestCollisionsAndSeeding(t *testing.T) {
	a, _ := New("10.96.0.0/30") // two usable addresses
	x, _ := a.Assign("a.example")
	y, _ := a.Assign("b.example")
	if x == y {
		t.Fatalf("collision not resolved: both got %s", x)
	}
	if _, err := a.Assign("c.example"); err == nil {
		t.Fatal("want an error from an exhausted range")
	}
	a.Release("a.example")
	if z, err := a.Assign("c.example"); err != nil || z != x {
		t.Fatalf("released address not reused: %s, %v", z, err)
	}

	// After a restart, seeding keeps earlier answers even where the hash would now differ.
	r, _ := New("10.96.0.0/30")
	r.Seed("b.example", y)
	r.Seed("c.example", x)
	r.Seed("bogus.example", "192.168.1.1") // outside the range: ignored
	if got, _ := r.Assign("b.example"); got != y {
		t.Fatalf("seeded b.example got %s, want %s", got, y)
	}
	if got, _ := r.Assign("c.example"); got != x {
		t.Fatalf("seeded c.example got %s, want %s", got, x)
	}
}

func TestIPv6AndBadRanges(t *testing.T) {
	a, err := New("fd00:240::/112")
	if err != nil {
		t.Fatal(err)
	}
	ip, err := a.Assign("v6.example")
	if err != nil || !netip.MustParsePrefix("fd00:240::/112").Contains(netip.MustParseAddr(ip)) {
		t.Fatalf("got %s, %v", ip, err)
	}
	for _, bad := range []string{"", "10.0.0.1", "10.0.0.0/31", "nonsense/8"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}
