// Package catalog is what a registry plugin reports and the host accepts: services, their
// instances, and the rules (validation, label syntax, weights) that decide what may reach the
// mesh. It is the plugin contract's data, below the SDK, the wire protocol and the host, and
// imports nothing of Kubernetes: plugin binaries stay small.
package catalog

import (
	"maps"
	"reflect"
	"slices"
)

// Service is the complete state of one registry service as a plugin reports it.
type Service struct {
	// Registry is the name of the ServiceRegistry that reported the service; set by the host.
	Registry string
	// Key is stable and unique within the registry.
	Key string
	// Host is the DNS name the mesh knows the service by. Services of several registries may
	// share a host; they are merged into one ServiceEntry.
	Host      string
	Labels    map[string]string
	Instances []Instance
}

// Instance is one endpoint of a service.
type Instance struct {
	Address string
	Port    uint32
	// Protocol is the application protocol as the registry names it ("dubbo", "tri", "http").
	Protocol string
	Labels   map[string]string
	// Weight is relative to DefaultWeight, the weight of an instance its registry gives no
	// weight of its own; 0 means that default. Plugins scale their registry's weights so that
	// its default maps to DefaultWeight, which keeps hosts merged from several registries fair.
	Weight uint32
	// Locality is Istio's "region/zone/subzone", empty when unknown.
	Locality string
}

// DefaultWeight is the weight of an instance whose registry gives it none (Dubbo's default).
const DefaultWeight = 100

// Equal reports whether two services have the same content. Instance order matters: plugins
// and the store keep instances sorted (see Normalize), so equal content compares equal.
func (s Service) Equal(o Service) bool {
	return s.Registry == o.Registry && s.Key == o.Key && s.Host == o.Host &&
		labelsEqual(s.Labels, o.Labels) &&
		slices.EqualFunc(s.Instances, o.Instances, Instance.Equal)
}

// Equal reports whether two instances have the same content.
func (i Instance) Equal(o Instance) bool {
	return i.Address == o.Address && i.Port == o.Port && i.Protocol == o.Protocol &&
		i.Weight == o.Weight && i.Locality == o.Locality && labelsEqual(i.Labels, o.Labels)
}

// labelsEqual is maps.Equal, without walking a map compared with itself: a plugin that
// changes one instance of a service usually hands over the others' label maps unchanged,
// and every change is compared with what was sent.
func labelsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() {
		return true
	}
	return maps.Equal(a, b)
}

// Normalize sorts instances into a canonical order so that equal content compares equal and
// converts to identical output, whatever order the registry listed them in.
func (s *Service) Normalize() {
	slices.SortFunc(s.Instances, compareInstances)
	// Registries may list one provider twice (e.g. two URLs differing only in volatile
	// parameters that were dropped); one endpoint is enough.
	s.Instances = slices.CompactFunc(s.Instances, Instance.Equal)
}

// Normalized returns the service with its instances in the canonical order of Normalize,
// leaving s's instance slice as it is: a copy is made only when the order must change.
func (s Service) Normalized() Service {
	if isNormal(s.Instances) {
		return s
	}
	s.Instances = slices.Clone(s.Instances)
	s.Normalize()
	return s
}

func isNormal(in []Instance) bool {
	for i := 1; i < len(in); i++ {
		if c := compareInstances(in[i-1], in[i]); c > 0 || c == 0 && in[i-1].Equal(in[i]) {
			return false
		}
	}
	return true
}

func compareInstances(a, b Instance) int {
	if c := compareStrings(a.Address, b.Address); c != 0 {
		return c
	}
	if a.Port != b.Port {
		if a.Port < b.Port {
			return -1
		}
		return 1
	}
	if c := compareStrings(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	return compareStrings(LabelString(a.Labels), LabelString(b.Labels))
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LabelString is a canonical string form of a label set, for comparing and keying.
func LabelString(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	n := 0
	for _, k := range keys {
		n += len(k) + len(m[k]) + 2
	}
	b := make([]byte, 0, n)
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, m[k]...)
		b = append(b, ',')
	}
	return string(b)
}
