package xds

import (
	"fmt"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// deltaStream is one incremental stream's view of the protocol.
type deltaStream struct {
	streamBase
	stream  grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	started bool
	// known holds the version of each resource the client holds: from initial_resource_versions
	// (a reconnecting client), then what was sent. A NACKed version stays known, so the same
	// content is not sent again.
	known map[string]string
}

func (s *Server) serveDelta(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse], impliedType string) error {
	st := &deltaStream{streamBase: newStreamBase(s, impliedType), stream: stream, known: map[string]string{}}
	return runStream(s, stream, apiDelta, st)
}

// request applies a request to the stream's state. Unlike state of the world, a request with
// an old nonce still counts: its subscription changes are not repeated later.
func (st *deltaStream) request(req *discoveryv3.DeltaDiscoveryRequest) (snap snapshot, pending int64, ok bool) {
	s := st.s
	if !st.accept(req.GetNode().GetId(), req.GetTypeUrl()) {
		return nil, 0, false
	}
	if !st.started {
		st.started = true
		for n, v := range req.GetInitialResourceVersions() {
			st.known[n] = v
		}
	}
	if d := req.GetErrorDetail(); d != nil {
		s.m.nacks.WithLabelValues(typeLabel).Inc()
		s.log.Warn("xDS client rejected route configurations (NACK)", "api", apiDelta, "node", st.node,
			"nonce", req.GetResponseNonce(), "code", d.GetCode(), "error", d.GetMessage())
	}
	add, remove, changed := st.sel.change(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	for _, n := range remove {
		delete(st.known, n) // the client forgets what it unsubscribed from
	}
	snap, pending = st.resubscribe(add, remove, changed)
	return snap, pending, true
}

// respond sends the selected resources whose version differs from what the client holds,
// and the removal of those it holds that no longer exist.
func (st *deltaStream) respond(snap snapshot, pending int64) error {
	s := st.s
	var resources []*discoveryv3.Resource
	for _, r := range st.sel.pick(snap) {
		if v, ok := st.known[r.name]; !ok || v != r.version {
			resources = append(resources, &discoveryv3.Resource{Name: r.name, Version: r.version, Resource: r.any})
		}
	}
	var removed []string
	for n := range st.known {
		if !st.sel.has(n) {
			delete(st.known, n) // dropped from a wildcard subscription
			continue
		}
		if _, ok := snap[n]; !ok {
			removed = append(removed, n)
		}
	}
	if len(resources) == 0 && len(removed) == 0 {
		return nil
	}
	slices.Sort(removed)
	err := st.stream.Send(&discoveryv3.DeltaDiscoveryResponse{
		Resources:        resources,
		RemovedResources: removed,
		TypeUrl:          RouteType,
		Nonce:            s.nextNonce(),
	})
	if err != nil {
		return fmt.Errorf("send route configurations to %q: %w", st.node, err)
	}
	for _, r := range resources {
		st.known[r.Name] = r.Version
	}
	for _, n := range removed {
		delete(st.known, n)
	}
	s.sent(apiDelta, pending)
	return nil
}
