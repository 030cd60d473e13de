package sdk

import (
	"context"
	"fmt"
	"sync"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// Batching bounds one stream message: a busy registry fills batches, a quiet one sends each
// event as soon as it happens.
const (
	maxBatchEvents = 512
	maxBatchBytes  = 1 << 20
	// maxQueuedBatches full batches may wait for the stream before emitting blocks.
	maxQueuedBatches = 4
	// maxServiceBytes keeps a batch (at most maxBatchBytes plus one service) under the
	// host's message limit.
	maxServiceBytes = protocol.MaxMessageBytes / 2
)

// emitter implements Emitter for one Watch call. What the plugin states goes through the
// plan, which decides what the host must hear; those events are encoded into the wire form at
// once, in the caller's goroutine, and appended to the batch being filled; run sends
// batches in order. Encoding early costs the plugin no conversion into generated messages
// and lets a busy plugin's goroutines encode while the stream sends.
type emitter struct {
	ctx context.Context
	srv *server

	// planMu orders plan decisions and their events: what one call decides is queued before
	// the next call decides.
	planMu sync.Mutex
	plan   *Plan

	mu sync.Mutex
	// filled is signalled when there is something to send (or the emitter ends), drained
	// when a full batch left the queue.
	filled, drained sync.Cond
	cur             *protocol.WireBatch   // being filled; nil when empty
	full            []*protocol.WireBatch // sealed, oldest first
	stopped         bool
	// lastSize sizes the next batch's buffer like the last full one.
	lastSize int
	// health is the last health report sent on this stream; a repeat of it is not sent.
	health *registryv1.HealthResponse
}

func newEmitter(ctx context.Context, srv *server, uniqueHosts bool) *emitter {
	e := &emitter{ctx: ctx, srv: srv, plan: NewPlan(uniqueHosts)}
	e.filled.L, e.drained.L = &e.mu, &e.mu
	context.AfterFunc(ctx, e.wake)
	return e
}

// add appends one event with appendEvent, blocking while maxQueuedBatches full batches wait
// (back-pressure). Events emitted after the watch ended are dropped: nobody is listening
// any more.
func (e *emitter) add(appendEvent func(*protocol.WireBatch)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.full) >= maxQueuedBatches && !e.ended() {
		e.drained.Wait()
	}
	if e.ended() {
		return
	}
	if e.cur == nil {
		e.cur = protocol.NewWireBatch(min(max(e.lastSize, 4096), 2*maxBatchBytes))
	}
	appendEvent(e.cur)
	if e.cur.Events() >= maxBatchEvents || e.cur.Len() >= maxBatchBytes {
		e.lastSize = e.cur.Len()
		e.full = append(e.full, e.cur)
		e.cur = nil
	}
	e.filled.Signal()
}

func (e *emitter) ended() bool { return e.stopped || e.ctx.Err() != nil }

// wake lets every waiter see that the emitter ended.
func (e *emitter) wake() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.filled.Broadcast()
	e.drained.Broadcast()
}

func (e *emitter) stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.wake()
}

// next returns the next batch to send: the oldest full one, else the one being filled. It
// blocks while there is none; nil means stop: the stream's context ended, or the emitter
// was stopped and everything was handed out.
func (e *emitter) next() *protocol.WireBatch {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		switch {
		case e.ctx.Err() != nil:
			return nil
		case len(e.full) > 0:
			b := e.full[0]
			e.full = append(e.full[:0], e.full[1:]...)
			e.drained.Broadcast()
			return b
		case e.cur != nil && e.cur.Events() > 0:
			b := e.cur
			e.cur = nil
			return b
		case e.stopped:
			return nil
		}
		e.filled.Wait()
	}
}

// run sends batches until stop, then sends what is still queued. It returns early, without
// error, when the stream's context ends.
func (e *emitter) run(send func(*protocol.WireBatch) error) error {
	for {
		b := e.next()
		if b == nil {
			return nil
		}
		if err := send(b); err != nil {
			return err
		}
	}
}

// The plan is called directly, not through a closure: Set is every change's path, and a
// closure capturing the service would cost an allocation each.

func (e *emitter) Snapshot(services []catalog.Service) {
	e.planMu.Lock()
	defer e.planMu.Unlock()
	e.queue(e.plan.Snapshot(services))
}

func (e *emitter) Set(svc catalog.Service) bool {
	e.planMu.Lock()
	defer e.planMu.Unlock()
	return e.queue(e.plan.Set(svc))
}

func (e *emitter) Remove(key string) bool {
	e.planMu.Lock()
	defer e.planMu.Unlock()
	return e.queue(e.plan.Remove(key))
}

func (e *emitter) Reject(item, reason string) {
	item, reason = e.srv.redact(item), e.srv.redact(reason)
	e.planMu.Lock()
	defer e.planMu.Unlock()
	e.queue(e.plan.Reject(item, reason))
}

func (e *emitter) Sent(key string) (catalog.Service, bool) {
	e.planMu.Lock()
	defer e.planMu.Unlock()
	return e.plan.Sent(key)
}

func (e *emitter) SentKeys() []string {
	e.planMu.Lock()
	defer e.planMu.Unlock()
	return e.plan.SentKeys()
}

func (e *emitter) Health(connected bool, message string) {
	message = e.srv.redact(message)
	e.mu.Lock()
	repeat := e.health != nil && e.health.Connected == connected && e.health.Message == message
	if !repeat {
		e.health = &registryv1.HealthResponse{Connected: connected, Message: message}
		e.srv.health.Store(e.health)
	}
	e.mu.Unlock()
	if !repeat {
		e.add(func(b *protocol.WireBatch) { b.AppendHealth(connected, message) })
	}
}

// queue queues the events of the changes one plan step decided (planMu held); it reports
// whether there were any.
func (e *emitter) queue(changes []Change) bool {
	for _, c := range changes {
		switch c.Kind {
		case ChangeSnapshot:
			e.add((*protocol.WireBatch).AppendSnapshotBegin)
			for _, svc := range c.Services {
				e.upsert(svc, catalog.Service{}, false)
			}
			e.add((*protocol.WireBatch).AppendSnapshotEnd)
		case ChangeUpsert:
			e.upsert(c.Service, c.Prev, c.Had)
		case ChangeDelete:
			e.add(func(b *protocol.WireBatch) { b.AppendDelete(c.Key) })
		case ChangeReject:
			e.reject(c.Item, c.Key, c.Reason)
		}
	}
	return len(changes) > 0
}

// upsert queues one service; one the wire cannot carry is rejected instead and the plan
// goes back to prev, which the host keeps.
func (e *emitter) upsert(svc, prev catalog.Service, had bool) {
	var err error
	e.add(func(b *protocol.WireBatch) { err = b.AppendUpsert(svc, maxServiceBytes) })
	if err != nil {
		e.plan.Unsent(svc.Key, prev, had)
		// Sending it would break the stream for everyone; the host keeps what it knew.
		e.reject(catalog.Clip(svc.Key, 256), svc.Key, fmt.Sprintf("service with %d instances cannot be sent: %v", len(svc.Instances), err))
	}
}

func (e *emitter) reject(item, key, reason string) {
	item, reason = e.srv.redact(item), e.srv.redact(reason)
	logger.Warn("registry item rejected", "item", item, "reason", reason)
	e.add(func(b *protocol.WireBatch) { b.AppendRejection(item, reason, key) })
}
