package kube

import (
	"context"
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Failed writes wait out an exponential backoff per key before they are tried again. A write
// that failed because the API server did not answer (no connection, a timeout, 503, 429) says
// nothing about the write itself, so such keys do not wait out their backoff once the server
// answers again: a probe (or any write that succeeds) ends the outage and they are retried at
// once. Without this, a long outage leaves keys backed off for minutes after the server is back.

// probeInterval is how often the API server is probed while writes fail for want of it.
const probeInterval = 500 * time.Millisecond

// callError marks an error returned by an API call, as opposed to one found before calling.
type callError struct{ err error }

func (e *callError) Error() string { return e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// serverUnavailable reports whether err is an API call that failed for want of an answer
// rather than being refused on its merits.
func serverUnavailable(err error) bool {
	var ce *callError
	if !errors.As(err, &ce) || errors.Is(err, context.Canceled) {
		return false
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		// A 500 may be the server's verdict on the object (an apply it cannot type), so only
		// the answers that say "not now" count.
		return apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) ||
			apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err)
	}
	return true // transport: refused, reset, timed out, cut off
}

// waitingKey is a key waiting out its retry backoff.
type waitingKey struct {
	timer       *time.Timer
	unavailable bool // it failed because the API server did not answer
}

// retryLater queues k again after its backoff. Waiting keys count in the queue depth.
func (r *Reconciler) retryLater(k objKey, err error) {
	delay := r.backoff.When(k)
	w := &waitingKey{unavailable: serverUnavailable(err)}
	r.mu.Lock()
	if old := r.waiting[k]; old != nil {
		old.timer.Stop()
	} else {
		r.m.queueDepth.Inc()
	}
	r.waiting[k] = w
	w.timer = time.AfterFunc(delay, func() { r.release(k, w) })
	r.mu.Unlock()
	if w.unavailable && r.serverDown.CompareAndSwap(false, true) {
		r.log.Warn("API server not answering; retrying writes as soon as it answers again", "err", err)
	}
}

// release ends k's wait (if w is still its wait) and queues it.
func (r *Reconciler) release(k objKey, w *waitingKey) {
	r.mu.Lock()
	if r.waiting[k] != w {
		r.mu.Unlock()
		return
	}
	delete(r.waiting, k)
	r.mu.Unlock()
	r.m.queueDepth.Dec()
	r.queue.Add(k)
}

// enqueue queues k now, ending a backoff it may be waiting out: something changed for it.
func (r *Reconciler) enqueue(k objKey) {
	r.mu.Lock()
	w := r.waiting[k]
	if w != nil {
		w.timer.Stop()
		delete(r.waiting, k)
	}
	r.mu.Unlock()
	if w != nil {
		r.m.queueDepth.Dec()
	}
	r.queue.Add(k)
}

// serverAnswered ends an outage: the keys that failed for want of an answer are retried now,
// with their backoff reset.
func (r *Reconciler) serverAnswered() {
	if !r.serverDown.CompareAndSwap(true, false) {
		return
	}
	var keys []objKey
	r.mu.Lock()
	for k, w := range r.waiting {
		if w.unavailable {
			w.timer.Stop()
			delete(r.waiting, k)
			keys = append(keys, k)
		}
	}
	r.mu.Unlock()
	r.log.Info("API server answers again; retrying the writes it missed now", "keys", len(keys))
	for _, k := range keys {
		r.m.queueDepth.Dec()
		r.backoff.Forget(k)
		r.queue.Add(k)
	}
}

// probe asks the API server for one object of the first kind, every probeInterval while it
// is not answering, until ctx ends.
func (r *Reconciler) probe(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	ks := r.kinds[0]
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !r.serverDown.Load() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := ks.client.Namespace(r.cfg.Namespace).List(pctx, metav1.ListOptions{Limit: 1})
		cancel()
		if err == nil {
			r.serverAnswered()
		}
	}
}
