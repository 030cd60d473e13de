package xds

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// sotwStream is one state-of-the-world stream's view of the protocol.
type sotwStream struct {
	streamBase
	stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	nonce  string // of the last response sent; "" before the first
	// version is what the client holds: until the first response the version_info it claims
	// (it may come from another replica: equal content has equal versions), then the last
	// version sent. A NACKed version stays: sending the same content again cannot help.
	version string
}

func (s *Server) serveSotw(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], impliedType string) error {
	st := &sotwStream{streamBase: newStreamBase(s, impliedType), stream: stream}
	return runStream(s, stream, apiSotw, st)
}

// request applies a request to the stream's state; ok is false when it asks for nothing to be
// sent (another type, or a stale nonce).
func (st *sotwStream) request(req *discoveryv3.DiscoveryRequest) (snap snapshot, pending int64, ok bool) {
	s := st.s
	if !st.accept(req.GetNode().GetId(), req.GetTypeUrl()) {
		return nil, 0, false
	}
	if d := req.GetErrorDetail(); d != nil {
		// Reported even with a stale nonce: it is still a rejection of what was sent.
		s.m.nacks.WithLabelValues(typeLabel).Inc()
		s.log.Warn("xDS client rejected route configurations (NACK)", "api", apiSotw, "node", st.node,
			"kept_version", req.GetVersionInfo(), "nonce", req.GetResponseNonce(),
			"resources", req.GetResourceNames(), "code", d.GetCode(), "error", d.GetMessage())
	}
	if st.nonce != "" && req.GetResponseNonce() != st.nonce {
		// A newer response is on its way; the client answers it with a current request.
		s.log.Debug("ignoring xDS request with a stale nonce", "node", st.node, "nonce", req.GetResponseNonce())
		return nil, 0, false
	}
	if st.nonce == "" {
		st.version = req.GetVersionInfo()
	}
	snap, pending = st.resubscribe(st.sel.replace(req.GetResourceNames()))
	return snap, pending, true
}

// respond sends the selected resources when they differ from what the client holds. For route
// configurations a resource absent from a state-of-the-world response is not deleted by the
// client, so an empty response would tell it nothing: when nothing selected exists, nothing is
// sent (incremental clients are told of removals).
func (st *sotwStream) respond(snap snapshot, pending int64) error {
	s := st.s
	res := st.sel.pick(snap)
	version := setVersion(res)
	if len(res) == 0 || version == st.version {
		return nil
	}
	nonce := s.nextNonce()
	err := st.stream.Send(&discoveryv3.DiscoveryResponse{
		VersionInfo: version,
		Resources:   anys(res),
		TypeUrl:     RouteType,
		Nonce:       nonce,
	})
	if err != nil {
		return fmt.Errorf("send route configurations to %q: %w", st.node, err)
	}
	st.version, st.nonce = version, nonce
	s.sent(apiSotw, pending)
	return nil
}
