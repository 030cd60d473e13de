package sdktest

import (
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// Conditions for Recorder.WaitState. Combine them in a closure:
//
//	rec.WaitState(t, d, "both", func(s *sdktest.State) bool {
//		return sdktest.HasEndpoints("a", "10.0.0.1:80")(s) && sdktest.Absent("b")(s)
//	})

// Endpoints lists a service's instances as ip:port, in the order the plugin sent them.
func Endpoints(svc catalog.Service) []string {
	out := make([]string, len(svc.Instances))
	for i, in := range svc.Instances {
		out[i] = net.JoinHostPort(in.Address, strconv.FormatUint(uint64(in.Port), 10))
	}
	return out
}

// HasEndpoints holds when service key exists with exactly these endpoints (ip:port), in
// this order.
func HasEndpoints(key string, want ...string) func(*State) bool {
	return func(s *State) bool {
		svc, ok := s.Services[key]
		return ok && slices.Equal(Endpoints(svc), want)
	}
}

// HasAddresses holds when service key exists with instances at exactly these IP addresses,
// in this order.
func HasAddresses(key string, want ...string) func(*State) bool {
	return func(s *State) bool {
		svc, ok := s.Services[key]
		if !ok || len(svc.Instances) != len(want) {
			return false
		}
		for i, in := range svc.Instances {
			if in.Address != want[i] {
				return false
			}
		}
		return true
	}
}

// Absent holds when a snapshot has come and service key is not (or no longer) there.
func Absent(key string) func(*State) bool {
	return func(s *State) bool {
		_, ok := s.Services[key]
		return s.Synced && !ok
	}
}

// Predicates for Recorder.WaitFor. Write others inline: func(ev sdktest.Event) bool { ... }.

// IsSnapshot holds for a Snapshot.
func IsSnapshot(ev Event) bool { return ev.Kind == Snapshot }

// IsHealth holds for a Health report of this state.
func IsHealth(connected bool) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == Health && ev.Connected == connected }
}

// IsUpsert holds for an Upsert of service key with n instances.
func IsUpsert(key string, n int) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == Upsert && ev.Key == key && len(ev.Service.Instances) == n }
}

// IsDelete holds for a Delete of service key.
func IsDelete(key string) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == Delete && ev.Key == key }
}

// IsReject holds for a Reject of an item that contains part.
func IsReject(part string) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == Reject && strings.Contains(ev.Key, part) }
}
