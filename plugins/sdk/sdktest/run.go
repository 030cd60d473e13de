package sdktest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// StopTimeout bounds how long Watch may take to return once its context is cancelled; the
// host gives a plugin no longer before it kills it.
const StopTimeout = 30 * time.Second

// stopTimeout is StopTimeout; the kit's own tests shorten it.
var stopTimeout = StopTimeout

// watch is a Watch call running in the background.
type watch struct {
	t      testing.TB
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	// Set under the Recorder's mu when Watch returned.
	ended   bool
	err     error
	early   bool // it returned before its context ended
	stopped bool // Stop cancelled it: returning is expected then
}

// Run configures p with cfg, failing the test if that fails, and then runs it like Watch.
func Run(t testing.TB, p sdk.Plugin, cfg sdk.Config) *Recorder {
	t.Helper()
	if err := p.Configure(context.Background(), cfg); err != nil {
		t.Fatalf("configure: %v", err)
	}
	return Watch(t, p)
}

// Watch runs p.Watch in a goroutine into a new Recorder until Stop or the end of the test.
// Stopping cancels Watch's context and fails the test if Watch does not return within
// StopTimeout or returns an error other than the context's. A Watch that returns by itself,
// even with nil, fails the Recorder's next wait at once and the test at Stop.
func Watch(t testing.TB, p sdk.Plugin) *Recorder {
	t.Helper()
	r := NewRecorder(p.Describe().UniqueHosts)
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch{t: t, cancel: cancel, done: make(chan struct{})}
	r.watch = w
	go func() {
		defer close(w.done)
		err := p.Watch(ctx, r)
		early := ctx.Err() == nil
		r.mu.Lock()
		w.ended, w.err, w.early = true, err, early
		r.notifyLocked()
		r.mu.Unlock()
	}()
	t.Cleanup(r.Stop)
	return r
}

// Stop cancels the Watch started by Run or Watch and waits for it to return, reporting to the
// test as described there. It runs at cleanup if not called before; later calls do nothing,
// as does calling it on a Recorder from NewRecorder.
func (r *Recorder) Stop() {
	w := r.watch
	if w == nil {
		return
	}
	w.once.Do(func() {
		r.mu.Lock()
		w.stopped = true
		r.mu.Unlock()
		w.cancel()
		select {
		case <-w.done:
		case <-time.After(stopTimeout):
			w.t.Errorf("Watch did not return within %s of its context's end", stopTimeout)
			return
		}
		r.mu.Lock()
		err, early := w.err, w.early
		r.mu.Unlock()
		// The SDK treats a Watch that returns while the host listens as a failure, even
		// with a nil error.
		if early {
			w.t.Errorf("Watch returned %v before it was stopped", err)
			return
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			w.t.Errorf("Watch returned %v", err)
		}
	})
}

// watchEnded reports whether a Watch started by Run returned without being stopped, and its
// error.
func (r *Recorder) watchEnded() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watch == nil || r.watch.stopped || !r.watch.ended {
		return false, nil
	}
	return true, r.watch.err
}
