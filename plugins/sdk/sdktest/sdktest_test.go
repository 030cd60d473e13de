package sdktest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// fakeT is a testing.TB whose failures are recorded instead of failing the real test.
type fakeT struct {
	testing.TB
	mu       sync.Mutex
	failures []string
	cleanups []func()
}

func (f *fakeT) Helper() {}

func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, fmt.Sprintf(format, args...))
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// run runs body as a test would: in a goroutine of its own (Fatalf ends it), then the
// cleanups, last first. It returns the failures.
func (f *fakeT) run(body func(t testing.TB)) []string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(f)
	}()
	<-done
	for _, fn := range slices.Backward(f.cleanups) {
		fn()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.failures)
}

// runFake runs body against a fakeT and returns its failures.
func runFake(t *testing.T, body func(t testing.TB)) []string {
	return (&fakeT{TB: t}).run(body)
}

// fakePlugin's Watch is whatever the test says.
type fakePlugin struct {
	configureErr error
	cfg          sdk.Config
	watch        func(ctx context.Context, e sdk.Emitter) error
}

func (p *fakePlugin) Describe() sdk.Description { return sdk.Description{Kind: "fake"} }

func (p *fakePlugin) Configure(_ context.Context, cfg sdk.Config) error {
	p.cfg = cfg
	return p.configureErr
}

func (p *fakePlugin) Watch(ctx context.Context, e sdk.Emitter) error { return p.watch(ctx, e) }

// untilCancelled is a well-behaved Watch: it emits, then waits for its context.
func untilCancelled(emit func(e sdk.Emitter)) func(context.Context, sdk.Emitter) error {
	return func(ctx context.Context, e sdk.Emitter) error {
		emit(e)
		<-ctx.Done()
		return nil
	}
}

func svc(key string, eps ...string) catalog.Service {
	s := catalog.Service{Key: key, Host: key + ".example"}
	for _, ep := range eps {
		ip, port, _ := strings.Cut(ep, ":")
		var p uint32
		fmt.Sscan(port, &p)
		s.Instances = append(s.Instances, catalog.Instance{Address: ip, Port: p})
	}
	return s
}

func TestRecorderKeepsStateAndEvents(t *testing.T) {
	r := NewRecorder(false)
	if s := r.State(); s.Synced || len(s.Services) != 0 || Absent("a")(&s) {
		t.Fatalf("fresh state %+v: synced or absent before any snapshot", s)
	}
	r.Health(true, "")
	r.Snapshot([]catalog.Service{svc("a", "10.0.0.1:80"), svc("b", "10.0.0.2:81")})
	m := r.Mark()
	r.Set(svc("a", "10.0.0.1:80", "10.0.0.3:80"))
	r.Remove("b")
	r.Reject("bad-item", "not an IP address")
	r.Health(false, "registry gone")

	s := r.State()
	checks := map[string]bool{
		"a with two endpoints": HasEndpoints("a", "10.0.0.1:80", "10.0.0.3:80")(&s),
		"a by address":         HasAddresses("a", "10.0.0.1", "10.0.0.3")(&s),
		"not in another order": !HasEndpoints("a", "10.0.0.3:80", "10.0.0.1:80")(&s),
		"not a subset":         !HasAddresses("a", "10.0.0.1")(&s),
		"b absent":             Absent("b")(&s),
		"a present":            !Absent("a")(&s),
		"counts":               s.Snapshots == 1 && s.Upserts == 1 && s.Deletes == 1,
		"health":               s.Synced && !s.Connected && s.HealthMessage == "registry gone",
		"rejection":            s.Rejected["bad-item"] == "not an IP address",
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("%s: state %+v", what, s)
		}
	}
	if got := r.Count(0, Health); got != 2 {
		t.Errorf("%d health events, want 2", got)
	}
	var kinds []Kind
	for _, ev := range r.Events(m) {
		kinds = append(kinds, ev.Kind)
	}
	if want := []Kind{Upsert, Delete, Reject, Health}; !slices.Equal(kinds, want) {
		t.Errorf("events after the mark %v, want %v", kinds, want)
	}
	if a, ok := r.Service("a"); !ok || len(a.Instances) != 2 {
		t.Errorf("Service(a) = %+v, %v", a, ok)
	}
	// The copy is the caller's: changing it does not change the recorder.
	delete(s.Services, "a")
	if _, ok := r.Service("a"); !ok {
		t.Errorf("State() shares its map with the recorder")
	}
	dump := r.Dump(m)
	for _, want := range []string{"upsert a host=a.example endpoints=[10.0.0.1:80 10.0.0.3:80]", "delete b",
		"reject bad-item: not an IP address", `health false "registry gone"`, "a host=a.example"} {
		if !strings.Contains(dump, want) {
			t.Errorf("dump lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "snapshot") {
		t.Errorf("dump shows events before the mark:\n%s", dump)
	}
	// A new snapshot replaces everything.
	r.Snapshot([]catalog.Service{svc("c", "10.0.0.9:1")})
	if s := r.State(); len(s.Services) != 1 || !Absent("a")(&s) {
		t.Errorf("after a second snapshot: %v", s.Services)
	}
}

func TestWaitForSeesLaterEventsOnly(t *testing.T) {
	r := NewRecorder(false)
	r.Snapshot([]catalog.Service{svc("x", "10.0.0.9:1")})
	r.Set(svc("x", "10.0.0.9:2"))
	m := r.Mark()
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.Set(svc("y", "10.0.0.1:1"))
		r.Remove("x")
	}()
	ev := r.WaitFor(t, m, 10*time.Second, "x deleted", func(ev Event) bool { return ev.Kind == Delete && ev.Key == "x" })
	if ev.At.IsZero() || r.Count(m, Upsert) != 1 {
		t.Errorf("found %+v before the upsert that preceded it", ev)
	}
	r.WaitState(t, 10*time.Second, "y", HasEndpoints("y", "10.0.0.1:1"))
}

func TestWaitFailsWithTheEvents(t *testing.T) {
	r := NewRecorder(false)
	r.Reject("item-1", "broken")
	failures := runFake(t, func(t testing.TB) {
		r.WaitState(t, 50*time.Millisecond, "service z", HasEndpoints("z", "10.0.0.1:1"))
		t.Errorf("WaitState returned")
	})
	if len(failures) != 1 || !strings.Contains(failures[0], "timed out after 50ms waiting for service z") ||
		!strings.Contains(failures[0], "reject item-1: broken") {
		t.Errorf("failures %q", failures)
	}
	failures = runFake(t, func(t testing.TB) {
		r.WaitFor(t, r.Mark(), 50*time.Millisecond, "a snapshot", func(ev Event) bool { return ev.Kind == Snapshot })
	})
	if len(failures) != 1 || !strings.Contains(failures[0], "waiting for a snapshot") || strings.Contains(failures[0], "item-1:") {
		t.Errorf("failures %q", failures)
	}
}

func TestRunConfiguresWatchesAndStops(t *testing.T) {
	var cancelled bool
	p := &fakePlugin{watch: func(ctx context.Context, e sdk.Emitter) error {
		e.Snapshot([]catalog.Service{svc("a", "10.0.0.1:80")})
		<-ctx.Done()
		cancelled = true
		return ctx.Err() // like context.Canceled: a clean end
	}}
	failures := runFake(t, func(t testing.TB) {
		r := Run(t, p, sdk.Config{Registry: "r", Address: "reg:1"})
		r.WaitState(t, 10*time.Second, "snapshot", HasEndpoints("a", "10.0.0.1:80"))
		r.Stop()
		if !cancelled {
			t.Errorf("Watch still running after Stop")
		}
		r.Stop() // again, and at cleanup: nothing more happens
	})
	if len(failures) != 0 || p.cfg.Address != "reg:1" {
		t.Errorf("failures %q, configured with %+v", failures, p.cfg)
	}
}

func TestRunReportsBadPlugins(t *testing.T) {
	old := stopTimeout
	stopTimeout = 100 * time.Millisecond
	t.Cleanup(func() { stopTimeout = old })
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })

	for _, tc := range []struct {
		name  string
		p     *fakePlugin
		wait  bool // wait for a service that never comes
		wants []string
	}{
		{"configure fails", &fakePlugin{configureErr: errors.New("root: bad")}, false, []string{"configure: root: bad"}},
		{"error at stop", &fakePlugin{watch: func(ctx context.Context, _ sdk.Emitter) error {
			<-ctx.Done()
			return errors.New("closing: broken pipe")
		}}, false, []string{"Watch returned closing: broken pipe"}},
		{"hangs", &fakePlugin{watch: func(context.Context, sdk.Emitter) error { <-hang; return nil }}, false,
			[]string{"Watch did not return within 100ms"}},
		// The wait fails at once, long before its timeout; cleanup reports the error again.
		{"returns early", &fakePlugin{watch: func(_ context.Context, e sdk.Emitter) error {
			e.Health(false, "no registry")
			return errors.New("unrecoverable")
		}}, true, []string{"waiting for service a: Watch returned unrecoverable", "Watch returned unrecoverable"}},
		// Returning nil is no better: the host sees the watch end while it listens.
		{"returns nil early", &fakePlugin{watch: func(context.Context, sdk.Emitter) error { return nil }}, true,
			[]string{"waiting for service a: Watch returned <nil>", "Watch returned <nil> before it was stopped"}},
		{"well behaved", &fakePlugin{watch: untilCancelled(func(e sdk.Emitter) { e.Snapshot(nil) })}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failures := runFake(t, func(ft testing.TB) {
				r := Run(ft, tc.p, sdk.Config{})
				if tc.wait {
					r.WaitState(ft, time.Hour, "service a", HasEndpoints("a", "10.0.0.1:80"))
				}
			})
			if len(failures) != len(tc.wants) {
				t.Fatalf("failures %q, want %q", failures, tc.wants)
			}
			for i, want := range tc.wants {
				if !strings.Contains(failures[i], want) {
					t.Errorf("failure %q, want one containing %q", failures[i], want)
				}
			}
		})
	}
}

func TestEventPredicatesAndSeq(t *testing.T) {
	r := NewRecorder(false)
	r.Health(false, "connecting")
	r.Snapshot([]catalog.Service{svc("a", "10.0.0.1:80")})
	r.Health(true, "")
	r.Set(svc("a", "10.0.0.1:80", "10.0.0.2:80"))
	r.Reject("/dubbo/com.example.Bad/providers/not-a-url", "not a URL")
	r.Remove("a")
	evs := r.Events(0)
	for i, ev := range evs {
		if ev.Seq != i {
			t.Errorf("event %d (%s) has Seq %d", i, ev, ev.Seq)
		}
	}
	for _, tc := range []struct {
		name  string
		pred  func(Event) bool
		match []int // the events it holds for
	}{
		{"snapshot", IsSnapshot, []int{1}},
		{"unhealthy", IsHealth(false), []int{0}},
		{"healthy", IsHealth(true), []int{2}},
		{"upsert of a with 2", IsUpsert("a", 2), []int{3}},
		{"upsert of a with 1", IsUpsert("a", 1), nil},
		{"upsert of b", IsUpsert("b", 2), nil},
		{"delete of a", IsDelete("a"), []int{5}},
		{"delete of b", IsDelete("b"), nil},
		{"reject by part", IsReject("com.example.Bad"), []int{4}},
		{"reject of another", IsReject("com.example.Good"), nil},
	} {
		var got []int
		for i, ev := range evs {
			if tc.pred(ev) {
				got = append(got, i)
			}
		}
		if !slices.Equal(got, tc.match) {
			t.Errorf("%s holds for events %v, want %v", tc.name, got, tc.match)
		}
	}
	// Seq as a mark: the health report after the snapshot, however soon it came.
	snap := r.WaitFor(t, 0, time.Second, "snapshot", IsSnapshot)
	if ev := r.WaitFor(t, snap.Seq, time.Second, "healthy", IsHealth(true)); ev.Seq != 2 {
		t.Errorf("found %s", ev)
	}
	if ev := r.WaitFor(t, snap.Seq, time.Second, "the snapshot itself", IsSnapshot); ev.Seq != snap.Seq {
		t.Errorf("a wait from Seq does not see the event itself: found %s", ev)
	}
}

func TestRecorderIsSafeForConcurrentUse(t *testing.T) {
	r := NewRecorder(false)
	r.Snapshot(nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 100 {
				r.Set(svc(fmt.Sprint(g, "-", i), "10.0.0.1:1"))
				_ = r.State()
			}
		})
	}
	r.WaitState(t, 10*time.Second, "400 upserts", func(s *State) bool { return s.Upserts == 400 })
	wg.Wait()
	if n := len(r.State().Services); n != 400 {
		t.Errorf("%d services, want 400", n)
	}
}
