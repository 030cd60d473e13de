package sdktest

import (
	"net"
	"slices"
	"strconv"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// Conditions for Recorder.WaitState. Combine them in a closure:
//
//	rec.WaitState(t, d, "both", func(s *sdktest.State) bool {
//		return sdktest.HasEndpoints("a", "10.0.0.1:80")(s) && sdktest.Absent("b")(s)
//	})

// Endpoints lists a service's instances as ip:port, in the order the plugin sent them.
func Endpoints(svc sdk.Service) []string {
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
