package xds

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// protocol is one protocol variant's per-stream state.
type protocol[Req any] interface {
	// request applies a client request; ok false means nothing is to be sent for it.
	request(req *Req) (snap snapshot, pending int64, ok bool)
	// respond sends what the client lacks of snap, if anything; pending is the time of the
	// earliest Update it reflects that this stream had not looked at (0 if none).
	respond(snap snapshot, pending int64) error
	base() *streamBase
}

// streamBase is the state both protocol variants keep per stream.
type streamBase struct {
	s           *Server
	impliedType string // type of a request that names none ("" on ADS, where it is required)
	w           *watcher
	sel         selection
	node        string // node id, for logs
	warned      map[string]bool
}

func newStreamBase(s *Server, impliedType string) streamBase {
	return streamBase{s: s, impliedType: impliedType, w: newWatcher(), warned: map[string]bool{}}
}

func (b *streamBase) base() *streamBase { return b }

// accept notes the client's node id and reports whether a request is for the served type,
// logging any other type once per stream (an ADS client may ask for types not served here).
func (b *streamBase) accept(node, typeURL string) bool {
	if b.node == "" {
		b.node = node
	}
	if typeURL == "" {
		typeURL = b.impliedType
	}
	if typeURL == RouteType {
		return true
	}
	if !b.warned[typeURL] {
		b.warned[typeURL] = true
		b.s.log.Warn("ignoring xDS request for an unsupported type", "type", typeURL, "node", b.node)
	}
	return false
}

// resubscribe applies a change of the selection (as returned by its change or replace) to the
// stream's registrations and returns the served set and pending Update time.
func (b *streamBase) resubscribe(add, remove []string, changed bool) (snapshot, int64) {
	if !changed {
		return b.s.view(b.w)
	}
	return b.s.subscribe(b.w, add, remove, b.sel.wildcard)
}

// runStream serves one stream: requests and Update notifications are handled on this goroutine
// only, which also owns every send, as gRPC requires.
func runStream[Req, Resp any](s *Server, stream grpc.BidiStreamingServer[Req, Resp], api string, p protocol[Req]) error {
	ctx := stream.Context()
	gauge := s.m.streams.WithLabelValues(api)
	gauge.Inc()
	defer gauge.Dec()

	b := p.base()
	defer func() { s.unsubscribeAll(b.w, b.sel.list()) }()
	if pr, ok := peer.FromContext(ctx); ok {
		s.log.Debug("xDS stream opened", "api", api, "peer", pr.Addr.String())
	}

	reqs := make(chan *Req)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var snap snapshot
		var pending int64
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			s.log.Debug("xDS stream closed", "api", api, "node", b.node, "err", err)
			return streamEnd(err)
		case req := <-reqs:
			var ok bool
			if snap, pending, ok = p.request(req); !ok {
				continue
			}
		case <-b.w.notify:
			snap, pending = s.view(b.w)
		}
		if snap == nil {
			continue // no Update yet: the first one signals every stream
		}
		if err := p.respond(snap, pending); err != nil {
			return err
		}
	}
}

// sent records a response sent on a stream.
func (s *Server) sent(api string, pending int64) {
	s.m.pushes.WithLabelValues(typeLabel, api).Inc()
	if pending != 0 {
		s.m.push.Observe(time.Since(time.Unix(0, pending)).Seconds())
	}
}

// streamEnd turns the end of a stream into the handler's return value.
func streamEnd(err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Canceled {
		return nil
	}
	return err
}
