package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// RouteType is the type URL of the resources this server serves. MetaProtocol proxies subscribe
// to Envoy's HTTP route type, one resource per subscription.
const RouteType = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

// resource is one served route configuration, marshalled once and shared read-only by every
// stream that sends it.
type resource struct {
	name    string
	version string // content hash: equal content gives equal versions on every replica
	any     *anypb.Any
}

// snapshot is the served set. It is never modified after publication: Update builds a new map.
// It is nil until the first Update: until then the desired set is unknown, and a replica that
// has just started must not answer a reconnecting proxy as if its routes were gone.
type snapshot map[string]*resource

// watcher is one stream's registration for change notifications.
type watcher struct {
	notify chan struct{} // capacity 1: a pending signal coalesces any number of Updates
	// pending holds the UnixNano time of the earliest Update not yet looked at by the stream
	// (0 if none); the stream measures push latency from it.
	pending atomic.Int64
}

func newWatcher() *watcher { return &watcher{notify: make(chan struct{}, 1)} }

func (w *watcher) signal(at int64) {
	w.pending.CompareAndSwap(0, at)
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// hashContent returns the version of marshalled content.
func hashContent(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// buildResource checks a route configuration and marshals it; it returns prev when the content
// is prev's (checked already). The checks go beyond the proto rules because MetaProtocol
// proxies assert on an empty route list and read only one virtual host, and Envoy rejects a
// configuration whose name differs from the subscribed one.
func buildResource(name string, rc *routev3.RouteConfiguration, prev *resource) (*resource, error) {
	switch {
	case name == "":
		return nil, errors.New("empty resource name")
	case rc == nil:
		return nil, errors.New("nil route configuration")
	case rc.GetName() != name:
		return nil, fmt.Errorf("route configuration is named %q, want the resource name", rc.GetName())
	case len(rc.GetVirtualHosts()) != 1:
		return nil, fmt.Errorf("%d virtual hosts, want exactly 1", len(rc.GetVirtualHosts()))
	case len(rc.GetVirtualHosts()[0].GetRoutes()) == 0:
		return nil, errors.New("virtual host has no routes (a default route is required)")
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
	if err != nil {
		return nil, fmt.Errorf("marshal route configuration: %w", err)
	}
	version := hashContent(b)
	if prev != nil && prev.version == version {
		return prev, nil
	}
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("invalid route configuration: %w", err)
	}
	return &resource{name: name, version: version, any: &anypb.Any{TypeUrl: RouteType, Value: b}}, nil
}

// setVersion is the state-of-the-world version_info of a response carrying rs (sorted by
// name): the resource's own version for a single resource (the usual one subscription per
// stream), a hash of the names and versions otherwise, and "" for nothing.
func setVersion(rs []*resource) string {
	switch len(rs) {
	case 0:
		return ""
	case 1:
		return rs[0].version
	}
	h := sha256.New()
	for _, r := range rs {
		h.Write([]byte(r.name))
		h.Write([]byte{0})
		h.Write([]byte(r.version))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func byName(a, b *resource) int { return strings.Compare(a.name, b.name) }

// Update replaces the served set with routes, keyed by resource name (`<host>_<port>`). Only
// resources whose content changed are pushed, and only to the streams subscribed to them; an
// Update that changes nothing sends nothing. An invalid entry is logged, counted and skipped,
// and the version served before stays (an error upstream never withdraws a working route).
// Update does not keep or modify the given messages. A name missing from routes is withdrawn,
// so call it only with complete inputs (every informer synced).
func (s *Server) Update(routes map[string]*routev3.RouteConfiguration) {
	s.UpdateSince(time.Now(), routes)
}

// UpdateSince is Update for routes that reflect a change made at origin (e.g. a routing rule
// edit): push latency is measured from origin, so it covers translation as well as delivery.
func (s *Server) UpdateSince(origin time.Time, routes map[string]*routev3.RouteConfiguration) {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	start := time.Now()

	s.mu.RLock()
	old := s.snap
	s.mu.RUnlock()

	next := make(snapshot, len(routes))
	var changed []string
	for name, rc := range routes {
		r, err := buildResource(name, rc, old[name])
		if err != nil {
			s.m.rejected.Inc()
			_, kept := old[name]
			s.log.Error("route configuration refused", "resource", name, "kept_previous", kept, "err", err)
			if kept {
				next[name] = old[name]
			}
			continue
		}
		next[name] = r
		if r != old[name] {
			changed = append(changed, name)
		}
	}
	for name := range old {
		if _, ok := next[name]; !ok {
			changed = append(changed, name)
		}
	}
	s.m.resources.Set(float64(len(next)))
	first := old == nil
	if len(changed) == 0 && !first {
		return
	}

	at := origin.UnixNano()
	s.mu.Lock()
	s.snap = next
	signals := 0
	for w := range s.wildcard {
		w.signal(at)
		signals++
	}
	if first {
		// Streams opened before the first Update were told nothing yet, whatever they asked.
		changed = changed[:0]
		for name := range s.watchers {
			changed = append(changed, name)
		}
	}
	for _, name := range changed {
		for w := range s.watchers[name] {
			w.signal(at)
			signals++
		}
	}
	s.mu.Unlock()
	s.log.Debug("route configurations updated", "resources", len(next), "changed", len(changed),
		"signals", signals, "took", time.Since(start))
}

// subscribe changes w's registrations and returns what view returns: an Update published later
// notifies w, so nothing falls between the returned set and the next signal.
func (s *Server) subscribe(w *watcher, add, remove []string, wildcard bool) (snapshot, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range remove {
		if ws := s.watchers[name]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(s.watchers, name)
			}
		}
	}
	for _, name := range add {
		ws := s.watchers[name]
		if ws == nil {
			ws = make(map[*watcher]struct{})
			s.watchers[name] = ws
		}
		ws[w] = struct{}{}
	}
	if wildcard {
		s.wildcard[w] = struct{}{}
	} else {
		delete(s.wildcard, w)
	}
	return s.snap, w.pending.Swap(0)
}

// unsubscribeAll drops every registration of w (its stream ended).
func (s *Server) unsubscribeAll(w *watcher, names []string) {
	s.subscribe(w, nil, names, false)
}

// view returns the served set and takes w's pending Update time, both under the lock Update
// publishes under, so the time always belongs to an Update the returned set reflects.
func (s *Server) view(w *watcher) (snapshot, int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.snap, w.pending.Swap(0)
}

// current returns the served set.
func (s *Server) current() snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.snap
}
