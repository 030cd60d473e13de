// Package sdktest helps test a registry plugin in process, without the host: a Recorder is
// an sdk.Emitter that decides what to send with the SDK's own plan (sdk.Plan) and keeps every
// event the host would receive and the state the host would build from them, and Run runs a
// plugin's Watch into one for the length of a test.
//
//	rec := sdktest.Run(t, myreg.New(), sdk.Config{Registry: "test", Address: addr})
//	rec.WaitState(t, 10*time.Second, "the snapshot", sdktest.HasEndpoints("svc", "10.0.0.1:80"))
//	m := rec.Mark()
//	// ... change the registry ...
//	rec.WaitFor(t, m, 10*time.Second, "the delete", func(ev sdktest.Event) bool {
//		return ev.Kind == sdktest.Delete && ev.Key == "svc"
//	})
//
// It only imports the SDK and the standard library, so plugins outside this module can use it.
package sdktest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// Kind is what an Event reports.
type Kind string

// Event kinds: what the host receives.
const (
	Snapshot Kind = "snapshot"
	Upsert   Kind = "upsert"
	Delete   Kind = "delete"
	Health   Kind = "health"
	Reject   Kind = "reject"
)

// Event is one call of an sdk.Emitter method.
type Event struct {
	Kind Kind
	At   time.Time
	// Seq is the event's place in the log: passed as a mark, it looks at this event and the
	// ones after it, with no race against events that came meanwhile.
	Seq int
	// Services is a Snapshot's services.
	Services []catalog.Service
	// Service is an Upsert's service.
	Service catalog.Service
	// Key is the service key of an Upsert or Delete, or the item of a Reject.
	// (A rejection of a whole service the wire could not carry, which only a real stream
	// makes, does not occur here.)
	Key string
	// Connected is a Health report's state.
	Connected bool
	// Message is a Health report's message or a Reject's reason.
	Message string
}

// String renders the event on one line, as Dump shows it.
func (ev Event) String() string {
	switch ev.Kind {
	case Snapshot:
		return fmt.Sprintf("snapshot (%d services)", len(ev.Services))
	case Upsert:
		return fmt.Sprintf("upsert %s host=%s endpoints=%v", ev.Key, ev.Service.Host, clip(Endpoints(ev.Service)))
	case Delete:
		return "delete " + ev.Key
	case Health:
		return fmt.Sprintf("health %v %q", ev.Connected, ev.Message)
	case Reject:
		return fmt.Sprintf("reject %s: %s", ev.Key, ev.Message)
	}
	return string(ev.Kind)
}

// State is what the host would know after the events so far.
type State struct {
	// Services by key: the last snapshot with the upserts and deletes since applied.
	Services map[string]catalog.Service
	// Synced is set by the first Snapshot; before it, Services says nothing.
	Synced bool
	// Connected and HealthMessage are from the last Health report.
	Connected     bool
	HealthMessage string
	// Rejected holds every item ever rejected with its latest reason.
	Rejected map[string]string
	// Counts of events by kind.
	Snapshots, Upserts, Deletes int
}

// Recorder is a goroutine-safe sdk.Emitter that records every event the host would receive
// and keeps the State they make. Services are kept as given: like the host, it takes ownership
// of them.
type Recorder struct {
	mu      sync.Mutex
	plan    *sdk.Plan
	events  []Event
	state   State
	changed chan struct{} // closed and replaced on every event
	// watch is set when the Recorder belongs to a Watch started by Run or Watch.
	watch *watch
}

// NewRecorder returns an empty Recorder, for tests that call Watch themselves; uniqueHosts is
// the plugin's sdk.Description.UniqueHosts.
func NewRecorder(uniqueHosts bool) *Recorder {
	return &Recorder{
		plan:    sdk.NewPlan(uniqueHosts),
		state:   State{Services: map[string]catalog.Service{}, Rejected: map[string]string{}},
		changed: make(chan struct{}),
	}
}

var _ sdk.Emitter = (*Recorder)(nil)

func (r *Recorder) add(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(ev)
}

func (r *Recorder) addLocked(ev Event) {
	ev.At = time.Now()
	ev.Seq = len(r.events)
	r.events = append(r.events, ev)
	s := &r.state
	switch ev.Kind {
	case Snapshot:
		clear(s.Services)
		for _, svc := range ev.Services {
			s.Services[svc.Key] = svc
		}
		s.Synced = true
		s.Snapshots++
	case Upsert:
		s.Services[ev.Key] = ev.Service
		s.Upserts++
	case Delete:
		delete(s.Services, ev.Key)
		s.Deletes++
	case Health:
		s.Connected, s.HealthMessage = ev.Connected, ev.Message
	case Reject:
		s.Rejected[ev.Key] = ev.Message
	}
	r.notifyLocked()
}

// notifyLocked wakes every waiter; r.mu is held.
func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// decide runs one plan step and records what it sends; it reports whether it sent anything.
func (r *Recorder) decide(step func(*sdk.Plan) []sdk.Change) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	changes := step(r.plan)
	for _, c := range changes {
		switch c.Kind {
		case sdk.ChangeSnapshot:
			r.addLocked(Event{Kind: Snapshot, Services: c.Services})
		case sdk.ChangeUpsert:
			r.addLocked(Event{Kind: Upsert, Service: c.Service, Key: c.Key})
		case sdk.ChangeDelete:
			r.addLocked(Event{Kind: Delete, Key: c.Key})
		case sdk.ChangeReject:
			r.addLocked(Event{Kind: Reject, Key: c.Item, Message: c.Reason})
		}
	}
	return len(changes) > 0
}

// Snapshot implements sdk.Emitter.
func (r *Recorder) Snapshot(services []catalog.Service) {
	r.decide(func(p *sdk.Plan) []sdk.Change { return p.Snapshot(services) })
}

// Set implements sdk.Emitter.
func (r *Recorder) Set(svc catalog.Service) bool {
	return r.decide(func(p *sdk.Plan) []sdk.Change { return p.Set(svc) })
}

// Remove implements sdk.Emitter.
func (r *Recorder) Remove(key string) bool {
	return r.decide(func(p *sdk.Plan) []sdk.Change { return p.Remove(key) })
}

// SentKeys implements sdk.Emitter.
func (r *Recorder) SentKeys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.plan.SentKeys()
}

// Sent implements sdk.Emitter.
func (r *Recorder) Sent(key string) (catalog.Service, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.plan.Sent(key)
}

// Health implements sdk.Emitter.
func (r *Recorder) Health(connected bool, message string) {
	r.add(Event{Kind: Health, Connected: connected, Message: message})
}

// Reject implements sdk.Emitter.
func (r *Recorder) Reject(item, reason string) {
	r.decide(func(p *sdk.Plan) []sdk.Change { return p.Reject(item, reason) })
}

// Mark is the number of events so far: pass it to Events, Count, WaitFor or Dump to look
// only at what came after.
func (r *Recorder) Mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// Events returns the events after mark.
func (r *Recorder) Events(mark int) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events[min(mark, len(r.events)):])
}

// Count returns how many events of kind came after mark.
func (r *Recorder) Count(mark int, kind Kind) int {
	n := 0
	for _, ev := range r.Events(mark) {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// Service returns a service's current state.
func (r *Recorder) Service(key string) (catalog.Service, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	svc, ok := r.state.Services[key]
	return svc, ok
}

// State returns a copy of the current state.
func (r *Recorder) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.state
	s.Services, s.Rejected = maps.Clone(s.Services), maps.Clone(s.Rejected)
	return s
}

// WaitFor waits up to timeout for an event after mark for which pred is true and returns the
// first one. On timeout, or when the watch started by Run ended, it fails the test with what
// it waited for and the events since mark.
func (r *Recorder) WaitFor(t testing.TB, mark int, timeout time.Duration, what string, pred func(Event) bool) Event {
	t.Helper()
	var found Event
	next := mark
	r.wait(t, timeout, what, mark, func() bool {
		for ; next < len(r.events); next++ {
			if pred(r.events[next]) {
				found = r.events[next]
				return true
			}
		}
		return false
	})
	return found
}

// WaitState waits up to timeout until cond holds for the current state; it fails the test
// like WaitFor. cond runs with the Recorder locked: it must not call the Recorder's methods,
// nor keep the State.
func (r *Recorder) WaitState(t testing.TB, timeout time.Duration, what string, cond func(*State) bool) {
	t.Helper()
	r.wait(t, timeout, what, 0, func() bool { return cond(&r.state) })
}

// wait runs check, with r.mu held, after every event until it returns true.
func (r *Recorder) wait(t testing.TB, timeout time.Duration, what string, mark int, check func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := check(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		// A Watch that has returned reports nothing more: say so at once, not at the timeout.
		if ended, err := r.watchEnded(); ended {
			t.Fatalf("waiting for %s: Watch returned %v\n%s", what, err, r.Dump(mark))
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s\n%s", timeout, what, r.Dump(mark))
		}
	}
}

// Dump renders the events after mark and the current state, for failure messages.
func (r *Recorder) Dump(mark int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "events since #%d:\n", mark)
	for i, ev := range r.events[min(mark, len(r.events)):] {
		fmt.Fprintf(&b, "  #%d %s %s\n", mark+i, ev.At.Format("15:04:05.000"), ev)
	}
	s := &r.state
	fmt.Fprintf(&b, "state: synced=%v connected=%v %q, %d rejected\n", s.Synced, s.Connected, s.HealthMessage, len(s.Rejected))
	for _, key := range slices.Sorted(maps.Keys(s.Services)) {
		svc := s.Services[key]
		fmt.Fprintf(&b, "  %s host=%s endpoints=%v\n", key, svc.Host, clip(Endpoints(svc)))
	}
	return b.String()
}

// clip keeps dumps of large services readable.
func clip(eps []string) []string {
	const most = 8
	if len(eps) <= most {
		return eps
	}
	return append(eps[:most:most], fmt.Sprintf("... %d more", len(eps)-most))
}
